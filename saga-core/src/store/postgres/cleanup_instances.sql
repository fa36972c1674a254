-- Finished instances last updated before $1 (after their steps and calls).
DELETE FROM saga_instance
WHERE status IN ('succeeded', 'compensated') AND updated_at < $1
