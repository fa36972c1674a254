//! The sub-transaction barrier's guarantees (docs/semantics.md, "The sub-transaction barrier"),
//! checked on SQLite files and on a real PostgreSQL cluster. Every case is written once,
//! generically over [`Backend`], and run on both (`sqlite::*`, `postgres::*`).
//!
//! The business code is the stock deduction of the order example and its compensation on a `stock` table.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use saga_core::barrier::{
    self, ActionOutcome, Barrier, BarrierDatabase, BarrierError, CANCELLED_REASON,
    CompensationOutcome, InvalidKey,
};
use saga_core::{BoxFuture, Op, Retry, StepContext, StepError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use sqlx::{Database, PgPool, Pool, Postgres, Sqlite, SqlitePool};

const PRODUCT: i64 = 1;
const INITIAL_STOCK: i64 = 100_000;

type Conn<B> = <<B as Backend>::DB as Database>::Connection;

/// A database with the barrier table and a `stock` table holding product 1.
struct Fixture<DB: Database> {
    pool: Pool<DB>,
    /// What [`Backend::connect`] opens again: the SQLite file or the PostgreSQL URL.
    target: String,
    _dir: Option<tempfile::TempDir>,
}

trait Backend: Send + Sync + 'static {
    type DB: BarrierDatabase;

    /// An empty database.
    fn bare() -> impl Future<Output = Fixture<Self::DB>> + Send;

    /// A new pool on the database of [`Fixture::target`], as a restarted process opens.
    fn connect(target: &str) -> impl Future<Output = Pool<Self::DB>> + Send;

    /// Creates the `stock` table holding [`INITIAL_STOCK`] of product 1.
    fn create_stock(pool: &Pool<Self::DB>) -> impl Future<Output = ()> + Send;

    /// The barrier migrations as they are embedded in the library.
    fn migrator() -> Migrator;

    /// Runs the barrier migrations up to `version` only, recorded as `barrier::migrate` records
    /// them: the table as a release that stopped there left it.
    fn migrate_to(pool: &Pool<Self::DB>, version: i64) -> impl Future<Output = ()> + Send;

    /// `UPDATE stock SET stock = stock - count ... AND stock >= count`; a business error when
    /// too little is left.
    fn deduct(conn: &mut Conn<Self>, count: i64) -> BoxFuture<'_, Result<(), String>>;

    /// Adds `count` back.
    fn add_back(conn: &mut Conn<Self>, count: i64) -> BoxFuture<'_, Result<(), String>>;

    fn stock(pool: &Pool<Self::DB>) -> impl Future<Output = i64> + Send;

    fn barrier_rows(pool: &Pool<Self::DB>, gid: &str) -> impl Future<Output = i64> + Send;

    /// The `reply` column of the `action` rows of `gid`, by barrier id.
    fn replies(
        pool: &Pool<Self::DB>,
        gid: &str,
    ) -> impl Future<Output = Vec<Option<String>>> + Send;

    /// Inserts a row as the first release wrote it, without a reply.
    fn insert_old_row(
        pool: &Pool<Self::DB>,
        gid: &str,
        op: Op,
        reason: Op,
    ) -> impl Future<Output = ()> + Send;

    /// The versions recorded in the barrier's migrations table.
    fn migrations_applied(pool: &Pool<Self::DB>) -> impl Future<Output = Vec<i64>> + Send;

    /// A transaction held by the caller (`BEGIN IMMEDIATE` on SQLite).
    fn begin(
        pool: &Pool<Self::DB>,
    ) -> impl Future<Output = sqlx::Transaction<'static, Self::DB>> + Send;
}

/// A database with the barrier table and the stock.
async fn fixture<B: Backend>() -> Fixture<B::DB> {
    let fx = B::bare().await;
    barrier::migrate(&fx.pool).await.unwrap();
    B::create_stock(&fx.pool).await;
    fx
}

struct SqliteBackend;

impl Backend for SqliteBackend {
    type DB = Sqlite;

    async fn bare() -> Fixture<Sqlite> {
        let dir = saga_testkit::temp_dir();
        let target = dir.path().join("stock.db").display().to_string();
        Fixture {
            pool: Self::connect(&target).await,
            target,
            _dir: Some(dir),
        }
    }

    async fn connect(target: &str) -> SqlitePool {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://stock.db")
            .unwrap()
            .filename(target)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .unwrap()
    }

    async fn create_stock(pool: &SqlitePool) {
        sqlx::query("CREATE TABLE stock (product_id INTEGER PRIMARY KEY, stock INTEGER NOT NULL)")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO stock VALUES (?, ?)")
            .bind(PRODUCT)
            .bind(INITIAL_STOCK)
            .execute(pool)
            .await
            .unwrap();
    }

