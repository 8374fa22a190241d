CREATE TABLE mailboxes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    owner_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    display_name TEXT,
    -- Appended by templates as {{ sender.signature }}.
    signature TEXT,
    imap_host TEXT NOT NULL,
    imap_port INTEGER NOT NULL,
    imap_security TEXT NOT NULL CHECK (imap_security IN ('tls', 'starttls', 'none')),
    imap_username TEXT NOT NULL,
    imap_password TEXT NOT NULL,
    smtp_host TEXT,
    smtp_port INTEGER,
    smtp_security TEXT CHECK (smtp_security IN ('tls', 'starttls', 'none')),
    smtp_username TEXT,
    smtp_password TEXT,
    verify_tls BOOLEAN NOT NULL DEFAULT 1,
    sync TEXT NOT NULL CHECK (sync IN ('received', 'received_and_sent')),
    sending_enabled BOOLEAN NOT NULL,
    visibility TEXT NOT NULL CHECK (visibility IN ('everyone', 'owner')),
    state TEXT NOT NULL,
    last_synced_at TIMESTAMP,
    last_error TEXT,
    -- Consecutive authentication failures; at 3 the mailbox goes to `auth_failed` (E4).
    auth_failures INTEGER NOT NULL DEFAULT 0,
    -- The worker syncing it now, and until when (a lease, so PostgreSQL workers share mailboxes).
    sync_locked_by TEXT,
    sync_locked_until TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX mailboxes_account ON mailboxes (account_id, id);
CREATE INDEX mailboxes_owner ON mailboxes (owner_id);
