-- The finished calls of the prefill's instances $1 to $2: copies of the template instance $4's
-- (see instances.sql).
INSERT INTO saga_attempt (
    gid, step, op, attempt, owner, fence, started_at, finished_at, outcome, error
)
SELECT
    $3::text || '-' || numbers.n, a.step, a.op, a.attempt, a.owner, a.fence,
    a.started_at - ($5::bigint - numbers.n), a.finished_at - ($5::bigint - numbers.n),
    a.outcome, a.error
FROM generate_series($1::bigint, $2::bigint) AS numbers (n), saga_attempt AS a
WHERE a.gid = $4::text;
