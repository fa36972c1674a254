//! The SQLite store: a single file in WAL mode with durable commits. One connection writes
//! (SQLite has a single writer anyway, and group commit batches several sagas' transitions per
//! commit); several connections read.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::StoreError;

/// The SQL of the SQLite store.
pub(crate) mod sql {
    /// One batch of writes (see `BatchPlan`): a transaction of five statements, run as one
    /// multi-statement query, so one round trip to the connection's thread. Each statement
    /// has one anonymous parameter: sqlx binds those across the statements in order.
    pub const WRITE_BATCH: &str = "BEGIN IMMEDIATE;\
        INSERT INTO saga_instance (gid, saga, fingerprint, input, status, phase, reason, deadline_at, next_wake_at, owner, lease_until, fence, created_at, updated_at) SELECT value ->> 'gid', value ->> 'saga', value ->> 'fingerprint', value ->> 'input', 'running', 'forward', NULL, value ->> 'deadline_at', value ->> 'now', value ->> 'owner', value ->> 'lease_until', 1, value ->> 'now', value ->> 'now' FROM jsonb_each(?) WHERE true ON CONFLICT (gid) DO NOTHING RETURNING 'created', gid, fence;\
        INSERT INTO saga_step (gid, idx, name, status, attempts, compensate_attempts, attempts_base, compensate_attempts_base, output, last_error, updated_at) SELECT value ->> 'gid', value ->> 'idx', value ->> 'name', value ->> 'status', value ->> 'attempts', value ->> 'compensate_attempts', value ->> 'attempts_base', value ->> 'compensate_attempts_base', value ->> 'output', value ->> 'last_error', value ->> 'now' FROM jsonb_each(?) WHERE EXISTS (SELECT 1 FROM saga_instance i WHERE i.gid = value ->> 'gid' AND i.fingerprint = value ->> 'fingerprint') ON CONFLICT (gid, idx) DO NOTHING;\
        UPDATE saga_instance SET status = j.status, phase = j.phase, reason = j.reason, cause = j.cause, next_wake_at = j.next_wake_at, lease_until = CASE WHEN j.release THEN 0 ELSE j.lease_until END, owner = CASE WHEN j.release THEN NULL ELSE saga_instance.owner END, updated_at = j.now FROM (SELECT value ->> 'gid' AS gid, value ->> 'fence' AS fence, value ->> 'status' AS status, value ->> 'phase' AS phase, value ->> 'reason' AS reason, value ->> 'cause' AS cause, value ->> 'next_wake_at' AS next_wake_at, value ->> 'lease_until' AS lease_until, value ->> 'release' AS release, value ->> 'now' AS now FROM jsonb_each(?)) AS j WHERE saga_instance.gid = j.gid AND saga_instance.fence = j.fence RETURNING 'applied', gid, fence;\
        UPDATE saga_step SET status = j.status, attempts = j.attempts, compensate_attempts = j.compensate_attempts, attempts_base = j.attempts_base, compensate_attempts_base = j.compensate_attempts_base, output = j.output, last_error = j.last_error, updated_at = j.now FROM (SELECT value ->> 'gid' AS gid, value ->> 'idx' AS idx, value ->> 'fence' AS fence, value ->> 'status' AS status, value ->> 'attempts' AS attempts, value ->> 'compensate_attempts' AS compensate_attempts, value ->> 'attempts_base' AS attempts_base, value ->> 'compensate_attempts_base' AS compensate_attempts_base, value ->> 'output' AS output, value ->> 'last_error' AS last_error, value ->> 'now' AS now FROM jsonb_each(?)) AS j WHERE saga_step.gid = j.gid AND saga_step.idx = j.idx AND EXISTS (SELECT 1 FROM saga_instance i WHERE i.gid = j.gid AND i.fence = j.fence);\
        INSERT INTO saga_attempt (gid, step, op, attempt, owner, fence, started_at, finished_at, outcome, error) SELECT value ->> 'gid', value ->> 'step', value ->> 'op', value ->> 'attempt', value ->> 'owner', value ->> 'fence', value ->> 'started_at', value ->> 'finished_at', value ->> 'outcome', value ->> 'error' FROM jsonb_each(?) WHERE EXISTS (SELECT 1 FROM saga_instance i WHERE i.gid = value ->> 'gid' AND i.fence = value ->> 'wfence');\
        COMMIT";
    pub const SELECT_INSTANCE_STEPS: &str = "SELECT i.gid, i.saga, i.fingerprint, i.input, i.status AS saga_status, i.phase, i.reason, i.cause, i.deadline_at, i.next_wake_at, i.owner, i.lease_until, i.fence, i.created_at, i.updated_at, s.idx, s.name, s.status, s.attempts, s.compensate_attempts, s.attempts_base, s.compensate_attempts_base, s.output, s.last_error FROM saga_instance i LEFT JOIN saga_step s ON s.gid = i.gid WHERE i.gid = ? ORDER BY s.idx";
    pub const SELECT_ATTEMPTS: &str = "SELECT gid, step, op, attempt, owner, fence, started_at, finished_at, outcome, error FROM saga_attempt WHERE gid = ? ORDER BY started_at, attempt";
    pub const CLAIM_DUE: &str = "UPDATE saga_instance SET owner = ?1, lease_until = ?2, fence = fence + 1 WHERE gid IN (SELECT gid FROM saga_instance WHERE status IN ('running', 'compensating') AND next_wake_at <= ?3 AND (owner IS NULL OR (lease_until < ?3 AND owner <> ?1)) AND fingerprint IN (SELECT value FROM json_each(?5)) ORDER BY next_wake_at LIMIT ?4) RETURNING gid";
    pub const CLAIM_OWN: &str = "UPDATE saga_instance SET lease_until = ?2, fence = fence + 1 WHERE owner = ?1 AND status IN ('running', 'compensating') AND fingerprint IN (SELECT value FROM json_each(?3)) RETURNING gid";
    pub const CLAIM_ONE: &str = "UPDATE saga_instance SET owner = ?, lease_until = ?, fence = fence + 1 WHERE gid = ? RETURNING fence";
    pub const RENEW: &str = "UPDATE saga_instance SET lease_until = ? WHERE owner = ? AND status IN ('running', 'compensating') AND gid IN (SELECT value FROM json_each(?))";
    pub const OWN_EXPIRED: &str = "SELECT gid FROM saga_instance WHERE owner = ? AND lease_until < ? AND status IN ('running', 'compensating')";
    pub const RELEASE_OWNER: &str = "UPDATE saga_instance SET owner = NULL, lease_until = 0 WHERE owner = ? AND status IN ('running', 'compensating')";
    pub const WAKE: &str = "UPDATE saga_instance SET next_wake_at = ? WHERE gid = ? AND status IN ('running', 'compensating')";
    pub const LIST_ALL: &str = "SELECT gid, saga, status, reason, created_at, updated_at FROM saga_instance ORDER BY created_at DESC, gid DESC LIMIT ?";
    pub const LIST_STATUS: &str = "SELECT gid, saga, status, reason, created_at, updated_at FROM saga_instance WHERE status = ? ORDER BY created_at DESC, gid DESC LIMIT ?";
    pub const COUNT_BY_STATUS: &str = "SELECT status, COUNT(*) FROM saga_instance GROUP BY status";
    pub const CLEANUP_STEPS: &str = "DELETE FROM saga_step WHERE gid IN (SELECT gid FROM saga_instance WHERE status IN ('succeeded', 'compensated') AND updated_at < ?)";
    pub const CLEANUP_ATTEMPTS: &str = "DELETE FROM saga_attempt WHERE gid IN (SELECT gid FROM saga_instance WHERE status IN ('succeeded', 'compensated') AND updated_at < ?)";
    pub const CLEANUP_INSTANCES: &str =
        "DELETE FROM saga_instance WHERE status IN ('succeeded', 'compensated') AND updated_at < ?";
}

