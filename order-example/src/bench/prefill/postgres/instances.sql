-- Finished saga instances $1 to $2 of the prefill: copies of the finished template instance $4,
-- each with the gid `{$3}-{n}`, the input `{"n":n}` and every time $5 - n ms before the
-- template's, so that the newest copy is the template's neighbour.
INSERT INTO saga_instance (
    gid, saga, fingerprint, input, status, phase, reason, cause, deadline_at, next_wake_at,
    owner, lease_until, fence, created_at, updated_at, traceparent
)
SELECT
    $3::text || '-' || numbers.n, t.saga, t.fingerprint, '{"n":' || numbers.n || '}', t.status,
    t.phase, t.reason, t.cause, t.deadline_at - ($5::bigint - numbers.n),
    t.next_wake_at - ($5::bigint - numbers.n), t.owner, t.lease_until, t.fence,
    t.created_at - ($5::bigint - numbers.n), t.updated_at - ($5::bigint - numbers.n),
    t.traceparent
FROM generate_series($1::bigint, $2::bigint) AS numbers (n), saga_instance AS t
WHERE t.gid = $4::text;
