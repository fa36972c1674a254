//! The sub-transaction barrier's guarantees (docs/semantics.md, "The sub-transaction barrier"),
//! checked on SQLite files and on a real PostgreSQL cluster. Every case is written once,
//! generically over [`Backend`], and run on both (`sqlite::*`, `postgres::*`).
//!
//! The business code is the stock deduction of the order example and its compensation on a `stock` table.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use saga_core::barrier::{self, Barrier, BarrierDatabase, BarrierError, BarrierOutcome};
use saga_core::{BoxFuture, Op};
use sqlx::{Database, PgPool, Pool, Postgres, Sqlite, SqlitePool};

const PRODUCT: i64 = 1;
const INITIAL_STOCK: i64 = 100_000;

type Conn<B> = <<B as Backend>::DB as Database>::Connection;

/// A database with the barrier table and a `stock` table holding product 1.
struct Fixture<DB: Database> {
    pool: Pool<DB>,
    _dir: Option<tempfile::TempDir>,
}

trait Backend: Send + Sync + 'static {
    type DB: BarrierDatabase;

    fn fixture() -> impl Future<Output = Fixture<Self::DB>> + Send;

    /// `UPDATE stock SET stock = stock - count ... AND stock >= count`; a business error when
    /// too little is left.
    fn deduct(conn: &mut Conn<Self>, count: i64) -> BoxFuture<'_, Result<(), String>>;

    /// Adds `count` back.
    fn add_back(conn: &mut Conn<Self>, count: i64) -> BoxFuture<'_, Result<(), String>>;

    fn stock(pool: &Pool<Self::DB>) -> impl Future<Output = i64> + Send;

    fn barrier_rows(pool: &Pool<Self::DB>, gid: &str) -> impl Future<Output = i64> + Send;

    /// A transaction held by the caller (`BEGIN IMMEDIATE` on SQLite).
    fn begin(
        pool: &Pool<Self::DB>,
    ) -> impl Future<Output = sqlx::Transaction<'static, Self::DB>> + Send;
}

struct SqliteBackend;

impl Backend for SqliteBackend {
    type DB = Sqlite;

    async fn fixture() -> Fixture<Sqlite> {
        let dir = saga_testkit::temp_dir();
        let options = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://stock.db")
            .unwrap()
            .filename(dir.path().join("stock.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .unwrap();
        barrier::migrate_sqlite(&pool).await.unwrap();
        sqlx::query("CREATE TABLE stock (product_id INTEGER PRIMARY KEY, stock INTEGER NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO stock VALUES (?, ?)")
            .bind(PRODUCT)
            .bind(INITIAL_STOCK)
            .execute(&pool)
            .await
            .unwrap();
        Fixture {
            pool,
            _dir: Some(dir),
        }
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

    async fn begin(pool: &SqlitePool) -> sqlx::Transaction<'static, Sqlite> {
        pool.begin_with("BEGIN IMMEDIATE").await.unwrap()
    }
}

struct PostgresBackend;

impl Backend for PostgresBackend {
    type DB = Postgres;

    async fn fixture() -> Fixture<Postgres> {
        let url = saga_testkit::postgres().fresh_database();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(&url)
            .await
            .unwrap();
        barrier::migrate_postgres(&pool).await.unwrap();
        sqlx::query("CREATE TABLE stock (product_id BIGINT PRIMARY KEY, stock BIGINT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO stock VALUES ($1, $2)")
            .bind(PRODUCT)
            .bind(INITIAL_STOCK)
            .execute(&pool)
            .await
            .unwrap();
        Fixture { pool, _dir: None }
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

    async fn begin(pool: &PgPool) -> sqlx::Transaction<'static, Postgres> {
        pool.begin().await.unwrap()
    }
}

/// Calls the stock deduction of `gid` behind a fresh barrier (as a new handler invocation does).
async fn action<B: Backend>(
    pool: &Pool<B::DB>,
    gid: &str,
    count: i64,
) -> Result<BarrierOutcome<()>, BarrierError<String>> {
    let mut barrier = Barrier::new(gid, "stock_deduct", Op::Action)?;
    barrier.call(pool, move |conn| B::deduct(conn, count)).await
}

/// Calls the undo of the stock deduction of `gid` behind a fresh barrier.
async fn compensation<B: Backend>(
    pool: &Pool<B::DB>,
    gid: &str,
    count: i64,
) -> Result<BarrierOutcome<()>, BarrierError<String>> {
    let mut barrier = Barrier::new(gid, "stock_deduct", Op::Compensate)?;
    barrier
        .call(pool, move |conn| B::add_back(conn, count))
        .await
}

async fn action_runs_its_business_code_once<B: Backend>() {
    let fx = B::fixture().await;
    let outcome = action::<B>(&fx.pool, "order-1", 3).await.unwrap();
    assert_eq!(outcome, BarrierOutcome::Ran(()));
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 3);
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 1);
}

