//! The sub-transaction barrier: the participant side of a saga step.
//!
//! A coordinator may call a step's action more than once (retries, at-least-once delivery), may
//! call its undo for an action that never ran (the action timed out before reaching the
//! participant), and may deliver an action *after* its undo (a delayed request). The barrier turns
//! all three into non-events, inside the participant's own local transaction, and answers a
//! repeated action with the reply of its first call:
//!
//! | call                                   | business code          | outcome                                   |
//! |----------------------------------------|------------------------|-------------------------------------------|
//! | first action                           | runs; its reply stored | [`ActionOutcome::Ran`]`(reply)`           |
//! | repeated action                        | skipped                | [`ActionOutcome::Duplicate`]`(first reply)` |
//! | action arriving after its compensation | skipped                | [`ActionOutcome::Cancelled`]              |
//! | first compensation after the action    | runs                   | [`CompensationOutcome::Ran`]`(value)`     |
//! | repeated compensation                  | skipped                | [`CompensationOutcome::Duplicate`]        |
//! | compensation with no action before it  | skipped                | [`CompensationOutcome::NullCompensation`] |
//!
//! Actions go through [`Barrier::action`] (or [`Barrier::action_in`]), compensations through
//! [`Barrier::compensate`] (or [`Barrier::compensate_in`]).
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
//!    duplicate (or, for an action whose row says `compensate`, a late action: cancelled). A
//!    duplicate action reads its row's `reason` and `reply` and returns the reply, decoded as the
//!    action's output type.
//! 3. Otherwise run the business code in the same transaction; after an action's business code
//!    succeeds, store its reply on its row. Commit, or roll back with the business code: a failed
//!    action leaves no barrier row, so its later undo is a null compensation.
//!
//! The table's columns: `gid`, `branch_id`, `op`, `barrier_id` (the primary key), `reason` (the
//! op whose call inserted the row), `created_at` (milliseconds since the Unix epoch, UTC, set by
//! the library so that both dialects agree) and `reply` (on an `action` row: the action's reply as
//! JSON text). A NULL `reply` reads as JSON `null`: the barrier skips the write for a reply that
//! encodes as `null` (a `()` output, a `None`), and rows written before the column existed have
//! none.
//!
//! Racing calls of one key serialise on the table's primary key: a PostgreSQL row lock, or
//! SQLite's single writer (the barrier opens its SQLite transactions with `BEGIN IMMEDIATE`;
//! give the pool a `busy_timeout` so writers wait for each other instead of failing). A call that
//! waited for the first one and finds its row is a duplicate and gets its reply.
//!
//! Several barrier calls inside one handler get the barrier ids `"01"`, `"02"`, ... in call
//! order, so a retried handler that makes the same calls in the same order meets its own rows.
//!
//! # Two forms
//!
//! - [`Barrier::action`] and [`Barrier::compensate`] open the transaction on a pool, run the
//!   barrier and the business code, and commit (or roll back).
//! - [`Barrier::action_in`] and [`Barrier::compensate_in`] run inside a transaction the caller
//!   already holds (under a savepoint that is rolled back when the call fails); the caller
//!   commits. On SQLite, begin that transaction with `BEGIN IMMEDIATE`
//!   (`pool.begin_with("BEGIN IMMEDIATE")`), or a racing writer may fail with `SQLITE_BUSY`
//!   instead of waiting.
//!
//! [`Barrier::before_commit`] sets a hook that the next call runs just before it commits.
//!
//! An in-process step converts the outcome and the error with `?` and `.into()`: an
//! [`ActionOutcome`] into `Result<T, StepError>` ([`ActionOutcome::Cancelled`] is a business
//! failure with [`CANCELLED_REASON`]), a [`CompensationOutcome`] into `Result<(), Retry>`, and a
//! [`BarrierError`] into a [`StepError`] or a [`Retry`]:
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # mod example {
//! use saga_core::barrier::Barrier;
//! use saga_core::{Retry, StepContext, StepError};
//! use sqlx::SqlitePool;
//!
//! /// Deducts the stock and answers with what is left; a repeated call answers the same.
//! async fn stock_deduct(pool: &SqlitePool, ctx: &StepContext, count: i64) -> Result<i64, StepError> {
//!     Barrier::for_step(ctx)
//!         .action(pool, move |conn| {
//!             Box::pin(async move {
//!                 let left: Option<i64> = sqlx::query_scalar(
//!                     "UPDATE stock SET stock = stock - ?1 WHERE product_id = 1 AND stock >= ?1 \
//!                      RETURNING stock",
//!                 )
//!                 .bind(count)
//!                 .fetch_optional(&mut *conn)
//!                 .await?;
//!                 left.ok_or_else(|| StepError::failure("not enough stock"))
//!             })
//!         })
//!         .await?
//!         .into()
//! }
//!
//! /// Puts the stock back, once, and only if the deduction happened.
//! async fn stock_deduct_undo(pool: &SqlitePool, ctx: &StepContext, count: i64) -> Result<(), Retry> {
//!     Barrier::for_step(ctx)
//!         .compensate(pool, move |conn| {
//!             Box::pin(async move {
//!                 sqlx::query("UPDATE stock SET stock = stock + ? WHERE product_id = 1")
//!                     .bind(count)
//!                     .execute(&mut *conn)
//!                     .await?;
//!                 Ok::<_, Retry>(())
//!             })
//!         })
//!         .await?
//!         .into()
//! }
//! # }
//! ```
//!
//! # Retention
//!
//! Rows, replies included, are kept until [`cleanup`] deletes those older than a given age. Hang
//! protection, duplicate detection and the replayed replies last exactly as long as the rows do:
//! choose an age well beyond the longest time a saga can keep retrying a step. A reply is as
//! large as the action's output; keep outputs small.
//!
//! # Metrics
//!
//! Every call increments the counter `saga_barrier_outcomes_total{op, outcome}`, where `outcome`
//! is `ran`, `duplicate`, `null_compensation`, `cancelled`, `business_error`, `database_error`,
//! `reply_error` or `invalid_key`.
//!
//! # Tracing
//!
//! Every call is a `saga.barrier` span (level debug) with `gid`, `step` (the branch id), `op`,
//! `barrier` (the barrier id) and `outcome` (the label above). A barrier made by
//! [`Barrier::for_step`] or by `http::SagaHeaders` (feature `http`) continues the step
//! call's trace ([`Barrier::continue_trace`]; see [`crate::trace`]).
//!
//! # Example: the stock deduction and its undo
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # mod example {
//! use saga_core::Op;
//! use saga_core::barrier::{self, ActionOutcome, Barrier, CompensationOutcome};
//! use sqlx::SqlitePool;
//!
//! /// Deducts stock once per saga, however often the coordinator calls, and answers with the
//! /// stock left after the deduction.
//! async fn stock_deduct(
//!     pool: &SqlitePool,
//!     gid: &str,
//!     product_id: i64,
//!     count: i64,
//! ) -> Result<ActionOutcome<i64>, Box<dyn std::error::Error>> {
//!     let mut barrier = Barrier::new(gid, "stock_deduct", Op::Action)?;
//!     let outcome = barrier
//!         .action(pool, move |conn| {
//!             Box::pin(async move {
//!                 let left: Option<i64> = sqlx::query_scalar(
//!                     "UPDATE stock SET stock = stock - ?1 WHERE product_id = ?2 AND stock >= ?1 \
//!                      RETURNING stock",
//!                 )
//!                 .bind(count)
//!                 .bind(product_id)
//!                 .fetch_optional(&mut *conn)
//!                 .await
//!                 .map_err(|e| e.to_string())?;
//!                 // An error rolls back the barrier row too: the undo will be a null
//!                 // compensation.
//!                 left.ok_or_else(|| "not enough stock".to_string())
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
//! ) -> Result<CompensationOutcome<()>, Box<dyn std::error::Error>> {
//!     let mut barrier = Barrier::new(gid, "stock_deduct", Op::Compensate)?;
//!     let outcome = barrier
//!         .compensate(pool, move |conn| {
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
//!     // The action, delivered twice: deducted once, and the repeat gets the first reply.
//!     assert_eq!(stock_deduct(&pool, "order-1", 1, 3).await?, ActionOutcome::Ran(97));
//!     assert_eq!(stock_deduct(&pool, "order-1", 1, 3).await?, ActionOutcome::Duplicate(97));
//!     assert_eq!(stock_deduct(&pool, "order-3", 1, 7).await?, ActionOutcome::Ran(90));
//!     assert_eq!(stock_deduct(&pool, "order-1", 1, 3).await?, ActionOutcome::Duplicate(97));
//!     assert_eq!(stock(&pool).await, 90);
//!
//!     // Its undo, delivered twice: added back once.
//!     assert_eq!(stock_deduct_revert(&pool, "order-1", 1, 3).await?, CompensationOutcome::Ran(()));
//!     assert_eq!(stock_deduct_revert(&pool, "order-1", 1, 3).await?, CompensationOutcome::Duplicate);
//!     assert_eq!(stock(&pool).await, 93);
//!
//!     // An undo whose action never arrived changes nothing, and the late action is refused.
//!     assert_eq!(
//!         stock_deduct_revert(&pool, "order-2", 1, 5).await?,
//!         CompensationOutcome::NullCompensation
//!     );
//!     assert_eq!(stock_deduct(&pool, "order-2", 1, 5).await?, ActionOutcome::Cancelled);
//!     assert_eq!(stock(&pool).await, 93);
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
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::MigrateError;
use sqlx::{Connection, Database, Pool, Transaction};
use tracing::Instrument;

