ALTER TABLE mailboxes DROP COLUMN save_sent_copy;
DROP INDEX emails_status;
DROP TABLE email_sends;