async fn action_repeated_ten_times_applies_once<B: Backend>() {
    let fx = B::fixture().await;
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        outcomes.push(action::<B>(&fx.pool, "order-1", 3).await.unwrap());
    }
    assert_eq!(outcomes[0], BarrierOutcome::Ran(()));
    assert!(
        outcomes[1..]
            .iter()
            .all(|o| *o == BarrierOutcome::Duplicate)
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 3);
}

async fn compensation_after_action_undoes_it_once<B: Backend>() {
    let fx = B::fixture().await;
    assert!(action::<B>(&fx.pool, "order-1", 3).await.is_ok());
    let outcome = compensation::<B>(&fx.pool, "order-1", 3).await.unwrap();
    assert_eq!(outcome, BarrierOutcome::Ran(()));
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

async fn compensation_repeated_undoes_once<B: Backend>() {
    let fx = B::fixture().await;
    assert!(action::<B>(&fx.pool, "order-1", 3).await.is_ok());
    assert_eq!(
        compensation::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        BarrierOutcome::Ran(())
    );
    for _ in 0..5 {
        assert_eq!(
            compensation::<B>(&fx.pool, "order-1", 3).await.unwrap(),
            BarrierOutcome::Duplicate
        );
    }
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

async fn compensation_without_action_is_a_null_compensation<B: Backend>() {
    let fx = B::fixture().await;
    let outcome = compensation::<B>(&fx.pool, "order-1", 3).await.unwrap();
    assert_eq!(outcome, BarrierOutcome::NullCompensation);
    assert_eq!(
        B::stock(&fx.pool).await,
        INITIAL_STOCK,
        "the undo must not run"
    );
    // A repeated null compensation still does not run the undo.
    assert_eq!(
        compensation::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        BarrierOutcome::Duplicate
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

async fn late_action_after_undo_is_cancelled<B: Backend>() {
    let fx = B::fixture().await;
    assert_eq!(
        compensation::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        BarrierOutcome::NullCompensation
    );
    let outcome = action::<B>(&fx.pool, "order-1", 3).await.unwrap();
    assert_eq!(outcome, BarrierOutcome::Cancelled);
    assert_eq!(
        B::stock(&fx.pool).await,
        INITIAL_STOCK,
        "the late action must not apply"
    );
}

async fn failed_action_leaves_no_barrier_rows_and_its_undo_is_null<B: Backend>() {
    let fx = B::fixture().await;
    let err = action::<B>(&fx.pool, "order-1", INITIAL_STOCK + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, BarrierError::Business(ref reason) if reason == "not enough stock"));
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 0);
    assert_eq!(
        compensation::<B>(&fx.pool, "order-1", INITIAL_STOCK + 1)
            .await
            .unwrap(),
        BarrierOutcome::NullCompensation
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

async fn before_commit_hook_sees_every_outcome_inside_the_transaction<B: Backend>() {
    let fx = B::fixture().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let call = |op: Op, count: i64| {
        let (pool, seen) = (fx.pool.clone(), seen.clone());
        async move {
            let mut barrier = Barrier::new("order-1", "stock_deduct", op).unwrap();
            let hook = |o: &BarrierOutcome<()>| seen.lock().unwrap().push(o.clone());
            match op {
                Op::Action => {
                    barrier
                        .call_with_hook(&pool, move |conn| B::deduct(conn, count), hook)
                        .await
                }
                Op::Compensate => {
                    barrier
                        .call_with_hook(&pool, move |conn| B::add_back(conn, count), hook)
                        .await
                }
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
        [
            BarrierOutcome::NullCompensation,
            BarrierOutcome::Cancelled,
            BarrierOutcome::Duplicate
        ]
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
}

async fn several_barrier_calls_in_one_handler_are_numbered<B: Backend>() {
    let fx = B::fixture().await;
    let handler = |pool: Pool<B::DB>| async move {
        let mut barrier = Barrier::new("order-1", "stock_deduct", Op::Action).unwrap();
        let first = barrier
            .call(&pool, |conn| B::deduct(conn, 1))
            .await
            .unwrap();
        let second = barrier
            .call(&pool, |conn| B::deduct(conn, 2))
            .await
            .unwrap();
        (first, second)
    };
    let first_run = handler(fx.pool.clone()).await;
    assert_eq!(
        first_run,
        (BarrierOutcome::Ran(()), BarrierOutcome::Ran(()))
    );
    let retry = handler(fx.pool.clone()).await;
    assert_eq!(
        retry,
        (BarrierOutcome::Duplicate, BarrierOutcome::Duplicate)
    );
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 3);
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 2);
}

async fn barrier_rows_commit_with_the_callers_transaction<B: Backend>() {
    let fx = B::fixture().await;
    let mut tx = B::begin(&fx.pool).await;
    let mut barrier = Barrier::new("order-1", "stock_deduct", Op::Action).unwrap();
    let outcome = barrier
        .call_in::<B::DB, _, _, _>(&mut tx, |conn| B::deduct(conn, 3))
        .await
        .unwrap();
    assert_eq!(outcome, BarrierOutcome::Ran(()));
    tx.commit().await.unwrap();
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 1);
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 3);
    assert_eq!(
        action::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        BarrierOutcome::Duplicate
    );
}

async fn barrier_rows_roll_back_with_the_callers_transaction<B: Backend>() {
    let fx = B::fixture().await;
    let mut tx = B::begin(&fx.pool).await;
    let mut barrier = Barrier::new("order-1", "stock_deduct", Op::Action).unwrap();
    let outcome = barrier
        .call_in::<B::DB, _, _, _>(&mut tx, |conn| B::deduct(conn, 3))
        .await
        .unwrap();
    assert_eq!(outcome, BarrierOutcome::Ran(()));
    tx.rollback().await.unwrap();
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 0);
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK);
    // Nothing was recorded, so the action runs when it comes again.
    assert_eq!(
        action::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        BarrierOutcome::Ran(())
    );
}

async fn failed_business_code_in_the_callers_transaction_rolls_back_only_the_barrier<B: Backend>() {
    let fx = B::fixture().await;
    let mut tx = B::begin(&fx.pool).await;
    // The caller's own write, before the barrier.
    let own = B::deduct(&mut tx, 1).await;
    assert_eq!(own, Ok(()));
    let mut barrier = Barrier::new("order-1", "stock_deduct", Op::Action).unwrap();
    let err = barrier
        .call_in::<B::DB, _, _, _>(&mut tx, |conn| B::deduct(conn, INITIAL_STOCK))
        .await
        .unwrap_err();
    assert!(matches!(err, BarrierError::Business(_)));
    tx.commit().await.unwrap();
    assert_eq!(B::barrier_rows(&fx.pool, "order-1").await, 0);
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 1);
}