use crate::step::{BoxFuture, Op, Retry, StepContext, StepError};
use crate::trace::{self, TraceParent};

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

/// The reason a participant gives for an action that arrived after its undo
/// ([`ActionOutcome::Cancelled`]).
pub const CANCELLED_REASON: &str = "compensated before the action ran";

/// The business code a barrier runs: it gets the connection of the barrier's transaction and
/// returns its result or its (business) error.
///
/// The returned future may borrow the connection but nothing else of its environment: move
/// owned values into the closure (`move |conn| Box::pin(async move { ... })`).
pub type BusinessFuture<'c, T, E> = BoxFuture<'c, Result<T, E>>;

/// What a barrier call of an action did ([`Barrier::action`], [`Barrier::action_in`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum ActionOutcome<T> {
    /// The business code ran and its transaction committed with this reply, which is stored
    /// on the action's barrier row.
    Ran(T),
    /// The action already ran for this saga: the business code was skipped, and this is the
    /// first call's reply, read from its barrier row.
    Duplicate(T),
    /// The action arrived after its undo: the business code was skipped. The saga has already
    /// rolled this step back, so the action must not apply; answer it as a business failure
    /// with [`CANCELLED_REASON`].
    Cancelled,
}

impl<T> ActionOutcome<T> {
    /// The outcome's label in metrics and logs: `ran`, `duplicate` or `cancelled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ActionOutcome::Ran(_) => "ran",
            ActionOutcome::Duplicate(_) => "duplicate",
            ActionOutcome::Cancelled => "cancelled",
        }
    }
}

