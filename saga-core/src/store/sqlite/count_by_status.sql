-- Instances by status.
SELECT status, COUNT(*) AS count FROM saga_instance GROUP BY status
