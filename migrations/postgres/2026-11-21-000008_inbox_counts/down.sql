DROP INDEX conversations_assignee;
DROP INDEX conversations_latest;
DROP TRIGGER conversations_recounted ON conversations;
DROP TRIGGER conversations_counted ON conversations;
DROP FUNCTION herald_conversation_counts();
DROP TABLE conversation_counts;
