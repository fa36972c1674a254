-- The W3C trace context of each saga instance (`00-{trace id}-{parent id}-{flags}`), written by
-- the insert that creates it and never updated. Nullable without a default, so adding it
-- rewrites no rows and holds the table's lock only for a moment; instances created before it
-- have none, and their calls derive a trace from the gid.
ALTER TABLE saga_instance ADD COLUMN IF NOT EXISTS traceparent TEXT;