    fn migrator() -> Migrator {
        let mut migrator = sqlx::migrate!("./migrations/barrier/sqlite");
        migrator.dangerous_set_table_name(barrier::MIGRATIONS_TABLE);
        migrator
    }

    async fn migrate_to(pool: &SqlitePool, version: i64) {
        Self::migrator().run_to(version, pool).await.unwrap();
    }
    fn deduct(conn: &mut sqlx::SqliteConnection, count: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE stock SET stock = stock - ? WHERE product_id = ? AND stock >= ?",
            )
            .bind(count)
            .bind(PRODUCT)
            .bind(count)
            .execute(conn)
            .await
            .map_err(|e| e.to_string())?;
            if done.rows_affected() == 0 {
                return Err("not enough stock".into());
            }
            Ok(())
        })
    }

    fn add_back(
        conn: &mut sqlx::SqliteConnection,
        count: i64,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            sqlx::query("UPDATE stock SET stock = stock + ? WHERE product_id = ?")
                .bind(count)
                .bind(PRODUCT)
                .execute(conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    async fn stock(pool: &SqlitePool) -> i64 {
        sqlx::query_scalar("SELECT stock FROM stock WHERE product_id = ?")
            .bind(PRODUCT)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    async fn barrier_rows(pool: &SqlitePool, gid: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM saga_barrier WHERE gid = ?")
            .bind(gid.to_string())
            .fetch_one(pool)
            .await
            .unwrap()
    }

    async fn replies(pool: &SqlitePool, gid: &str) -> Vec<Option<String>> {
        sqlx::query_scalar(
            "SELECT reply FROM saga_barrier WHERE gid = ? AND op = 'action' ORDER BY barrier_id",
        )
        .bind(gid.to_string())
        .fetch_all(pool)
        .await
        .unwrap()
    }

    async fn insert_old_row(pool: &SqlitePool, gid: &str, op: Op, reason: Op) {
        sqlx::query(
            "INSERT INTO saga_barrier (gid, branch_id, op, barrier_id, reason, created_at) \
             VALUES (?, 'stock_deduct', ?, '01', ?, 0)",
        )
        .bind(gid.to_string())
        .bind(op.as_str())
        .bind(reason.as_str())
        .execute(pool)
        .await
        .unwrap();
    }

    async fn migrations_applied(pool: &SqlitePool) -> Vec<i64> {
        sqlx::query_scalar("SELECT version FROM _saga_barrier_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    async fn begin(pool: &SqlitePool) -> sqlx::Transaction<'static, Sqlite> {
        pool.begin_with("BEGIN IMMEDIATE").await.unwrap()
    }
}

struct PostgresBackend;

impl Backend for PostgresBackend {
    type DB = Postgres;

    async fn bare() -> Fixture<Postgres> {
        let target = saga_testkit::postgres().fresh_database();
        Fixture {
            pool: Self::connect(&target).await,
            target,
            _dir: None,
        }
    }

    async fn connect(target: &str) -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(target)
            .await
            .unwrap()
    }

    async fn create_stock(pool: &PgPool) {
        sqlx::query("CREATE TABLE stock (product_id BIGINT PRIMARY KEY, stock BIGINT NOT NULL)")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO stock VALUES ($1, $2)")
            .bind(PRODUCT)
            .bind(INITIAL_STOCK)
            .execute(pool)
            .await
            .unwrap();
    }

    fn migrator() -> Migrator {
        let mut migrator = sqlx::migrate!("./migrations/barrier/postgres");
        migrator.dangerous_set_table_name(barrier::MIGRATIONS_TABLE);
        migrator
    }

    async fn migrate_to(pool: &PgPool, version: i64) {
        Self::migrator().run_to(version, pool).await.unwrap();
    }

    fn deduct(conn: &mut sqlx::PgConnection, count: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE stock SET stock = stock - $1 WHERE product_id = $2 AND stock >= $1",
            )
            .bind(count)
            .bind(PRODUCT)
            .execute(conn)
            .await
            .map_err(|e| e.to_string())?;
            if done.rows_affected() == 0 {
                return Err("not enough stock".into());
            }
            Ok(())
        })
    }

    fn add_back(conn: &mut sqlx::PgConnection, count: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            sqlx::query("UPDATE stock SET stock = stock + $1 WHERE product_id = $2")
                .bind(count)
                .bind(PRODUCT)
                .execute(conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    async fn stock(pool: &PgPool) -> i64 {
        sqlx::query_scalar("SELECT stock FROM stock WHERE product_id = $1")
            .bind(PRODUCT)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    async fn barrier_rows(pool: &PgPool, gid: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM saga_barrier WHERE gid = $1")
            .bind(gid.to_string())
            .fetch_one(pool)
            .await
            .unwrap()
    }

    async fn replies(pool: &PgPool, gid: &str) -> Vec<Option<String>> {
        sqlx::query_scalar(
            "SELECT reply FROM saga_barrier WHERE gid = $1 AND op = 'action' ORDER BY barrier_id",
        )
        .bind(gid.to_string())
        .fetch_all(pool)
        .await
        .unwrap()
    }

    async fn insert_old_row(pool: &PgPool, gid: &str, op: Op, reason: Op) {
        sqlx::query(
            "INSERT INTO saga_barrier (gid, branch_id, op, barrier_id, reason, created_at) \
             VALUES ($1, 'stock_deduct', $2, '01', $3, 0)",
        )
        .bind(gid.to_string())
        .bind(op.as_str())
        .bind(reason.as_str())
        .execute(pool)
        .await
        .unwrap();
    }

    async fn migrations_applied(pool: &PgPool) -> Vec<i64> {
        sqlx::query_scalar("SELECT version FROM _saga_barrier_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    async fn begin(pool: &PgPool) -> sqlx::Transaction<'static, Postgres> {
        pool.begin().await.unwrap()
    }
}

/// Calls the stock deduction of `gid` behind a fresh barrier (as a new handler invocation does).
async fn action<B: Backend>(
    pool: &Pool<B::DB>,
    gid: &str,
    count: i64,
) -> Result<ActionOutcome<()>, BarrierError<String>> {
    let mut barrier = Barrier::new(gid, "stock_deduct", Op::Action)?;
    barrier
        .action(pool, move |conn| B::deduct(conn, count))
        .await
}

/// Calls the undo of the stock deduction of `gid` behind a fresh barrier.
async fn compensation<B: Backend>(
    pool: &Pool<B::DB>,
    gid: &str,
    count: i64,
) -> Result<CompensationOutcome<()>, BarrierError<String>> {
    let mut barrier = Barrier::new(gid, "stock_deduct", Op::Compensate)?;
    barrier
        .compensate(pool, move |conn| B::add_back(conn, count))
        .await
}

/// A step output with more than one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Created {
    order_id: i64,
    note: String,
}

fn created(order_id: i64) -> Created {
    Created {
        order_id,
        note: format!("call {order_id}"),
    }
}

/// Calls the deduction of one unit for `gid` behind a fresh barrier, answering `reply`, and
/// counts the runs of its business code in `runs`.
async fn typed_action<B: Backend, T>(
    pool: &Pool<B::DB>,
    gid: &str,
    reply: T,
    runs: &Arc<AtomicUsize>,
) -> Result<ActionOutcome<T>, BarrierError<String>>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let runs = runs.clone();
    Barrier::new(gid, "stock_deduct", Op::Action)?
        .action(pool, move |conn| {
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                B::deduct(conn, 1).await?;
                Ok(reply)
            })
        })
        .await
}