/// The step's output: the reply of a run or of a duplicate; a cancelled action is a business
/// failure with [`CANCELLED_REASON`].
impl<T> From<ActionOutcome<T>> for Result<T, StepError> {
    fn from(outcome: ActionOutcome<T>) -> Self {
        match outcome {
            ActionOutcome::Ran(reply) | ActionOutcome::Duplicate(reply) => Ok(reply),
            ActionOutcome::Cancelled => Err(StepError::failure(CANCELLED_REASON)),
        }
    }
}

/// What a barrier call of an undo did ([`Barrier::compensate`], [`Barrier::compensate_in`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum CompensationOutcome<T> {
    /// The business code ran and its transaction committed, with this result.
    Ran(T),
    /// The undo already ran (or was a null compensation) for this saga: the business code was
    /// skipped.
    Duplicate,
    /// The action never ran: the business code was skipped, and a late action of the step is
    /// now refused ([`ActionOutcome::Cancelled`]).
    NullCompensation,
}

impl<T> CompensationOutcome<T> {
    /// The outcome's label in metrics and logs: `ran`, `duplicate` or `null_compensation`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CompensationOutcome::Ran(_) => "ran",
            CompensationOutcome::Duplicate => "duplicate",
            CompensationOutcome::NullCompensation => "null_compensation",
        }
    }
}

