-- A page of the listing, newest first, ties by gid descending. $1 status, $2 saga name and
-- $3 gid prefix, each '' for any; the page starts below ($4 created_at, $5 gid); $6 limit.
SELECT gid, saga, fingerprint, status, reason, created_at, updated_at
FROM saga_instance
WHERE ($1::text = '' OR status = $1::text)
  AND ($2::text = '' OR saga = $2::text)
  AND starts_with(gid, $3::text)
  AND (created_at < $4 OR (created_at = $4 AND gid < $5::text))
ORDER BY created_at DESC, gid DESC
LIMIT $6
