//! The engine's own recovery under the deterministic clock: per seeded schedule, two engines
//! of different engine ids share one SQLite store; sagas are submitted; one engine stalls with a
//! step call held past its lease, so that the other claims the saga (the fence moves on), and
//! then goes on and must be fenced off; engines crash at random crash points and restart; an
//! operator retries or compensates sagas, stuck ones and running ones. After every schedule:
//! every saga finished; the participants' barrier applied every action at most once and every
//! compensation exactly once for the actions that applied, in reverse order; the harness's check
//! of the saga guarantee holds on the events of both engines; the store holds no write of a stale
//! fence. `SAGA_TEST_SEED=<seed>` replays one schedule; `SAGA_RECOVERY_SCHEDULES=<n>` sets how
//! many run (see [`DEFAULT_SCHEDULES`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use saga_core::barrier::{self, Barrier};
use saga_core::clock::Clock;
use saga_core::store::sqlite::{SqliteOptions, open_pool};
use saga_core::testing::{Log, SEED_VAR, Tap, kill, saga_violations, stall, tapped};
use saga_core::{
    Engine, EngineConfig, EngineError, EngineEvent, Op, Retry, Saga, SagaStatus, StepContext,
    StepError, Store,
};
use sqlx::SqlitePool;
use tokio::sync::Notify;

/// Schedules run by default: about a minute in a debug build on two cores. CI runs 10,000
/// (`SAGA_RECOVERY_SCHEDULES=10000` in `.ci/run`; figures in docs/testing.md).
const DEFAULT_SCHEDULES: u64 = 3_000;

/// The environment variable that sets how many schedules run.
const COUNT_VAR: &str = "SAGA_RECOVERY_SCHEDULES";

/// The virtual epoch of every schedule: 2026-01-01.
const EPOCH_MS: i64 = 1_767_225_600_000;

/// The lease of both engines: a stalled engine loses its saga after it.
const LEASE: Duration = Duration::from_secs(2);

/// Virtual time a schedule may take before its sagas count as not finished.
const PATIENCE: Duration = Duration::from_secs(600);

/// Most engine crashes in one schedule.
const MAX_CRASHES: u32 = 2;

/// Schedules run at once, each on a thread of its own.
const WORKERS: usize = 2;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Order {
    amount: i64,
}

/// Reserve stock, charge the card, ship: shipping is the pivot.
#[derive(Saga)]
#[saga(input = Order)]
enum Fulfil {
    #[compensate(release)]
    Reserve,
    #[compensate(refund)]
    Charge,
    #[pivot]
    Ship,
}

/// Step indexes, in definition order.
const STEPS: [&str; 3] = ["reserve", "charge", "ship"];

/// What happens to one call, drawn from the schedule's seed and the call's identity alone, so
/// that the interleaving of the sagas does not change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallFault {
    None,
    /// Fails before doing anything.
    ErrorBefore,
    /// Does its work; the reply is lost.
    ReplyLost,
    /// Refused without doing anything (actions only, never after an earlier call of it ran).
    BusinessFailure,
}

/// One schedule, drawn from its seed.
#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    sagas: usize,
    /// Which engine submits each saga (0 = the one that stalls, 1 = the other).
    submit_on: Vec<usize>,
    /// Engine 0 holds its `n`-th action call and stalls.
    stall_at: u32,
    /// The crash point each engine's first incarnation dies at, if any.
    crash_at: [Option<u64>; 2],
    /// An operator action on a running saga: at this virtual time, on this saga, through this
    /// engine, `true` to compensate, `false` to retry.
    operator: Option<(Duration, usize, usize, bool)>,
    /// In percent: calls failing before, replies lost, business failures.
    rates: (u32, u32, u32),
}

