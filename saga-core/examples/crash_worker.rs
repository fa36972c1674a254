//! A saga engine process for crash tests: `saga-core/tests/engine_recovery.rs` starts it,
//! SIGKILLs it mid-run, and starts it again to show that a new engine finishes every saga with
//! each step's side effect applied exactly once.
//!
//! ```text
//! crash_worker sqlite   DIR  INSTANCE_ID SAGAS STEP_MS [LEASE_MS]
//! crash_worker postgres URL  INSTANCE_ID SAGAS STEP_MS [LEASE_MS]
//! ```
//!
//! Opens the store (`DIR/saga.db`, or the database at `URL`) and the participant database
//! (`DIR/effects.db`, or schema `participant`), starts an engine under `INSTANCE_ID` (`default`:
//! the derived default engine id) with a lease of `LEASE_MS` (default 600) and prints
//! `engine-id {id}`, submits sagas `kill-0` .. `kill-{SAGAS-1}` of four steps (a repeat submit
//! is a no-op), prints `ready`, and exits once every saga is terminal, printing `done`. Each
//! step inserts one row into the participant's `effect` table through the barrier, then sleeps
//! `STEP_MS` so that a kill lands between and inside steps.

#[cfg(all(feature = "sqlite", feature = "postgres"))]
mod worker {
    use std::io::Write;
    use std::time::Duration;

    use saga_core::barrier::{self, Barrier, BarrierDatabase, BarrierError, BusinessFuture};
    use saga_core::engine::{Engine, EngineConfig};
    use saga_core::machine::SagaStatus;
    use saga_core::step::RawActionResult;
    use saga_core::store::Store;
    use saga_core::store::sqlite::SqliteOptions;
    use saga_core::{
        BoxFuture, Op, Retry, Saga, SagaDefinition, SagaSteps, StepContext, StepDefinition,
        StepError, StepKind,
    };

    const fn step(name: &'static str, kind: StepKind, after: &'static [usize]) -> StepDefinition {
        let compensation = match kind {
            StepKind::Compensatable => Some("undo"),
            _ => None,
        };
        StepDefinition::new(name, kind, after, compensation)
    }

    static STEPS: [StepDefinition; 4] = [
        step("a", StepKind::Compensatable, &[]),
        step("b", StepKind::Compensatable, &[0]),
        step("c", StepKind::Pivot, &[1]),
        step("d", StepKind::Retriable, &[2]),
    ];
    static DEF: SagaDefinition = SagaDefinition {
        name: "crash_linear",
        version: 1,
        steps: &STEPS,
    };

    struct CrashLinear;

