-- The finished calls of the prefill's instances ?1 to ?2: copies of the template instance ?4's
-- (see instances.sql).
WITH RECURSIVE numbers (n) AS (
    SELECT ?1
    UNION ALL
    SELECT n + 1 FROM numbers WHERE n < ?2
)
INSERT INTO saga_attempt (
    gid, step, op, attempt, owner, fence, started_at, finished_at, outcome, error
)
SELECT
    ?3 || '-' || numbers.n, a.step, a.op, a.attempt, a.owner, a.fence,
    a.started_at - (?5 - numbers.n), a.finished_at - (?5 - numbers.n), a.outcome, a.error
FROM numbers, saga_attempt AS a
WHERE a.gid = ?4;
