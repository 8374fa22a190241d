DROP TABLE notifications;
DROP TABLE email_deals;
ALTER TABLE mailboxes DROP COLUMN sync_requested_at;
