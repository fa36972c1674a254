-- One batch of writes of the group-commit writer: one transaction, one round trip to the
-- connection's thread. Each statement reads one JSON array (one anonymous parameter each,
-- bound in order): 1 instances to create, 2 their steps, 3 transitions, 4 their steps,
-- 5 finished calls. Step and call rows apply only where their instance was created or their
-- transition applied (same fence); the RETURNING rows tell the writer which did.
BEGIN IMMEDIATE;

INSERT INTO saga_instance (
    gid, saga, fingerprint, input, status, phase, reason, deadline_at, next_wake_at,
    owner, lease_until, fence, created_at, updated_at, traceparent
)
SELECT
    value ->> 'gid', value ->> 'saga', value ->> 'fingerprint', value ->> 'input',
    'running', 'forward', NULL, value ->> 'deadline_at', value ->> 'now',
    value ->> 'owner', value ->> 'lease_until', 1, value ->> 'now', value ->> 'now',
    value ->> 'traceparent'
FROM jsonb_each(?)
WHERE true -- lets SQLite parse ON CONFLICT after a SELECT
ON CONFLICT (gid) DO NOTHING
RETURNING 'created' AS kind, gid, fence;

-- The steps of the instances just created. An instance of this gid that existed before
-- already has its steps (they are written with it), so ON CONFLICT leaves them; one of
-- another definition fails the fingerprint check.
INSERT INTO saga_step (
    gid, idx, name, status, attempts, compensate_attempts, attempts_base,
    compensate_attempts_base, output, last_error, updated_at
)
SELECT
    value ->> 'gid', value ->> 'idx', value ->> 'name', value ->> 'status',
    value ->> 'attempts', value ->> 'compensate_attempts', value ->> 'attempts_base',
    value ->> 'compensate_attempts_base', value ->> 'output', value ->> 'last_error',
    value ->> 'now'
FROM jsonb_each(?)
WHERE EXISTS (
    SELECT 1 FROM saga_instance AS i
    WHERE i.gid = value ->> 'gid' AND i.fingerprint = value ->> 'fingerprint'
)
ON CONFLICT (gid, idx) DO NOTHING;

-- Transitions, where the writer's fence is still the instance's. A wake-up time already due
-- stays as it is when the new one is due too (the same thing to a claim), so that a running
-- saga's transitions leave the due index alone.
UPDATE saga_instance
SET
    status = j.status,
    phase = j.phase,
    reason = j.reason,
    cause = j.cause,
    next_wake_at = CASE
        WHEN j.next_wake_at <= j.now AND saga_instance.next_wake_at <= j.now
            THEN saga_instance.next_wake_at
        ELSE j.next_wake_at
    END,
    lease_until = CASE WHEN j.release THEN 0 ELSE j.lease_until END,
    owner = CASE WHEN j.release THEN NULL ELSE saga_instance.owner END,
    updated_at = j.now
FROM (
    SELECT
        value ->> 'gid' AS gid, value ->> 'fence' AS fence, value ->> 'status' AS status,
        value ->> 'phase' AS phase, value ->> 'reason' AS reason, value ->> 'cause' AS cause,
        value ->> 'next_wake_at' AS next_wake_at, value ->> 'lease_until' AS lease_until,
        value ->> 'release' AS release, value ->> 'now' AS now
    FROM jsonb_each(?)
) AS j
WHERE saga_instance.gid = j.gid AND saga_instance.fence = j.fence
RETURNING 'applied' AS kind, gid, fence;

-- The steps the transitions changed, where the transition applied.
UPDATE saga_step
SET
    status = j.status,
    attempts = j.attempts,
    compensate_attempts = j.compensate_attempts,
    attempts_base = j.attempts_base,
    compensate_attempts_base = j.compensate_attempts_base,
    output = j.output,
    last_error = j.last_error,
    updated_at = j.now
FROM (
    SELECT
        value ->> 'gid' AS gid, value ->> 'idx' AS idx, value ->> 'fence' AS fence,
        value ->> 'status' AS status, value ->> 'attempts' AS attempts,
        value ->> 'compensate_attempts' AS compensate_attempts,
        value ->> 'attempts_base' AS attempts_base,
        value ->> 'compensate_attempts_base' AS compensate_attempts_base,
        value ->> 'output' AS output, value ->> 'last_error' AS last_error,
        value ->> 'now' AS now
    FROM jsonb_each(?)
) AS j
WHERE
    saga_step.gid = j.gid
    AND saga_step.idx = j.idx
    AND EXISTS (SELECT 1 FROM saga_instance AS i WHERE i.gid = j.gid AND i.fence = j.fence);

-- The calls the transitions recorded, where the transition applied (`wfence`).
INSERT INTO saga_attempt (
    gid, step, op, attempt, owner, fence, started_at, finished_at, outcome, error
)
SELECT
    value ->> 'gid', value ->> 'step', value ->> 'op', value ->> 'attempt',
    value ->> 'owner', value ->> 'fence', value ->> 'started_at', value ->> 'finished_at',
    value ->> 'outcome', value ->> 'error'
FROM jsonb_each(?)
WHERE EXISTS (
    SELECT 1 FROM saga_instance AS i
    WHERE i.gid = value ->> 'gid' AND i.fence = value ->> 'wfence'
);

COMMIT