async fn action_runs_its_business_code_once<B: Backend>() {
    let fx = fixture::<B>().await;
    let outcome = action::<B>(&fx.pool, "order-1", 3).await.unwrap();
    assert_eq!(outcome, ActionOutcome::Ran(()));
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 3);
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 1);
}

async fn action_repeated_ten_times_applies_once<B: Backend>() {
    let fx = fixture::<B>().await;
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        outcomes.push(action::<B>(&fx.pool, "order-1", 3).await.unwrap());
    }
    assert_eq!(outcomes[0], ActionOutcome::Ran(()));
    assert!(
        outcomes[1..]
            .iter()
            .all(|o| *o == ActionOutcome::Duplicate(()))
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 3);
}

async fn duplicate_action_returns_the_first_calls_reply<B: Backend>() {
    let fx = fixture::<B>().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let first = typed_action::<B, _>(&fx.pool, "order-1", created(1), &runs).await;
    assert_eq!(first.unwrap(), ActionOutcome::Ran(created(1)));
    // The repeats would answer otherwise if their business code ran.
    for other in 2..5 {
        let repeat = typed_action::<B, _>(&fx.pool, "order-1", created(other), &runs).await;
        assert_eq!(repeat.unwrap(), ActionOutcome::Duplicate(created(1)));
    }
    // A restarted participant: a new pool, nothing kept in memory.
    let pool = B::connect(&fx.target).await;
    let after_restart = typed_action::<B, _>(&pool, "order-1", created(9), &runs).await;
    assert_eq!(after_restart.unwrap(), ActionOutcome::Duplicate(created(1)));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 1);
    let stored: Vec<Created> = B::replies(&fx.pool, "order-1")
        .await
        .iter()
        .map(|reply| serde_json::from_str(reply.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(stored, [created(1)]);
}

async fn racing_duplicates_get_the_winners_reply_or_a_retry<B: Backend>() {
    const CALLS: usize = 32;
    let fx = fixture::<B>().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(CALLS));
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let (pool, runs, start) = (fx.pool.clone(), runs.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                // Each call would answer its own reply if its business code ran.
                typed_action::<B, _>(&pool, "order-1", created(i as i64), &runs).await
            })
        })
        .collect();
    let (mut winners, mut duplicates, mut retries) = (Vec::new(), Vec::new(), 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(ActionOutcome::Ran(reply)) => winners.push(reply),
            Ok(ActionOutcome::Duplicate(reply)) => duplicates.push(reply),
            Err(BarrierError::Database(e)) => {
                eprintln!("a racing call is told to retry: {e}");
                retries += 1;
            }
            other => panic!("unexpected result {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one call runs: {winners:?}");
    let winner = &winners[0];
    assert!(
        duplicates.iter().all(|reply| reply == winner),
        "every duplicate answers the winner's reply {winner:?}: {duplicates:?}"
    );
    assert_eq!(1 + duplicates.len() + retries, CALLS);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the business code ran once");
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 1);
    let later = typed_action::<B, _>(&fx.pool, "order-1", created(-1), &runs).await;
    assert_eq!(later.unwrap(), ActionOutcome::Duplicate(winner.clone()));
}

