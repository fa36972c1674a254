-- One batch of writes of the group-commit writer as one statement: data-modifying CTEs, so
-- one round trip and an implicit transaction. Each CTE reads one JSON array: $1 instances to
-- create, $2 their steps, $3 transitions, $4 their steps, $5 finished calls. The CTEs share
-- one snapshot, so steps and calls apply only where `ins` created their instance or `upd`
-- applied their transition (same fence), as their RETURNING lists tell.
WITH ins AS (
    INSERT INTO saga_instance (
        gid, saga, fingerprint, input, status, phase, reason, deadline_at, next_wake_at,
        owner, lease_until, fence, created_at, updated_at, traceparent
    )
    SELECT
        j.gid, j.saga, j.fingerprint, j.input, 'running', 'forward', NULL, j.deadline_at,
        j.now, j.owner, j.lease_until, 1, j.now, j.now, j.traceparent
    FROM jsonb_to_recordset($1::jsonb) AS j (
        gid text, saga text, fingerprint text, input text, deadline_at bigint, owner text,
        lease_until bigint, now bigint, traceparent text
    )
    ON CONFLICT (gid) DO NOTHING
    RETURNING gid, fence
),

ins_steps AS (
    INSERT INTO saga_step (
        gid, idx, name, status, attempts, compensate_attempts, attempts_base,
        compensate_attempts_base, output, last_error, updated_at
    )
    SELECT
        j.gid, j.idx, j.name, j.status, j.attempts, j.compensate_attempts, j.attempts_base,
        j.compensate_attempts_base, j.output, j.last_error, j.now
    FROM jsonb_to_recordset($2::jsonb) AS j (
        gid text, idx bigint, name text, status text, attempts bigint,
        compensate_attempts bigint, attempts_base bigint, compensate_attempts_base bigint,
        output text, last_error text, now bigint
    )
    WHERE j.gid IN (SELECT ins.gid FROM ins)
),

-- A wake-up time already due stays as it is when the new one is due too (the same thing to
-- a claim), so that a running saga's transitions change no indexed column and stay
-- heap-only updates.
upd AS (
    UPDATE saga_instance AS i
    SET
        status = j.status,
        phase = j.phase,
        reason = j.reason,
        cause = j.cause,
        next_wake_at = CASE
            WHEN j.next_wake_at <= j.now AND i.next_wake_at <= j.now THEN i.next_wake_at
            ELSE j.next_wake_at
        END,
        lease_until = CASE WHEN j.release THEN 0 ELSE j.lease_until END,
        owner = CASE WHEN j.release THEN NULL ELSE i.owner END,
        updated_at = j.now
    FROM jsonb_to_recordset($3::jsonb) AS j (
        gid text, fence bigint, status text, phase text, reason text, cause text,
        next_wake_at bigint, lease_until bigint, release boolean, now bigint
    )
    WHERE i.gid = j.gid AND i.fence = j.fence
    RETURNING i.gid, i.fence
),

upd_steps AS (
    UPDATE saga_step AS s
    SET
        status = j.status,
        attempts = j.attempts,
        compensate_attempts = j.compensate_attempts,
        attempts_base = j.attempts_base,
        compensate_attempts_base = j.compensate_attempts_base,
        output = j.output,
        last_error = j.last_error,
        updated_at = j.now
    FROM jsonb_to_recordset($4::jsonb) AS j (
        gid text, idx bigint, fence bigint, status text, attempts bigint,
        compensate_attempts bigint, attempts_base bigint, compensate_attempts_base bigint,
        output text, last_error text, now bigint
    )
    WHERE
        s.gid = j.gid
        AND s.idx = j.idx
        AND (j.gid, j.fence) IN (SELECT upd.gid, upd.fence FROM upd)
),

att AS (
    INSERT INTO saga_attempt (
        gid, step, op, attempt, owner, fence, started_at, finished_at, outcome, error
    )
    SELECT
        j.gid, j.step, j.op, j.attempt, j.owner, j.fence, j.started_at, j.finished_at,
        j.outcome, j.error
    FROM jsonb_to_recordset($5::jsonb) AS j (
        gid text, step text, op text, attempt bigint, owner text, fence bigint,
        wfence bigint, started_at bigint, finished_at bigint, outcome text, error text
    )
    WHERE (j.gid, j.wfence) IN (SELECT upd.gid, upd.fence FROM upd)
)

SELECT 'created' AS kind, ins.gid, ins.fence FROM ins
UNION ALL
SELECT 'applied' AS kind, upd.gid, upd.fence FROM upd
