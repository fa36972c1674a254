-- The time of the last transition written to any saga instance, ms since the Unix epoch: once
-- every instance is terminal, when the last one finished.
SELECT MAX(updated_at) AS last FROM saga_instance