async fn unit_reply_is_not_stored_and_its_duplicate_is_unit<B: Backend>() {
    let fx = fixture::<B>().await;
    assert_eq!(
        action::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        ActionOutcome::Ran(())
    );
    assert_eq!(B::replies(&fx.pool, "order-1").await, [None]);
    assert_eq!(
        action::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        ActionOutcome::Duplicate(())
    );
    // A nullable output reads the missing reply as `null` too.
    let runs = Arc::new(AtomicUsize::new(0));
    let none = typed_action::<B, Option<Created>>(&fx.pool, "order-1", Some(created(1)), &runs);
    assert_eq!(none.await.unwrap(), ActionOutcome::Duplicate(None));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

async fn stored_reply_of_another_type_is_a_reply_error_and_changes_nothing<B: Backend>() {
    let fx = fixture::<B>().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let first = typed_action::<B, _>(&fx.pool, "order-1", created(1), &runs).await;
    assert_eq!(first.unwrap(), ActionOutcome::Ran(created(1)));
    let replies = B::replies(&fx.pool, "order-1").await;

    let err = typed_action::<B, i64>(&fx.pool, "order-1", 7, &runs)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("reply"),
        "the message names the reply: {err}"
    );
    let BarrierError::Reply(decode) = err else {
        panic!("expected a reply error, got {err:?}");
    };
    // Nothing ran and nothing changed: the row and its reply are as the first call left them.
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 1);
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 1);
    assert_eq!(B::replies(&fx.pool, "order-1").await, replies);
    // An in-process step is told to retry.
    let step_error = StepError::from(BarrierError::<StepError>::Reply(decode));
    assert!(
        matches!(step_error, StepError::Retry(ref m) if m.contains("reply")),
        "{step_error:?}"
    );
    let again = typed_action::<B, _>(&fx.pool, "order-1", created(2), &runs).await;
    assert_eq!(again.unwrap(), ActionOutcome::Duplicate(created(1)));
}

async fn calling_a_barrier_for_the_other_op_is_refused_before_any_database_work<B: Backend>() {
    let fx = fixture::<B>().await;
    let mut undo = Barrier::new("order-1", "stock_deduct", Op::Compensate).unwrap();
    let err = undo
        .action(&fx.pool, |conn| B::deduct(conn, 3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BarrierError::InvalidKey(InvalidKey::WrongOp {
                expected: Op::Action,
                got: Op::Compensate
            })
        ),
        "{err:?}"
    );
    let mut act = Barrier::new("order-1", "stock_deduct", Op::Action).unwrap();
    let err = act
        .compensate(&fx.pool, |conn| B::add_back(conn, 3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BarrierError::InvalidKey(InvalidKey::WrongOp {
                expected: Op::Compensate,
                got: Op::Action
            })
        ),
        "{err:?}"
    );
    // No barrier id was used up, no row written, no stock moved.
    assert_eq!(
        (undo.next_barrier_id(), act.next_barrier_id()),
        ("01".into(), "01".into())
    );
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 0);
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

fn step_context(gid: &str, op: Op) -> StepContext {
    StepContext {
        gid: gid.to_string(),
        step: "stock_deduct",
        op,
        attempt: 1,
        traceparent: None,
    }
}

