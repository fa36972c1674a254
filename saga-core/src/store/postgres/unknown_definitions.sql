-- Unfinished instances that no engine holds a lease on and whose definition is not among
-- $1 fingerprints (a JSON array): waiting for an engine that knows their definition. $2 now,
-- $3 limit.
SELECT gid, saga, fingerprint
FROM saga_instance
WHERE
    status IN ('running', 'compensating')
    AND (owner IS NULL OR lease_until < $2)
    AND fingerprint NOT IN (SELECT jsonb_array_elements_text($1::jsonb))
ORDER BY gid
LIMIT $3
