DROP TABLE conversation_events;
DROP TABLE channel_message_ids;
DROP TABLE messages;
DROP TABLE conversations;
DROP TABLE channels;
