//! Durable saga state over sqlx: SQLite (embedded default) or PostgreSQL (several engines).
//!
//! Every write of a transition is conditional on the instance's fencing token
//! (`WHERE gid = ? AND fence = ?`): an engine whose lease was taken over writes nothing and stops.
//! Transitions and submits go through a group-commit writer that puts whatever is queued, from
//! many sagas, into one transaction: one fsync serves them all.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::machine::{Phase, SagaState, SagaStatus, StepState, StepStatus};

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
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
    /// Bad configuration.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The store's writer task has stopped.
    #[error("the store's writer has stopped")]
    Closed,
}

impl StoreError {
    /// Whether the database refused the statement for a reason that goes away when it is
    /// tried again: a deadlock, a serialization failure, a lock timeout, a busy SQLite file.
    pub fn is_transient(&self) -> bool {
        let StoreError::Database(sqlx::Error::Database(e)) = self else {
            return matches!(self, StoreError::Database(sqlx::Error::PoolTimedOut));
        };
        matches!(
            e.code().as_deref(),
            // PostgreSQL: deadlock_detected, serialization_failure, lock_not_available.
            Some("40P01" | "40001" | "55P03")
            // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
            | Some("5" | "6" | "261" | "262" | "517")
        )
    }
}

/// Milliseconds since the Unix epoch: the unit of every timestamp in the store.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A saga instance to create.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// Global id.
    pub gid: String,
    /// Saga name.
    pub saga: String,
    /// Definition fingerprint.
    pub fingerprint: String,
    /// Input as JSON.
    pub input: Value,
    /// Step names in order.
    pub steps: Vec<String>,
    /// The steps' initial states (after the first dispatch, so that the first calls are counted
    /// in the same commit that creates the instance).
    pub states: Vec<StepState>,
    /// Deadline (ms since epoch) for the forward phase before the point of no return.
    pub deadline_at: Option<i64>,
    /// The submitting engine, which owns the instance from the start.
    pub owner: String,
    /// Lease end of the submitting engine.
    pub lease_until: i64,
    /// Creation time.
    pub now: i64,
}

/// A persisted saga instance.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    /// Global id.
    pub gid: String,
    /// Saga name.
    pub saga: String,
    /// Definition fingerprint.
    pub fingerprint: String,
    /// Input as JSON.
    pub input: Value,
    /// Status, phase, reason and steps.
    pub state: SagaState,
    /// Step names in order.
    pub step_names: Vec<String>,
    /// Deadline (ms since epoch).
    pub deadline_at: Option<i64>,
    /// When the instance is next due.
    pub next_wake_at: i64,
    /// The engine holding the lease.
    pub owner: Option<String>,
    /// Lease end.
    pub lease_until: i64,
    /// Fencing token, bumped on every claim.
    pub fence: i64,
    /// Creation time.
    pub created_at: i64,
    /// Last update time.
    pub updated_at: i64,
}

/// One finished call of an action or an undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Global id.
    pub gid: String,
    /// Step name.
    pub step: String,
    /// `action` or `compensate`.
    pub op: String,
    /// Call number.
    pub attempt: i64,
    /// Engine instance that made the call.
    pub owner: String,
    /// Fencing token it held.
    pub fence: i64,
    /// Start (ms since epoch).
    pub started_at: i64,
    /// End (ms since epoch).
    pub finished_at: i64,
    /// `succeeded`, `failed` or `in_doubt`.
    pub outcome: String,
    /// Error text, if any.
    pub error: Option<String>,
}

/// The persisted effect of one or more transitions of one instance.
#[derive(Debug, Clone)]
pub struct TransitionWrite {
    /// Global id.
    pub gid: String,
    /// The fencing token the writer holds.
    pub fence: i64,
    /// New status.
    pub status: SagaStatus,
    /// New phase.
    pub phase: Phase,
    /// New reason.
    pub reason: Option<String>,
    /// Why compensation began.
    pub cause: Option<String>,
    /// When the instance is next due if nobody drives it.
    pub next_wake_at: i64,
    /// New lease end.
    pub lease_until: i64,
    /// Give up ownership (the saga finished or parked, or the engine stops driving it).
    pub release: bool,
    /// Changed steps.
    pub steps: Vec<(usize, StepState)>,
    /// Calls that finished.
    pub attempts: Vec<AttemptRecord>,
    /// Write time.
    pub now: i64,
}