/// An in-process action: the barrier of the step call, its outcome as the step's result.
async fn in_process_action<B: Backend>(
    pool: &Pool<B::DB>,
    ctx: &StepContext,
    count: i64,
) -> Result<Created, StepError> {
    let reply = created(count);
    Barrier::for_step(ctx)
        .action(pool, move |conn| {
            Box::pin(async move {
                B::deduct(conn, count).await.map_err(StepError::Failure)?;
                Ok::<_, StepError>(reply)
            })
        })
        .await?
        .into()
}

/// An in-process undo.
async fn in_process_undo<B: Backend>(
    pool: &Pool<B::DB>,
    ctx: &StepContext,
    count: i64,
) -> Result<(), Retry> {
    Barrier::for_step(ctx)
        .compensate(pool, move |conn| {
            Box::pin(async move { B::add_back(conn, count).await.map_err(Retry) })
        })
        .await?
        .into()
}

async fn in_process_step_gets_its_result_from_the_outcome<B: Backend>() {
    let fx = fixture::<B>().await;
    let act = step_context("order-1", Op::Action);
    assert_eq!(
        in_process_action::<B>(&fx.pool, &act, 3).await,
        Ok(created(3))
    );
    assert_eq!(
        in_process_action::<B>(&fx.pool, &act, 3).await,
        Ok(created(3))
    );
    let undo = step_context("order-1", Op::Compensate);
    assert_eq!(in_process_undo::<B>(&fx.pool, &undo, 3).await, Ok(()));
    assert_eq!(in_process_undo::<B>(&fx.pool, &undo, 3).await, Ok(()));
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);

    // A business failure, and a late action after a null compensation.
    let failing = step_context("order-2", Op::Action);
    assert_eq!(
        in_process_action::<B>(&fx.pool, &failing, INITIAL_STOCK + 1).await,
        Err(StepError::failure("not enough stock"))
    );
    let undo = step_context("order-3", Op::Compensate);
    assert_eq!(in_process_undo::<B>(&fx.pool, &undo, 3).await, Ok(()));
    let late = step_context("order-3", Op::Action);
    assert_eq!(
        in_process_action::<B>(&fx.pool, &late, 3).await,
        Err(StepError::failure(CANCELLED_REASON))
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

async fn compensation_after_action_undoes_it_once<B: Backend>() {
    let fx = fixture::<B>().await;
    assert!(action::<B>(&fx.pool, "order-1", 3).await.is_ok());
    let outcome = compensation::<B>(&fx.pool, "order-1", 3).await.unwrap();
    assert_eq!(outcome, CompensationOutcome::Ran(()));
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

async fn compensation_repeated_undoes_once<B: Backend>() {
    let fx = fixture::<B>().await;
    assert!(action::<B>(&fx.pool, "order-1", 3).await.is_ok());
    assert_eq!(
        compensation::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        CompensationOutcome::Ran(())
    );
    for _ in 0..5 {
        assert_eq!(
            compensation::<B>(&fx.pool, "order-1", 3).await.unwrap(),
            CompensationOutcome::Duplicate
        );
    }
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

async fn compensation_without_action_is_a_null_compensation<B: Backend>() {
    let fx = fixture::<B>().await;
    let outcome = compensation::<B>(&fx.pool, "order-1", 3).await.unwrap();
    assert_eq!(outcome, CompensationOutcome::NullCompensation);
    assert_eq!(
        B::stock(&fx.pool).await,
        INITIAL_STOCK,
        "the undo must not run"
    );
    // A repeated null compensation still does not run the undo.
    assert_eq!(
        compensation::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        CompensationOutcome::Duplicate
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

async fn late_action_after_undo_is_cancelled<B: Backend>() {
    let fx = fixture::<B>().await;
    assert_eq!(
        compensation::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        CompensationOutcome::NullCompensation
    );
    let outcome = action::<B>(&fx.pool, "order-1", 3).await.unwrap();
    assert_eq!(outcome, ActionOutcome::Cancelled);
    // Whatever its output type: the null compensation left no reply to decode.
    let runs = Arc::new(AtomicUsize::new(0));
    let typed = typed_action::<B, _>(&fx.pool, "order-1", created(1), &runs).await;
    assert_eq!(typed.unwrap(), ActionOutcome::Cancelled);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(
        B::stock(&fx.pool).await,
        INITIAL_STOCK,
        "the late action must not apply"
    );
}

async fn failed_action_leaves_no_barrier_rows_and_its_undo_is_null<B: Backend>() {
    let fx = fixture::<B>().await;
    let err = action::<B>(&fx.pool, "order-1", INITIAL_STOCK + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, BarrierError::Business(ref reason) if reason == "not enough stock"));
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 0);
    assert_eq!(
        compensation::<B>(&fx.pool, "order-1", INITIAL_STOCK + 1)
            .await
            .unwrap(),
        CompensationOutcome::NullCompensation
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

async fn before_commit_hook_sees_every_outcome_inside_the_transaction<B: Backend>() {
    let fx = fixture::<B>().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let call = |op: Op, count: i64| {
        let (pool, seen) = (fx.pool.clone(), seen.clone());
        async move {
            let mut barrier = Barrier::new("order-1", "stock_deduct", op).unwrap();
            barrier.before_commit(move |outcome| seen.lock().unwrap().push(outcome));
            match op {
                Op::Action => barrier
                    .action(&pool, move |conn| B::deduct(conn, count))
                    .await
                    .map(|o| o.as_str()),
                Op::Compensate => barrier
                    .compensate(&pool, move |conn| B::add_back(conn, count))
                    .await
                    .map(|o| o.as_str()),
            }
        }
    };
    // A failing action: no hook, nothing kept.
    assert!(call(Op::Action, INITIAL_STOCK + 1).await.is_err());
    // Null compensation, then a cancelled late action, then a duplicate undo.
    let returned = [
        call(Op::Compensate, 3).await.unwrap(),
        call(Op::Action, 3).await.unwrap(),
        call(Op::Compensate, 3).await.unwrap(),
    ];
    assert_eq!(*seen.lock().unwrap(), returned);
    assert_eq!(
        *seen.lock().unwrap(),
        ["null_compensation", "cancelled", "duplicate"]
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

async fn before_commit_hook_runs_for_the_next_call_only<B: Backend>() {
    let fx = fixture::<B>().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut barrier = Barrier::new("order-1", "stock_deduct", Op::Action).unwrap();
    let hook_seen = seen.clone();
    barrier.before_commit(move |outcome| hook_seen.lock().unwrap().push(outcome));
    for _ in 0..2 {
        let outcome = barrier
            .action(&fx.pool, |conn| B::deduct(conn, 1))
            .await
            .unwrap();
        assert_eq!(outcome, ActionOutcome::Ran(()));
    }
    assert_eq!(*seen.lock().unwrap(), ["ran"]);
}

async fn several_barrier_calls_in_one_handler_are_numbered<B: Backend>() {
    let fx = fixture::<B>().await;
    let handler = |pool: Pool<B::DB>| async move {
        let mut barrier = Barrier::new("order-1", "stock_deduct", Op::Action).unwrap();
        let first = barrier
            .action(&pool, |conn| B::deduct(conn, 1))
            .await
            .unwrap();
        let second = barrier
            .action(&pool, |conn| B::deduct(conn, 2))
            .await
            .unwrap();
        (first, second)
    };
    let first_run = handler(fx.pool.clone()).await;
    assert_eq!(first_run, (ActionOutcome::Ran(()), ActionOutcome::Ran(())));
    let retry = handler(fx.pool.clone()).await;
    assert_eq!(
        retry,
        (ActionOutcome::Duplicate(()), ActionOutcome::Duplicate(()))
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 3);
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 2);
}

async fn barrier_rows_commit_with_the_callers_transaction<B: Backend>() {
    let fx = fixture::<B>().await;
    let mut tx = B::begin(&fx.pool).await;
    let mut barrier = Barrier::new("order-1", "stock_deduct", Op::Action).unwrap();
    let outcome = barrier
        .action_in::<B::DB, _, _, _>(&mut tx, |conn| {
            Box::pin(async move {
                B::deduct(conn, 3).await?;
                Ok::<_, String>(created(3))
            })
        })
        .await
        .unwrap();
    assert_eq!(outcome, ActionOutcome::Ran(created(3)));
    tx.commit().await.unwrap();
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 1);
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 3);
    // The reply committed with the caller's transaction too.
    let runs = Arc::new(AtomicUsize::new(0));
    let repeat = typed_action::<B, _>(&fx.pool, "order-1", created(4), &runs).await;
    assert_eq!(repeat.unwrap(), ActionOutcome::Duplicate(created(3)));

    // An undo inside the caller's transaction.
    let mut tx = B::begin(&fx.pool).await;
    let mut barrier = Barrier::new("order-1", "stock_deduct", Op::Compensate).unwrap();
    let outcome = barrier
        .compensate_in::<B::DB, _, _, _>(&mut tx, |conn| B::add_back(conn, 3))
        .await
        .unwrap();
    assert_eq!(outcome, CompensationOutcome::Ran(()));
    tx.commit().await.unwrap();
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
    assert_eq!(
        compensation::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        CompensationOutcome::Duplicate
    );
}

async fn barrier_rows_roll_back_with_the_callers_transaction<B: Backend>() {
    let fx = fixture::<B>().await;
    let mut tx = B::begin(&fx.pool).await;
    let mut barrier = Barrier::new("order-1", "stock_deduct", Op::Action).unwrap();
    let outcome = barrier
        .action_in::<B::DB, _, _, _>(&mut tx, |conn| B::deduct(conn, 3))
        .await
        .unwrap();
    assert_eq!(outcome, ActionOutcome::Ran(()));
    tx.rollback().await.unwrap();
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 0);
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
    // Nothing was recorded, so the action runs when it comes again.
    assert_eq!(
        action::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        ActionOutcome::Ran(())
    );
}

async fn failed_business_code_in_the_callers_transaction_rolls_back_only_the_barrier<B: Backend>() {
    let fx = fixture::<B>().await;
    let mut tx = B::begin(&fx.pool).await;
    // The caller's own write, before the barrier.
    let own = B::deduct(&mut tx, 1).await;
    assert_eq!(own, Ok(()));
    let mut barrier = Barrier::new("order-1", "stock_deduct", Op::Action).unwrap();
    let err = barrier
        .action_in::<B::DB, _, _, _>(&mut tx, |conn| B::deduct(conn, INITIAL_STOCK))
        .await
        .unwrap_err();
    assert!(matches!(err, BarrierError::Business(_)));
    tx.commit().await.unwrap();
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 0);
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 1);
}

async fn racing_action_and_compensation_never_leave_an_action_without_its_undo<B: Backend>() {
    let fx = fixture::<B>().await;
    let mut action_won = 0;
    for i in 0..200 {
        let gid = format!("race-{i}");
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let (pool, act_gid, act_start) = (fx.pool.clone(), gid.clone(), start.clone());
        let act = tokio::spawn(async move {
            act_start.wait().await;
            action::<B>(&pool, &act_gid, 7).await
        });
        let (pool, undo_gid, undo_start) = (fx.pool.clone(), gid.clone(), start.clone());
        let undo = tokio::spawn(async move {
            undo_start.wait().await;
            compensation::<B>(&pool, &undo_gid, 7).await
        });
        let act = act.await.unwrap().unwrap();
        let undo = undo.await.unwrap().unwrap();
        match (&act, &undo) {
            (ActionOutcome::Ran(()), CompensationOutcome::Ran(())) => action_won += 1,
            (ActionOutcome::Cancelled, CompensationOutcome::NullCompensation) => {}
            other => panic!("{gid}: impossible outcome pair {other:?}"),
        }
        assert_eq!(
            B::stock(&fx.pool).await,
            INITIAL_STOCK,
            "{gid}: the stock must be untouched or touched and undone ({act:?}, {undo:?})"
        );
    }
    eprintln!("action won {action_won} of 200 races");
}

async fn fifty_concurrent_duplicates_of_one_action_apply_once<B: Backend>() {
    let fx = fixture::<B>().await;
    let start = Arc::new(tokio::sync::Barrier::new(50));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let pool = fx.pool.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                action::<B>(&pool, "order-1", 3).await
            })
        })
        .collect();
    let mut ran = 0;
    for call in calls {
        match call.await.unwrap().unwrap() {
            ActionOutcome::Ran(()) => ran += 1,
            ActionOutcome::Duplicate(()) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(ran, 1);
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 3);
}

