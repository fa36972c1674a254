//! The PostgreSQL store: several engine processes share one database. Claims take due
//! instances with `FOR UPDATE SKIP LOCKED`, so engines never wait on each other's rows.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::StoreError;

/// The SQL of the PostgreSQL store.
pub(crate) mod sql {
    /// One batch of writes (see `BatchPlan`) as one statement: data-modifying CTEs, so one
    /// round trip and an implicit transaction. Steps and calls apply only where their
    /// transition did (the `RETURNING` of `ins` and `upd`). A wake-up time already due stays
    /// as it is when the new one is due too (the same thing to a claim), so that a running
    /// saga's transitions change no indexed column and stay heap-only updates.
    pub const WRITE_BATCH: &str = "WITH ins AS (INSERT INTO saga_instance (gid, saga, fingerprint, input, status, phase, reason, deadline_at, next_wake_at, owner, lease_until, fence, created_at, updated_at) SELECT j.gid, j.saga, j.fingerprint, j.input, 'running', 'forward', NULL, j.deadline_at, j.now, j.owner, j.lease_until, 1, j.now, j.now FROM jsonb_to_recordset($1::jsonb) AS j(gid text, saga text, fingerprint text, input text, deadline_at bigint, owner text, lease_until bigint, now bigint) ON CONFLICT (gid) DO NOTHING RETURNING gid, fence), ins_steps AS (INSERT INTO saga_step (gid, idx, name, status, attempts, compensate_attempts, attempts_base, compensate_attempts_base, output, last_error, updated_at) SELECT j.gid, j.idx, j.name, j.status, j.attempts, j.compensate_attempts, j.attempts_base, j.compensate_attempts_base, j.output, j.last_error, j.now FROM jsonb_to_recordset($2::jsonb) AS j(gid text, idx bigint, name text, status text, attempts bigint, compensate_attempts bigint, attempts_base bigint, compensate_attempts_base bigint, output text, last_error text, now bigint) WHERE j.gid IN (SELECT gid FROM ins)), upd AS (UPDATE saga_instance AS i SET status = j.status, phase = j.phase, reason = j.reason, cause = j.cause, next_wake_at = CASE WHEN j.next_wake_at <= j.now AND i.next_wake_at <= j.now THEN i.next_wake_at ELSE j.next_wake_at END, lease_until = CASE WHEN j.release THEN 0 ELSE j.lease_until END, owner = CASE WHEN j.release THEN NULL ELSE i.owner END, updated_at = j.now FROM jsonb_to_recordset($3::jsonb) AS j(gid text, fence bigint, status text, phase text, reason text, cause text, next_wake_at bigint, lease_until bigint, release boolean, now bigint) WHERE i.gid = j.gid AND i.fence = j.fence RETURNING i.gid, i.fence), upd_steps AS (UPDATE saga_step AS s SET status = j.status, attempts = j.attempts, compensate_attempts = j.compensate_attempts, attempts_base = j.attempts_base, compensate_attempts_base = j.compensate_attempts_base, output = j.output, last_error = j.last_error, updated_at = j.now FROM jsonb_to_recordset($4::jsonb) AS j(gid text, idx bigint, fence bigint, status text, attempts bigint, compensate_attempts bigint, attempts_base bigint, compensate_attempts_base bigint, output text, last_error text, now bigint) WHERE s.gid = j.gid AND s.idx = j.idx AND (j.gid, j.fence) IN (SELECT gid, fence FROM upd)), att AS (INSERT INTO saga_attempt (gid, step, op, attempt, owner, fence, started_at, finished_at, outcome, error) SELECT j.gid, j.step, j.op, j.attempt, j.owner, j.fence, j.started_at, j.finished_at, j.outcome, j.error FROM jsonb_to_recordset($5::jsonb) AS j(gid text, step text, op text, attempt bigint, owner text, fence bigint, wfence bigint, started_at bigint, finished_at bigint, outcome text, error text) WHERE (j.gid, j.wfence) IN (SELECT gid, fence FROM upd)) SELECT 'created' AS kind, gid, fence FROM ins UNION ALL SELECT 'applied', gid, fence FROM upd";
    pub const SELECT_INSTANCE_STEPS: &str = "SELECT i.gid, i.saga, i.fingerprint, i.input, i.status AS saga_status, i.phase, i.reason, i.cause, i.deadline_at, i.next_wake_at, i.owner, i.lease_until, i.fence, i.created_at, i.updated_at, s.idx, s.name, s.status, s.attempts, s.compensate_attempts, s.attempts_base, s.compensate_attempts_base, s.output, s.last_error FROM saga_instance i LEFT JOIN saga_step s ON s.gid = i.gid WHERE i.gid = $1 ORDER BY s.idx";
    pub const SELECT_ATTEMPTS: &str = "SELECT gid, step, op, attempt, owner, fence, started_at, finished_at, outcome, error FROM saga_attempt WHERE gid = $1 ORDER BY started_at, attempt";
    pub const CLAIM_DUE: &str = "UPDATE saga_instance SET owner = $1, lease_until = $2, fence = fence + 1 WHERE gid IN (SELECT gid FROM saga_instance WHERE status IN ('running', 'compensating') AND next_wake_at <= $3 AND (owner IS NULL OR (lease_until < $3 AND owner <> $1)) AND fingerprint IN (SELECT jsonb_array_elements_text($5::jsonb)) ORDER BY next_wake_at LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING gid";
    pub const CLAIM_OWN: &str = "UPDATE saga_instance SET lease_until = $2, fence = fence + 1 WHERE gid IN (SELECT gid FROM saga_instance WHERE owner = $1 AND status IN ('running', 'compensating') AND fingerprint IN (SELECT jsonb_array_elements_text($3::jsonb)) ORDER BY gid COLLATE \"C\" FOR UPDATE) RETURNING gid";
    pub const CLAIM_ONE: &str = "UPDATE saga_instance SET owner = $1, lease_until = $2, fence = fence + 1 WHERE gid = $3 RETURNING fence";
    pub const RENEW: &str = "UPDATE saga_instance SET lease_until = $1 WHERE gid IN (SELECT gid FROM saga_instance WHERE owner = $2 AND status IN ('running', 'compensating') AND gid IN (SELECT jsonb_array_elements_text($3::jsonb)) ORDER BY gid COLLATE \"C\" FOR UPDATE)";
    pub const OWN_EXPIRED: &str = "SELECT gid FROM saga_instance WHERE owner = $1 AND lease_until < $2 AND status IN ('running', 'compensating')";
    pub const RELEASE_OWNER: &str = "UPDATE saga_instance SET owner = NULL, lease_until = 0 WHERE gid IN (SELECT gid FROM saga_instance WHERE owner = $1 AND status IN ('running', 'compensating') ORDER BY gid COLLATE \"C\" FOR UPDATE)";
    pub const WAKE: &str = "UPDATE saga_instance SET next_wake_at = $1 WHERE gid = $2 AND status IN ('running', 'compensating')";
    pub const LIST_ALL: &str = "SELECT gid, saga, status, reason, created_at, updated_at FROM saga_instance ORDER BY created_at DESC, gid DESC LIMIT $1";
    pub const LIST_STATUS: &str = "SELECT gid, saga, status, reason, created_at, updated_at FROM saga_instance WHERE status = $1 ORDER BY created_at DESC, gid DESC LIMIT $2";
    pub const COUNT_BY_STATUS: &str = "SELECT status, COUNT(*) FROM saga_instance GROUP BY status";
    pub const CLEANUP_STEPS: &str = "DELETE FROM saga_step WHERE gid IN (SELECT gid FROM saga_instance WHERE status IN ('succeeded', 'compensated') AND updated_at < $1)";
    pub const CLEANUP_ATTEMPTS: &str = "DELETE FROM saga_attempt WHERE gid IN (SELECT gid FROM saga_instance WHERE status IN ('succeeded', 'compensated') AND updated_at < $1)";
    pub const CLEANUP_INSTANCES: &str = "DELETE FROM saga_instance WHERE status IN ('succeeded', 'compensated') AND updated_at < $1";
}

