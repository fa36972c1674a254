-- Gives up every lease of this owner: $1 owner. Rows are locked in gid order (see
-- claim_own.sql).
UPDATE saga_instance
SET owner = NULL, lease_until = 0
WHERE gid IN (
    SELECT gid FROM saga_instance
    WHERE owner = $1 AND status IN ('running', 'compensating')
    ORDER BY gid COLLATE "C"
    FOR UPDATE
)