    impl Saga for CrashLinear {
        type Input = u32;
        fn definition() -> &'static SagaDefinition {
            &DEF
        }
    }

    #[derive(Clone)]
    enum Effects {
        Sqlite(sqlx::SqlitePool),
        Postgres(sqlx::PgPool),
    }

    struct Participant {
        effects: Effects,
        step_ms: u64,
    }

    /// Runs `business` through `barrier` as its op says.
    async fn through<DB: BarrierDatabase>(
        mut barrier: Barrier,
        pool: &sqlx::Pool<DB>,
        business: impl for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, (), sqlx::Error>,
    ) -> Result<(), BarrierError<sqlx::Error>> {
        match barrier.op() {
            Op::Action => barrier
                .action(pool, business)
                .await
                .map(|_ran_or_absorbed| ()),
            Op::Compensate => barrier.compensate(pool, business).await.map(|_| ()),
        }
    }

    impl Participant {
        async fn apply(&self, ctx: &StepContext) -> Result<(), String> {
            let b = Barrier::for_step(ctx);
            let (g, s, o) = (
                ctx.gid.clone(),
                ctx.step.to_string(),
                ctx.op.as_str().to_string(),
            );
            let outcome = match &self.effects {
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
            outcome.map_err(|e| e.to_string())?;
            // The effect is committed; a kill now loses only the engine's record of it.
            tokio::time::sleep(Duration::from_millis(self.step_ms)).await;
            Ok(())
        }
    }

    impl SagaSteps<Participant> for CrashLinear {
        fn run_action<'a>(
            h: &'a Participant,
            _step: usize,
            ctx: &'a StepContext,
            _input: &'a u32,
            _reads: Vec<serde_json::Value>,
        ) -> BoxFuture<'a, RawActionResult> {
            Box::pin(async move {
                h.apply(ctx).await.map_err(StepError::Retry)?;
                Ok(serde_json::json!(ctx.step))
            })
        }

        fn run_compensation<'a>(
            h: &'a Participant,
            _step: usize,
            ctx: &'a StepContext,
            _input: &'a u32,
            _output: Option<serde_json::Value>,
            _reads: Vec<serde_json::Value>,
        ) -> BoxFuture<'a, Result<(), Retry>> {
            Box::pin(async move { h.apply(ctx).await.map_err(Retry) })
        }
    }

    const EFFECT_TABLE: &str = "CREATE TABLE IF NOT EXISTS effect \
        (gid TEXT NOT NULL, step TEXT NOT NULL, op TEXT NOT NULL)";

    pub async fn main(args: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
        let [backend, location, instance_id, sagas, step_ms, rest @ ..] = &args[..] else {
            return Err(
                "usage: crash_worker sqlite|postgres DIR|URL INSTANCE_ID SAGAS STEP_MS [LEASE_MS]"
                    .into(),
            );
        };
        let sagas: u32 = sagas.parse()?;
        let step_ms: u64 = step_ms.parse()?;
        let lease_ms: u64 = match rest {
            [] => 600,
            [lease_ms] => lease_ms.parse()?,
            _ => return Err("too many arguments".into()),
        };
        let (store, effects) = match backend.as_str() {
            "sqlite" => {
                let dir = std::path::Path::new(location);
                let store = Store::sqlite(dir.join("saga.db"), SqliteOptions::default()).await?;
                let pool =
                    saga_core::store::sqlite::open_pool(&dir.join("effects.db"), true, 4).await?;
                barrier::migrate_sqlite(&pool).await?;
                sqlx::query(EFFECT_TABLE).execute(&pool).await?;
                (store, Effects::Sqlite(pool))
            }
            "postgres" => {
                let store = Store::postgres(location, None, 16).await?;
                let pool =
                    saga_core::store::postgres::open_pool(location, Some("participant"), 8).await?;
                barrier::migrate_postgres(&pool).await?;
                sqlx::query(EFFECT_TABLE).execute(&pool).await?;
                (store, Effects::Postgres(pool))
            }
            other => return Err(format!("unknown backend `{other}`").into()),
        };
        let config = EngineConfig {
            engine_id: Some(instance_id.clone()).filter(|id| id != "default"),
            poll_interval: Duration::from_millis(50),
            lease: Duration::from_millis(lease_ms),
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
            step_timeout: Duration::from_secs(5),
            saga_deadline: None,
            max_attempts: 10,
            retention: Duration::from_secs(3600),
            shutdown_grace: Duration::from_millis(100),
            max_in_flight: 10_000,
            submit_timeout: Duration::from_secs(5),
        };
        let engine = Engine::builder(store)
            .config(config)
            .register::<CrashLinear, _>(Participant { effects, step_ms })
            .build()
            .await?;
        println!("engine-id {}", engine.engine_id());
        std::io::stdout().flush()?;
        for i in 0..sagas {
            engine
                .submit::<CrashLinear>(&format!("kill-{i}"), &i)
                .await?;
        }
        println!("ready");
        std::io::stdout().flush()?;
        loop {
            let counts = engine.store().count_by_status().await?;
            let total: i64 = counts.iter().map(|(_, n)| n).sum();
            let open: i64 = counts
                .iter()
                .filter(|(s, _)| !s.is_terminal())
                .map(|(_, n)| n)
                .sum();
            if total >= i64::from(sagas) && open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stuck = engine.list(Some(SagaStatus::Stuck), 1000).await?;
        println!("done stuck={}", stuck.len());
        std::io::stdout().flush()?;
        engine.shutdown().await;
        Ok(())
    }
}

#[cfg(all(feature = "sqlite", feature = "postgres"))]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().expect("start a tokio runtime");
    if let Err(e) = runtime.block_on(worker::main(args)) {
        eprintln!("crash_worker: {e}");
        std::process::exit(2);
    }
}

#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
fn main() {
    eprintln!("crash_worker needs the `sqlite` and `postgres` features");
    std::process::exit(2);
}