impl Plan {
    fn new(seed: u64) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed);
        let sagas = rng.random_range(1..=3);
        let crash = |rng: &mut StdRng| rng.random_bool(0.4).then(|| rng.random_range(1..=24));
        Plan {
            seed,
            sagas,
            submit_on: (0..sagas).map(|_| rng.random_range(0..2)).collect(),
            stall_at: rng.random_range(1..=4),
            crash_at: [crash(&mut rng), crash(&mut rng)],
            operator: rng.random_bool(0.4).then(|| {
                (
                    Duration::from_millis(rng.random_range(0..3000)),
                    rng.random_range(0..sagas),
                    rng.random_range(0..2),
                    rng.random_bool(0.5),
                )
            }),
            rates: (
                rng.random_range(0..15),
                rng.random_range(0..15),
                rng.random_range(0..8),
            ),
        }
    }

    fn gid(&self, i: usize) -> String {
        format!("s{}-{i}", self.seed)
    }

    fn engine_id(&self, e: usize) -> String {
        format!("{}-{}", ["a", "b"][e], self.seed)
    }

    fn fault(&self, gid: &str, step: usize, op: Op, call: u32) -> CallFault {
        let mut h = self.seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in gid
            .bytes()
            .chain([step as u8, op as u8])
            .chain(call.to_le_bytes())
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let roll = StdRng::seed_from_u64(h).random_range(0..100);
        let (before, lost, business) = self.rates;
        if roll < before {
            CallFault::ErrorBefore
        } else if roll < before + lost {
            CallFault::ReplyLost
        } else if op == Op::Action && roll < before + lost + business {
            CallFault::BusinessFailure
        } else {
            CallFault::None
        }
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {}: {} sagas submitted on engines {:?}; engine a stalls on its action call #{}; \
             crash points {:?}; operator {:?}; fault rates % (before, reply lost, business) {:?}",
            self.seed,
            self.sagas,
            self.submit_on,
            self.stall_at,
            self.crash_at,
            self.operator,
            self.rates
        )
    }
}

/// The participants' side of one schedule, shared by every engine: the barrier database, the
/// calls that reached each step, and the held call of the stalling engine.
struct Participants {
    db: SqlitePool,
    plan: Plan,
    clock: Clock,
    /// Calls per (gid, step, op).
    calls: Mutex<HashMap<(String, usize, Op), u32>>,
    /// Gids whose calls no longer fail (an operator resolves them).
    healed: Mutex<HashSet<String>>,
    /// Action calls engine 0 made.
    stalling_calls: AtomicU32,
    /// The gid of the held call, once held.
    held: Mutex<Option<String>>,
    released: AtomicBool,
    release: Notify,
    log: Arc<Log>,
}

/// One engine's steps: the participants, and which engine calls.
struct Shop {
    world: Arc<Participants>,
    engine: usize,
}

impl Shop {
    async fn call(&self, ctx: &StepContext, step: usize) -> Result<(), StepError> {
        let w = &self.world;
        let call = w.count(ctx, step);
        if self.engine == 0
            && ctx.op == Op::Action
            && w.stalling_calls.fetch_add(1, Ordering::SeqCst) + 1 == w.plan.stall_at
        {
            if let Ok(mut held) = w.held.lock() {
                *held = Some(ctx.gid.clone());
            }
            // A held call is news for the schedule's loop, as an event is.
            w.log.nudge();
            // Time passes while the call is held: nothing holds the clock still here.
            while !w.released.load(Ordering::SeqCst) {
                w.release.notified().await;
            }
        }
        let fault = if w.is_healed(&ctx.gid) {
            CallFault::None
        } else {
            w.plan.fault(&ctx.gid, step, ctx.op, call)
        };
        match fault {
            CallFault::ErrorBefore => return Err(StepError::Retry("failed before".into())),
            CallFault::BusinessFailure if call == 1 => {
                return Err(StepError::failure("refused"));
            }
            _ => {}
        }
        let (gid, name, op) = (ctx.gid.clone(), STEPS[step], ctx.op.as_str());
        let mut barrier = Barrier::for_step(ctx);
        let work = async {
            if ctx.op == Op::Action {
                barrier
                    .action(&w.db, move |tx| Box::pin(effect(tx, gid, name, op)))
                    .await
                    .map_err(|e| StepError::Retry(e.to_string()))?
                    .into()
            } else {
                let done: Result<(), Retry> = barrier
                    .compensate(&w.db, move |tx| Box::pin(effect(tx, gid, name, op)))
                    .await
                    .map_err(|e| StepError::Retry(e.to_string()))?
                    .into();
                done.map_err(|r| StepError::Retry(r.0))
            }
        };
        let done: Result<(), StepError> = w.clock.io(work).await;
        match fault {
            CallFault::ReplyLost => Err(StepError::Retry("reply lost".into())),
            _ => done,
        }
    }

