//! The sub-transaction barrier: the participant side of a saga step.
//!
//! A coordinator may call a step's action more than once (retries, at-least-once delivery), may
//! call its undo for an action that never ran (the action timed out before reaching the
//! participant), and may deliver an action *after* its undo (a delayed request). The barrier turns
//! all three into non-events, inside the participant's own local transaction:
//!
//! | call                              | business code | outcome                                   |
//! |-----------------------------------|---------------|-------------------------------------------|
//! | first action                      | runs          | [`BarrierOutcome::Ran`]                   |
//! | repeated action                   | skipped       | [`BarrierOutcome::Duplicate`]             |
//! | first undo after the action       | runs          | [`BarrierOutcome::Ran`]                   |
//! | repeated undo                     | skipped       | [`BarrierOutcome::Duplicate`]             |
//! | undo with no action before it     | skipped       | [`BarrierOutcome::NullCompensation`]      |
//! | action arriving after its undo    | skipped       | [`BarrierOutcome::Cancelled`]             |
//!
//! # How
//!
//! A call is identified by `(gid, branch_id, op, barrier_id)` and recorded as a row of the table
//! `saga_barrier` (created by [`migrate`], in the participant's own database). Inside the local
//! transaction, before the business code:
//!
//! 1. For `compensate`, insert-if-absent the row with op `action` and reason `compensate`. If that
//!    inserted a row, the action never ran: a null compensation. The row then blocks a late
//!    action (hang prevention).
//! 2. Insert-if-absent the row of the current op. If nothing was inserted, the call is a
//!    duplicate (or, for an action whose row says `compensate`, a late action: cancelled).
//! 3. Otherwise run the business code in the same transaction, and commit or roll back with it:
//!    a failed action leaves no barrier row, so its later undo is a null compensation.
//!
//! The table's columns: `gid`, `branch_id`, `op`, `barrier_id` (the primary key), `reason` (the
//! op whose call inserted the row) and `created_at` (milliseconds since the Unix epoch, UTC, set
//! by the library so that both dialects agree).
//!
//! Racing calls of one key serialise on the table's primary key: a PostgreSQL row lock, or
//! SQLite's single writer (the barrier opens its SQLite transactions with `BEGIN IMMEDIATE`;
//! give the pool a `busy_timeout` so writers wait for each other instead of failing).
//!
//! Several barrier calls inside one handler get the barrier ids `"01"`, `"02"`, ... in call
//! order, so a retried handler that makes the same calls in the same order meets its own rows.
//!
//! # Two forms
//!
//! - [`Barrier::call`] opens the transaction on a pool, runs the barrier and the business code,
//!   and commits (or rolls back).
//! - [`Barrier::call_in`] runs inside a transaction the caller already holds (under a savepoint
//!   that is rolled back when the business code fails); the caller commits. On SQLite, begin that
//!   transaction with `BEGIN IMMEDIATE` (`pool.begin_with("BEGIN IMMEDIATE")`), or a racing writer
//!   may fail with `SQLITE_BUSY` instead of waiting.
//!
//! # Retention
//!
//! Rows are kept until [`cleanup`] deletes those older than a given age. Hang protection and
//! duplicate detection last exactly as long as the rows do: choose an age well beyond the
//! longest time a saga can keep retrying a step.
//!
//! # Metrics
//!
//! Every call increments the counter `saga_barrier_outcomes_total{op, outcome}`, where `outcome`
//! is `ran`, `duplicate`, `null_compensation`, `cancelled`, `business_error` or `database_error`.
//!
//! # Example: the stock deduction and its undo
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # mod example {
//! use saga_core::Op;
//! use saga_core::barrier::{self, Barrier, BarrierOutcome};
//! use sqlx::SqlitePool;
//!
//! /// Deducts stock once per saga, however often the coordinator calls.
//! async fn stock_deduct(
//!     pool: &SqlitePool,
//!     gid: &str,
//!     product_id: i64,
//!     count: i64,
//! ) -> Result<BarrierOutcome<()>, Box<dyn std::error::Error>> {
//!     let mut barrier = Barrier::new(gid, "stock_deduct", Op::Action)?;
//!     let outcome = barrier
//!         .call(pool, move |conn| {
//!             Box::pin(async move {
//!                 let updated = sqlx::query(
//!                     "UPDATE stock SET stock = stock - ? WHERE product_id = ? AND stock >= ?",
//!                 )
//!                 .bind(count)
//!                 .bind(product_id)
//!                 .bind(count)
//!                 .execute(&mut *conn)
//!                 .await
//!                 .map_err(|e| e.to_string())?;
//!                 if updated.rows_affected() == 0 {
//!                     // Rolls back the barrier row too: the undo will be a null compensation.
//!                     return Err("not enough stock".to_string());
//!                 }
//!                 Ok(())
//!             })
//!         })
//!         .await?;
//!     Ok(outcome)
//! }
//!
//! /// Adds the stock back, only if the deduction happened, and at most once.
//! async fn stock_deduct_revert(
//!     pool: &SqlitePool,
//!     gid: &str,
//!     product_id: i64,
//!     count: i64,
//! ) -> Result<BarrierOutcome<()>, Box<dyn std::error::Error>> {
//!     let mut barrier = Barrier::new(gid, "stock_deduct", Op::Compensate)?;
//!     let outcome = barrier
//!         .call(pool, move |conn| {
//!             Box::pin(async move {
//!                 sqlx::query("UPDATE stock SET stock = stock + ? WHERE product_id = ?")
//!                     .bind(count)
//!                     .bind(product_id)
//!                     .execute(&mut *conn)
//!                     .await
//!                     .map(|_| ())
//!             })
//!         })
//!         .await?;
//!     Ok(outcome)
//! }
//!
//! async fn stock(pool: &SqlitePool) -> i64 {
//!     sqlx::query_scalar("SELECT stock FROM stock WHERE product_id = 1")
//!         .fetch_one(pool)
//!         .await
//!         .unwrap()
//! }
//!
//! pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // One connection: every connection to `sqlite::memory:` is a database of its own.
//!     let pool = sqlx::sqlite::SqlitePoolOptions::new()
//!         .max_connections(1)
//!         .connect("sqlite::memory:")
//!         .await?;
//!     barrier::migrate(&pool).await?;
//!     sqlx::query("CREATE TABLE stock (product_id INTEGER PRIMARY KEY, stock INTEGER NOT NULL)")
//!         .execute(&pool)
//!         .await?;
//!     sqlx::query("INSERT INTO stock VALUES (1, 100)").execute(&pool).await?;
//!
//!     // The action, delivered twice: deducted once.
//!     assert_eq!(stock_deduct(&pool, "order-1", 1, 3).await?, BarrierOutcome::Ran(()));
//!     assert_eq!(stock_deduct(&pool, "order-1", 1, 3).await?, BarrierOutcome::Duplicate);
//!     assert_eq!(stock(&pool).await, 97);
//!
//!     // Its undo, delivered twice: added back once.
//!     assert_eq!(stock_deduct_revert(&pool, "order-1", 1, 3).await?, BarrierOutcome::Ran(()));
//!     assert_eq!(stock_deduct_revert(&pool, "order-1", 1, 3).await?, BarrierOutcome::Duplicate);
//!     assert_eq!(stock(&pool).await, 100);
//!
//!     // An undo whose action never arrived changes nothing, and the late action is refused.
//!     assert_eq!(
//!         stock_deduct_revert(&pool, "order-2", 1, 5).await?,
//!         BarrierOutcome::NullCompensation
//!     );
//!     assert_eq!(stock_deduct(&pool, "order-2", 1, 5).await?, BarrierOutcome::Cancelled);
//!     assert_eq!(stock(&pool).await, 100);
//!     Ok(())
//! }
//! # }
//! # #[cfg(feature = "sqlite")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(example::main())
//! # }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::MigrateError;
use sqlx::{Connection, Database, Pool};

