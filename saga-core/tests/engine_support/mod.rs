//! Shared fixtures of the engine tests (`engine_*.rs`): the two stores, a participant database
//! whose table records side effects through the barrier, scripted sagas written by hand, and a
//! macro that runs one test body on both stores.
//!
//! The sagas are hand-written (`impl Saga`, `impl SagaSteps`) rather than derived: one scripted
//! handler serves every step by index, and each test decides per call what a step does.

#![allow(dead_code, unused_macros)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use saga_core::barrier::{self, Barrier, BarrierDatabase, BarrierError, BusinessFuture};
use saga_core::step::RawActionResult;
use saga_core::store::sqlite::SqliteOptions;
use saga_core::{
    BoxFuture, Engine, EngineConfig, Op, Retry, Saga, SagaDefinition, SagaStatus, SagaSteps,
    SagaView, StepContext, StepDefinition, StepError, StepKind, Store, Waited,
};
use serde_json::{Value, json};
use sqlx::{PgPool, SqlitePool};

/// Runs `async fn name(backend: Backend)` once per store, as `name::sqlite` and
/// `name::postgres`. Attributes before the name (`#[ignore = "..."]`) apply to both.
macro_rules! on_both_stores {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        $(
            mod $name {
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(crate::engine_support::Backend::Sqlite).await
                }

                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(crate::engine_support::Backend::Postgres).await
                }
            }
        )*
    };
}

/// Like [`on_both_stores!`] for a plain `fn name(backend: Backend)` that builds its own
/// runtimes (crash and fencing tests drop or freeze a whole engine runtime).
macro_rules! on_both_stores_sync {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        $(
            mod $name {
                $(#[$meta])*
                #[test]
                fn sqlite() {
                    super::$name(crate::engine_support::Backend::Sqlite)
                }

                $(#[$meta])*
                #[test]
                fn postgres() {
                    super::$name(crate::engine_support::Backend::Postgres)
                }
            }
        )*
    };
}

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the test process's throwaway PostgreSQL cluster.
    Postgres,
}

/// One test's databases: the saga store and the participant database of the side effects.
pub struct Db {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub pg_url: Option<String>,
}

impl Db {
    pub fn new(backend: Backend) -> Db {
        let dir = saga_testkit::temp_dir();
        let pg_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(saga_testkit::postgres().fresh_database()),
        };
        Db {
            backend,
            dir,
            pg_url,
        }
    }

    /// Where the store lives: the SQLite file or the PostgreSQL URL (argv of the crash worker).
    pub fn location(&self) -> String {
        match self.backend {
            Backend::Sqlite => self.dir.path().display().to_string(),
            Backend::Postgres => self.pg_url.clone().unwrap(),
        }
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("saga.db")
    }

    /// Opens a new connection to the store (every engine of a test gets its own).
    pub async fn store(&self) -> Store {
        match self.backend {
            Backend::Sqlite => Store::sqlite(self.sqlite_path(), SqliteOptions::default())
                .await
                .expect("open the SQLite store"),
            Backend::Postgres => Store::postgres(self.pg_url.as_deref().unwrap(), None, 16)
                .await
                .expect("open the PostgreSQL store"),
        }
    }

    /// Opens the participant database with the barrier table and the `effect` table.
    pub async fn effects(&self) -> Effects {
        match self.backend {
            Backend::Sqlite => {
                let path = self.dir.path().join("effects.db");
                let pool = saga_core::store::sqlite::open_pool(&path, false, 4)
                    .await
                    .expect("open effects.db");
                barrier::migrate_sqlite(&pool).await.unwrap();
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS effect (gid TEXT NOT NULL, step TEXT NOT NULL, op TEXT NOT NULL)",
                )
                .execute(&pool)
                .await
                .unwrap();
                Effects::Sqlite(pool)
            }
            Backend::Postgres => {
                let pool = saga_core::store::postgres::open_pool(
                    self.pg_url.as_deref().unwrap(),
                    Some("participant"),
                    8,
                )
                .await
                .expect("open the participant schema");
                barrier::migrate_postgres(&pool).await.unwrap();
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS effect (gid TEXT NOT NULL, step TEXT NOT NULL, op TEXT NOT NULL)",
                )
                .execute(&pool)
                .await
                .unwrap();
                Effects::Postgres(pool)
            }
        }
    }
}

