-- Takes back every unfinished instance this owner held, of known definitions: $1 owner,
-- $2 lease_until, $3 fingerprints (a JSON array). Rows are locked in gid order, the order
-- of every multi-row statement of the store, so that two of them never deadlock.
UPDATE saga_instance
SET lease_until = $2, fence = fence + 1
WHERE gid IN (
    SELECT gid FROM saga_instance
    WHERE
        owner = $1
        AND status IN ('running', 'compensating')
        AND fingerprint IN (SELECT jsonb_array_elements_text($3::jsonb))
    ORDER BY gid COLLATE "C"
    FOR UPDATE
)
RETURNING gid
