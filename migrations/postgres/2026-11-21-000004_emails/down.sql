DROP TABLE email_attachments;
DROP TABLE mailbox_folders;
DROP TABLE email_copies;
DROP TABLE emails;
