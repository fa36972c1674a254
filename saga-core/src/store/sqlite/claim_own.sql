-- Takes back every unfinished instance this owner held, of known definitions: ?1 owner,
-- ?2 lease_until, ?3 fingerprints (a JSON array).
UPDATE saga_instance
SET lease_until = ?2, fence = fence + 1
WHERE
    owner = ?1
    AND status IN ('running', 'compensating')
    AND fingerprint IN (SELECT value FROM json_each(?3))
RETURNING gid