/// An instance as an engine of another release left it: created by `crashed-engine` with a
/// lapsed lease, fence 1, every step pending. Written with plain SQL, as that engine would have
/// (the values are the test's own, so they are written into the SQL as literals).
pub async fn plant_instance(
    db: &Db,
    gid: &str,
    saga: (&str, &str),
    input: &Value,
    steps: &[&str],
    now: i64,
) {
    let (saga, fingerprint) = saga;
    let mut sql = format!(
        "INSERT INTO saga_instance (gid, saga, fingerprint, input, status, phase, next_wake_at, owner, \
         lease_until, fence, created_at, updated_at) \
         VALUES ('{gid}', '{saga}', '{fingerprint}', '{input}', 'running', 'forward', {now}, \
         'crashed-engine', 0, 1, {now}, {now});"
    );
    for (idx, name) in steps.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO saga_step (gid, idx, name, status, attempts, compensate_attempts, attempts_base, \
             compensate_attempts_base, updated_at) VALUES ('{gid}', {idx}, '{name}', 'pending', 0, 0, 0, 0, {now});"
        ));
    }
    let sql = sqlx::AssertSqlSafe(sql);
    match db.backend {
        Backend::Sqlite => {
            let pool = saga_core::store::sqlite::open_pool(&db.sqlite_path(), false, 1)
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        }
        Backend::Postgres => {
            let pool = PgPool::connect(db.pg_url.as_deref().unwrap())
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        }
    };
}

/// Runs `business` through `barrier` as its op says; the outcome's label.
async fn through<DB: BarrierDatabase>(
    mut barrier: Barrier,
    pool: &sqlx::Pool<DB>,
    business: impl for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, (), sqlx::Error>,
) -> Result<&'static str, BarrierError<sqlx::Error>> {
    match barrier.op() {
        Op::Action => barrier.action(pool, business).await.map(|o| o.as_str()),
        Op::Compensate => barrier.compensate(pool, business).await.map(|o| o.as_str()),
    }
}

/// A participant's own database: each applied action or undo is one row of `effect`, written
/// in the barrier's local transaction. The table has no unique key on purpose, so a call that
/// applied twice shows up as two rows.
#[derive(Clone)]
pub enum Effects {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Effects {
    /// Applies `op` of `step` of `gid` once, through the barrier; the outcome's label.
    pub async fn apply(&self, gid: &str, step: &str, op: Op) -> Result<&'static str, String> {
        let b = Barrier::new(gid, step, op).map_err(|e| e.to_string())?;
        let (g, s, o) = (gid.to_string(), step.to_string(), op.as_str().to_string());
        let result = match self {
            Effects::Sqlite(pool) => {
                through(b, pool, move |conn| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO effect (gid, step, op) VALUES (?, ?, ?)")
                            .bind(g)
                            .bind(s)
                            .bind(o)
                            .execute(&mut *conn)
                            .await
                            .map(|_| ())
                    })
                })
                .await
            }
            Effects::Postgres(pool) => {
                through(b, pool, move |conn| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO effect (gid, step, op) VALUES ($1, $2, $3)")
                            .bind(g)
                            .bind(s)
                            .bind(o)
                            .execute(&mut *conn)
                            .await
                            .map(|_| ())
                    })
                })
                .await
            }
        };
        result.map_err(|e| e.to_string())
    }

    /// The applied effects of one saga as `(step, op)`, sorted.
    pub async fn of(&self, gid: &str) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = match self {
            Effects::Sqlite(pool) => sqlx::query_as("SELECT step, op FROM effect WHERE gid = ?")
                .bind(gid.to_string())
                .fetch_all(pool)
                .await
                .unwrap(),
            Effects::Postgres(pool) => sqlx::query_as("SELECT step, op FROM effect WHERE gid = $1")
                .bind(gid.to_string())
                .fetch_all(pool)
                .await
                .unwrap(),
        };
        rows.sort();
        rows
    }

    /// Every applied effect as `(gid, step, op)`, sorted.
    pub async fn all(&self) -> Vec<(String, String, String)> {
        let mut rows: Vec<(String, String, String)> = match self {
            Effects::Sqlite(pool) => sqlx::query_as("SELECT gid, step, op FROM effect")
                .fetch_all(pool)
                .await
                .unwrap(),
            Effects::Postgres(pool) => sqlx::query_as("SELECT gid, step, op FROM effect")
                .fetch_all(pool)
                .await
                .unwrap(),
        };
        rows.sort();
        rows
    }
}

