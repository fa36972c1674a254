-- Extends this owner's lease on the unfinished instances it drives: $1 lease_until,
-- $2 owner, $3 gids (a JSON array). Rows are locked in gid order (see claim_own.sql).
UPDATE saga_instance
SET lease_until = $1
WHERE gid IN (
    SELECT gid FROM saga_instance
    WHERE
        owner = $2
        AND status IN ('running', 'compensating')
        AND gid IN (SELECT jsonb_array_elements_text($3::jsonb))
    ORDER BY gid COLLATE "C"
    FOR UPDATE
)
