//! Crash recovery and fencing (docs/semantics.md, "The state machine" and "The store"), on
//! SQLite and PostgreSQL.
//!
//! - An engine's whole runtime is dropped while its sagas sit at every step boundary; a new
//!   engine with the same engine id finishes them, each side effect applied once.
//! - A separate engine process (`examples/crash_worker.rs`) is SIGKILLed mid-run, twice; a new
//!   process finishes its sagas, each side effect applied once.
//! - An engine process with the default engine id is SIGKILLed; the next process of the same
//!   deployment runs under the same id and takes the sagas back at once, not after their lease.
//! - An engine frozen past its lease loses the saga to another engine; its late write changes
//!   nothing.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

#[macro_use]
mod engine_support;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use saga_core::store::now_ms;
use saga_core::{Engine, Op, SagaStatus, StepError};
use serde_json::json;

use engine_support::*;

on_both_stores_sync!(
    dropped_runtime_at_every_step_boundary_is_recovered_by_the_same_engine_id,
    killed_engine_process_leaves_sagas_that_a_new_process_finishes_once,
    restarted_process_with_the_default_id_takes_its_sagas_back_at_once,
    stale_engine_write_after_a_takeover_changes_nothing,
);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// (a) In-process crash: drop the engine's runtime while every saga blocks at a step boundary.
// ---------------------------------------------------------------------------------------------

/// Where a saga of the crash test blocks: in `op` of `step`, before or after its side effect
/// committed. Encoded in the saga input as `{op}:{step}:{before|after}`.
struct BlockAt {
    op: Op,
    step: &'static str,
    after_effect: bool,
}

impl BlockAt {
    fn input(&self) -> String {
        let when = if self.after_effect { "after" } else { "before" };
        format!("{}:{}:{when}", self.op, self.step)
    }

    fn gid(&self) -> String {
        self.input().replace(':', "-")
    }

    fn matches(&self, c: &Call) -> bool {
        c.input == self.input() && c.op == self.op && c.step == self.step
    }

    /// Rollback cases make the pivot fail so that undos run.
    fn rolls_back(&self) -> bool {
        self.op == Op::Compensate
    }
}

fn crash_cases() -> Vec<BlockAt> {
    let mut cases = Vec::new();
    for after_effect in [false, true] {
        for step in ["a", "b", "c", "d"] {
            cases.push(BlockAt {
                op: Op::Action,
                step,
                after_effect,
            });
        }
        for step in ["b", "a"] {
            cases.push(BlockAt {
                op: Op::Compensate,
                step,
                after_effect,
            });
        }
    }
    cases
}

/// Applies effects through the barrier; the pivot fails for the rollback cases; with `block`,
/// the call named by its input signals `reached` and never returns.
fn crash_harness(effects: Effects, reached: Option<std_mpsc::Sender<String>>) -> Harness {
    let cases = Arc::new(crash_cases());
    let undo_effects = effects.clone();
    let undo_cases = cases.clone();
    let undo_reached = reached.clone();
    Harness::new(
        move |c| {
            let (effects, cases, reached) = (effects.clone(), cases.clone(), reached.clone());
            async move {
                if c.step == "c" && c.input.starts_with("compensate:") {
                    return Err(StepError::failure("pivot refused"));
                }
                block_or_apply(&effects, &cases, reached, &c).await?;
                Ok(output_of(&c))
            }
        },
        move |c| {
            let (effects, cases, reached) = (
                undo_effects.clone(),
                undo_cases.clone(),
                undo_reached.clone(),
            );
            async move {
                block_or_apply(&effects, &cases, reached, &c)
                    .await
                    .map_err(|e| saga_core::Retry::new(e.to_string()))
            }
        },
    )
}

async fn block_or_apply(
    effects: &Effects,
    cases: &[BlockAt],
    reached: Option<std_mpsc::Sender<String>>,
    c: &Call,
) -> Result<(), StepError> {
    let block = reached.and_then(|r| cases.iter().find(|b| b.matches(c)).map(|b| (b, r)));
    let before_effect = matches!(&block, Some((b, _)) if !b.after_effect);
    if !before_effect {
        let _ = effects
            .apply(&c.gid, c.step, c.op)
            .await
            .map_err(StepError::Retry)?;
    }
    if let Some((_, reached)) = block {
        reached.send(c.gid.clone()).unwrap();
        std::future::pending::<()>().await;
    }
    Ok(())
}