/// `(step, op)` pairs as [`Effects::of`] returns them.
pub fn effects_list(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = items
        .iter()
        .map(|(s, o)| (s.to_string(), o.to_string()))
        .collect();
    v.sort();
    v
}

/// Short timings so the whole suite runs in seconds. No saga deadline unless a test sets one.
pub fn config(engine_id: &str) -> EngineConfig {
    EngineConfig {
        engine_id: Some(engine_id.to_string()),
        poll_interval: Duration::from_millis(50),
        lease: Duration::from_millis(1000),
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        step_timeout: Duration::from_millis(500),
        saga_deadline: None,
        max_attempts: 5,
        retention: Duration::from_secs(7 * 24 * 3600),
        shutdown_grace: Duration::from_millis(200),
        max_in_flight: 10_000,
        submit_timeout: Duration::from_secs(5),
    }
}

/// An engine on `store` with both scripted sagas registered to `harness`.
pub async fn engine(store: Store, config: EngineConfig, harness: &Harness) -> Engine {
    Engine::builder(store)
        .config(config)
        .register::<Linear, _>(harness.clone())
        .register::<Fork, _>(harness.clone())
        .build()
        .await
        .expect("build the engine")
}

/// Waits for a terminal status, failing the test after `secs` seconds.
///
/// The view `wait` answers with (handed over by the driver that finished the saga here, or read
/// from the store) must be the one the store holds.
pub async fn finish(engine: &Engine, gid: &str, secs: u64) -> SagaView {
    match engine.wait(gid, Duration::from_secs(secs)).await.unwrap() {
        Waited::Terminal(view) => {
            let stored = engine.status(gid).await.unwrap().unwrap();
            if stored.status == view.status {
                assert_eq!(
                    view, stored,
                    "the view of the finished saga {gid} is not the stored one"
                );
            }
            view
        }
        Waited::TimedOut(view) => panic!("saga {gid} not terminal after {secs} s: {view:#?}"),
    }
}