    async fn compensation(&self, ctx: &StepContext, step: usize) -> Result<(), Retry> {
        self.call(ctx, step)
            .await
            .map_err(|e| Retry::new(e.to_string()))
    }
}

async fn effect(
    tx: &mut sqlx::SqliteConnection,
    gid: String,
    step: &'static str,
    op: &'static str,
) -> Result<(), StepError> {
    sqlx::query("INSERT INTO effect (gid, step, op) VALUES (?1, ?2, ?3)")
        .bind(gid)
        .bind(step)
        .bind(op)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

impl Participants {
    fn count(&self, ctx: &StepContext, step: usize) -> u32 {
        let Ok(mut calls) = self.calls.lock() else {
            return 1;
        };
        let n = calls.entry((ctx.gid.clone(), step, ctx.op)).or_default();
        *n += 1;
        *n
    }

    fn calls_of(&self, gid: &str) -> Vec<(u32, u32)> {
        let calls = self.calls.lock().map(|c| c.clone()).unwrap_or_default();
        let get = |step, op| {
            calls
                .get(&(gid.to_string(), step, op))
                .copied()
                .unwrap_or(0)
        };
        (0..STEPS.len())
            .map(|s| (get(s, Op::Action), get(s, Op::Compensate)))
            .collect()
    }

    fn is_healed(&self, gid: &str) -> bool {
        self.healed.lock().map(|h| h.contains(gid)).unwrap_or(false)
    }

    fn heal(&self, gid: &str) {
        if let Ok(mut h) = self.healed.lock() {
            h.insert(gid.to_string());
        }
    }

    fn held(&self) -> Option<String> {
        self.held.lock().ok().and_then(|h| h.clone())
    }

    fn let_go(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.release.notify_waiters();
    }
}

impl FulfilSteps for Shop {
    async fn reserve(&self, ctx: &StepContext, _: &Order) -> Result<(), StepError> {
        self.call(ctx, 0).await
    }
    async fn release(&self, ctx: &StepContext, _: &Order, _: Option<()>) -> Result<(), Retry> {
        self.compensation(ctx, 0).await
    }
    async fn charge(&self, ctx: &StepContext, _: &Order) -> Result<(), StepError> {
        self.call(ctx, 1).await
    }
    async fn refund(&self, ctx: &StepContext, _: &Order, _: Option<()>) -> Result<(), Retry> {
        self.compensation(ctx, 1).await
    }
    async fn ship(&self, ctx: &StepContext, _: &Order) -> Result<(), StepError> {
        self.call(ctx, 2).await
    }
}

/// What the schedules went through, summed: the test fails unless each happened.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// The other engine claimed the stalled engine's saga before it went on.
    takeovers: u64,
    crashes: u64,
    operator_actions: u64,
    stuck: u64,
    succeeded: u64,
    compensated: u64,
}

impl Seen {
    fn add(&mut self, o: Seen) {
        self.takeovers += o.takeovers;
        self.crashes += o.crashes;
        self.operator_actions += o.operator_actions;
        self.stuck += o.stuck;
        self.succeeded += o.succeeded;
        self.compensated += o.compensated;
    }
}

/// One engine of a schedule and its tap.
struct Running {
    engine: Engine,
    tap: Arc<Tap>,
}

