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
    pub const INSERT_INSTANCE: &str = "INSERT INTO saga_instance (gid, saga, fingerprint, input, status, phase, reason, deadline_at, next_wake_at, owner, lease_until, fence, created_at, updated_at) VALUES (?, ?, ?, ?, 'running', 'forward', NULL, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT (gid) DO NOTHING";
    pub const INSERT_STEP: &str = "INSERT INTO saga_step (gid, idx, name, status, attempts, compensate_attempts, attempts_base, compensate_attempts_base, output, last_error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    pub const UPDATE_INSTANCE: &str = "UPDATE saga_instance SET status = ?, phase = ?, reason = ?, cause = ?, next_wake_at = ?, lease_until = ?, updated_at = ? WHERE gid = ? AND fence = ?";
    pub const RELEASE_INSTANCE: &str = "UPDATE saga_instance SET status = ?, phase = ?, reason = ?, cause = ?, next_wake_at = ?, lease_until = 0, owner = NULL, updated_at = ? WHERE gid = ? AND fence = ?";
    pub const UPDATE_STEP: &str = "UPDATE saga_step SET status = ?, attempts = ?, compensate_attempts = ?, attempts_base = ?, compensate_attempts_base = ?, output = ?, last_error = ?, updated_at = ? WHERE gid = ? AND idx = ?";
    pub const INSERT_ATTEMPT: &str = "INSERT INTO saga_attempt (gid, step, op, attempt, owner, fence, started_at, finished_at, outcome, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    pub const SELECT_INSTANCE: &str = "SELECT gid, saga, fingerprint, input, status, phase, reason, cause, deadline_at, next_wake_at, owner, lease_until, fence, created_at, updated_at FROM saga_instance WHERE gid = ?";
    pub const SELECT_STEPS: &str = "SELECT idx, name, status, attempts, compensate_attempts, attempts_base, compensate_attempts_base, output, last_error FROM saga_step WHERE gid = ? ORDER BY idx";
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