async fn cleanup_deletes_only_rows_older_than_the_retention<B: Backend>() {
    let fx = fixture::<B>().await;
    assert!(action::<B>(&fx.pool, "order-1", 3).await.is_ok());
    assert!(compensation::<B>(&fx.pool, "order-2", 3).await.is_ok());
    assert_eq!(
        barrier::cleanup(&fx.pool, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        barrier::cleanup(&fx.pool, Duration::ZERO).await.unwrap(),
        3,
        "one action row, and the action and compensate rows of the null compensation"
    );
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 0);
}

async fn migrating_again_is_a_no_op<B: Backend>() {
    let fx = fixture::<B>().await;
    barrier::migrate(&fx.pool).await.unwrap();
    barrier::migrate(&fx.pool).await.unwrap();
    assert_eq!(
        action::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        ActionOutcome::Ran(())
    );
}

async fn migration_adds_the_reply_to_a_table_of_the_first_release_in_place<B: Backend>() {
    let fx = B::bare().await;
    // The table as the first release's `migrate` left it, with rows that release wrote: an
    // action that ran, and a null compensation.
    B::migrate_to(&fx.pool, 1).await;
    assert_eq!(B::migrations_applied(&fx.pool).await, [1]);
    B::create_stock(&fx.pool).await;
    B::insert_old_row(&fx.pool, "old-1", Op::Action, Op::Action).await;
    B::insert_old_row(&fx.pool, "old-2", Op::Action, Op::Compensate).await;
    B::insert_old_row(&fx.pool, "old-2", Op::Compensate, Op::Compensate).await;

    barrier::migrate(&fx.pool).await.unwrap();
    assert_eq!(B::migrations_applied(&fx.pool).await, [1, 2]);
    assert_eq!(B::barrier_rows(&fx.pool, "old-1").await, 1);
    assert_eq!(B::replies(&fx.pool, "old-1").await, [None]);
    // The old action's duplicate answers `null`, whatever reads it.
    assert_eq!(
        action::<B>(&fx.pool, "old-1", 3).await.unwrap(),
        ActionOutcome::Duplicate(())
    );
    let runs = Arc::new(AtomicUsize::new(0));
    let nullable = typed_action::<B, Option<Created>>(&fx.pool, "old-1", None, &runs).await;
    assert_eq!(nullable.unwrap(), ActionOutcome::Duplicate(None));
    // The old null compensation still refuses its late action and absorbs its repeat.
    assert_eq!(
        action::<B>(&fx.pool, "old-2", 3).await.unwrap(),
        ActionOutcome::Cancelled
    );
    assert_eq!(
        compensation::<B>(&fx.pool, "old-2", 3).await.unwrap(),
        CompensationOutcome::Duplicate
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
    // New calls store their replies.
    let first = typed_action::<B, _>(&fx.pool, "new-1", created(1), &runs).await;
    assert_eq!(first.unwrap(), ActionOutcome::Ran(created(1)));
    let repeat = typed_action::<B, _>(&fx.pool, "new-1", created(2), &runs).await;
    assert_eq!(repeat.unwrap(), ActionOutcome::Duplicate(created(1)));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

macro_rules! on_backend {
    ($backend:ty: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                super::$case::<$backend>().await;
            }
        )*
    };
}