/// What one schedule shares: the store, the participants, the clock and the log.
struct Run {
    plan: Plan,
    store: Store,
    world: Arc<Participants>,
    clock: Clock,
    log: Arc<Log>,
}

impl Run {
    async fn start(
        &self,
        e: usize,
        incarnation: u32,
        crash_at: Option<u64>,
    ) -> Result<Running, String> {
        let label = format!("{}#{incarnation}", self.plan.engine_id(e));
        let tap = Tap::new(label, self.log.clone(), crash_at);
        let builder = Engine::builder(self.store.clone())
            .config(EngineConfig::default())
            .engine_id(self.plan.engine_id(e))
            .lease(LEASE)
            .poll_interval(Duration::from_millis(100))
            .retry(Duration::from_millis(100), Duration::from_secs(1))
            .step_timeout(Duration::from_secs(10))
            .saga_deadline(Some(Duration::from_secs(60)))
            .max_attempts(3)
            .clock(self.clock.clone())
            .register::<Fulfil, _>(Shop {
                world: self.world.clone(),
                engine: e,
            });
        let engine = tapped(builder, tap.clone()).build().await.map_err(|err| {
            format!(
                "engine {label} did not start: {err}",
                label = self.plan.engine_id(e)
            )
        })?;
        Ok(Running { engine, tap })
    }

    /// An operator action on `gid` through `engine`: compensate (falling back to a retry past
    /// the pivot) or retry. `false` when it must be tried again later.
    async fn operate(&self, engine: &Engine, gid: &str, compensate: bool) -> bool {
        let answer = if compensate {
            match engine.compensate(gid).await {
                Err(EngineError::PastPivot { .. }) => engine.retry(gid).await,
                other => other,
            }
        } else {
            engine.retry(gid).await
        };
        match answer {
            Ok(()) | Err(EngineError::Finished { .. }) => true,
            Err(_) => false,
        }
    }
}

