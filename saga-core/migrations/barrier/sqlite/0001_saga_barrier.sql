-- The sub-transaction barrier (docs/semantics.md, "The sub-transaction barrier"), in the participant's own database.
-- One row per (gid, branch_id, op, barrier_id); inserting it inside the participant's local
-- transaction is what makes a repeated call, a null compensation and a late action detectable.
-- `reason` is the op that inserted the row: `compensate` on an `action` row marks a null
-- compensation, so a late action is recognised as cancelled.
-- `created_at` is milliseconds since the Unix epoch (UTC), set by the library; cleanup deletes
-- by it.
CREATE TABLE saga_barrier (
    gid        TEXT    NOT NULL,
    branch_id  TEXT    NOT NULL,
    op         TEXT    NOT NULL,
    barrier_id TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (gid, branch_id, op, barrier_id)
);

CREATE INDEX saga_barrier_created_at ON saga_barrier (created_at);
