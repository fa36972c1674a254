-- The process id of the PostgreSQL backend serving this connection.
SELECT pg_backend_pid()
