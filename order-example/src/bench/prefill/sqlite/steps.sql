-- The steps of the prefill's instances ?1 to ?2: copies of the template instance ?4's steps
-- (see instances.sql).
WITH RECURSIVE numbers (n) AS (
    SELECT ?1
    UNION ALL
    SELECT n + 1 FROM numbers WHERE n < ?2
)
INSERT INTO saga_step (
    gid, idx, name, status, attempts, compensate_attempts, attempts_base,
    compensate_attempts_base, output, last_error, updated_at
)
SELECT
    ?3 || '-' || numbers.n, s.idx, s.name, s.status, s.attempts, s.compensate_attempts,
    s.attempts_base, s.compensate_attempts_base, s.output, s.last_error,
    s.updated_at - (?5 - numbers.n)
FROM numbers, saga_step AS s
WHERE s.gid = ?4;
