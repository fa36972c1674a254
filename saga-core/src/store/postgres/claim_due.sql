-- Claims due instances whose lease is free or expired (another owner's; this owner's own
-- expired ones are taken back by claim_own), of known definitions: $1 owner,
-- $2 lease_until, $3 now, $4 limit, $5 fingerprints (a JSON array). SKIP LOCKED: engines
-- never wait on each other's rows.
UPDATE saga_instance
SET owner = $1, lease_until = $2, fence = fence + 1
WHERE gid IN (
    SELECT gid FROM saga_instance
    WHERE
        status IN ('running', 'compensating')
        AND next_wake_at <= $3
        AND (owner IS NULL OR (lease_until < $3 AND owner <> $1))
        AND fingerprint IN (SELECT jsonb_array_elements_text($5::jsonb))
    ORDER BY next_wake_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
RETURNING gid
