-- An instance with its steps: one row per step, each carrying the instance's columns; an
-- instance without steps comes back as one row with NULL step columns.
SELECT
    i.gid, i.saga, i.fingerprint, i.input, i.status AS saga_status, i.phase, i.reason,
    i.cause, i.deadline_at, i.next_wake_at, i.owner, i.lease_until, i.fence, i.created_at,
    i.updated_at, i.traceparent, s.idx, s.name, s.status, s.attempts, s.compensate_attempts,
    s.attempts_base, s.compensate_attempts_base, s.output, s.last_error
FROM saga_instance AS i
LEFT JOIN saga_step AS s ON s.gid = i.gid
WHERE i.gid = $1
ORDER BY s.idx