/// Every outcome of an undo is a success: the step is compensated.
impl<T> From<CompensationOutcome<T>> for Result<(), Retry> {
    fn from(_: CompensationOutcome<T>) -> Self {
        Ok(())
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
    /// The stored reply does not decode as this action's output type (the reply of a
    /// duplicate), or the business code's output does not encode as JSON (the reply of a first
    /// call); the transaction was rolled back.
    #[error("barrier reply error: {0}")]
    Reply(serde_json::Error),
    /// The barrier's identity is malformed, or the call is for the other op; no database work
    /// was done.
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
}

/// The error of an in-process step: the business error as it is; a database error, a reply
/// that does not decode and a malformed key are retries (nothing was committed).
impl<E: Into<StepError>> From<BarrierError<E>> for StepError {
    fn from(e: BarrierError<E>) -> Self {
        match e {
            BarrierError::Business(e) => e.into(),
            BarrierError::Database(e) => e.into(),
            BarrierError::Reply(e) => StepError::Retry(format!("barrier reply error: {e}")),
            BarrierError::InvalidKey(e) => StepError::Retry(e.to_string()),
        }
    }
}

/// The error of an in-process undo: as for [`StepError`], and a business failure is a retry
/// too, with its reason (an undo cannot fail).
impl<E: Into<StepError>> From<BarrierError<E>> for Retry {
    fn from(e: BarrierError<E>) -> Self {
        match StepError::from(e) {
            StepError::Failure(reason) | StepError::Retry(reason) => Retry(reason),
        }
    }
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
    /// The barrier is for one op and was called for the other: [`Barrier::action`] on a
    /// barrier of op `compensate`, or [`Barrier::compensate`] on one of op `action`.
    #[error("a barrier of op `{got}` was called as `{expected}`")]
    WrongOp {
        /// The op of the method called.
        expected: Op,
        /// The barrier's op.
        got: Op,
    },
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

/// A hook run inside a barrier call's transaction just before its commit, with the outcome's
/// label.
type Hook = Box<dyn FnOnce(&'static str) + Send>;

/// The barrier of one call of a step's action or undo: its `(gid, branch_id, op)` and the number
/// of the next barrier call inside the handler.
///
/// Build one per handler invocation; each call ([`action`](Barrier::action),
/// [`compensate`](Barrier::compensate), [`action_in`](Barrier::action_in),
/// [`compensate_in`](Barrier::compensate_in)) takes the next barrier id (`"01"`, `"02"`, ...).
// Not `Clone`: a copy would hand out the same barrier ids twice.
pub struct Barrier {
    gid: String,
    branch: String,
    op: Op,
    next: u32,
    before_commit: Option<Hook>,
    traceparent: Option<TraceParent>,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("gid", &self.gid)
            .field("branch", &self.branch)
            .field("op", &self.op)
            .field("next", &self.next)
            .field("before_commit", &self.before_commit.is_some())
            .field("traceparent", &self.traceparent)
            .finish()
    }
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
        Ok(Barrier::validated(gid, branch, op, 1))
    }

    /// The barrier of an in-process step call: the gid, step name and op of `ctx`, numbered
    /// from 1, continuing the call's trace ([`StepContext::traceparent`]). Infallible: the
    /// engine accepts only valid gids, and step names are checked when the saga is defined.
    pub fn for_step(ctx: &StepContext) -> Self {
        let mut barrier = Barrier::validated(ctx.gid.clone(), ctx.step.to_string(), ctx.op, 1);
        barrier.traceparent = ctx.traceparent;
        barrier
    }

