-- Instances, newest first, ties by gid descending: $1 limit.
SELECT gid, saga, fingerprint, status, reason, created_at, updated_at
FROM saga_instance
ORDER BY created_at DESC, gid DESC
LIMIT $1