/// A row of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaSummary {
    /// Global id.
    pub gid: String,
    /// Saga name.
    pub saga: String,
    /// Status.
    pub status: SagaStatus,
    /// Reason, if compensated or stuck.
    pub reason: Option<String>,
    /// Creation time (ms since epoch).
    pub created_at: i64,
    /// Last update (ms since epoch).
    pub updated_at: i64,
}

/// What submitting an instance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Created, owned by the submitter with fence 1.
    Created,
    /// An instance with this gid exists already; it was left as it was.
    Exists,
}

pub(crate) enum WriteOp {
    Insert(NewInstance),
    Transition(TransitionWrite),
}

impl WriteOp {
    fn gid(&self) -> &str {
        match self {
            WriteOp::Insert(new) => &new.gid,
            WriteOp::Transition(w) => &w.gid,
        }
    }
}

pub(crate) enum WriteOutcome {
    Inserted(Inserted),
    /// Whether the fence matched and the write applied.
    Applied(bool),
}

type Reply = oneshot::Sender<Result<WriteOutcome, String>>;

#[derive(Clone)]
enum Backend {
    #[cfg(feature = "sqlite")]
    Sqlite {
        write: sqlx::SqlitePool,
        read: sqlx::SqlitePool,
    },
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

/// Dispatches a call to the backend module that serves this store.
macro_rules! on_backend {
    ($self:expr, $pool:ident => $call:expr, write) => {
        match &$self {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite { write: $pool, .. } => {
                use sqlite as b;
                $call
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres($pool) => {
                use postgres as b;
                $call
            }
        }
    };
}

/// The saga store: persisted instances, steps and attempts on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    writer: mpsc::Sender<(WriteOp, Reply)>,
    batch_limit: usize,
    stats: Arc<WriterStats>,
}

/// Counters of the group-commit writer.
#[derive(Debug, Default)]
struct WriterStats {
    commits: AtomicU64,
    writes: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish()
    }
}

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
        Ok(Store::start(Backend::Sqlite { write, read }))
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
        let pool = postgres::open_store_pool(url, schema, max_connections.max(2)).await?;
        postgres::migrator().run(&pool).await?;
        Ok(Store::start(Backend::Postgres(pool)))
    }

    fn start(backend: Backend) -> Store {
        let (tx, rx) = mpsc::channel(4096);
        let batch_limit = 256;
        let stats = Arc::new(WriterStats::default());
        // SQLite has one writer connection. On PostgreSQL a batch is one statement, but its
        // round trip and WAL flush leave the server idle in between: two writers overlap them
        // (measured: one writer ~950 sagas/s, two ~1,300, three or six no better).
        let writers = match &backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite { .. } => 1,
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => 2,
        };
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..writers {
            let (backend, rx, stats) = (backend.clone(), rx.clone(), stats.clone());
            // A writer that panics is restarted: its batch's callers see an error (their
            // transaction was rolled back), every later write is served again.
            tokio::spawn(async move {
                loop {
                    let task = tokio::spawn(run_writer(
                        backend.clone(),
                        rx.clone(),
                        batch_limit,
                        stats.clone(),
                    ));
                    match task.await {
                        Err(e) if e.is_panic() => {
                            tracing::error!("the store's writer panicked; restarting it");
                        }
                        _ => break,
                    }
                }
            });
        }
        Store {
            backend,
            writer: tx,
            batch_limit,
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
        match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite { .. } => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
        }
    }

    /// How many writes the group-commit writer puts in one transaction at most.
    pub fn batch_limit(&self) -> usize {
        self.batch_limit
    }

    async fn send(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send((op, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        match rx.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(StoreError::Database(sqlx::Error::Protocol(e))),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Inserts a new instance with its steps, unless one with this gid exists.
    pub async fn insert(&self, new: NewInstance) -> Result<Inserted, StoreError> {
        match self.send(WriteOp::Insert(new)).await? {
            WriteOutcome::Inserted(i) => Ok(i),
            WriteOutcome::Applied(_) => Err(StoreError::Closed),
        }
    }

    /// Persists a transition if `write.fence` is still the instance's fence. Returns `false`
    /// when the fence is stale: another engine owns the instance now and nothing was written.
    pub async fn write(&self, write: TransitionWrite) -> Result<bool, StoreError> {
        match self.send(WriteOp::Transition(write)).await? {
            WriteOutcome::Applied(ok) => Ok(ok),
            WriteOutcome::Inserted(_) => Err(StoreError::Closed),
        }
    }

    /// Reads an instance with its steps.
    pub async fn load(&self, gid: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.read(|b| b.load(gid)).await
    }

    /// The finished calls recorded for an instance, oldest first.
    pub async fn attempts(&self, gid: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        self.read(|b| b.attempts(gid)).await
    }

    /// Lists instances, newest first (ties by gid, descending).
    pub async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: u32,
    ) -> Result<Vec<SagaSummary>, StoreError> {
        self.read(|b| b.list(status, limit)).await
    }

    /// Counts instances by status.
    pub async fn count_by_status(&self) -> Result<Vec<(SagaStatus, i64)>, StoreError> {
        self.read(|b| b.count_by_status()).await
    }

    async fn read<'a, T, F, Fut>(&'a self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ReadHandle<'a>) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        f(ReadHandle(&self.backend)).await
    }

    /// Claims up to `limit` due instances whose lease is free or expired and whose definition
    /// fingerprint is one of `fingerprints` (instances of unknown definitions stay untouched):
    /// sets the owner and lease, bumps the fence. Returns their gids.
    pub async fn claim_due(
        &self,
        owner: &str,
        lease_until: i64,
        now: i64,
        limit: u32,
        fingerprints: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let fps = serde_json::to_string(fingerprints).unwrap_or_else(|_| "[]".into());
        on_backend!(self.backend, pool => b::claim_due(pool, owner, lease_until, now, limit, &fps).await, write)
    }

    /// Takes back every unfinished instance this owner held (after a restart with the same
    /// instance id) whose fingerprint is one of `fingerprints`, bumping their fences. Returns
    /// their gids.
    pub async fn claim_own(
        &self,
        owner: &str,
        lease_until: i64,
        fingerprints: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let fps = serde_json::to_string(fingerprints).unwrap_or_else(|_| "[]".into());
        on_backend!(self.backend, pool => b::claim_own(pool, owner, lease_until, &fps).await, write)
    }

    /// Takes one instance whatever its lease (an operator's action); returns the new fence.
    pub async fn claim_one(
        &self,
        gid: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Option<i64>, StoreError> {
        on_backend!(self.backend, pool => b::claim_one(pool, gid, owner, lease_until).await, write)
    }

    /// Extends this owner's lease on the listed unfinished instances (the ones it is driving).
    pub async fn renew_leases(
        &self,
        owner: &str,
        lease_until: i64,
        gids: &[String],
    ) -> Result<u64, StoreError> {
        let gids = serde_json::to_string(gids).unwrap_or_else(|_| "[]".into());
        on_backend!(self.backend, pool => b::renew(pool, owner, lease_until, &gids).await, write)
    }

    /// Unfinished instances this owner holds whose lease has expired (`lease_until < now`).
    pub async fn own_expired(&self, owner: &str, now: i64) -> Result<Vec<String>, StoreError> {
        on_backend!(self.backend, pool => b::own_expired(pool, owner, now).await, write)
    }

    /// Gives up every lease this owner holds (graceful shutdown).
    pub async fn release_all(&self, owner: &str) -> Result<u64, StoreError> {
        on_backend!(self.backend, pool => b::release_owner(pool, owner).await, write)
    }

    /// Makes an unfinished instance due at `at`.
    pub async fn wake(&self, gid: &str, at: i64) -> Result<bool, StoreError> {
        on_backend!(self.backend, pool => b::wake(pool, gid, at).await.map(|n| n > 0), write)
    }

    /// Deletes finished (succeeded or compensated) instances last updated before `before`
    /// (ms since epoch) with their steps and attempts. Returns the number of instances deleted.
    pub async fn cleanup_finished(&self, before: i64) -> Result<u64, StoreError> {
        on_backend!(self.backend, pool => b::cleanup(pool, before).await, write)
    }

    /// Deletes finished instances older than `age`.
    pub async fn cleanup_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        self.cleanup_finished(now_ms() - age.as_millis() as i64)
            .await
    }
}

