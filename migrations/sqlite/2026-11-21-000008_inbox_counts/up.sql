-- The inbox views' counts (M5), kept by triggers so a list answers them without counting: one
-- row per account, status and assignee (0: unassigned), whatever code path changes a
-- conversation (including a user's deletion setting assignee_id to NULL).
CREATE TABLE conversation_counts (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    assignee_id BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (account_id, status, assignee_id)
);

CREATE TRIGGER conversations_counted_insert AFTER INSERT ON conversations
BEGIN
    INSERT INTO conversation_counts (account_id, status, assignee_id, n)
    VALUES (NEW.account_id, NEW.status, COALESCE(NEW.assignee_id, 0), 1)
    ON CONFLICT (account_id, status, assignee_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER conversations_counted_delete AFTER DELETE ON conversations
BEGIN
    UPDATE conversation_counts SET n = n - 1
    WHERE account_id = OLD.account_id AND status = OLD.status
      AND assignee_id = COALESCE(OLD.assignee_id, 0);
END;

-- Only a move between views counts: a new message (last_message_at) does not.
CREATE TRIGGER conversations_recounted AFTER UPDATE OF account_id, status, assignee_id ON conversations
WHEN OLD.account_id <> NEW.account_id OR OLD.status <> NEW.status
     OR OLD.assignee_id IS NOT NEW.assignee_id
BEGIN
    UPDATE conversation_counts SET n = n - 1
    WHERE account_id = OLD.account_id AND status = OLD.status
      AND assignee_id = COALESCE(OLD.assignee_id, 0);
    INSERT INTO conversation_counts (account_id, status, assignee_id, n)
    VALUES (NEW.account_id, NEW.status, COALESCE(NEW.assignee_id, 0), 1)
    ON CONFLICT (account_id, status, assignee_id) DO UPDATE SET n = n + 1;
END;

INSERT INTO conversation_counts (account_id, status, assignee_id, n)
SELECT account_id, status, COALESCE(assignee_id, 0), count(*)
FROM conversations WHERE true GROUP BY 1, 2, 3;

-- The views' pages in order without sorting: "all" by time across statuses; "mine" and
-- "unassigned" by assignee (IS NULL is an equality for the index), "closed" and "others" by the
-- existing (account_id, status, last_message_at, id).
CREATE INDEX conversations_latest ON conversations (account_id, last_message_at, id);
CREATE INDEX conversations_assignee ON conversations (account_id, assignee_id, status, last_message_at, id);
