-- Instances of one status, newest first, ties by gid descending: $1 status, $2 limit.
SELECT gid, saga, fingerprint, status, reason, created_at, updated_at
FROM saga_instance
WHERE status = $1
ORDER BY created_at DESC, gid DESC
LIMIT $2
