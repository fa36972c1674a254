-- Gives up every lease of this owner: ?1 owner.
UPDATE saga_instance
SET owner = NULL, lease_until = 0
WHERE owner = ?1 AND status IN ('running', 'compensating')