    /// A barrier from parts the caller has already validated.
    pub(crate) fn validated(gid: String, branch: String, op: Op, first: u32) -> Self {
        Barrier {
            gid,
            branch,
            op,
            next: first.max(1),
            before_commit: None,
            traceparent: None,
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

    /// Sets a hook for the next call (whatever its result; later calls run none): it runs
    /// inside the call's transaction once the barrier has decided and any business code has
    /// run, just before the commit (for [`action_in`](Barrier::action_in) and
    /// [`compensate_in`](Barrier::compensate_in): before the savepoint is released), whatever
    /// the outcome, and gets the outcome's label (`ran`, `duplicate`, `null_compensation`,
    /// `cancelled`). It does not run when the call fails. Meant for instrumentation and fault
    /// injection ("die before the commit").
    pub fn before_commit(&mut self, hook: impl FnOnce(&'static str) + Send + 'static) -> &mut Self {
        self.before_commit = Some(Box::new(hook));
        self
    }

    /// Makes the span of each call (`saga.barrier`, see [`crate::trace`]) continue `parent`,
    /// the trace context of the step call (its `traceparent` header), unless the current span
    /// is in that trace already. `None` leaves the span to its contextual parent.
    pub fn continue_trace(&mut self, parent: Option<TraceParent>) -> &mut Self {
        self.traceparent = parent;
        self
    }

    /// The trace context the calls' spans continue, if any.
    pub fn traceparent(&self) -> Option<TraceParent> {
        self.traceparent
    }

    /// Opens a transaction on `pool` (`BEGIN IMMEDIATE` on SQLite), passes the barrier, runs
    /// the action's `business` code in the same transaction unless the barrier absorbs the
    /// call, stores its reply, and commits.
    ///
    /// A duplicate gets the first call's reply, decoded as `T`; a reply that does not decode is
    /// [`BarrierError::Reply`]. When `business` fails, the transaction is rolled back (barrier
    /// rows included) and its error is returned as [`BarrierError::Business`]. A barrier of op
    /// `compensate` is refused with [`InvalidKey::WrongOp`] before any database work.
    pub async fn action<DB, T, E, F>(
        &mut self,
        pool: &Pool<DB>,
        business: F,
    ) -> Result<ActionOutcome<T>, BarrierError<E>>
    where
        DB: BarrierDatabase,
        T: Serialize + DeserializeOwned,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, T, E>,
    {
        self.run(Begin::Pool(pool), business).await
    }

    /// Opens a transaction on `pool` (`BEGIN IMMEDIATE` on SQLite), passes the barrier, runs
    /// the undo's `business` code in the same transaction unless the barrier absorbs the call,
    /// and commits.
    ///
    /// When `business` fails, the transaction is rolled back (barrier rows included) and its
    /// error is returned as [`BarrierError::Business`]. A barrier of op `action` is refused with
    /// [`InvalidKey::WrongOp`] before any database work.
    pub async fn compensate<DB, T, E, F>(
        &mut self,
        pool: &Pool<DB>,
        business: F,
    ) -> Result<CompensationOutcome<T>, BarrierError<E>>
    where
        DB: BarrierDatabase,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, T, E>,
    {
        self.run(Begin::Pool(pool), business).await
    }

    /// Like [`Barrier::action`], inside a transaction the caller already holds on `conn` (pass
    /// `&mut *tx`). The barrier rows and the reply commit or roll back with the caller's
    /// transaction; the caller commits.
    ///
    /// The barrier works under a savepoint: when the call fails, its writes and the barrier
    /// rows are rolled back to it, and the caller's transaction stays usable. On SQLite, open
    /// the caller's transaction with `BEGIN IMMEDIATE` so that racing writers wait for each
    /// other.
    pub async fn action_in<DB, T, E, F>(
        &mut self,
        conn: &mut DB::Connection,
        business: F,
    ) -> Result<ActionOutcome<T>, BarrierError<E>>
    where
        DB: BarrierDatabase,
        T: Serialize + DeserializeOwned,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, T, E>,
    {
        self.run(Begin::<DB>::Savepoint(conn), business).await
    }

    /// Like [`Barrier::compensate`], inside a transaction the caller already holds on `conn`,
    /// under a savepoint, as [`Barrier::action_in`] does.
    pub async fn compensate_in<DB, T, E, F>(
        &mut self,
        conn: &mut DB::Connection,
        business: F,
    ) -> Result<CompensationOutcome<T>, BarrierError<E>>
    where
        DB: BarrierDatabase,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, T, E>,
    {
        self.run(Begin::<DB>::Savepoint(conn), business).await
    }

    /// Every barrier call: checks the op, takes the barrier id and the hook, runs the barrier
    /// in a transaction of its own, records the result.
    async fn run<DB, O, E, F>(
        &mut self,
        begin: Begin<'_, DB>,
        business: F,
    ) -> Result<O, BarrierError<E>>
    where
        DB: BarrierDatabase,
        O: Outcome,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, O::Value, E>,
    {
        let before_commit = self.before_commit.take();
        if self.op != O::OP {
            let key = self.key_of(self.next_barrier_id());
            let result = Err(BarrierError::InvalidKey(InvalidKey::WrongOp {
                expected: O::OP,
                got: self.op,
            }));
            record(&key, &result);
            return result;
        }
        let barrier_id = self.take_barrier_id();
        let key = self.key_of(barrier_id);
        let span = tracing::debug_span!(
            "saga.barrier",
            gid = %key.gid,
            step = %key.branch,
            op = key.op.as_str(),
            barrier = %key.barrier_id,
            outcome = tracing::field::Empty,
            otel.kind = "server",
        );
        if let Some(parent) = &self.traceparent {
            trace::continue_trace(&span, parent);
        }
        let result = async {
            match begin {
                Begin::Pool(pool) => {
                    let mut conn = pool.acquire().await?;
                    let tx = conn
                        .begin_with(sqlx::SqlStr::from_static(DB::BEGIN))
                        .await?;
                    let result =
                        run_in_transaction::<DB, O, E, F>(tx, &key, business, before_commit).await;
                    // A commit or rollback that failed (a full disk, a lost connection) can
                    // leave the connection counting itself inside a transaction, and every later
                    // BEGIN on it would fail: such a connection is closed, not pooled again.
                    if conn.is_in_transaction() {
                        conn.close_on_drop();
                    }
                    result
                }
                Begin::Savepoint(conn) => {
                    let tx = conn.begin().await?;
                    run_in_transaction::<DB, O, E, F>(tx, &key, business, before_commit).await
                }
            }
        }
        .instrument(span.clone())
        .await;
        let outcome = record(&key, &result);
        span.record("outcome", outcome);
        result
    }

    fn take_barrier_id(&mut self) -> String {
        let id = self.next_barrier_id();
        self.next = self.next.saturating_add(1);
        id
    }

    fn key_of(&self, barrier_id: String) -> BarrierKey {
        BarrierKey {
            gid: self.gid.clone(),
            branch: self.branch.clone(),
            op: self.op,
            barrier_id,
        }
    }
}

/// Where a barrier call's transaction comes from.
enum Begin<'a, DB: Database> {
    /// A transaction of its own, on a connection of the pool.
    Pool(&'a Pool<DB>),
    /// A savepoint inside the caller's transaction.
    Savepoint(&'a mut DB::Connection),
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

    /// The `reason` and `reply` of the `action` row of `key`; `sqlx::Error::RowNotFound` if
    /// there is none.
    #[doc(hidden)]
    fn action_row<'c>(
        conn: &'c mut Self::Connection,
        key: &'c BarrierKey,
    ) -> BoxFuture<'c, Result<(String, Option<String>), sqlx::Error>>;

    /// Stores `reply` (JSON text) on the `action` row of `key`.
    #[doc(hidden)]
    fn store_reply<'c>(
        conn: &'c mut Self::Connection,
        key: &'c BarrierKey,
        reply: &'c str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

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
///
/// An upgrade is done in place on a running system: the column `reply` is added as nullable,
/// without rewriting the table, and rows written before it read as a `null` reply.
pub async fn migrate<DB: BarrierDatabase>(pool: &Pool<DB>) -> Result<(), MigrateError> {
    DB::run_migrations(pool).await
}

/// Deletes barrier rows older than `older_than` and returns how many were deleted.
///
/// Duplicate detection, hang protection and the stored replies of a saga last only as long as
/// its rows: a call that arrives after its rows were cleaned up runs as if it were the first.
pub async fn cleanup<DB: BarrierDatabase>(
    pool: &Pool<DB>,
    older_than: Duration,
) -> Result<u64, sqlx::Error> {
    let age_ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
    DB::delete_created_before(pool, now_ms().saturating_sub(age_ms)).await
}

/// The op-specific half of a barrier call, implemented by the two outcome types: how the
/// barrier rows decide the call, and what a run leaves on them.
trait Outcome: Sized {
    /// The business code's output.
    type Value;

    /// The op of the calls with this outcome.
    const OP: Op;

    /// Steps 1 and 2 of the algorithm: the outcome when the barrier absorbs the call, `None`
    /// when the business code must run.
    fn pass<DB: BarrierDatabase, E>(
        conn: &mut DB::Connection,
        key: &BarrierKey,
        now_ms: i64,
    ) -> impl Future<Output = Result<Option<Self>, BarrierError<E>>> + Send;

    /// What to store on the barrier row after the business code succeeded with `value`.
    fn reply(value: &Self::Value) -> Result<Option<String>, serde_json::Error>;

    /// The outcome of a run.
    fn ran(value: Self::Value) -> Self;

    /// The outcome's label.
    fn label(&self) -> &'static str;
}

impl<T: Serialize + DeserializeOwned> Outcome for ActionOutcome<T> {
    type Value = T;
    const OP: Op = Op::Action;

    async fn pass<DB: BarrierDatabase, E>(
        conn: &mut DB::Connection,
        key: &BarrierKey,
        now_ms: i64,
    ) -> Result<Option<Self>, BarrierError<E>> {
        if DB::insert_if_absent(&mut *conn, key, Op::Action, Op::Action, now_ms).await? {
            return Ok(None);
        }
        let (reason, reply) = DB::action_row(conn, key).await?;
        if reason == Op::Compensate.as_str() {
            return Ok(Some(ActionOutcome::Cancelled));
        }
        let reply = serde_json::from_str(reply.as_deref().unwrap_or("null"))
            .map_err(BarrierError::Reply)?;
        Ok(Some(ActionOutcome::Duplicate(reply)))
    }

    fn reply(value: &T) -> Result<Option<String>, serde_json::Error> {
        let reply = serde_json::to_string(value)?;
        // A NULL reply reads as `null`: no statement needed.
        Ok((reply != "null").then_some(reply))
    }

    fn ran(value: T) -> Self {
        ActionOutcome::Ran(value)
    }

    fn label(&self) -> &'static str {
        self.as_str()
    }
}

impl<T> Outcome for CompensationOutcome<T> {
    type Value = T;
    const OP: Op = Op::Compensate;

    async fn pass<DB: BarrierDatabase, E>(
        conn: &mut DB::Connection,
        key: &BarrierKey,
        now_ms: i64,
    ) -> Result<Option<Self>, BarrierError<E>> {
        let null_compensation =
            DB::insert_if_absent(&mut *conn, key, Op::Action, Op::Compensate, now_ms).await?;
        // Inserted even for a null compensation, so that a repeated undo is a duplicate rather
        // than an undo of an action that never ran.
        let inserted =
            DB::insert_if_absent(&mut *conn, key, Op::Compensate, Op::Compensate, now_ms).await?;
        Ok(if null_compensation {
            Some(CompensationOutcome::NullCompensation)
        } else if !inserted {
            Some(CompensationOutcome::Duplicate)
        } else {
            None
        })
    }

    fn reply(_: &T) -> Result<Option<String>, serde_json::Error> {
        Ok(None)
    }

    fn ran(value: T) -> Self {
        CompensationOutcome::Ran(value)
    }

    fn label(&self) -> &'static str {
        self.as_str()
    }
}

/// The barrier algorithm, in `tx`: pass the barrier, run the business code unless it absorbs the
/// call, store the reply, run the hook and commit; roll back on any error.
async fn run_in_transaction<DB, O, E, F>(
    mut tx: Transaction<'_, DB>,
    key: &BarrierKey,
    business: F,
    before_commit: Option<Hook>,
) -> Result<O, BarrierError<E>>
where
    DB: BarrierDatabase,
    O: Outcome,
    F: for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, O::Value, E>,
{
    let decided = async {
        if let Some(absorbed) = O::pass::<DB, E>(&mut tx, key, now_ms()).await? {
            return Ok(absorbed);
        }
        let value = business(&mut tx).await.map_err(BarrierError::Business)?;
        if let Some(reply) = O::reply(&value).map_err(BarrierError::Reply)? {
            DB::store_reply(&mut tx, key, &reply).await?;
        }
        Ok(O::ran(value))
    }
    .await;
    match decided {
        Ok(outcome) => {
            if let Some(hook) = before_commit {
                hook(outcome.label());
            }
            tx.commit().await?;
            Ok(outcome)
        }
        Err(e) => {
            // Dropping the transaction would roll back too, but only lazily, on the
            // connection's next use; roll back now so that the row locks are released.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(barrier = %key, error = %rollback, "rollback after a failed barrier call failed");
            }
            Err(e)
        }
    }
}

/// Logs and counts a call's result; returns its label.
fn record<O: Outcome, E>(key: &BarrierKey, result: &Result<O, BarrierError<E>>) -> &'static str {
    let outcome = match result {
        Ok(outcome) => outcome.label(),
        Err(BarrierError::Business(_)) => "business_error",
        Err(BarrierError::Database(e)) => {
            tracing::warn!(barrier = %key, error = %e, "barrier database error");
            "database_error"
        }
        Err(BarrierError::Reply(e)) => {
            tracing::warn!(barrier = %key, error = %e, "barrier reply error");
            "reply_error"
        }
        Err(BarrierError::InvalidKey(e)) => {
            tracing::warn!(barrier = %key, error = %e, "invalid barrier call");
            "invalid_key"
        }
    };
    tracing::debug!(barrier = %key, outcome, "barrier call");
    metrics::counter!("saga_barrier_outcomes_total", "op" => key.op.as_str(), "outcome" => outcome)
        .increment(1);
    outcome
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
    fn outcomes_convert_to_step_results() {
        assert_eq!(Result::from(ActionOutcome::Ran(7)), Ok(7));
        assert_eq!(Result::from(ActionOutcome::Duplicate(7)), Ok(7));
        assert_eq!(
            Result::<i32, _>::from(ActionOutcome::Cancelled),
            Err(StepError::failure(CANCELLED_REASON))
        );
        for undo in [
            CompensationOutcome::Ran(()),
            CompensationOutcome::Duplicate,
            CompensationOutcome::NullCompensation,
        ] {
            assert_eq!(Result::<(), Retry>::from(undo), Ok(()));
        }
    }