/// Runs one schedule in `dir` (its store and participants' files, reused by the schedules of
/// one thread under fresh gids) on the current, paused runtime: the violations found.
async fn schedule(plan: Plan, dir: &Path) -> Result<Seen, String> {
    let clock = Clock::tokio(EPOCH_MS, plan.seed);
    let options = SqliteOptions {
        durable: false,
        readers: 1,
    };
    let store_path = dir.join("saga.db");
    let store = clock
        .io(Store::sqlite(&store_path, options))
        .await
        .map_err(|e| format!("the store did not open: {e}"))?;
    let db = clock
        .io(participants_db(&dir.join("world.db")))
        .await
        .map_err(|e| format!("the participants' database did not open: {e}"))?;
    let log = Log::new();
    let world = Arc::new(Participants {
        db: db.clone(),
        plan: plan.clone(),
        clock: clock.clone(),
        calls: Mutex::new(HashMap::new()),
        healed: Mutex::new(HashSet::new()),
        stalling_calls: AtomicU32::new(0),
        held: Mutex::new(None),
        released: AtomicBool::new(false),
        release: Notify::new(),
        log: log.clone(),
    });
    let run = Run {
        plan: plan.clone(),
        store: store.clone(),
        world: world.clone(),
        clock: clock.clone(),
        log: log.clone(),
    };
    let mut engines = [
        run.start(0, 1, plan.crash_at[0]).await?,
        run.start(1, 1, plan.crash_at[1]).await?,
    ];
    let mut incarnations = [1u32, 1];
    let mut crashes = 0;
    let gids: Vec<String> = (0..plan.sagas).map(|i| plan.gid(i)).collect();
    for (i, gid) in gids.iter().enumerate() {
        let on = plan.submit_on[i];
        let input = Order { amount: 10 };
        let mut submitted = engines[on].engine.submit::<Fulfil>(gid, &input).await;
        if submitted.is_err() {
            submitted = engines[1 - on].engine.submit::<Fulfil>(gid, &input).await;
        }
        submitted.map_err(|e| format!("{gid} was not submitted: {e}"))?;
    }
    let begun = tokio::time::Instant::now();
    let limit = begun + PATIENCE;
    let mut stalled: Option<(tokio::time::Instant, usize)> = None;
    let mut resumed = false;
    let mut operator = plan.operator;
    let mut seen = 0;
    let mut stuck: Vec<(String, bool)> = Vec::new();
    let mut stuck_count = 0u64;
    let mut notes = Vec::new();
    let mut seen_here = Seen::default();
    // Whether to look for stuck sagas in the store: an operator action lost with a crash
    // leaves its saga stuck, and the operator tries again.
    let mut recheck = false;
    loop {
        let now = tokio::time::Instant::now();
        for e in 0..2 {
            if !engines[e].tap.crashed() {
                continue;
            }
            kill(&engines[e].engine);
            notes.push(format!(
                "engine {} crashed at its crash point {}",
                plan.engine_id(e),
                engines[e].tap.points()
            ));
            if e == 0 && stalled.is_some() && !resumed {
                resumed = true;
                world.let_go();
            }
            tokio::task::yield_now().await;
            crashes += 1;
            seen_here.crashes += 1;
            recheck = true;
            incarnations[e] += 1;
            let again = (crashes < MAX_CRASHES)
                .then(|| plan.crash_at[1 - e])
                .flatten();
            engines[e] = run.start(e, incarnations[e], again).await?;
        }
        if stalled.is_none() && world.held().is_some() {
            stall(&engines[0].engine, true);
            stalled = Some((now, log.events().len()));
            notes.push(format!("engine a stalled at {:?}", now - begun));
        }
        if let (Some((at, from)), false) = (stalled, resumed) {
            let held = world.held().unwrap_or_default();
            let other = plan.engine_id(1);
            let taken = log.events()[from..]
                .iter()
                .any(|(label, ev)| label.starts_with(&other) && ev.gid() == held);
            if taken || now >= at + LEASE * 3 {
                stall(&engines[0].engine, false);
                world.let_go();
                resumed = true;
                seen_here.takeovers += u64::from(taken);
                notes.push(format!(
                    "engine a resumed at {:?}, taken over: {taken}",
                    now - begun
                ));
            }
        }
        if let Some((at, i, via, compensate)) = operator
            && now >= begun + at
        {
            let via = if via == 0 && stalled.is_some() && !resumed {
                1
            } else {
                via
            };
            if run
                .operate(&engines[via].engine, &gids[i], compensate)
                .await
            {
                notes.push(format!(
                    "operator: compensate={compensate} on {} via {via}",
                    gids[i]
                ));
                operator = None;
                seen_here.operator_actions += 1;
            }
        }
        let events = log.events();
        for (_, ev) in &events[seen.min(events.len())..] {
            if let EngineEvent::Stuck { gid, .. } = ev {
                world.heal(gid);
                stuck_count += 1;
                seen_here.stuck += 1;
                let compensate = StdRng::seed_from_u64(plan.seed ^ stuck_count).random_bool(0.5);
                stuck.push((gid.clone(), compensate));
            }
        }
        seen = events.len();
        if std::mem::take(&mut recheck) {
            // Every saga the store has as stuck, also one whose driver is still persisting its
            // finish: an operator action that reaches such a driver is handed on when it stops.
            for gid in &gids {
                let view = engines[1].engine.status(gid).await;
                let is_stuck = matches!(view, Ok(Some(v)) if v.status == SagaStatus::Stuck);
                if is_stuck && !stuck.iter().any(|(g, _)| g == gid) {
                    stuck.push((gid.clone(), false));
                }
            }
        }
        let mut left = Vec::new();
        for (gid, compensate) in std::mem::take(&mut stuck) {
            let via = if stalled.is_some() && !resumed {
                1
            } else {
                (stuck_count % 2) as usize
            };
            if run.operate(&engines[via].engine, &gid, compensate).await {
                notes.push(format!("operator on stuck {gid}: compensate={compensate}"));
                seen_here.operator_actions += 1;
            } else {
                left.push((gid, compensate));
            }
        }
        stuck = left;
        let finished: HashSet<&str> = events
            .iter()
            .filter(|(_, ev)| matches!(ev, EngineEvent::Finished { .. }))
            .map(|(_, ev)| ev.gid())
            .collect();
        if gids.iter().all(|g| finished.contains(g.as_str())) || now >= limit {
            break;
        }
        let mut wake = limit;
        if let (Some((at, _)), false) = (stalled, resumed) {
            wake = wake.min(at + LEASE * 3);
        }
        if let Some((at, ..)) = operator {
            wake = wake.min((begun + at).max(now + Duration::from_millis(100)));
        }
        if !stuck.is_empty() {
            wake = wake.min(now + Duration::from_secs(1));
        }
        if tokio::time::timeout_at(wake, log.changed()).await.is_err() {
            recheck = true;
        }
    }
    world.let_go();
    notes.push(format!(
        "at the end ({:?}): engines driving {} and {} sagas",
        tokio::time::Instant::now() - begun,
        engines[0].engine.driving(),
        engines[1].engine.driving()
    ));
    for r in &engines {
        kill(&r.engine);
    }
    tokio::time::sleep(Duration::ZERO).await;
    let checks = clock.io(open_pool(&store_path, false, 1)).await;
    let checks = checks.map_err(|e| format!("the store did not open for the checks: {e}"))?;
    let mut violations = Vec::new();
    for gid in &gids {
        let view = clock.io(engines[1].engine.status(gid)).await;
        let view = match view {
            Ok(Some(view)) => view,
            Ok(None) => {
                violations.push(format!("{gid}: not in the store"));
                continue;
            }
            Err(e) => {
                violations.push(format!("{gid}: could not be read: {e}"));
                continue;
            }
        };
        match view.status {
            SagaStatus::Succeeded => seen_here.succeeded += 1,
            SagaStatus::Compensated => seen_here.compensated += 1,
            _ => {}
        }
        if !view.status.is_finished() {
            violations.push(format!("{gid}: did not finish: it is {}", view.status));
            let row = clock.io(instance_row(&checks, gid)).await;
            notes.push(format!(
                "{gid} in the store (owner, fence, lease until, next wake): {row:?}"
            ));
        }
        for v in saga_violations(
            Fulfil::definition(),
            &view,
            &log.events_of(gid),
            &world.calls_of(gid),
        ) {
            violations.push(format!("{gid}: {v}"));
        }
        let effects = clock
            .io(effects(&db, gid))
            .await
            .map_err(|e| e.to_string())?;
        violations.extend(barrier_violations(gid, view.status, &effects));
        let attempts = clock
            .io(attempts(&checks, gid))
            .await
            .map_err(|e| e.to_string())?;
        violations.extend(fence_violations(gid, &attempts, &log.events()));
    }
    checks.close().await;
    if violations.is_empty() {
        return Ok(seen_here);
    }
    let mut text = format!(
        "schedule {plan}\nreplay it: {SEED_VAR}={} cargo test -p saga-core --test testing_recovery\n",
        plan.seed
    );
    text.push_str("broken:\n");
    for v in &violations {
        let _ = writeln!(text, "  - {v}");
    }
    text.push_str("what the test did:\n");
    for n in &notes {
        let _ = writeln!(text, "  {n}");
    }
    text.push_str("what happened:\n");
    for (i, (label, ev)) in log.events().iter().enumerate() {
        let _ = writeln!(text, "  {:>3}. [{label}] {ev}", i + 1);
    }
    Err(text)
}

