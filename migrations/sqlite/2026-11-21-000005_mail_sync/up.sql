-- A sync asked for through the API: the worker watching the mailbox picks it up (E4).
ALTER TABLE mailboxes ADD COLUMN sync_requested_at TIMESTAMP;

-- Deals an email belongs to (E6): the deal it was sent from, and the deals of earlier messages
-- in its thread, copied when the email joins the thread.
CREATE TABLE email_deals (
    email_id BIGINT NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    deal_id BIGINT NOT NULL REFERENCES deals (id) ON DELETE CASCADE,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    PRIMARY KEY (email_id, deal_id)
);
CREATE INDEX email_deals_deal ON email_deals (deal_id);

-- What a user is told (a mailbox that needs new credentials, later M9's inbox events).
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT,
    -- What it is about, e.g. ('mailbox', 12).
    subject_type TEXT,
    subject_id BIGINT,
    created_at TIMESTAMP NOT NULL,
    read_at TIMESTAMP
);
CREATE INDEX notifications_user ON notifications (user_id, id);
