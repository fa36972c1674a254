-- Extends this owner's lease on the unfinished instances it drives: ?1 lease_until,
-- ?2 owner, ?3 gids (a JSON array).
UPDATE saga_instance
SET lease_until = ?1
WHERE
    owner = ?2
    AND status IN ('running', 'compensating')
    AND gid IN (SELECT value FROM json_each(?3))
