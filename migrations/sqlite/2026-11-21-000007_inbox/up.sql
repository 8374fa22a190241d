-- Messaging channels (M1): a Twilio WhatsApp sender or a Facebook page, owned by the user who
-- installed it. Credentials are sealed with the secret key, as JSON.
CREATE TABLE channels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    owner_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('twilio_whatsapp', 'messenger')),
    name TEXT NOT NULL,
    -- Twilio: the account SID; Messenger: the page id.
    external_id TEXT NOT NULL,
    -- Twilio: the WhatsApp sender, e.g. whatsapp:+14155238886; Messenger: NULL.
    sender TEXT,
    secrets TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX channels_account ON channels (account_id, id);

-- One conversation per channel and contact (M3).
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    channel_id BIGINT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    -- Twilio: whatsapp:+15551234567; Messenger: the page-scoped id (PSID).
    contact_id TEXT NOT NULL,
    contact_name TEXT,
    status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    assignee_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
    last_message_at TIMESTAMP NOT NULL,
    -- The contact's last message: WhatsApp's 24-hour window for free-form replies starts here.
    last_inbound_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX conversations_contact ON conversations (channel_id, contact_id);
CREATE INDEX conversations_inbox ON conversations (account_id, status, last_message_at, id);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    -- Twilio's MessageSid or Messenger's mid, once known.
    provider_message_id TEXT,
    body TEXT,
    -- JSON list of {"url", "content_type"}.
    media TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('received', 'queued', 'sent', 'delivered', 'read', 'failed')),
    failure_reason TEXT,
    author_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE INDEX messages_provider ON messages (provider_message_id);

-- Every provider message id a channel has seen, kept when its conversation is deleted: a
-- provider's retry, however late, is stored once and never brings a deleted conversation back
-- (M2, M10).
CREATE TABLE channel_message_ids (
    channel_id BIGINT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    provider_message_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (channel_id, provider_message_id)
);

-- Who assigned, closed or reopened a conversation, when, from whom to whom (M7, M8).
CREATE TABLE conversation_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('assigned', 'closed', 'reopened')),
    -- NULL when the contact's message reopened it.
    actor_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
    from_user_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
    to_user_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX conversation_events_conversation ON conversation_events (conversation_id, id);