use crate::step::{BoxFuture, Op};

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::{cleanup_postgres, migrate_postgres};
#[cfg(feature = "sqlite")]
pub use sqlite::{cleanup_sqlite, migrate_sqlite};

/// Longest accepted gid or branch id, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// The table that records which barrier migrations have run, kept apart from the host
/// application's `_sqlx_migrations`.
pub const MIGRATIONS_TABLE: &str = "_saga_barrier_migrations";

/// The business code a barrier runs: it gets the connection of the barrier's transaction and
/// returns its result or its (business) error.
///
/// The returned future may borrow the connection but nothing else of its environment: move
/// owned values into the closure (`move |conn| Box::pin(async move { ... })`).
pub type BusinessFuture<'c, T, E> = BoxFuture<'c, Result<T, E>>;

/// What a barrier call did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum BarrierOutcome<T> {
    /// The business code ran and its transaction committed, with this result.
    Ran(T),
    /// This op of this step already ran for this saga: the business code was skipped.
    Duplicate,
    /// An undo whose action never ran: the business code was skipped, and a late action of the
    /// step is now refused ([`BarrierOutcome::Cancelled`]).
    NullCompensation,
    /// An action that arrived after its undo: the business code was skipped. The saga has
    /// already rolled this step back, so the action must not apply.
    Cancelled,
}

