-- Takes this session's exclusive hold on an engine id, kept until the session ends: $1 the id's
-- key. False when another session holds it.
SELECT pg_try_advisory_lock($1)