async fn participants_db(path: &Path) -> Result<SqlitePool, String> {
    let db = open_pool(path, false, 2).await.map_err(|e| e.to_string())?;
    barrier::migrate(&db).await.map_err(|e| e.to_string())?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS effect (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
         gid TEXT NOT NULL, step TEXT NOT NULL, op TEXT NOT NULL); \
         CREATE INDEX IF NOT EXISTS effect_gid ON effect (gid);",
    )
    .execute(&db)
    .await
    .map_err(|e| e.to_string())?;
    Ok(db)
}

/// The business effects the barrier let through for `gid`, in the order they committed.
async fn effects(db: &SqlitePool, gid: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT step, op FROM effect WHERE gid = ?1 ORDER BY seq")
        .bind(gid)
        .fetch_all(db)
        .await
}

/// The lease fields of `gid`'s stored instance, relative to the epoch.
async fn instance_row(
    db: &SqlitePool,
    gid: &str,
) -> Result<(Option<String>, i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT owner, fence, lease_until - ?2, next_wake_at - ?2 FROM saga_instance WHERE gid = ?1",
    )
    .bind(gid)
    .bind(EPOCH_MS)
    .fetch_one(db)
    .await
}

/// One stored attempt: step, op, owner, fence, in the order the store inserted them.
type Attempt = (String, String, String, i64);