    #[test]
    fn barrier_errors_convert_to_step_errors_and_retries() {
        let failure = || BarrierError::Business(StepError::failure("no stock"));
        assert_eq!(StepError::from(failure()), StepError::failure("no stock"));
        assert_eq!(Retry::from(failure()), Retry::new("no stock"));
        let database = StepError::from(BarrierError::<Retry>::Database(sqlx::Error::PoolTimedOut));
        assert!(
            matches!(database, StepError::Retry(ref m) if m.starts_with("participant database error")),
            "{database:?}"
        );
        let reply = serde_json::from_str::<i64>("{}").unwrap_err();
        let reply = Retry::from(BarrierError::<StepError>::Reply(reply));
        assert!(reply.0.contains("reply"), "{reply:?}");
        let wrong = BarrierError::<StepError>::InvalidKey(InvalidKey::WrongOp {
            expected: Op::Action,
            got: Op::Compensate,
        });
        assert_eq!(
            StepError::from(wrong),
            StepError::retry("a barrier of op `compensate` was called as `action`")
        );
    }

    #[test]
    fn for_step_takes_the_identity_of_the_step_call() {
        let ctx = StepContext {
            gid: "order-1".into(),
            step: "stock_deduct",
            op: Op::Compensate,
            attempt: 3,
            traceparent: None,
        };
        let barrier = Barrier::for_step(&ctx);
        assert_eq!(
            (barrier.gid(), barrier.branch(), barrier.op()),
            ("order-1", "stock_deduct", Op::Compensate)
        );
        assert_eq!(barrier.next_barrier_id(), "01");
    }

    #[test]
    fn barrier_ids_count_up_from_01_per_handler() {
        let mut barrier = Barrier::new("g", "s", Op::Action).unwrap();
        assert_eq!(barrier.take_barrier_id(), "01");
        assert_eq!(barrier.take_barrier_id(), "02");
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