struct ReadHandle<'a>(&'a Backend);

impl ReadHandle<'_> {
    async fn load(self, gid: &str) -> Result<Option<InstanceRecord>, StoreError> {
        match self.0 {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite { read, .. } => sqlite::load(read, gid).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pool) => postgres::load(pool, gid).await,
        }
    }

    async fn attempts(self, gid: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        match self.0 {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite { read, .. } => sqlite::attempts(read, gid).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pool) => postgres::attempts(pool, gid).await,
        }
    }

    async fn list(
        self,
        status: Option<SagaStatus>,
        limit: u32,
    ) -> Result<Vec<SagaSummary>, StoreError> {
        match self.0 {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite { read, .. } => sqlite::list(read, status, limit).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pool) => postgres::list(pool, status, limit).await,
        }
    }

    async fn count_by_status(self) -> Result<Vec<(SagaStatus, i64)>, StoreError> {
        match self.0 {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite { read, .. } => sqlite::count_by_status(read).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pool) => postgres::count_by_status(pool).await,
        }
    }
}

/// One batch of writes as five JSON arrays, one per statement (bound as parameters 1 to 5):
/// instances to create, their steps, transitions of instances, their steps, finished calls.
/// Step and call rows carry the fence of their transition, so that the SQL applies them only
/// where the transition applied; each dialect runs the five in one round trip.
pub(crate) struct BatchPlan<'a> {
    ops: &'a [&'a WriteOp],
    /// The first insert of each gid in the batch (a later one of the same gid finds it).
    first_insert: HashSet<usize>,
    /// The five arrays, serialized.
    pub(crate) params: [String; 5],
}