/// Opens a pool of `max` connections to `url`. With `schema`, every connection's `search_path`
/// is set to that schema (created if missing), so several services can share one database.
pub async fn open_pool(url: &str, schema: Option<&str>, max: u32) -> Result<PgPool, StoreError> {
    open_pool_with(url, schema, max, &[]).await
}

/// The saga store's pool: [`open_pool`] with generic plans kept to index lookups and nested
/// loops. Every store statement touches a few rows by key; the batch statement joins JSON
/// rows (estimated at 100) to the tables, and a plan chosen while the tables were small (a
/// sequential scan with a hash join) would otherwise stay cached as they grow.
pub(crate) async fn open_store_pool(
    url: &str,
    schema: Option<&str>,
    max: u32,
) -> Result<PgPool, StoreError> {
    let planner = [
        // Plan each prepared statement once: planning the batch statement costs more than
        // running it.
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
        ("enable_hashjoin", "off"),
        ("enable_mergejoin", "off"),
    ];
    open_pool_with(url, schema, max, &planner).await
}

async fn open_pool_with(
    url: &str,
    schema: Option<&str>,
    max: u32,
    settings: &[(&str, &str)],
) -> Result<PgPool, StoreError> {
    let mut options = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
    if let Some(schema) = schema {
        if !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || schema.is_empty()
        {
            return Err(StoreError::Config(format!(
                "schema name `{schema}` must be non-empty ASCII letters, digits or `_`"
            )));
        }
        // Create the schema once with a plain connection; CREATE SCHEMA IF NOT EXISTS can race
        // between processes, so a unique violation here means another process won.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::Database)?;
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&pool)
            .await
        {
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "23505" || c == "42P06");
            if !duplicate {
                return Err(StoreError::Database(e));
            }
        }
        pool.close().await;
        options = options.options([("search_path", schema)]);
    }
    options = options.options(settings.iter().copied());
    PgPoolOptions::new()
        .max_connections(max)
        // No ping before each use: a broken connection fails its statement, which is retried,
        // and a round trip saved on every acquire is most of a short statement's cost.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(StoreError::Database)
}

/// The store's embedded migrations, recorded in the library's own `_saga_migrations` table.
pub(crate) fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/store/postgres");
    migrator.dangerous_set_table_name("_saga_migrations");
    migrator
}

super::backend!(Postgres, sql);

/// Applies a batch of writes as one statement (`sql::WRITE_BATCH`).
pub(crate) async fn write_batch(
    pool: &PgPool,
    ops: &[&super::WriteOp],
) -> Result<Vec<super::WriteOutcome>, sqlx::Error> {
    use sqlx::Row as _;
    let plan = super::BatchPlan::new(ops);
    let mut query = sqlx::query(sql::WRITE_BATCH);
    for p in &plan.params {
        query = query.bind(p.as_str());
    }
    let rows = query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let (created, applied) = super::batch_results(rows);
    Ok(plan.outcomes(&created, &applied))
}
