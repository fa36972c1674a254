-- The finished calls of an instance, oldest first.
SELECT gid, step, op, attempt, owner, fence, started_at, finished_at, outcome, error
FROM saga_attempt
WHERE gid = $1
ORDER BY started_at, attempt