async fn attempts(db: &SqlitePool, gid: &str) -> Result<(i64, Vec<Attempt>), sqlx::Error> {
    let fence: i64 = sqlx::query_scalar("SELECT fence FROM saga_instance WHERE gid = ?1")
        .bind(gid)
        .fetch_one(db)
        .await?;
    let rows = sqlx::query_as(
        "SELECT step, op, owner, fence FROM saga_attempt WHERE gid = ?1 ORDER BY rowid",
    )
    .bind(gid)
    .fetch_all(db)
    .await?;
    Ok((fence, rows))
}

/// What the barrier let through must be the saga guarantee on the participants' side: every
/// action at most once, every compensation at most once and only after its action; succeeded:
/// every action, no compensation; compensated: no pivot, every applied action compensated, the
/// compensations in reverse order.
fn barrier_violations(gid: &str, status: SagaStatus, effects: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let at = |step: &str, op: &str| effects.iter().position(|(s, o)| s == step && o == op);
    let count = |step: &str, op: &str| effects.iter().filter(|(s, o)| s == step && o == op).count();
    for step in STEPS {
        for op in ["action", "compensate"] {
            if count(step, op) > 1 {
                out.push(format!(
                    "{gid}: the {op} of {step} applied {} times",
                    count(step, op)
                ));
            }
        }
        if let (Some(a), Some(c)) = (at(step, "action"), at(step, "compensate"))
            && c < a
        {
            out.push(format!(
                "{gid}: the action of {step} applied after its compensation"
            ));
        }
        let (actions, compensations) = (count(step, "action"), count(step, "compensate"));
        let broken = match status {
            SagaStatus::Succeeded => actions != 1 || compensations != 0,
            SagaStatus::Compensated if step == "ship" => actions != 0,
            SagaStatus::Compensated => actions != compensations,
            _ => false,
        };
        if broken {
            out.push(format!(
                "{gid}: {status}, but {step} applied as {effects:?}"
            ));
        }
    }
    if let (Some(charge), Some(reserve)) = (at("charge", "compensate"), at("reserve", "compensate"))
        && reserve < charge
    {
        out.push(format!("{gid}: reserve was compensated before charge"));
    }
    out
}

