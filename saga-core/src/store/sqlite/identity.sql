-- The store's identity: its database file, as SQLite resolved it (an absolute path).
SELECT file FROM pragma_database_list WHERE name = 'main'
