-- A page of the listing, newest first, ties by gid descending. ?1 status, ?2 saga name and
-- ?3 gid prefix, each '' for any; the page starts below (?4 created_at, ?5 gid); ?6 limit.
SELECT gid, saga, fingerprint, status, reason, created_at, updated_at
FROM saga_instance
WHERE (?1 = '' OR status = ?1)
  AND (?2 = '' OR saga = ?2)
  AND substr(gid, 1, length(?3)) = ?3
  AND (created_at < ?4 OR (created_at = ?4 AND gid < ?5))
ORDER BY created_at DESC, gid DESC
LIMIT ?6