/// A row of `saga_instance` to create, as the batch statement reads it.
#[derive(serde::Serialize)]
struct NewInstanceRow<'a> {
    gid: &'a str,
    saga: &'a str,
    fingerprint: &'a str,
    input: String,
    deadline_at: Option<i64>,
    owner: &'a str,
    lease_until: i64,
    now: i64,
}

/// A row of `saga_step` to create or update. `fence` is the transition's (1 for a new
/// instance); `name` and `fingerprint` are set for new rows only.
#[derive(serde::Serialize)]
struct StepRow<'a> {
    gid: &'a str,
    idx: usize,
    fence: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<&'a str>,
    status: &'static str,
    attempts: u32,
    compensate_attempts: u32,
    attempts_base: u32,
    compensate_attempts_base: u32,
    output: Option<String>,
    last_error: Option<&'a str>,
    now: i64,
}

impl<'a> StepRow<'a> {
    fn new(gid: &'a str, idx: usize, s: &'a StepState, now: i64, fence: i64) -> Self {
        StepRow {
            gid,
            idx,
            fence,
            name: None,
            fingerprint: None,
            status: s.status.as_str(),
            attempts: s.attempts,
            compensate_attempts: s.compensate_attempts,
            attempts_base: s.attempts_base,
            compensate_attempts_base: s.compensate_attempts_base,
            output: s.output.as_ref().map(|v| v.to_string()),
            last_error: s.last_error.as_deref(),
            now,
        }
    }
}

