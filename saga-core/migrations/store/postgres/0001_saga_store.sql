-- Saga instances: one row per gid, written only by the engine holding the current fence.
CREATE TABLE IF NOT EXISTS saga_instance (
    gid          TEXT    NOT NULL PRIMARY KEY,
    saga         TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    input        TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    phase        TEXT    NOT NULL,
    reason       TEXT,
    cause        TEXT,
    deadline_at  BIGINT,
    next_wake_at BIGINT  NOT NULL,
    owner        TEXT,
    lease_until  BIGINT  NOT NULL,
    fence        BIGINT  NOT NULL,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS saga_instance_due ON saga_instance (next_wake_at)
    WHERE status IN ('running', 'compensating');
CREATE INDEX IF NOT EXISTS saga_instance_listing ON saga_instance (created_at DESC, gid DESC);
CREATE INDEX IF NOT EXISTS saga_instance_status ON saga_instance (status, created_at DESC, gid DESC);
CREATE INDEX IF NOT EXISTS saga_instance_owner ON saga_instance (owner);

-- Steps: one row per step of an instance.
CREATE TABLE IF NOT EXISTS saga_step (
    gid                      TEXT    NOT NULL,
    idx                      BIGINT  NOT NULL,
    name                     TEXT    NOT NULL,
    status                   TEXT    NOT NULL,
    attempts                 BIGINT  NOT NULL,
    compensate_attempts      BIGINT  NOT NULL,
    attempts_base            BIGINT  NOT NULL,
    compensate_attempts_base BIGINT  NOT NULL,
    output                   TEXT,
    last_error               TEXT,
    updated_at               BIGINT  NOT NULL,
    PRIMARY KEY (gid, idx)
);

-- Finished calls of actions and undos: who ran them, under which fence, and when.
CREATE TABLE IF NOT EXISTS saga_attempt (
    gid         TEXT    NOT NULL,
    step        TEXT    NOT NULL,
    op          TEXT    NOT NULL,
    attempt     BIGINT  NOT NULL,
    owner       TEXT    NOT NULL,
    fence       BIGINT  NOT NULL,
    started_at  BIGINT  NOT NULL,
    finished_at BIGINT  NOT NULL,
    outcome     TEXT    NOT NULL,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS saga_attempt_gid ON saga_attempt (gid);
