-- After the prefill: the write-ahead log copied into the database file and emptied, so that the
-- measured run starts with a short log, as a store does after a quiet moment.
PRAGMA wal_checkpoint(TRUNCATE);
