-- The definition an instance belongs to.
SELECT saga, fingerprint FROM saga_instance WHERE gid = $1