/// Waits until the saga has left `status` (an operator's retry is accepted at once and acted
/// on by a driver right after), failing the test after `secs` seconds.
pub async fn left_status(engine: &Engine, gid: &str, status: SagaStatus, secs: u64) {
    eventually(secs, &format!("{gid} leaves {status}"), || async {
        engine.status(gid).await.unwrap().unwrap().status != status
    })
    .await;
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn step_statuses(view: &SagaView) -> Vec<&str> {
    view.steps.iter().map(|s| s.status.as_str()).collect()
}

pub fn assert_status(view: &SagaView, status: SagaStatus) {
    assert_eq!(view.status, status, "saga {}: {view:#?}", view.gid);
}

// ---------------------------------------------------------------------------------------------
// Scripted sagas
// ---------------------------------------------------------------------------------------------

const fn step(name: &'static str, kind: StepKind, after: &'static [usize]) -> StepDefinition {
    let compensation = match kind {
        StepKind::Compensatable => Some("undo"),
        _ => None,
    };
    StepDefinition::new(name, kind, after, compensation)
}

static LINEAR_STEPS: [StepDefinition; 4] = [
    step("a", StepKind::Compensatable, &[]),
    step("b", StepKind::Compensatable, &[0]),
    step("c", StepKind::Pivot, &[1]),
    step("d", StepKind::Retriable, &[2]),
];

/// `a` and `b` (compensatable), `c` (pivot), `d` (retriable), in sequence.
pub static LINEAR: SagaDefinition = SagaDefinition {
    name: "linear",
    version: 1,
    steps: &LINEAR_STEPS,
};

/// The same steps as [`LINEAR`] under version 2: another fingerprint.
pub static LINEAR_V2: SagaDefinition = SagaDefinition {
    name: "linear",
    version: 2,
    steps: &LINEAR_STEPS,
};

static FORK_STEPS: [StepDefinition; 4] = [
    step("a", StepKind::Compensatable, &[]),
    step("b", StepKind::Compensatable, &[0]),
    step("c", StepKind::Compensatable, &[0]),
    step("d", StepKind::Pivot, &[1, 2]),
];

/// `a`, then `b` and `c` concurrently (both after `a`), then the pivot `d` after both.
pub static FORK: SagaDefinition = SagaDefinition {
    name: "fork",
    version: 1,
    steps: &FORK_STEPS,
};

static BROKEN_STEPS: [StepDefinition; 2] = [
    step("p", StepKind::Pivot, &[]),
    step("q", StepKind::Pivot, &[0]),
];

/// Two pivots: a hand-written definition that breaks a rule of `SagaDefinition::validate`.
pub static BROKEN: SagaDefinition = SagaDefinition {
    name: "broken",
    version: 1,
    steps: &BROKEN_STEPS,
};

pub struct Linear;
pub struct LinearV2;
pub struct Fork;
pub struct Broken;

macro_rules! scripted_saga {
    ($ty:ident, $def:ident) => {
        impl Saga for $ty {
            type Input = String;
            fn definition() -> &'static SagaDefinition {
                &$def
            }
        }

        impl SagaSteps<Harness> for $ty {
            fn run_action<'a>(
                h: &'a Harness,
                _step: usize,
                ctx: &'a StepContext,
                input: &'a String,
                _reads: Vec<Value>,
            ) -> BoxFuture<'a, RawActionResult> {
                Box::pin(h.run_action(ctx, input))
            }

            fn run_compensation<'a>(
                h: &'a Harness,
                _step: usize,
                ctx: &'a StepContext,
                input: &'a String,
                output: Option<Value>,
                _reads: Vec<Value>,
            ) -> BoxFuture<'a, Result<(), Retry>> {
                Box::pin(h.run_compensation(ctx, input, output))
            }
        }
    };
}

scripted_saga!(Linear, LINEAR);
scripted_saga!(LinearV2, LINEAR_V2);
scripted_saga!(Fork, FORK);
scripted_saga!(Broken, BROKEN);

/// One call of an action or an undo, as the scripted behaviour sees it.
#[derive(Debug, Clone)]
pub struct Call {
    pub gid: String,
    pub step: &'static str,
    pub op: Op,
    pub attempt: u32,
    pub input: String,
    /// For an undo: the output the engine handed it.
    pub output: Option<Value>,
}

/// A finished or running call, as the harness logged it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub call: Call,
    pub started: Instant,
    pub finished: Option<Instant>,
}

type ActionFn = dyn Fn(Call) -> BoxFuture<'static, Result<Value, StepError>> + Send + Sync;
type UndoFn = dyn Fn(Call) -> BoxFuture<'static, Result<(), Retry>> + Send + Sync;

/// The handler of the scripted sagas: logs every call, tracks how many run at once, and asks
/// the test's closures what each call does.
#[derive(Clone)]
pub struct Harness(Arc<HarnessInner>);

struct HarnessInner {
    log: Mutex<Vec<Logged>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    action: Box<ActionFn>,
    undo: Box<UndoFn>,
}

/// The default output of an action: `"{step}:{gid}"`.
pub fn output_of(call: &Call) -> Value {
    json!(format!("{}:{}", call.step, call.gid))
}

impl Harness {
    pub fn new<A, AF, U, UF>(action: A, undo: U) -> Harness
    where
        A: Fn(Call) -> AF + Send + Sync + 'static,
        AF: Future<Output = Result<Value, StepError>> + Send + 'static,
        U: Fn(Call) -> UF + Send + Sync + 'static,
        UF: Future<Output = Result<(), Retry>> + Send + 'static,
    {
        Harness(Arc::new(HarnessInner {
            log: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            action: Box::new(move |c| Box::pin(action(c))),
            undo: Box::new(move |c| Box::pin(undo(c))),
        }))
    }

