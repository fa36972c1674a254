-- Takes one instance whatever its lease: ?1 owner, ?2 lease_until, ?3 gid.
UPDATE saga_instance
SET owner = ?1, lease_until = ?2, fence = fence + 1
WHERE gid = ?3
RETURNING fence
