-- One row per message per account, however many mailboxes or folders hold it (E4).
CREATE TABLE emails (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- `mid:<Message-ID>`, or `sha:<digest of the raw message>` when it has none.
    dedupe_key TEXT NOT NULL,
    message_id TEXT,
    thread_id BIGINT,
    direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    status TEXT NOT NULL CHECK (status IN ('received', 'sent', 'scheduled', 'sending', 'failed', 'cancelled')),
    author TEXT NOT NULL CHECK (author IN ('contact', 'user')),
    -- The mailbox it was first seen in (or is sent from).
    mailbox_id BIGINT REFERENCES mailboxes (id) ON DELETE SET NULL,
    subject TEXT,
    from_address TEXT,
    from_name TEXT,
    -- JSON: {"to": [...], "cc": [...], "reply_to": [...]}, each {"name", "address"}.
    participants TEXT NOT NULL,
    text_body TEXT,
    html_body TEXT,
    in_reply_to TEXT,
    -- JSON list of Message-IDs.
    message_references TEXT NOT NULL,
    -- JSON list of what was wrong with the message (E5); empty when well-formed.
    problems TEXT NOT NULL,
    sent_at TIMESTAMP,
    received_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX emails_dedupe ON emails (account_id, dedupe_key);
CREATE INDEX emails_account ON emails (account_id, id);
CREATE INDEX emails_message_id ON emails (account_id, message_id);
CREATE INDEX emails_thread ON emails (thread_id);

-- Where a message was seen: a resync, a restart or a second mailbox finds it here.
CREATE TABLE email_copies (
    mailbox_id BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    folder TEXT NOT NULL,
    uid_validity BIGINT NOT NULL,
    uid BIGINT NOT NULL,
    email_id BIGINT NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    PRIMARY KEY (mailbox_id, folder, uid_validity, uid)
);
CREATE INDEX email_copies_email ON email_copies (email_id);

-- Sync position per mailbox folder (E4).
CREATE TABLE mailbox_folders (
    mailbox_id BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('inbox', 'sent')),
    folder TEXT NOT NULL,
    uid_validity BIGINT NOT NULL,
    -- Every UID below this one has been stored.
    uid_next BIGINT NOT NULL,
    highest_modseq BIGINT,
    synced_at TIMESTAMP NOT NULL,
    PRIMARY KEY (mailbox_id, role)
);

-- Every address on an email, lower-cased: a Person or Company finds its emails by address or
-- domain, including a Person created after the emails arrived (E6).
CREATE TABLE email_participants (
    email_id BIGINT NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    domain TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('from', 'to', 'cc', 'reply_to')),
    PRIMARY KEY (email_id, address, role)
);
CREATE INDEX email_participants_address ON email_participants (account_id, address);
CREATE INDEX email_participants_domain ON email_participants (account_id, domain);

CREATE TABLE email_attachments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email_id BIGINT NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    filename TEXT,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    content_id TEXT,
    -- Base64; NULL when the attachment was over the size limit and only described.
    content TEXT
);
CREATE INDEX email_attachments_email ON email_attachments (email_id);