/// A transition of a `saga_instance` row, applied where `fence` still matches.
#[derive(serde::Serialize)]
struct UpdateRow<'a> {
    gid: &'a str,
    fence: i64,
    status: &'static str,
    phase: &'static str,
    reason: Option<&'a str>,
    cause: Option<&'a str>,
    next_wake_at: i64,
    lease_until: i64,
    release: bool,
    now: i64,
}

/// A row of `saga_attempt`; `wfence` is the fence of the transition that records it.
#[derive(serde::Serialize)]
struct AttemptRow<'a> {
    gid: &'a str,
    step: &'a str,
    op: &'a str,
    attempt: i64,
    owner: &'a str,
    fence: i64,
    wfence: i64,
    started_at: i64,
    finished_at: i64,
    outcome: &'a str,
    error: Option<&'a str>,
}

impl<'a> BatchPlan<'a> {
    pub(crate) fn new(ops: &'a [&'a WriteOp]) -> Self {
        // Rows go in gid order, the order in which the store's multi-row statements lock.
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by(|&a, &b| ops[a].gid().cmp(ops[b].gid()));
        let mut seen = HashSet::new();
        let mut first_insert = HashSet::new();
        let (mut instances, mut new_steps, mut updates, mut steps, mut attempts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for idx in order {
            match ops[idx] {
                WriteOp::Insert(n) => {
                    if !seen.insert(n.gid.as_str()) {
                        continue;
                    }
                    first_insert.insert(idx);
                    instances.push(NewInstanceRow {
                        gid: &n.gid,
                        saga: &n.saga,
                        fingerprint: &n.fingerprint,
                        input: n.input.to_string(),
                        deadline_at: n.deadline_at,
                        owner: &n.owner,
                        lease_until: n.lease_until,
                        now: n.now,
                    });
                    for (i, (name, s)) in n.steps.iter().zip(&n.states).enumerate() {
                        let mut row = StepRow::new(&n.gid, i, s, n.now, 1);
                        row.name = Some(name);
                        row.fingerprint = Some(&n.fingerprint);
                        new_steps.push(row);
                    }
                }
                WriteOp::Transition(w) => {
                    updates.push(UpdateRow {
                        gid: &w.gid,
                        fence: w.fence,
                        status: w.status.as_str(),
                        phase: w.phase.as_str(),
                        reason: w.reason.as_deref(),
                        cause: w.cause.as_deref(),
                        next_wake_at: w.next_wake_at,
                        lease_until: w.lease_until,
                        release: w.release,
                        now: w.now,
                    });
                    for (i, s) in &w.steps {
                        steps.push(StepRow::new(&w.gid, *i, s, w.now, w.fence));
                    }
                    for a in &w.attempts {
                        attempts.push(AttemptRow {
                            gid: &a.gid,
                            step: &a.step,
                            op: &a.op,
                            attempt: a.attempt,
                            owner: &a.owner,
                            fence: a.fence,
                            wfence: w.fence,
                            started_at: a.started_at,
                            finished_at: a.finished_at,
                            outcome: &a.outcome,
                            error: a.error.as_deref(),
                        });
                    }
                }
            }
        }
        fn text<T: serde::Serialize>(rows: &[T]) -> String {
            // Plain structs of strings and numbers: serializing them cannot fail.
            serde_json::to_string(rows).unwrap_or_else(|_| "[]".into())
        }
        BatchPlan {
            ops,
            first_insert,
            params: [
                text(&instances),
                text(&new_steps),
                text(&updates),
                text(&steps),
                text(&attempts),
            ],
        }
    }

    /// Each write's outcome from what the statements returned: the gids created and the
    /// `(gid, fence)` of the transitions applied.
    pub(crate) fn outcomes(
        &self,
        created: &HashSet<String>,
        applied: &HashSet<(String, i64)>,
    ) -> Vec<WriteOutcome> {
        self.ops
            .iter()
            .enumerate()
            .map(|(idx, op)| match op {
                WriteOp::Insert(n) => WriteOutcome::Inserted(
                    if self.first_insert.contains(&idx) && created.contains(&n.gid) {
                        Inserted::Created
                    } else {
                        Inserted::Exists
                    },
                ),
                WriteOp::Transition(w) => {
                    WriteOutcome::Applied(applied.contains(&(w.gid.clone(), w.fence)))
                }
            })
            .collect()
    }
}