    /// Every action succeeds with [`output_of`]; every undo succeeds.
    pub fn ok() -> Harness {
        Harness::with_action(|c| async move { Ok(output_of(&c)) })
    }

    /// This action behaviour; every undo succeeds.
    pub fn with_action<A, AF>(action: A) -> Harness
    where
        A: Fn(Call) -> AF + Send + Sync + 'static,
        AF: Future<Output = Result<Value, StepError>> + Send + 'static,
    {
        Harness::new(action, |_| async { Ok(()) })
    }

    /// Actions and undos that apply their effect through the barrier and then succeed.
    pub fn effects(effects: Effects) -> Harness {
        let undo_effects = effects.clone();
        Harness::new(
            move |c| {
                let effects = effects.clone();
                async move {
                    let _outcome = effects
                        .apply(&c.gid, c.step, Op::Action)
                        .await
                        .map_err(StepError::Retry)?;
                    Ok(output_of(&c))
                }
            },
            move |c| {
                let effects = undo_effects.clone();
                async move {
                    effects
                        .apply(&c.gid, c.step, Op::Compensate)
                        .await
                        .map(|_| ())
                        .map_err(Retry)
                }
            },
        )
    }

    fn begin(&self, call: &Call) -> usize {
        let mut log = self.0.log.lock().unwrap();
        log.push(Logged {
            call: call.clone(),
            started: Instant::now(),
            finished: None,
        });
        let now = self.0.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.max_in_flight.fetch_max(now, Ordering::SeqCst);
        log.len() - 1
    }

    fn end(&self, index: usize) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.log.lock().unwrap()[index].finished = Some(Instant::now());
    }

    fn run_action(
        &self,
        ctx: &StepContext,
        input: &str,
    ) -> impl Future<Output = RawActionResult> + Send + 'static {
        let call = Call {
            gid: ctx.gid.clone(),
            step: ctx.step,
            op: Op::Action,
            attempt: ctx.attempt,
            input: input.to_string(),
            output: None,
        };
        let this = self.clone();
        async move {
            let index = this.begin(&call);
            let _end = EndGuard(&this, index);
            (this.0.action)(call).await
        }
    }

    fn run_compensation(
        &self,
        ctx: &StepContext,
        input: &str,
        output: Option<Value>,
    ) -> impl Future<Output = Result<(), Retry>> + Send + 'static {
        let call = Call {
            gid: ctx.gid.clone(),
            step: ctx.step,
            op: Op::Compensate,
            attempt: ctx.attempt,
            input: input.to_string(),
            output,
        };
        let this = self.clone();
        async move {
            let index = this.begin(&call);
            let _end = EndGuard(&this, index);
            (this.0.undo)(call).await
        }
    }

    /// Every logged call of one saga, in start order.
    pub fn calls(&self, gid: &str) -> Vec<Logged> {
        self.0
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.call.gid == gid)
            .cloned()
            .collect()
    }

    /// The calls of `op` of one saga, in start order.
    pub fn calls_of(&self, gid: &str, op: Op) -> Vec<Logged> {
        self.calls(gid)
            .into_iter()
            .filter(|l| l.call.op == op)
            .collect()
    }

    /// Step names of the calls of `op` of one saga, in start order.
    pub fn order(&self, gid: &str, op: Op) -> Vec<&'static str> {
        self.calls_of(gid, op).iter().map(|l| l.call.step).collect()
    }

    /// How many calls of `op` of `step` of one saga were made.
    pub fn count(&self, gid: &str, step: &str, op: Op) -> usize {
        self.calls_of(gid, op)
            .iter()
            .filter(|l| l.call.step == step)
            .count()
    }

    /// Every logged call.
    pub fn all(&self) -> Vec<Logged> {
        self.0.log.lock().unwrap().clone()
    }

    /// The most calls that ran at the same moment.
    pub fn max_in_flight(&self) -> usize {
        self.0.max_in_flight.load(Ordering::SeqCst)
    }
}

/// Marks a call finished even when it is aborted (timed out, abandoned) or panics.
struct EndGuard<'a>(&'a Harness, usize);

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        self.0.end(self.1);
    }
}