macro_rules! all_cases {
    ($backend:ty) => {
        on_backend!($backend:
            action_runs_its_business_code_once,
            action_repeated_ten_times_applies_once,
            duplicate_action_returns_the_first_calls_reply,
            racing_duplicates_get_the_winners_reply_or_a_retry,
            unit_reply_is_not_stored_and_its_duplicate_is_unit,
            stored_reply_of_another_type_is_a_reply_error_and_changes_nothing,
            calling_a_barrier_for_the_other_op_is_refused_before_any_database_work,
            in_process_step_gets_its_result_from_the_outcome,
            compensation_after_action_undoes_it_once,
            compensation_repeated_undoes_once,
            compensation_without_action_is_a_null_compensation,
            late_action_after_undo_is_cancelled,
            failed_action_leaves_no_barrier_rows_and_its_undo_is_null,
            several_barrier_calls_in_one_handler_are_numbered,
            before_commit_hook_sees_every_outcome_inside_the_transaction,
            before_commit_hook_runs_for_the_next_call_only,
            barrier_rows_commit_with_the_callers_transaction,
            barrier_rows_roll_back_with_the_callers_transaction,
            failed_business_code_in_the_callers_transaction_rolls_back_only_the_barrier,
            racing_action_and_compensation_never_leave_an_action_without_its_undo,
            fifty_concurrent_duplicates_of_one_action_apply_once,
            cleanup_deletes_only_rows_older_than_the_retention,
            migrating_again_is_a_no_op,
            migration_adds_the_reply_to_a_table_of_the_first_release_in_place,
        );
    };
}