/// Sorts the rows a batch statement returned, `(kind, gid, fence)` with kind `created` or
/// `applied`, into the created gids and the applied transitions.
pub(crate) fn batch_results(
    rows: impl IntoIterator<Item = (String, String, i64)>,
) -> (HashSet<String>, HashSet<(String, i64)>) {
    let (mut created, mut applied) = (HashSet::new(), HashSet::new());
    for (kind, gid, fence) in rows {
        if kind == "created" {
            created.insert(gid);
        } else {
            applied.insert((gid, fence));
        }
    }
    (created, applied)
}

/// The group-commit writer: takes what is queued (up to `limit` writes), applies it in one
/// transaction, answers each caller. If the batch fails as a whole, each write is retried in a
/// transaction of its own so that one bad write does not fail its neighbours.
async fn run_writer(
    backend: Backend,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<(WriteOp, Reply)>>>,
    limit: usize,
    stats: Arc<WriterStats>,
) {
    let mut batch: Vec<(WriteOp, Reply)> = Vec::with_capacity(limit);
    loop {
        // Two writes of one saga are never queued at once (a driver awaits each write), so
        // writers working side by side cannot reorder a saga's transitions.
        let received = rx.lock().await.recv_many(&mut batch, limit).await;
        if received == 0 {
            break;
        }
        let ops: Vec<&WriteOp> = batch.iter().map(|(op, _)| op).collect();
        let result = on_backend!(backend, pool => b::write_batch(pool, &ops).await, write);
        match result {
            Ok(outcomes) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats
                    .writes
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                metrics::histogram!("saga_store_batch_size").record(batch.len() as f64);
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if batch.len() == 1 => {
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
            Err(_) => {
                for (op, reply) in batch.drain(..) {
                    let one = [&op];
                    let r = on_backend!(backend, pool => b::write_batch(pool, &one).await, write);
                    if r.is_ok() {
                        stats.commits.fetch_add(1, Ordering::Relaxed);
                        stats.writes.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = reply.send(r.map(|mut v| v.remove(0)).map_err(|e| e.to_string()));
                }
            }
        }
    }
}

pub(crate) fn parse_status(gid: &str, s: &str) -> Result<SagaStatus, StoreError> {
    SagaStatus::parse(s).ok_or_else(|| StoreError::Corrupt {
        gid: gid.to_string(),
        what: format!("unknown saga status `{s}`"),
    })
}

pub(crate) fn parse_step_status(gid: &str, s: &str) -> Result<StepStatus, StoreError> {
    StepStatus::parse(s).ok_or_else(|| StoreError::Corrupt {
        gid: gid.to_string(),
        what: format!("unknown step status `{s}`"),
    })
}

pub(crate) fn parse_phase(gid: &str, s: &str) -> Result<Phase, StoreError> {
    Phase::parse(s).ok_or_else(|| StoreError::Corrupt {
        gid: gid.to_string(),
        what: format!("unknown phase `{s}`"),
    })
}

pub(crate) fn parse_json(gid: &str, s: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        gid: gid.to_string(),
        what: format!("invalid JSON: {e}"),
    })
}

