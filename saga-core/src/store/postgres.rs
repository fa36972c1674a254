//! The PostgreSQL store: several engine processes share one database. Claims take due
//! instances with `FOR UPDATE SKIP LOCKED`, so engines never wait on each other's rows.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::StoreError;

/// The SQL of the PostgreSQL store.
pub(crate) mod sql {
    pub const INSERT_INSTANCE: &str = "INSERT INTO saga_instance (gid, saga, fingerprint, input, status, phase, reason, deadline_at, next_wake_at, owner, lease_until, fence, created_at, updated_at) VALUES ($1, $2, $3, $4, 'running', 'forward', NULL, $5, $6, $7, $8, 1, $9, $10) ON CONFLICT (gid) DO NOTHING";
    pub const INSERT_STEP: &str = "INSERT INTO saga_step (gid, idx, name, status, attempts, compensate_attempts, attempts_base, compensate_attempts_base, output, last_error, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
    pub const UPDATE_INSTANCE: &str = "UPDATE saga_instance SET status = $1, phase = $2, reason = $3, cause = $4, next_wake_at = $5, lease_until = $6, updated_at = $7 WHERE gid = $8 AND fence = $9";
    pub const RELEASE_INSTANCE: &str = "UPDATE saga_instance SET status = $1, phase = $2, reason = $3, cause = $4, next_wake_at = $5, lease_until = 0, owner = NULL, updated_at = $6 WHERE gid = $7 AND fence = $8";
    pub const UPDATE_STEP: &str = "UPDATE saga_step SET status = $1, attempts = $2, compensate_attempts = $3, attempts_base = $4, compensate_attempts_base = $5, output = $6, last_error = $7, updated_at = $8 WHERE gid = $9 AND idx = $10";
    pub const INSERT_ATTEMPT: &str = "INSERT INTO saga_attempt (gid, step, op, attempt, owner, fence, started_at, finished_at, outcome, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
    pub const SELECT_INSTANCE: &str = "SELECT gid, saga, fingerprint, input, status, phase, reason, cause, deadline_at, next_wake_at, owner, lease_until, fence, created_at, updated_at FROM saga_instance WHERE gid = $1";
    pub const SELECT_STEPS: &str = "SELECT idx, name, status, attempts, compensate_attempts, attempts_base, compensate_attempts_base, output, last_error FROM saga_step WHERE gid = $1 ORDER BY idx";
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
    PgPoolOptions::new()
        .max_connections(max)
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