fn dropped_runtime_at_every_step_boundary_is_recovered_by_the_same_engine_id(backend: Backend) {
    let db = Db::new(backend);
    let cases = crash_cases();
    let (reached_tx, reached_rx) = std_mpsc::channel();

    let crashed = runtime();
    crashed.block_on(async {
        let effects = db.effects().await;
        let mut cfg = config("crash-engine");
        cfg.step_timeout = Duration::from_secs(60);
        let h = crash_harness(effects, Some(reached_tx));
        let engine = engine(db.store().await, cfg, &h).await;
        for case in &cases {
            engine
                .submit::<Linear>(&case.gid(), &case.input())
                .await
                .unwrap();
        }
    });
    let mut blocked = Vec::new();
    for _ in &cases {
        blocked.push(
            reached_rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("only {blocked:?} reached their block")),
        );
    }
    // The crash: every task of the engine, the blocked calls included, is dropped mid-flight.
    drop(crashed);

    let recovered = runtime();
    recovered.block_on(async {
        let effects = db.effects().await;
        let store = db.store().await;
        for case in &cases {
            let record = store.load(&case.gid()).await.unwrap().unwrap();
            assert!(
                !record.state.status.is_terminal(),
                "{} finished before the crash",
                case.gid()
            );
        }
        let h = crash_harness(effects.clone(), None);
        let engine = engine(store, config("crash-engine"), &h).await;
        for case in &cases {
            let gid = case.gid();
            let view = finish(&engine, &gid, 20).await;
            let step = &view.steps[LINEAR.step_index(case.step).unwrap()];
            let expected: &[(&str, &str)] = if case.rolls_back() {
                assert_status(&view, SagaStatus::Compensated);
                assert_eq!(step.compensate_attempts, 2, "{gid}: {step:?}");
                &[
                    ("a", "action"),
                    ("a", "compensate"),
                    ("b", "action"),
                    ("b", "compensate"),
                ]
            } else {
                assert_status(&view, SagaStatus::Succeeded);
                assert_eq!(step.attempts, 2, "{gid}: the blocked step is called again");
                &[
                    ("a", "action"),
                    ("b", "action"),
                    ("c", "action"),
                    ("d", "action"),
                ]
            };
            assert_eq!(
                effects.of(&gid).await,
                effects_list(expected),
                "{gid}: every side effect applied exactly once"
            );
            // Only the blocked call is repeated; steps recorded as done are not.
            let repeated: Vec<_> = h.calls(&gid).iter().map(|l| l.call.step).collect();
            assert_eq!(repeated[0], case.step, "{gid}: resumed at {repeated:?}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// (b) A separate engine process, SIGKILLed.
// ---------------------------------------------------------------------------------------------

/// Builds `examples/crash_worker.rs` once and returns the path of its binary.
fn crash_worker() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "saga-core",
                "--example",
                "crash_worker",
                "--features",
                "sqlite,postgres",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(out.status.success(), "building crash_worker failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["target"]["name"] == "crash_worker")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no crash_worker executable")
    })
    .clone()
}

const KILL_SAGAS: usize = 30;

fn spawn_worker(db: &Db, engine_id: &str, step_ms: u64) -> Child {
    spawn_worker_with(
        db,
        engine_id,
        KILL_SAGAS,
        step_ms,
        Duration::from_millis(600),
    )
}

/// A crash worker under `engine_id` (`default`: the derived default id) with `sagas` sagas and
/// a lease of `lease`.
fn spawn_worker_with(
    db: &Db,
    engine_id: &str,
    sagas: usize,
    step_ms: u64,
    lease: Duration,
) -> Child {
    let backend = match db.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    Command::new(crash_worker())
        .args([
            backend,
            &db.location(),
            engine_id,
            &sagas.to_string(),
            &step_ms.to_string(),
            &lease.as_millis().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start crash_worker")
}

fn wait_for_effects(rt: &tokio::runtime::Runtime, effects: &Effects, at_least: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let n = rt.block_on(effects.all()).len();
        if n >= at_least {
            return n;
        }
        assert!(
            Instant::now() < until,
            "only {n} of {at_least} effects appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sigkill(mut child: Child) {
    // `Child::kill` sends SIGKILL on Unix: no shutdown code runs.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
}

fn killed_engine_process_leaves_sagas_that_a_new_process_finishes_once(backend: Backend) {
    let db = Db::new(backend);
    let rt = runtime();
    let effects = rt.block_on(db.effects());
    let total = KILL_SAGAS * 4;

    let first = spawn_worker(&db, "worker-1", 150);
    let seen = wait_for_effects(&rt, &effects, KILL_SAGAS);
    sigkill(first);
    let after_first = rt.block_on(effects.all()).len();
    assert!(
        after_first < total,
        "the first kill came too late ({seen} effects seen)"
    );

    // Another engine id: it takes the sagas over once the dead worker's leases expire.
    let second = spawn_worker(&db, "worker-2", 150);
    wait_for_effects(&rt, &effects, after_first + 20);
    sigkill(second);
    let after_second = rt.block_on(effects.all()).len();
    assert!(after_second < total, "the second kill came too late");

    let store = rt.block_on(db.store());
    let open = rt
        .block_on(store.list(None, 1000))
        .unwrap()
        .iter()
        .filter(|s| !s.status.is_terminal())
        .count();
    assert!(open > 0, "every saga finished before the kills");

    let mut last = spawn_worker(&db, "worker-1", 10);
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = last.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            last.kill().unwrap();
            panic!("the last worker did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(last.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "last worker: {status}, stdout {stdout}");
    assert!(stdout.contains("done stuck=0"), "{stdout}");

    let counts = rt.block_on(store.count_by_status()).unwrap();
    assert_eq!(counts, [(SagaStatus::Succeeded, KILL_SAGAS as i64)]);
    let mut expected = Vec::new();
    for i in 0..KILL_SAGAS {
        for step in ["a", "b", "c", "d"] {
            expected.push((format!("kill-{i}"), step.to_string(), "action".to_string()));
        }
    }
    expected.sort();
    assert_eq!(
        rt.block_on(effects.all()),
        expected,
        "every step applied exactly once"
    );
}

// ---------------------------------------------------------------------------------------------
// Fencing: an engine frozen past its lease.
// ---------------------------------------------------------------------------------------------

/// Engine A's whole runtime freezes inside step `b` (like a long GC pause or SIGSTOP), so it
/// cannot renew its lease. Engine B claims the saga (bumping the fence) and finishes it. When A
/// thaws, its step returns and A tries to persist under its old fence: nothing changes, and A
/// stops driving the saga.
fn stale_engine_write_after_a_takeover_changes_nothing(backend: Backend) {
    let db = Arc::new(Db::new(backend));
    let gid = "fenced";
    let lease = Duration::from_millis(500);
    let (paused_tx, paused_rx) = std_mpsc::channel::<()>();
    let (resume_tx, resume_rx) = std_mpsc::channel::<()>();
    let resume_rx = Arc::new(Mutex::new(resume_rx));
    let (engine_tx, engine_rx) = std_mpsc::channel::<Engine>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();

    let a_db = db.clone();
    let engine_a_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let h = Harness::with_action(move |c| {
                let (paused_tx, resume_rx) = (paused_tx.clone(), resume_rx.clone());
                async move {
                    if c.step == "b" {
                        paused_tx.send(()).unwrap();
                        // Blocks the runtime's only thread: the whole engine is frozen.
                        let _ = resume_rx.lock().unwrap().recv();
                        return Ok(json!("from-a"));
                    }
                    Ok(output_of(&c))
                }
            });
            let mut cfg = config("engine-a");
            cfg.lease = lease;
            cfg.step_timeout = Duration::from_secs(60);
            let engine = engine(a_db.store().await, cfg, &h).await;
            engine.submit::<Linear>(gid, &"x".into()).await.unwrap();
            engine_tx.send(engine.clone()).unwrap();
            let _ = stop_rx.await;
            engine.shutdown().await;
        });
    });

    let engine_a = engine_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    paused_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let frozen_at = Instant::now();

    let rt = runtime();
    rt.block_on(async {
        let store = db.store().await;
        let hb = Harness::with_action(|c| async move {
            Ok(if c.step == "b" {
                json!("from-b")
            } else {
                output_of(&c)
            })
        });
        let mut cfg = config("engine-b");
        cfg.lease = lease;
        let engine_b = engine(db.store().await, cfg, &hb).await;
        let view = finish(&engine_b, gid, 20).await;
        assert!(
            frozen_at.elapsed() >= lease,
            "B took over before A's lease ran out"
        );
        assert_status(&view, SagaStatus::Succeeded);
        assert_eq!(view.steps[1].output, Some(json!("from-b")));
        assert_eq!(view.steps[1].attempts, 2);
        assert_eq!(hb.order(gid, Op::Action), ["b", "c", "d"]);

        let taken = store.load(gid).await.unwrap().unwrap();
        assert!(
            taken.fence >= 2,
            "B's claim bumped the fence: {}",
            taken.fence
        );
        let attempts_b = store.attempts(gid).await.unwrap();

        // Thaw A: its step returns "from-a" and A writes under its stale fence.
        resume_tx.send(()).unwrap();
        eventually(10, "engine A stops driving the saga", || async {
            engine_a.driving() == 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let after = store.load(gid).await.unwrap().unwrap();
        assert_eq!(after.state, taken.state, "A's write changed the saga");
        assert_eq!(after.fence, taken.fence);
        assert_eq!(after.owner, taken.owner);
        assert_eq!(after.updated_at, taken.updated_at);
        assert_eq!(after.state.steps[1].output, Some(json!("from-b")));
        let attempts = store.attempts(gid).await.unwrap();
        assert_eq!(attempts, attempts_b, "A's late attempt record was written");
        assert!(
            !attempts
                .iter()
                .any(|a| a.owner == "engine-a" && a.step == "b"),
            "{attempts:#?}"
        );
        for a in &attempts {
            if a.owner == "engine-a" {
                assert_eq!(a.fence, 1, "{a:?}");
            } else {
                assert_eq!(a.owner, "engine-b");
                assert!(a.fence >= 2, "{a:?}");
            }
        }
        engine_b.shutdown().await;
    });
    stop_tx.send(()).unwrap();
    engine_a_thread.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The default engine id across processes.
// ---------------------------------------------------------------------------------------------

/// Reads the `engine-id {id}` line a crash worker prints once its engine is built.
fn worker_engine_id(out: &mut impl BufRead) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.strip_prefix("engine-id ")
        .unwrap_or_else(|| panic!("expected the engine id, got {line:?}"))
        .trim()
        .to_string()
}

/// A worker with the default engine id is killed with its sagas leased for half a minute more.
/// The next worker (another process, so another process id) derives the same id, takes the
/// sagas back as its own when it starts, and finishes them within seconds.
fn restarted_process_with_the_default_id_takes_its_sagas_back_at_once(backend: Backend) {
    const SAGAS: usize = 4;
    let lease = Duration::from_secs(30);
    let db = Db::new(backend);
    let rt = runtime();
    let effects = rt.block_on(db.effects());

    let mut first = spawn_worker_with(&db, "default", SAGAS, 300, lease);
    // The pipe stays open until the kill, so that the worker's prints do not fail.
    let mut first_out = BufReader::new(first.stdout.take().unwrap());
    let first_id = worker_engine_id(&mut first_out);
    wait_for_effects(&rt, &effects, 1);
    sigkill(first);
    drop(first_out);

    let store = rt.block_on(db.store());
    let open: Vec<_> = rt
        .block_on(store.list(None, 100))
        .unwrap()
        .into_iter()
        .filter(|s| !s.status.is_terminal())
        .collect();
    assert!(!open.is_empty(), "every saga finished before the kill");
    for saga in &open {
        let record = rt.block_on(store.load(&saga.gid)).unwrap().unwrap();
        assert_eq!(record.owner.as_deref(), Some(first_id.as_str()));
        assert!(
            record.lease_until > now_ms() + 20_000,
            "{}: the lease runs out too soon for the test to tell",
            saga.gid
        );
    }

    let started = Instant::now();
    let mut second = spawn_worker_with(&db, "default", SAGAS, 10, lease);
    let mut out = BufReader::new(second.stdout.take().unwrap());
    assert_eq!(
        worker_engine_id(&mut out),
        first_id,
        "the restart derived another id"
    );
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            second.kill().unwrap();
            panic!("the restarted worker did not finish in 10 s: it waited for the leases");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    out.read_to_string(&mut stdout).unwrap();
    assert!(
        status.success(),
        "restarted worker: {status}, stdout {stdout}"
    );
    assert!(stdout.contains("done stuck=0"), "{stdout}");

    let mut expected = Vec::new();
    for i in 0..SAGAS {
        for step in ["a", "b", "c", "d"] {
            expected.push((format!("kill-{i}"), step.to_string(), "action".to_string()));
        }
    }
    expected.sort();
    assert_eq!(
        rt.block_on(effects.all()),
        expected,
        "every step applied exactly once"
    );
}