/// No write of a stale fence: in the order the store inserted them, the attempts' fences never
/// go down, each fence belongs to one engine, none is past the instance's; every step call an
/// engine published as finished is an attempt of that engine in the store, and no more.
fn fence_violations(
    gid: &str,
    (fence, attempts): &(i64, Vec<Attempt>),
    events: &[(String, EngineEvent)],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut owners: BTreeMap<i64, &str> = BTreeMap::new();
    let mut last = i64::MIN;
    for (step, op, owner, f) in attempts {
        if *f < last {
            out.push(format!(
                "{gid}: {step} {op} of {owner} stored under fence {f} after fence {last}: a stale write"
            ));
        }
        last = last.max(*f);
        if *f > *fence {
            out.push(format!(
                "{gid}: an attempt under fence {f}, past the instance's {fence}"
            ));
        }
        if let Some(other) = owners.insert(*f, owner)
            && other != owner
        {
            out.push(format!("{gid}: fence {f} held by both {other} and {owner}"));
        }
    }
    let mut published: BTreeMap<&str, usize> = BTreeMap::new();
    for (label, ev) in events {
        if ev.gid() == gid && matches!(ev, EngineEvent::StepFinished { .. }) {
            let engine = label.split('#').next().unwrap_or(label);
            *published.entry(engine).or_default() += 1;
        }
    }
    let mut stored: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, owner, _) in attempts {
        *stored.entry(owner.as_str()).or_default() += 1;
    }
    if published != stored {
        out.push(format!(
            "{gid}: finished calls published per engine {published:?}, stored {stored:?}"
        ));
    }
    out
}

/// Runs `count` schedules from `first` on [`WORKERS`] threads: the failures' reports, and
/// what the passing ones went through.
fn run_schedules(first: u64, count: u64) -> (Vec<String>, Seen) {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let next = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let seen = Mutex::new(Seen::default());
    std::thread::scope(|scope| {
        for _ in 0..WORKERS.min(count as usize).max(1) {
            scope.spawn(|| {
                let mut dir = tempfile::Builder::new()
                    .prefix("saga-recovery-")
                    .tempdir_in(&base);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        break;
                    }
                    let seed = first + i;
                    let result = match &dir {
                        Ok(d) => run_one(seed, d.path()),
                        Err(e) => Err(format!(
                            "seed {seed}: no directory in {}: {e}",
                            base.display()
                        )),
                    };
                    let text = match result {
                        Ok(s) => {
                            if let Ok(mut seen) = seen.lock() {
                                seen.add(s);
                            }
                            continue;
                        }
                        Err(text) => text,
                    };
                    {
                        if let Ok(mut f) = failures.lock() {
                            f.push((seed, text));
                        }
                        // Whatever the failed schedule left behind stays out of the next ones.
                        dir = tempfile::Builder::new()
                            .prefix("saga-recovery-")
                            .tempdir_in(&base);
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_default();
    failures.sort_by_key(|(seed, _)| *seed);
    let seen = seen.into_inner().unwrap_or_default();
    (failures.into_iter().map(|(_, text)| text).collect(), seen)
}

fn run_one(seed: u64, dir: &Path) -> Result<Seen, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("seed {seed}: no runtime: {e}"))?;
    let result = runtime.block_on(schedule(Plan::new(seed), dir));
    drop(runtime);
    result
}

#[test]
fn recovery_schedules_keep_the_saga_guarantee() {
    let replay: Option<u64> = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let count: u64 = std::env::var(COUNT_VAR)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_SCHEDULES);
    let (first, count) = match replay {
        Some(seed) => (seed, 1),
        None => (1, count),
    };
    let started = Instant::now();
    let (failures, seen) = run_schedules(first, count);
    eprintln!(
        "{count} recovery schedules, {} failed, in {:.1} s; the passing ones went through {seen:?}",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        let mut text = format!(
            "{} of {count} recovery schedules broke the saga:\n",
            failures.len()
        );
        for f in failures.iter().take(3) {
            let _ = write!(text, "\n{f}");
        }
        panic!("{text}");
    }
    // Enough schedules go through every kind of recovery (counted over all schedules, not
    // timed): a takeover of a stalled engine's saga, crashes, operator actions, both endings.
    if count >= 1000 {
        assert!(
            seen.takeovers > 0,
            "no schedule took a stalled engine's saga over: {seen:?}"
        );
        assert!(seen.crashes > 0, "no schedule crashed an engine: {seen:?}");
        assert!(seen.operator_actions > 0, "no operator action: {seen:?}");
        assert!(seen.stuck > 0, "no saga got stuck: {seen:?}");
        assert!(
            seen.compensated > 0 && seen.succeeded > 0,
            "one ending never came: {seen:?}"
        );
    }
}
