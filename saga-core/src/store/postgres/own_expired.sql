-- Unfinished instances this owner holds whose lease has expired: $1 owner, $2 now.
SELECT gid FROM saga_instance
WHERE owner = $1 AND lease_until < $2 AND status IN ('running', 'compensating')