impl<T> BarrierOutcome<T> {
    /// The business code's result if it ran.
    pub fn ran(self) -> Option<T> {
        match self {
            BarrierOutcome::Ran(value) => Some(value),
            _ => None,
        }
    }

    /// The outcome's label in metrics and logs: `ran`, `duplicate`, `null_compensation` or
    /// `cancelled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BarrierOutcome::Ran(_) => "ran",
            BarrierOutcome::Duplicate => "duplicate",
            BarrierOutcome::NullCompensation => "null_compensation",
            BarrierOutcome::Cancelled => "cancelled",
        }
    }
}

/// Why a barrier call failed. Nothing of the call was committed.
#[derive(Debug, thiserror::Error)]
pub enum BarrierError<E> {
    /// The business code returned this error; its transaction, barrier rows included, was
    /// rolled back.
    #[error("business code failed: {0}")]
    Business(E),
    /// The database failed (connection, lock timeout, commit); the transaction was rolled back.
    /// Safe to retry.
    #[error("barrier database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The barrier's identity is malformed; no database work was done.
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
}

/// A malformed barrier identity, found before any database work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    /// The gid is empty.
    #[error("the gid is empty")]
    EmptyGid,
    /// The gid is longer than [`MAX_KEY_LEN`] bytes.
    #[error("the gid is {0} bytes long; at most {MAX_KEY_LEN} are allowed")]
    GidTooLong(usize),
    /// The gid contains a character outside `[A-Za-z0-9_.:-]`.
    #[error("the gid contains {0:?}; only letters, digits and `_.:-` are allowed")]
    GidCharacter(char),
    /// The branch id (step name) is empty.
    #[error("the branch id is empty")]
    EmptyBranch,
    /// The branch id is longer than [`MAX_KEY_LEN`] bytes.
    #[error("the branch id is {0} bytes long; at most {MAX_KEY_LEN} are allowed")]
    BranchTooLong(usize),
    /// The branch id contains a control character.
    #[error("the branch id contains the control character {0:?}")]
    BranchCharacter(char),
    /// The op is neither `action` nor `compensate`.
    #[error("unknown op {0:?}; expected `action` or `compensate`")]
    UnknownOp(String),
    /// The first barrier number is zero.
    #[error("barrier numbers start at 1")]
    ZeroBarrierNumber,
}

/// Checks a gid: 1 to [`MAX_KEY_LEN`] bytes of `[A-Za-z0-9_.:-]`.
pub fn validate_gid(gid: &str) -> Result<(), InvalidKey> {
    if gid.is_empty() {
        return Err(InvalidKey::EmptyGid);
    }
    if gid.len() > MAX_KEY_LEN {
        return Err(InvalidKey::GidTooLong(gid.len()));
    }
    match gid
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        Some(c) => Err(InvalidKey::GidCharacter(c)),
        None => Ok(()),
    }
}

/// Checks a branch id (a step's persisted name): 1 to [`MAX_KEY_LEN`] bytes, no control
/// characters.
pub fn validate_branch(branch: &str) -> Result<(), InvalidKey> {
    if branch.is_empty() {
        return Err(InvalidKey::EmptyBranch);
    }
    if branch.len() > MAX_KEY_LEN {
        return Err(InvalidKey::BranchTooLong(branch.len()));
    }
    match branch.chars().find(|c| c.is_control()) {
        Some(c) => Err(InvalidKey::BranchCharacter(c)),
        None => Ok(()),
    }
}

/// Parses an op name (`action` or `compensate`).
pub fn parse_op(op: &str) -> Result<Op, InvalidKey> {
    Op::parse(op).ok_or_else(|| InvalidKey::UnknownOp(op.to_string()))
}

