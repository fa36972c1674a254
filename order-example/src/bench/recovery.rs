//! `--recovery N`: how fast an engine resumes after a crash. A child engine process (this same
//! binary, `bench-engine`) submits N no-op sagas and holds each one's first action open, so that
//! all N are in flight with a call pending; the bench SIGKILLs it once every saga is durable
//! and every first action is running, then starts a second `bench-engine` on the same store with
//! the same engine id. That one takes its leases back at startup, calls the pending actions
//! again and drives every saga to its end; the bench reports the time from its start to its
//! engine being ready, to the first action it called and to the last saga's terminal transition
//! (the highest `updated_at` in the store), and checks that no saga was lost.
//!
//! Both processes run without a saga deadline, so that the time the first process spends
//! submitting cannot turn a saga to compensation, and with room for twice N in flight (the
//! poller holds room for a claim batch while it looks for due sagas, which would otherwise
//! refuse the last submits).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use saga_core::engine::{Engine, EngineConfig};
use saga_core::machine::SagaStatus;
use saga_core::store::{self, now_ms};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::child::{DataSet, STORE_FILE, STORE_SCHEMA};
use super::measure::{self, Outcomes};
use super::noop::{NoopSaga, NoopSteps, Probe, STEP_COUNTS};
use super::report::Recovery;
use crate::db::Location;

/// How often the second process looks at the store for sagas still unfinished.
const FINISH_POLL: Duration = Duration::from_millis(20);

/// The step timeout of the first process: far longer than it lives, so that no held action
/// times out (and is retried) before the kill.
const HOLD_STEP_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest the first process takes to submit and hold every saga.
const HOLD_TIMEOUT: Duration = Duration::from_secs(600);

const LAST_FINISHED: &str = include_str!("recovery/last_finished.sql");

/// What the first process does: hold sagas in flight until killed, or what the second does:
/// take them back and finish them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Submit the sagas, hold each first action open, report, wait to be killed.
    Hold,
    /// Start the engine on the same store, wait until every saga is terminal, report, exit.
    Resume,
}

/// Arguments of `bench-engine`, the child engine process of `bench --recovery` (hidden from
/// the help: the bench starts it).
#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// `hold` (first process) or `resume` (second process).
    #[arg(long, value_enum)]
    pub phase: Phase,
    /// Directory of the SQLite files.
    #[arg(long, conflicts_with = "database_url")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (else `DATABASE_URL`).
    #[arg(long)]
    pub database_url: Option<String>,
    /// The engine id of both processes.
    #[arg(long)]
    pub engine_id: String,
    /// Gids are `{prefix}-{n}`.
    #[arg(long)]
    pub prefix: String,
    /// Sagas to submit (hold) or to wait for (resume).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub sagas: u64,
    /// Steps of each no-op saga.
    #[arg(long, default_value_t = 4, value_parser = parse_steps)]
    pub steps: u32,
    /// Submits in flight at once (hold).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: u64,
    /// Give up waiting for the sagas after this many seconds (resume).
    #[arg(long, default_value_t = 120)]
    pub timeout_seconds: u64,
}

fn parse_steps(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a step count"))?;
    match NoopSaga::with_steps(n) {
        Some(_) => Ok(n),
        None => Err(format!(
            "no no-op saga of {n} steps; there are {STEP_COUNTS:?}"
        )),
    }
}

/// The first process's report, one JSON line on its stdout.
#[derive(Debug, Serialize, Deserialize)]
pub struct Held {
    /// Seconds from the first submit until every saga was durable and its first action running.
    pub submit_seconds: f64,
    /// Actions running (held open).
    pub held: u64,
}

/// The second process's report, one JSON line on its stdout.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Finished {
    /// When its engine was built, ms since the Unix epoch.
    pub ready_at_ms: i64,
    /// When it called its first action (0: none).
    pub first_call_at_ms: i64,
    /// The highest `updated_at` in the store once it stopped waiting.
    pub last_finished_at_ms: Option<i64>,
    /// Sagas whose actions it called.
    pub resumed: u64,
    /// Instances in the store by status.
    pub succeeded: u64,
    /// Compensated instances.
    pub compensated: u64,
    /// Stuck instances.
    pub stuck: u64,
    /// Instances still running or compensating when it stopped waiting.
    pub unfinished: u64,
    /// Its CPU time from its start, ms.
    pub cpu_ms: Option<f64>,
    /// Its resident size at the end, KiB.
    pub rss_kib: Option<u64>,
}

