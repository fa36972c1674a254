//! Durable saga state over sqlx: SQLite (embedded default) or PostgreSQL (several engines).
//!
//! Every write of a transition is conditional on the instance's fencing token
//! (`WHERE gid = ? AND fence = ?`): an engine whose lease was taken over writes nothing and stops.
//! Transitions and submits go through a group-commit writer (`writer.rs`) that puts whatever is
//! queued, from many sagas, into one transaction: one fsync serves them all. Each database is a
//! `Dialect`: its SQL lives in `.sql` files beside its module, and the Rust that
//! runs it is written once, in `backend.rs`. See `docs/semantics.md` ("The store").

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::machine::SagaStatus;

mod backend;
mod batch;
#[cfg(feature = "postgres")]
pub mod postgres;
mod record;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod writer;

#[cfg(all(test, feature = "sqlite", feature = "postgres"))]
mod tests;

pub(crate) use backend::IdHold;
use backend::{Backend, Claim, SqlBackend};
use batch::{WriteOp, WriteOutcome};
pub use record::{
    AttemptOutcome, AttemptRecord, InstanceRecord, ListCursor, ListQuery, SagaSummary,
};
pub(crate) use record::{Inserted, NewInstance, TransitionWrite};
use writer::{Queue, WriterStats};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error (its code, if any, is kept: see
    /// [`StoreError::is_transient`]).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Running the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be read back.
    #[error("stored saga `{gid}` is unreadable: {what}")]
    Corrupt {
        /// The instance.
        gid: String,
        /// What was wrong.
        what: String,
    },
    /// A submit found an instance of its gid, which retention deleted before it could be read:
    /// submitting again creates it anew.
    #[error("saga `{gid}` was deleted while it was submitted again; submit it once more")]
    Deleted {
        /// The instance.
        gid: String,
    },
    /// Bad configuration.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// A file of a SQLite store could not be resolved, opened or locked: the database file, or
    /// the lock file beside it that holds an engine id.
    #[error("file `{}`: {source}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What the system reported.
        source: std::io::Error,
    },
    /// The store's writer task has stopped.
    #[error("the store's writer has stopped")]
    Closed,
    /// The group-commit batch this write was part of failed as a whole with this error, which
    /// every write of the batch shares (the database was unavailable).
    #[error(transparent)]
    Batch(Arc<StoreError>),
}

impl StoreError {
    /// Whether the database refused the statement for a reason that goes away when it is
    /// tried again: a deadlock, a serialization failure, a lock timeout, a busy SQLite file, a
    /// pool with no free connection in time, or the database being
    /// [unavailable](StoreError::is_unavailable).
    pub fn is_transient(&self) -> bool {
        if self.is_unavailable() {
            return true;
        }
        let StoreError::Database(e) = self.root() else {
            return false;
        };
        let sqlx::Error::Database(e) = e else {
            return false;
        };
        matches!(
            e.code().as_deref(),
            // PostgreSQL: deadlock_detected, serialization_failure, lock_not_available.
            Some("40P01" | "40001" | "55P03")
            // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
            | Some("5" | "6" | "261" | "262" | "517")
        )
    }

    /// Whether the database cannot be reached or cannot write for now: the connection was
    /// lost or refused, no connection came in time, the server is shutting down, starting up or
    /// out of connections, or the disk is full or failing. Such an error goes away once the
    /// database is back, so it is [transient](StoreError::is_transient) too.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self.root() else {
            return false;
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(e) => e.code().is_some_and(|code| unavailable_code(&code)),
            _ => false,
        }
    }

    /// The error itself, or the one its batch failed with.
    fn root(&self) -> &StoreError {
        match self {
            StoreError::Batch(e) => e.root(),
            e => e,
        }
    }
}

/// Whether a database error code says the database is unavailable (see
/// [`StoreError::is_unavailable`]).
fn unavailable_code(code: &str) -> bool {
    // PostgreSQL: class 08 (connection exception), disk_full, too_many_connections,
    // admin_shutdown, crash_shutdown, cannot_connect_now, io_error.
    if code.starts_with("08")
        || matches!(
            code,
            "53100" | "53300" | "57P01" | "57P02" | "57P03" | "58030"
        )
    {
        return true;
    }
    // SQLite (extended codes): SQLITE_IOERR and its extended codes, SQLITE_FULL,
    // SQLITE_CANTOPEN.
    code.parse::<u32>()
        .is_ok_and(|n| matches!(n & 0xff, 10 | 13 | 14))
}

/// Milliseconds since the Unix epoch: the unit of every timestamp in the store.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The saga store: persisted instances, steps and attempts on SQLite or PostgreSQL.
///
/// Cheap to clone; clones share the connection pools and the group-commit writers.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    writer: Queue,
    stats: Arc<WriterStats>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish()
    }
}

