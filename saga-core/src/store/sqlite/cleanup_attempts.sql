-- The calls of finished instances last updated before ?1.
DELETE FROM saga_attempt
WHERE gid IN (
    SELECT gid FROM saga_instance
    WHERE status IN ('succeeded', 'compensated') AND updated_at < ?1
)