/// The barrier of one call of a step's action or undo: its `(gid, branch_id, op)` and the number
/// of the next barrier call inside the handler.
///
/// Build one per handler invocation; each [`call`](Barrier::call) or
/// [`call_in`](Barrier::call_in) takes the next barrier id (`"01"`, `"02"`, ...).
// Not `Clone`: a copy would hand out the same barrier ids twice.
#[derive(Debug)]
pub struct Barrier {
    gid: String,
    branch: String,
    op: Op,
    next: u32,
}

impl Barrier {
    /// A barrier for `op` of step `branch` of saga instance `gid`, validated (see
    /// [`validate_gid`], [`validate_branch`]).
    pub fn new(
        gid: impl Into<String>,
        branch: impl Into<String>,
        op: Op,
    ) -> Result<Self, InvalidKey> {
        let gid = gid.into();
        let branch = branch.into();
        validate_gid(&gid)?;
        validate_branch(&branch)?;
        Ok(Barrier {
            gid,
            branch,
            op,
            next: 1,
        })
    }

    /// A barrier from parts the caller has already validated.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn validated(gid: String, branch: String, op: Op, first: u32) -> Self {
        Barrier {
            gid,
            branch,
            op,
            next: first.max(1),
        }
    }

    /// Like [`Barrier::new`] with the op given by name, as it travels over the wire.
    pub fn parse(gid: &str, branch: &str, op: &str) -> Result<Self, InvalidKey> {
        let op = parse_op(op)?;
        Barrier::new(gid, branch, op)
    }

    /// Starts numbering this handler's barrier calls at `first` instead of 1 (for a coordinator
    /// that sends the number in the `Saga-Barrier` header).
    pub fn starting_at(mut self, first: u32) -> Result<Self, InvalidKey> {
        if first == 0 {
            return Err(InvalidKey::ZeroBarrierNumber);
        }
        self.next = first;
        Ok(self)
    }

    /// The saga instance's gid.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// The branch id: the step's persisted name.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Action or compensation.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The barrier id the next call will use (`"01"`, `"02"`, ...).
    pub fn next_barrier_id(&self) -> String {
        format!("{:02}", self.next)
    }

    fn take_barrier_id(&mut self) -> String {
        let id = self.next_barrier_id();
        self.next = self.next.saturating_add(1);
        id
    }

    /// Opens a transaction on `pool` (`BEGIN IMMEDIATE` on SQLite), passes the barrier, runs
    /// `business` in the same transaction unless the barrier absorbs the call, and commits.
    ///
    /// When `business` fails, the transaction is rolled back (barrier rows included) and its
    /// error is returned as [`BarrierError::Business`].
    pub async fn call<DB, T, E, F>(
        &mut self,
        pool: &Pool<DB>,
        business: F,
    ) -> Result<BarrierOutcome<T>, BarrierError<E>>
    where
        DB: BarrierDatabase,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, T, E>,
    {
        self.call_with_hook(pool, business, |_| {}).await
    }

    /// Like [`Barrier::call`], and runs `before_commit` inside the transaction once the barrier
    /// has decided and any business code has run, just before the commit, whatever the
    /// outcome (ran, duplicate, null compensation, cancelled). Not called when the business
    /// code fails. Meant for instrumentation and fault injection ("die before the commit").
    pub async fn call_with_hook<DB, T, E, F, H>(
        &mut self,
        pool: &Pool<DB>,
        business: F,
        before_commit: H,
    ) -> Result<BarrierOutcome<T>, BarrierError<E>>
    where
        DB: BarrierDatabase,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, T, E>,
        H: FnOnce(&BarrierOutcome<T>),
    {
        let key = self.key();
        let result = async {
            let tx = pool.begin_with(DB::BEGIN).await?;
            run_in_transaction::<DB, T, E, F>(tx, &key, business, before_commit).await
        }
        .await;
        record(&key, &result);
        result
    }

    /// Passes the barrier and runs `business` inside a transaction the caller already holds on
    /// `conn` (pass `&mut *tx`). The barrier rows commit or roll back with the caller's
    /// transaction; the caller commits.
    ///
    /// The barrier works under a savepoint: when `business` fails, its writes and the barrier
    /// rows are rolled back to it, and the caller's transaction stays usable. On SQLite, open
    /// the caller's transaction with `BEGIN IMMEDIATE` so that racing writers wait for each
    /// other.
    pub async fn call_in<DB, T, E, F>(
        &mut self,
        conn: &mut DB::Connection,
        business: F,
    ) -> Result<BarrierOutcome<T>, BarrierError<E>>
    where
        DB: BarrierDatabase,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, T, E>,
    {
        let key = self.key();
        let result = async {
            let savepoint = conn.begin().await?;
            run_in_transaction::<DB, T, E, F>(savepoint, &key, business, |_| {}).await
        }
        .await;
        record(&key, &result);
        result
    }

    fn key(&mut self) -> BarrierKey {
        BarrierKey {
            gid: self.gid.clone(),
            branch: self.branch.clone(),
            op: self.op,
            barrier_id: self.take_barrier_id(),
        }
    }
}