/// How the SQLite store opens its file.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `synchronous=FULL` (the default): every commit is on disk before it returns. Turning it
    /// off (`NORMAL`) trades the last commits before a power loss for speed.
    pub durable: bool,
    /// Read connections.
    pub readers: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durable: true,
            readers: 4,
        }
    }
}

/// Opens (creating if needed) a SQLite database file for a store or a participant: WAL,
/// `synchronous=FULL` when `durable`, a 30 s busy timeout. Returns a pool of `max` connections.
pub async fn open_pool(path: &Path, durable: bool, max: u32) -> Result<SqlitePool, StoreError> {
    let url = format!("sqlite://{}", path.display());
    let options = SqliteConnectOptions::from_str(&url)
        .map_err(StoreError::Database)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if durable {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        })
        .busy_timeout(Duration::from_secs(30));
    SqlitePoolOptions::new()
        .max_connections(max)
        // No ping before each use: a broken connection fails its statement, which is retried,
        // and a round trip saved on every acquire is most of a short statement's cost.
        .test_before_acquire(false)
        .min_connections(1)
        .connect_with(options)
        .await
        .map_err(StoreError::Database)
}

/// The store's embedded migrations, recorded in the library's own `_saga_migrations` table.
pub(crate) fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/store/sqlite");
    migrator.dangerous_set_table_name("_saga_migrations");
    migrator
}

super::backend!(Sqlite, sql);

/// Applies a batch of writes in one transaction (`sql::WRITE_BATCH`).
pub(crate) async fn write_batch(
    pool: &SqlitePool,
    ops: &[&super::WriteOp],
) -> Result<Vec<super::WriteOutcome>, sqlx::Error> {
    use sqlx::Row as _;
    let plan = super::BatchPlan::new(ops);
    let mut conn = pool.acquire().await?;
    let mut query = sqlx::query(sql::WRITE_BATCH);
    for p in &plan.params {
        query = query.bind(p.as_str());
    }
    let rows = match query.fetch_all(&mut *conn).await {
        Ok(rows) => rows,
        Err(e) => {
            // The transaction may be open still (a statement before COMMIT failed).
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return Err(e);
        }
    };
    let rows = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let (created, applied) = super::batch_results(rows);
    Ok(plan.outcomes(&created, &applied))
}
