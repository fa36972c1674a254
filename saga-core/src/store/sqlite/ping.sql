-- Whether the database answers: a health check, no table read.
SELECT 1