/// Tries of one [`Store::ping`] within its timeout.
const PING_TRIES: u32 = 3;

/// Connections of the PostgreSQL store at least: one writer and one reader.
#[cfg(feature = "postgres")]
const MIN_POSTGRES_CONNECTIONS: u32 = 2;

impl Store {
    /// Opens (creating if needed) a SQLite store in the file at `path` and runs its migrations.
    #[cfg(feature = "sqlite")]
    pub async fn sqlite(
        path: impl AsRef<std::path::Path>,
        options: sqlite::SqliteOptions,
    ) -> Result<Store, StoreError> {
        let write = sqlite::open_pool(path.as_ref(), options.durable, 1).await?;
        sqlite::migrator().run(&write).await?;
        let read =
            sqlite::open_pool(path.as_ref(), options.durable, options.readers.max(1)).await?;
        Ok(Store::start(Arc::new(SqlBackend::new(write, read))))
    }

    /// Connects to PostgreSQL at `url` (tables in `schema` when given, else the default search
    /// path), with at most `max_connections` connections, and runs the migrations. Several
    /// processes may do this at the same moment.
    #[cfg(feature = "postgres")]
    pub async fn postgres(
        url: &str,
        schema: Option<&str>,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        let max = max_connections.max(MIN_POSTGRES_CONNECTIONS);
        let pool = postgres::open_store_pool(url, schema, max).await?;
        postgres::migrator().run(&pool).await?;
        Ok(Store::start(Arc::new(SqlBackend::new(pool.clone(), pool))))
    }

    fn start(backend: Arc<dyn Backend>) -> Store {
        let stats = Arc::new(WriterStats::default());
        let writer = writer::start(backend.clone(), stats.clone());
        Store {
            backend,
            writer,
            stats,
        }
    }

    /// Transactions the group-commit writer has committed so far (each holds one or more
    /// writes, of one or more sagas).
    pub fn commits(&self) -> u64 {
        self.stats.commits.load(Ordering::Relaxed)
    }