/// Writes the backend functions of one dialect. The SQL differs per dialect (it lives in each
/// backend's `sql` module); the Rust around it does not.
macro_rules! backend {
    ($db:ident, $sql:ident) => {
        use sqlx::Row as _;

        use super::{AttemptRecord, InstanceRecord, SagaSummary};
        use crate::machine::{SagaState, SagaStatus, StepState};

        type Pool = sqlx::Pool<$db>;

        pub(crate) async fn load(
            pool: &Pool,
            gid: &str,
        ) -> Result<Option<InstanceRecord>, super::StoreError> {
            // One row per step, each carrying the instance's columns too.
            let rows = sqlx::query($sql::SELECT_INSTANCE_STEPS)
                .bind(gid)
                .fetch_all(pool)
                .await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let mut step_names = Vec::with_capacity(rows.len());
            let mut step_states = Vec::with_capacity(rows.len());
            // An instance without steps comes back as one row with NULL step columns.
            let with_step = |r: &&<$db as sqlx::Database>::Row| {
                matches!(r.try_get::<Option<i64>, _>("idx"), Ok(Some(_)))
            };
            for s in rows.iter().filter(with_step) {
                step_names.push(s.try_get::<String, _>("name")?);
                let output: Option<String> = s.try_get("output")?;
                step_states.push(StepState {
                    status: super::parse_step_status(gid, &s.try_get::<String, _>("status")?)?,
                    attempts: s.try_get::<i64, _>("attempts")? as u32,
                    compensate_attempts: s.try_get::<i64, _>("compensate_attempts")? as u32,
                    attempts_base: s.try_get::<i64, _>("attempts_base")? as u32,
                    compensate_attempts_base: s.try_get::<i64, _>("compensate_attempts_base")?
                        as u32,
                    output: output.map(|o| super::parse_json(gid, &o)).transpose()?,
                    last_error: s.try_get("last_error")?,
                    in_flight: false,
                });
            }
            let input: String = row.try_get("input")?;
            Ok(Some(InstanceRecord {
                gid: row.try_get("gid")?,
                saga: row.try_get("saga")?,
                fingerprint: row.try_get("fingerprint")?,
                input: super::parse_json(gid, &input)?,
                state: SagaState {
                    status: super::parse_status(gid, &row.try_get::<String, _>("saga_status")?)?,
                    phase: super::parse_phase(gid, &row.try_get::<String, _>("phase")?)?,
                    reason: row.try_get("reason")?,
                    cause: row.try_get("cause")?,
                    steps: step_states,
                },
                step_names,
                deadline_at: row.try_get("deadline_at")?,
                next_wake_at: row.try_get("next_wake_at")?,
                owner: row.try_get("owner")?,
                lease_until: row.try_get("lease_until")?,
                fence: row.try_get("fence")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            }))
        }

        pub(crate) async fn attempts(
            pool: &Pool,
            gid: &str,
        ) -> Result<Vec<AttemptRecord>, super::StoreError> {
            let rows = sqlx::query($sql::SELECT_ATTEMPTS)
                .bind(gid)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push(AttemptRecord {
                    gid: r.try_get("gid")?,
                    step: r.try_get("step")?,
                    op: r.try_get("op")?,
                    attempt: r.try_get("attempt")?,
                    owner: r.try_get("owner")?,
                    fence: r.try_get("fence")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    outcome: r.try_get("outcome")?,
                    error: r.try_get("error")?,
                });
            }
            Ok(out)
        }

        pub(crate) async fn list(
            pool: &Pool,
            status: Option<SagaStatus>,
            limit: u32,
        ) -> Result<Vec<SagaSummary>, super::StoreError> {
            let rows = match status {
                Some(s) => {
                    sqlx::query($sql::LIST_STATUS)
                        .bind(s.as_str())
                        .bind(i64::from(limit))
                        .fetch_all(pool)
                        .await?
                }
                None => {
                    sqlx::query($sql::LIST_ALL)
                        .bind(i64::from(limit))
                        .fetch_all(pool)
                        .await?
                }
            };
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let gid: String = r.try_get("gid")?;
                let status = super::parse_status(&gid, &r.try_get::<String, _>("status")?)?;
                out.push(SagaSummary {
                    saga: r.try_get("saga")?,
                    status,
                    reason: r.try_get("reason")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                    gid,
                });
            }
            Ok(out)
        }

        pub(crate) async fn count_by_status(
            pool: &Pool,
        ) -> Result<Vec<(SagaStatus, i64)>, super::StoreError> {
            let rows = sqlx::query($sql::COUNT_BY_STATUS).fetch_all(pool).await?;
            let mut out = Vec::new();
            for r in rows {
                let s: String = r.try_get(0)?;
                out.push((super::parse_status("", &s)?, r.try_get::<i64, _>(1)?));
            }
            Ok(out)
        }

        fn gids(rows: Vec<<$db as sqlx::Database>::Row>) -> Result<Vec<String>, super::StoreError> {
            rows.iter()
                .map(|r| r.try_get::<String, _>(0).map_err(Into::into))
                .collect()
        }

        pub(crate) async fn claim_due(
            pool: &Pool,
            owner: &str,
            lease_until: i64,
            now: i64,
            limit: u32,
            fingerprints: &str,
        ) -> Result<Vec<String>, super::StoreError> {
            let rows = sqlx::query($sql::CLAIM_DUE)
                .bind(owner)
                .bind(lease_until)
                .bind(now)
                .bind(i64::from(limit))
                .bind(fingerprints)
                .fetch_all(pool)
                .await?;
            gids(rows)
        }

        pub(crate) async fn claim_own(
            pool: &Pool,
            owner: &str,
            lease_until: i64,
            fingerprints: &str,
        ) -> Result<Vec<String>, super::StoreError> {
            let rows = sqlx::query($sql::CLAIM_OWN)
                .bind(owner)
                .bind(lease_until)
                .bind(fingerprints)
                .fetch_all(pool)
                .await?;
            gids(rows)
        }

        pub(crate) async fn claim_one(
            pool: &Pool,
            gid: &str,
            owner: &str,
            lease_until: i64,
        ) -> Result<Option<i64>, super::StoreError> {
            let row = sqlx::query($sql::CLAIM_ONE)
                .bind(owner)
                .bind(lease_until)
                .bind(gid)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(r) => Some(r.try_get::<i64, _>(0)?),
                None => None,
            })
        }

        pub(crate) async fn renew(
            pool: &Pool,
            owner: &str,
            lease_until: i64,
            gids: &str,
        ) -> Result<u64, super::StoreError> {
            Ok(sqlx::query($sql::RENEW)
                .bind(lease_until)
                .bind(owner)
                .bind(gids)
                .execute(pool)
                .await?
                .rows_affected())
        }

        pub(crate) async fn own_expired(
            pool: &Pool,
            owner: &str,
            now: i64,
        ) -> Result<Vec<String>, super::StoreError> {
            let rows = sqlx::query($sql::OWN_EXPIRED)
                .bind(owner)
                .bind(now)
                .fetch_all(pool)
                .await?;
            gids(rows)
        }

        pub(crate) async fn release_owner(
            pool: &Pool,
            owner: &str,
        ) -> Result<u64, super::StoreError> {
            Ok(sqlx::query($sql::RELEASE_OWNER)
                .bind(owner)
                .execute(pool)
                .await?
                .rows_affected())
        }

        pub(crate) async fn wake(
            pool: &Pool,
            gid: &str,
            at: i64,
        ) -> Result<u64, super::StoreError> {
            Ok(sqlx::query($sql::WAKE)
                .bind(at)
                .bind(gid)
                .execute(pool)
                .await?
                .rows_affected())
        }

        pub(crate) async fn cleanup(pool: &Pool, before: i64) -> Result<u64, super::StoreError> {
            let mut tx = pool.begin().await?;
            sqlx::query($sql::CLEANUP_STEPS)
                .bind(before)
                .execute(&mut *tx)
                .await?;
            sqlx::query($sql::CLEANUP_ATTEMPTS)
                .bind(before)
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query($sql::CLEANUP_INSTANCES)
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(n)
        }
    };
}
pub(crate) use backend;
