DROP INDEX conversations_assignee;
DROP INDEX conversations_latest;
DROP TRIGGER conversations_recounted;
DROP TRIGGER conversations_counted_delete;
DROP TRIGGER conversations_counted_insert;
DROP TABLE conversation_counts;