    /// Writes (submits and transitions) the group-commit writer has applied so far.
    pub fn writes(&self) -> u64 {
        self.stats.writes.load(Ordering::Relaxed)
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// How many writes the group-commit writer puts in one transaction at most.
    pub fn batch_limit(&self) -> usize {
        writer::BATCH_LIMIT
    }

    async fn send(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send((op, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Inserts a new instance with its steps, unless one with this gid exists: then reads that
    /// one (from a read connection, off the writer's) and tells whether it has the same
    /// definition (saga name and fingerprint) or another.
    pub(crate) async fn insert(&self, new: NewInstance) -> Result<Inserted, StoreError> {
        let (gid, saga, fingerprint) = (new.gid.clone(), new.saga.clone(), new.fingerprint.clone());
        match self.send(WriteOp::Insert(new)).await? {
            WriteOutcome::Created(true) => Ok(Inserted::Created),
            WriteOutcome::Created(false) => match self.backend.load(&gid).await? {
                Some(existing)
                    if (&existing.saga, &existing.fingerprint) == (&saga, &fingerprint) =>
                {
                    Ok(Inserted::Exists(Box::new(existing)))
                }
                Some(existing) => Ok(Inserted::Conflict {
                    saga: existing.saga,
                    fingerprint: existing.fingerprint,
                }),
                None => Err(StoreError::Deleted { gid }),
            },
            WriteOutcome::Applied(_) => Err(StoreError::Closed),
        }
    }

    /// Persists a transition if `write.fence` is still the instance's fence. Returns `false`
    /// when the fence is stale: another engine owns the instance now and nothing was written.
    pub(crate) async fn write(&self, write: TransitionWrite) -> Result<bool, StoreError> {
        match self.send(WriteOp::Transition(write)).await? {
            WriteOutcome::Applied(ok) => Ok(ok),
            WriteOutcome::Created(_) => Err(StoreError::Closed),
        }
    }

    /// Reads an instance with its steps.
    pub async fn load(&self, gid: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.backend.load(gid).await
    }

    /// The finished calls recorded for an instance, oldest first.
    pub async fn attempts(&self, gid: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        self.backend.attempts(gid).await
    }

    /// Lists instances, newest first (ties by gid, descending).
    pub async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: u32,
    ) -> Result<Vec<SagaSummary>, StoreError> {
        self.backend.list(status, limit).await
    }

    /// A page of the listing: the newest instances matching `query` (ties by gid, descending),
    /// starting below its cursor. Hand the last row of a page to [`ListCursor::after`] for the
    /// next one.
    pub async fn list_page(&self, query: &ListQuery) -> Result<Vec<SagaSummary>, StoreError> {
        self.backend.list_page(query).await
    }

    /// Counts instances by status.
    pub async fn count_by_status(&self) -> Result<Vec<(SagaStatus, i64)>, StoreError> {
        self.backend.count_by_status().await
    }

    /// Up to `limit` unfinished instances that no engine holds a lease on and whose fingerprint
    /// is not among `fingerprints`, as `(gid, saga, fingerprint)`, by gid.
    pub(crate) async fn unknown_definitions(
        &self,
        fingerprints: &[String],
        limit: u32,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let fingerprints = json_array(fingerprints);
        self.backend
            .unknown_definitions(&fingerprints, now_ms(), limit)
            .await
    }

    /// Claims up to `limit` due instances whose lease is free or expired and whose definition
    /// fingerprint is one of `fingerprints` (instances of unknown definitions stay untouched):
    /// sets the owner and lease, bumps the fence. Returns their gids.
    pub(crate) async fn claim_due(
        &self,
        owner: &str,
        lease_until: i64,
        now: i64,
        limit: u32,
        fingerprints: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let fingerprints = json_array(fingerprints);
        let claim = Claim {
            owner,
            lease_until,
            fingerprints: &fingerprints,
        };
        self.backend.claim_due(claim, now, limit).await
    }

    /// Takes back every unfinished instance this owner held (after a restart with the same
    /// engine id) whose fingerprint is one of `fingerprints`, bumping their fences. Returns
    /// their gids.
    pub(crate) async fn claim_own(
        &self,
        owner: &str,
        lease_until: i64,
        fingerprints: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let fingerprints = json_array(fingerprints);
        let claim = Claim {
            owner,
            lease_until,
            fingerprints: &fingerprints,
        };
        self.backend.claim_own(claim).await
    }

    /// Takes one instance whatever its lease (an operator's action); returns the new fence.
    pub(crate) async fn claim_one(
        &self,
        gid: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.backend.claim_one(gid, owner, lease_until).await
    }

    /// Extends this owner's lease on the listed unfinished instances (the ones it is driving).
    pub(crate) async fn renew_leases(
        &self,
        owner: &str,
        lease_until: i64,
        gids: &[String],
    ) -> Result<u64, StoreError> {
        self.backend
            .renew(owner, lease_until, &json_array(gids))
            .await
    }

    /// Unfinished instances this owner holds whose lease has expired (`lease_until < now`).
    pub(crate) async fn own_expired(
        &self,
        owner: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.backend.own_expired(owner, now).await
    }

    /// Gives up every lease this owner holds (graceful shutdown).
    pub(crate) async fn release_all(&self, owner: &str) -> Result<u64, StoreError> {
        self.backend.release_owner(owner).await
    }

    /// Runs a trivial query on a read connection: `Ok` when the database answers within
    /// `timeout`. A timeout is reported as [`sqlx::Error::PoolTimedOut`], so that the error
    /// [is unavailable](StoreError::is_unavailable) like any other sign of an unreachable
    /// database. On SQLite, a file with no server to lose, the query runs only on an idle read
    /// connection, and every one of them busy counts as an answer.
    pub async fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        let ping = async {
            // A connection the server dropped (a restart) fails once and is closed: the next
            // try gets a fresh one.
            let mut tries = 0;
            loop {
                tries += 1;
                match self.backend.ping().await {
                    Err(e) if e.is_unavailable() && tries < PING_TRIES => continue,
                    done => return done,
                }
            }
        };
        match tokio::time::timeout(timeout, ping).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Database(sqlx::Error::PoolTimedOut)),
        }
    }

    /// What identifies the store's database: the SQLite file's canonical path, or
    /// `{database}/{schema}` as the PostgreSQL server names them (part of the engine's default
    /// id).
    pub(crate) async fn identity(&self) -> Result<String, StoreError> {
        self.backend.identity().await
    }

    /// Takes an exclusive hold on engine id `id` that lasts as long as the returned [`IdHold`]:
    /// on SQLite an OS lock on the file `{store file}-engine-{16 hex digits}.lock` beside the
    /// store file, on PostgreSQL a session advisory lock on a connection of its own. `None`
    /// when another engine, of this process or another, holds it.
    pub(crate) async fn hold_engine_id(&self, id: &str) -> Result<Option<IdHold>, StoreError> {
        self.backend.hold_engine_id(id).await
    }

    /// Deletes finished (succeeded or compensated) instances last updated before `before`
    /// (ms since epoch) with their steps and attempts. Returns the number of instances deleted.
    pub async fn cleanup_finished(&self, before: i64) -> Result<u64, StoreError> {
        self.backend.cleanup(before).await
    }

    /// Deletes finished instances older than `age`.
    pub async fn cleanup_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        self.cleanup_finished(now_ms().saturating_sub(age_ms)).await
    }
}

fn json_array(items: &[String]) -> String {
    // A list of strings: serializing it cannot fail.
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}
