//! The SQLite store: a single file in WAL mode with durable commits. One connection writes
//! (SQLite has a single writer anyway, and group commit batches several sagas' transitions per
//! commit); several connections read.

use std::fs::TryLockError;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::SqlitePool;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};

use super::StoreError;
use super::backend::{Dialect, IdHold, Statements, engine_id_digest, statements};
use crate::step::BoxFuture;

impl Dialect for Sqlite {
    const BACKEND_NAME: &'static str = "sqlite";
    const SQL: Statements = statements!();
    // A statement of the batch that fails leaves its BEGIN open.
    const AFTER_FAILED_BATCH: Option<&'static str> = Some("ROLLBACK");
    // SQLite has one writer connection.
    const WRITERS: usize = 1;
    // A file: nothing to reach, only to wait for.
    const BUSY_ANSWERS_PING: bool = true;

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    // The file's canonical path: one file has one identity, however it was opened.
    fn identity(found: String) -> Result<String, StoreError> {
        let path = PathBuf::from(found);
        let canonical = std::fs::canonicalize(&path).map_err(|source| StoreError::File {
            path: path.clone(),
            source,
        })?;
        Ok(canonical.display().to_string())
    }

    // An OS lock on a file beside the store file, named after the id; the kernel lets it go when
    // the file is closed, also when the process dies.
    fn hold_engine_id<'a>(
        _pool: &'a SqlitePool,
        identity: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<IdHold>, StoreError>> {
        Box::pin(async move {
            let path = PathBuf::from(format!("{identity}-engine-{}.lock", lock_name(id)));
            let file_error = |source| StoreError::File {
                path: path.clone(),
                source,
            };
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)
                .map_err(file_error)?;
            match file.try_lock() {
                Ok(()) => Ok(Some(IdHold::new(file))),
                Err(TryLockError::WouldBlock) => Ok(None),
                Err(TryLockError::Error(e)) => Err(file_error(e)),
            }
        })
    }
}

/// The part of a lock file's name that stands for an engine id: 16 hex digits of its digest.
fn lock_name(id: &str) -> String {
    engine_id_digest(id)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

/// Read connections of a store by default: enough for the status and listing reads of a
/// busy API beside the drivers' loads.
const DEFAULT_READERS: u32 = 4;

/// How long a connection waits for SQLite's write lock before it reports the file busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durable: true,
            readers: DEFAULT_READERS,
        }
    }
}

/// Opens (creating if needed) a SQLite database file for a store or a participant: WAL,
/// `synchronous=FULL` when `durable`, a 30 s busy timeout. Returns a pool of `max` connections.
pub async fn open_pool(path: &Path, durable: bool, max: u32) -> Result<SqlitePool, StoreError> {
    let url = format!("sqlite://{}", path.display());
    let options = SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if durable {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        })
        .busy_timeout(BUSY_TIMEOUT);
    Ok(SqlitePoolOptions::new()
        .max_connections(max)
        // No ping before each use: a broken connection fails its statement, which is retried,
        // and a round trip saved on every acquire is most of a short statement's cost.
        .test_before_acquire(false)
        .min_connections(1)
        .connect_with(options)
        .await?)
}

/// The store's embedded migrations, recorded in the library's own `_saga_migrations` table.
pub(crate) fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations/store/sqlite");
    migrator.dangerous_set_table_name("_saga_migrations");
    migrator
}