/// The identity of one barrier call.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct BarrierKey {
    pub gid: String,
    pub branch: String,
    pub op: Op,
    pub barrier_id: String,
}

impl fmt::Display for BarrierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.gid, self.branch, self.op, self.barrier_id
        )
    }
}

/// A database the barrier supports: `sqlx::Sqlite` (feature `sqlite`) and `sqlx::Postgres`
/// (feature `postgres`). Supplies the dialect's SQL; the barrier algorithm is written once over
/// it.
pub trait BarrierDatabase: Database + sealed::Sealed {
    /// The statement that opens a barrier transaction (`BEGIN IMMEDIATE` on SQLite, so that
    /// racing writers queue up on the write lock instead of failing on upgrade).
    #[doc(hidden)]
    const BEGIN: &'static str;

    /// Inserts the row `(key.gid, key.branch, op, key.barrier_id)` unless it exists; `true` if
    /// it inserted.
    #[doc(hidden)]
    fn insert_if_absent<'c>(
        conn: &'c mut Self::Connection,
        key: &'c BarrierKey,
        op: Op,
        reason: Op,
        created_at_ms: i64,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>>;

    /// The reason of the `action` row of `key`, if it exists.
    #[doc(hidden)]
    fn action_reason<'c>(
        conn: &'c mut Self::Connection,
        key: &'c BarrierKey,
    ) -> BoxFuture<'c, Result<Option<String>, sqlx::Error>>;

    /// Deletes the rows created before `cutoff_ms`; returns how many.
    #[doc(hidden)]
    fn delete_created_before(
        pool: &Pool<Self>,
        cutoff_ms: i64,
    ) -> BoxFuture<'_, Result<u64, sqlx::Error>>;

    /// Runs the embedded barrier migrations of this dialect.
    #[doc(hidden)]
    fn run_migrations(pool: &Pool<Self>) -> BoxFuture<'_, Result<(), MigrateError>>;
}

mod sealed {
    pub trait Sealed {}
}

/// Creates (or upgrades) the `saga_barrier` table in the participant's database. Call it once on
/// start, before serving step calls. Idempotent; on PostgreSQL, several processes may run it at
/// the same moment (the migrator holds an advisory lock).
///
/// Applied migrations are recorded in [`MIGRATIONS_TABLE`], never in the host application's
/// `_sqlx_migrations`. Both tables are created unqualified, in the first schema of the pool's
/// `search_path` on PostgreSQL: a service that lives in its own schema gets its own barrier.
pub async fn migrate<DB: BarrierDatabase>(pool: &Pool<DB>) -> Result<(), MigrateError> {
    DB::run_migrations(pool).await
}

/// Deletes barrier rows older than `older_than` and returns how many were deleted.
///
/// Duplicate detection and hang protection for a saga last only as long as its rows: a call
/// that arrives after its rows were cleaned up runs as if it were the first.
pub async fn cleanup<DB: BarrierDatabase>(
    pool: &Pool<DB>,
    older_than: Duration,
) -> Result<u64, sqlx::Error> {
    let age_ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
    DB::delete_created_before(pool, now_ms().saturating_sub(age_ms)).await
}

