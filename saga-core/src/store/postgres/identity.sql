-- The store's identity: its database and schema, as the server names them.
SELECT current_database() || '/' || coalesce(current_schema(), '')