mod sqlite {
    all_cases!(super::SqliteBackend);

    #[tokio::test]
    async fn migrations_are_recorded_apart_from_the_host_apps_table() {
        let fx = super::fixture::<super::SqliteBackend>().await;
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .fetch_all(&fx.pool)
                .await
                .unwrap();
        assert!(
            tables.contains(&"_saga_barrier_migrations".to_string()),
            "{tables:?}"
        );
        assert!(
            !tables.contains(&"_sqlx_migrations".to_string()),
            "{tables:?}"
        );
    }
}

mod postgres {
    all_cases!(super::PostgresBackend);

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn several_processes_migrating_at_once_all_succeed() {
        let url = saga_testkit::postgres().fresh_database();
        let migrations: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    // A pool per "process": separate connections racing on one database.
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    saga_core::barrier::migrate_postgres(&pool).await
                })
            })
            .collect();
        for migration in migrations {
            migration.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn migrations_are_recorded_apart_from_the_host_apps_table() {
        let fx = super::fixture::<super::PostgresBackend>().await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1",
        )
        .fetch_all(&fx.pool)
        .await
        .unwrap();
        assert!(
            tables.contains(&"_saga_barrier_migrations".to_string()),
            "{tables:?}"
        );
        assert!(
            !tables.contains(&"_sqlx_migrations".to_string()),
            "{tables:?}"
        );
    }
}
