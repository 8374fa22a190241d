DROP TABLE email_attachments;
DROP TABLE email_participants;
DROP TABLE mailbox_folders;
DROP TABLE email_copies;
DROP TABLE emails;