async fn run_in_transaction<DB, T, E, F>(
    mut tx: sqlx::Transaction<'_, DB>,
    key: &BarrierKey,
    business: F,
    before_commit: impl FnOnce(&BarrierOutcome<T>),
) -> Result<BarrierOutcome<T>, BarrierError<E>>
where
    DB: BarrierDatabase,
    F: for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, T, E>,
{
    let now = now_ms();

    let mut null_compensation = false;
    if key.op == Op::Compensate {
        null_compensation =
            DB::insert_if_absent(&mut tx, key, Op::Action, Op::Compensate, now).await?;
    }
    // Inserted even for a null compensation, so that a repeated undo is a duplicate rather than
    // an undo of an action that never ran.
    let current_inserted = DB::insert_if_absent(&mut tx, key, key.op, key.op, now).await?;

    let outcome = if null_compensation {
        BarrierOutcome::NullCompensation
    } else if !current_inserted {
        let late_action = key.op == Op::Action
            && DB::action_reason(&mut tx, key).await?.as_deref() == Some(Op::Compensate.as_str());
        if late_action {
            BarrierOutcome::Cancelled
        } else {
            BarrierOutcome::Duplicate
        }
    } else {
        match business(&mut tx).await {
            Ok(value) => BarrierOutcome::Ran(value),
            Err(e) => {
                // Dropping the transaction would roll back too, but only lazily, on the
                // connection's next use; roll back now so that the row locks are released.
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(barrier = %key, error = %rollback, "rollback after a business error failed");
                }
                return Err(BarrierError::Business(e));
            }
        }
    };
    before_commit(&outcome);
    tx.commit().await?;
    Ok(outcome)
}

fn record<T, E>(key: &BarrierKey, result: &Result<BarrierOutcome<T>, BarrierError<E>>) {
    let outcome = match result {
        Ok(outcome) => outcome.as_str(),
        Err(BarrierError::Business(_)) => "business_error",
        Err(BarrierError::Database(e)) => {
            tracing::warn!(barrier = %key, error = %e, "barrier database error");
            "database_error"
        }
        Err(BarrierError::InvalidKey(_)) => "invalid_key",
    };
    tracing::debug!(barrier = %key, outcome, "barrier call");
    metrics::counter!("saga_barrier_outcomes_total", "op" => key.op.as_str(), "outcome" => outcome)
        .increment(1);
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gid_must_be_short_non_empty_and_plain() {
        assert_eq!(validate_gid(""), Err(InvalidKey::EmptyGid));
        assert_eq!(
            validate_gid(&"a".repeat(129)),
            Err(InvalidKey::GidTooLong(129))
        );
        assert_eq!(validate_gid("order 1"), Err(InvalidKey::GidCharacter(' ')));
        assert_eq!(validate_gid("order/1"), Err(InvalidKey::GidCharacter('/')));
        assert!(validate_gid(&"a".repeat(128)).is_ok());
        assert!(validate_gid("order-A_1.x:2").is_ok());
    }

    #[test]
    fn branch_must_be_short_non_empty_without_control_characters() {
        assert_eq!(validate_branch(""), Err(InvalidKey::EmptyBranch));
        assert_eq!(
            validate_branch(&"b".repeat(129)),
            Err(InvalidKey::BranchTooLong(129))
        );
        assert_eq!(
            validate_branch("a\nb"),
            Err(InvalidKey::BranchCharacter('\n'))
        );
        assert!(validate_branch("stock_deduct").is_ok());
    }

    #[test]
    fn unknown_op_is_rejected() {
        assert_eq!(
            Barrier::parse("g", "s", "undo").unwrap_err(),
            InvalidKey::UnknownOp("undo".into())
        );
        assert_eq!(
            Barrier::parse("g", "s", "compensate").unwrap().op(),
            Op::Compensate
        );
    }

    #[test]
    fn barrier_ids_count_up_from_01_per_handler() {
        let mut barrier = Barrier::new("g", "s", Op::Action).unwrap();
        assert_eq!(barrier.key().barrier_id, "01");
        assert_eq!(barrier.key().barrier_id, "02");
        let barrier = Barrier::new("g", "s", Op::Action)
            .unwrap()
            .starting_at(7)
            .unwrap();
        assert_eq!(barrier.next_barrier_id(), "07");
        assert_eq!(
            Barrier::new("g", "s", Op::Action)
                .unwrap()
                .starting_at(0)
                .unwrap_err(),
            InvalidKey::ZeroBarrierNumber
        );
    }
}
