-- The steps of the prefill's instances $1 to $2: copies of the template instance $4's steps
-- (see instances.sql).
INSERT INTO saga_step (
    gid, idx, name, status, attempts, compensate_attempts, attempts_base,
    compensate_attempts_base, output, last_error, updated_at
)
SELECT
    $3::text || '-' || numbers.n, s.idx, s.name, s.status, s.attempts, s.compensate_attempts,
    s.attempts_base, s.compensate_attempts_base, s.output, s.last_error,
    s.updated_at - ($5::bigint - numbers.n)
FROM generate_series($1::bigint, $2::bigint) AS numbers (n), saga_step AS s
WHERE s.gid = $4::text;
