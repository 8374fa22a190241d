-- Sending state of an email composed in Herald (E8–E10), beside the email itself: who composed
-- it, when it is due and in which time zone it was asked for, the current send job's token (a job
-- whose token is no longer the email's does nothing, so a reschedule, a cancel or a retry never
-- races an old job), attempts, and the reason of a failure.
CREATE TABLE email_sends (
    email_id BIGINT PRIMARY KEY REFERENCES emails (id) ON DELETE CASCADE,
    created_by BIGINT REFERENCES users (id) ON DELETE SET NULL,
    send_at TIMESTAMP,
    time_zone TEXT,
    token TEXT NOT NULL,
    -- When the current attempt began talking to the SMTP server; NULL while nothing started.
    started_at TIMESTAMP,
    attempts INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT,
    cancel_on_reply BOOLEAN NOT NULL DEFAULT FALSE,
    -- JSON list of {"name", "address"}: blind copies are sent, never shown as participants.
    bcc TEXT NOT NULL,
    -- The MIME message as sent (the sent copy appended to the Sent folder is this one).
    raw_message TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX emails_status ON emails (account_id, status);

-- Whether Herald saves a sent copy in the Sent folder (IMAP APPEND); off for providers that
-- file submitted mail themselves (Gmail, Outlook), where a second copy would be a duplicate.
ALTER TABLE mailboxes ADD COLUMN save_sent_copy BOOLEAN NOT NULL DEFAULT TRUE;