async fn racing_action_and_compensation_never_leave_an_action_without_its_undo<B: Backend>() {
    let fx = B::fixture().await;
    let mut action_won = 0;
    for i in 0..200 {
        let gid = format!("race-{i}");
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let spawn = |op: Op| {
            let pool = fx.pool.clone();
            let gid = gid.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                match op {
                    Op::Action => action::<B>(&pool, &gid, 7).await,
                    Op::Compensate => compensation::<B>(&pool, &gid, 7).await,
                }
            })
        };
        let act = spawn(Op::Action);
        let undo = spawn(Op::Compensate);
        let act = act.await.unwrap().unwrap();
        let undo = undo.await.unwrap().unwrap();
        match (&act, &undo) {
            (BarrierOutcome::Ran(()), BarrierOutcome::Ran(())) => action_won += 1,
            (BarrierOutcome::Cancelled, BarrierOutcome::NullCompensation) => {}
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
    let fx = B::fixture().await;
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
            BarrierOutcome::Ran(()) => ran += 1,
            BarrierOutcome::Duplicate => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(ran, 1);
    assert_eq!(B::stock(&fx.pool).await, INITIAL_STOCK - 3);
}

async fn cleanup_deletes_only_rows_older_than_the_retention<B: Backend>() {
    let fx = B::fixture().await;
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
    let fx = B::fixture().await;
    barrier::migrate(&fx.pool).await.unwrap();
    barrier::migrate(&fx.pool).await.unwrap();
    assert_eq!(
        action::<B>(&fx.pool, "order-1", 3).await.unwrap(),
        BarrierOutcome::Ran(())
    );
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
            compensation_after_action_undoes_it_once,
            compensation_repeated_undoes_once,
            compensation_without_action_is_a_null_compensation,
            late_action_after_undo_is_cancelled,
            failed_action_leaves_no_barrier_rows_and_its_undo_is_null,
            several_barrier_calls_in_one_handler_are_numbered,
            before_commit_hook_sees_every_outcome_inside_the_transaction,
            barrier_rows_commit_with_the_callers_transaction,
            barrier_rows_roll_back_with_the_callers_transaction,
            failed_business_code_in_the_callers_transaction_rolls_back_only_the_barrier,
            racing_action_and_compensation_never_leave_an_action_without_its_undo,
            fifty_concurrent_duplicates_of_one_action_apply_once,
            cleanup_deletes_only_rows_older_than_the_retention,
            migrating_again_is_a_no_op,
        );
    };
}

mod sqlite {
    all_cases!(super::SqliteBackend);

    #[tokio::test]
    async fn migrations_are_recorded_apart_from_the_host_apps_table() {
        let fx = <super::SqliteBackend as super::Backend>::fixture().await;
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
        let fx = <super::PostgresBackend as super::Backend>::fixture().await;
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