/// Runs the recovery bench on `data`: N sagas of `saga`, submitted `concurrency` at a time.
pub async fn run(
    backend: &str,
    data: &DataSet,
    prefix: &str,
    sagas: u64,
    saga: NoopSaga,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<Recovery> {
    let log = std::env::temp_dir().join(format!("order-bench-{prefix}-{backend}-recovery.log"));
    let engine_id = format!("{prefix}-recovery");
    let gids = format!("{prefix}-r");
    let args = |phase: &str| {
        vec![
            "bench-engine".to_string(),
            format!("--phase={phase}"),
            format!("--engine-id={engine_id}"),
            format!("--prefix={gids}"),
            format!("--sagas={sagas}"),
            format!("--steps={}", saga.steps()),
            format!("--concurrency={concurrency}"),
            format!("--timeout-seconds={}", timeout.as_secs().max(1)),
        ]
    };
    eprintln!("recovery {backend}: holding {sagas} sagas in flight");
    let (mut first, mut lines) = start(data, &args("hold"), &log, false)?;
    let held: Held = match read_report(&mut lines, HOLD_TIMEOUT).await {
        Ok(held) => held,
        Err(e) => {
            let _ = first.start_kill();
            bail!("{e:#}; the engine's log ends with:\n{}", log_tail(&log));
        }
    };
    first
        .start_kill()
        .context("killing the first engine process")?;
    first
        .wait()
        .await
        .context("waiting for the killed engine")?;
    eprintln!(
        "recovery {backend}: killed with {} actions running; restarting",
        held.held
    );
    let restart_at = now_ms();
    let (mut second, mut lines) = start(data, &args("resume"), &log, true)?;
    let report = read_report::<Finished>(&mut lines, timeout + Duration::from_secs(60)).await;
    let _ = second.start_kill();
    let _ = second.wait().await;
    let finished = match report {
        Ok(f) => f,
        Err(e) => bail!("{e:#}; the engine's log ends with:\n{}", log_tail(&log)),
    };
    let _ = std::fs::remove_file(&log);
    let since = |at: i64| (at > 0).then(|| (at - restart_at) as f64);
    let total = finished.succeeded + finished.compensated + finished.stuck + finished.unfinished;
    Ok(Recovery {
        backend: backend.to_string(),
        sagas,
        steps: saga.steps(),
        submit_seconds: held.submit_seconds,
        held_at_kill: held.held,
        restart_to_ready_ms: since(finished.ready_at_ms),
        restart_to_first_step_ms: since(finished.first_call_at_ms),
        restart_to_last_finished_ms: match finished.unfinished {
            0 => finished.last_finished_at_ms.and_then(since),
            _ => None,
        },
        resumed: finished.resumed,
        outcomes: Outcomes {
            succeeded: finished.succeeded,
            compensated: finished.compensated,
            stuck: finished.stuck,
            unfinished: finished.unfinished,
            errors: 0,
        },
        lost: sagas.saturating_sub(total),
        cpu_ms: finished.cpu_ms,
        rss_kib: finished.rss_kib,
    })
}

/// Starts `bench-engine` with `args` on the data set, its stderr appended to `log`.
fn start(
    data: &DataSet,
    args: &[String],
    log: &std::path::Path,
    append: bool,
) -> anyhow::Result<(Child, Lines<BufReader<ChildStdout>>)> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(log)
        .with_context(|| format!("creating the engine log {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args);
    data.location().pass_to(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let mut child = cmd
        .spawn()
        .context("starting `order-example bench-engine`")?;
    let stdout = child.stdout.take().context("no stdout of the engine")?;
    Ok((child, BufReader::new(stdout).lines()))
}

/// The first line of the child's stdout that parses as `T`, within `within`.
async fn read_report<T: serde::de::DeserializeOwned>(
    lines: &mut Lines<BufReader<ChildStdout>>,
    within: Duration,
) -> anyhow::Result<T> {
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Ok(report) = serde_json::from_str::<T>(line.trim()) {
                return Ok(report);
            }
        }
        bail!("the engine process exited before it reported")
    };
    match tokio::time::timeout(within, read).await {
        Ok(result) => result,
        Err(_) => bail!("the engine process did not report within {within:?}"),
    }
}

fn log_tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `bench-engine`: one of the two processes of the recovery bench.
pub async fn child(args: EngineArgs) -> anyhow::Result<()> {
    crate::server::init_tracing("warn");
    let location = Location::from_flags(args.data_dir.clone(), args.database_url.clone())?;
    let saga = NoopSaga::with_steps(args.steps).context("no no-op saga of that many steps")?;
    // Room for every saga and more: while the poller looks for due sagas it holds room for a
    // claim batch, and a submit finding no room left would be refused.
    let in_flight = usize::try_from(args.sagas)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .max(EngineConfig::default().max_in_flight);
    let store = location
        .open_store()
        .await
        .context("opening the saga store")?;
    let probe = Probe::new(args.phase == Phase::Hold);
    let mut builder = Engine::builder(store)
        .engine_id(args.engine_id.clone())
        .saga_deadline(None)
        .max_in_flight(in_flight);
    if args.phase == Phase::Hold {
        builder = builder.step_timeout(HOLD_STEP_TIMEOUT);
    }
    let engine = saga
        .register(builder, NoopSteps::probed(probe.clone()))
        .build()
        .await
        .context("starting the engine")?;
    match args.phase {
        Phase::Hold => hold(&engine, saga, &probe, &args).await,
        Phase::Resume => resume(&engine, &location, &probe, &args).await,
    }
}

/// Submits every saga, waits until each first action is running, reports, and waits to be
/// killed.
async fn hold(
    engine: &Engine,
    saga: NoopSaga,
    probe: &Arc<Probe>,
    args: &EngineArgs,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (engine, next, prefix, sagas) = (
            engine.clone(),
            next.clone(),
            args.prefix.clone(),
            args.sagas,
        );
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= sagas {
                    return Ok::<_, saga_core::engine::EngineError>(());
                }
                saga.submit(&engine, &format!("{prefix}-{n}"), n).await?;
            }
        }));
    }
    for w in workers {
        w.await.context("a submitter failed")??;
    }
    while probe.calls.load(Ordering::Relaxed) < args.sagas {
        if started.elapsed() > HOLD_TIMEOUT {
            bail!(
                "only {} of {} first actions started",
                probe.calls.load(Ordering::Relaxed),
                args.sagas
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = Held {
        submit_seconds: started.elapsed().as_secs_f64(),
        held: probe.calls.load(Ordering::Relaxed),
    };
    println!("{}", serde_json::to_string(&held)?);
    // Killed here by the bench.
    std::future::pending::<()>().await;
    Ok(())
}

/// Waits until no saga is unfinished (or the timeout), then reports.
async fn resume(
    engine: &Engine,
    location: &Location,
    probe: &Arc<Probe>,
    args: &EngineArgs,
) -> anyhow::Result<()> {
    let ready_at_ms = now_ms();
    let until = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut report = Finished {
        ready_at_ms,
        ..Finished::default()
    };
    loop {
        let counts = engine.store().count_by_status().await?;
        let count = |status: SagaStatus| {
            counts
                .iter()
                .filter(|(s, _)| *s == status)
                .map(|(_, n)| *n as u64)
                .sum::<u64>()
        };
        report.succeeded = count(SagaStatus::Succeeded);
        report.compensated = count(SagaStatus::Compensated);
        report.stuck = count(SagaStatus::Stuck);
        report.unfinished = count(SagaStatus::Running) + count(SagaStatus::Compensating);
        let total = report.succeeded + report.compensated + report.stuck + report.unfinished;
        if (report.unfinished == 0 && total >= args.sagas) || Instant::now() >= until {
            break;
        }
        tokio::time::sleep(FINISH_POLL).await;
    }
    report.last_finished_at_ms = last_finished(location).await?;
    report.first_call_at_ms = probe.first_call_ms.load(Ordering::Relaxed);
    report.resumed = probe.sagas() as u64;
    report.cpu_ms = measure::cpu_time(None).map(|d| d.as_secs_f64() * 1000.0);
    report.rss_kib = measure::rss_kib(None);
    println!("{}", serde_json::to_string(&report)?);
    engine.shutdown().await;
    Ok(())
}

/// The highest `updated_at` of the store.
async fn last_finished(location: &Location) -> anyhow::Result<Option<i64>> {
    let last = match location {
        Location::Dir(dir) => {
            let pool = store::sqlite::open_pool(&dir.join(STORE_FILE), true, 1).await?;
            let last = sqlx::query_scalar(LAST_FINISHED).fetch_one(&pool).await?;
            pool.close().await;
            last
        }
        Location::Url(url) => {
            let pool = store::postgres::open_pool(url, Some(STORE_SCHEMA), 1).await?;
            let last = sqlx::query_scalar(LAST_FINISHED).fetch_one(&pool).await?;
            pool.close().await;
            last
        }
    };
    Ok(last)
}
