//! The coordinator-only bench: sagas of 2, 4, 8 or 16 in-process no-op steps (`noop.rs`)
//! through the saga-core [`Engine`] on a durable store, with no HTTP and no participant
//! database. What it measures is the engine's own cost per saga and per step: state
//! transitions, store commits, wake-ups.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use saga_core::Waited;
use saga_core::engine::Engine;
use saga_core::machine::SagaStatus;

use super::child::DataSet;
use super::measure::{self, CpuMeter, Latencies, Memory, Outcomes, RSS_MARKS};
use super::noop::{NoopSaga, NoopSteps};
use super::report::Coordinator;

/// An engine in this process on the data set's store (durable, like the one `serve` opens),
/// with the no-op saga registered.
pub async fn start_engine(data: &DataSet, saga: NoopSaga, prefix: &str) -> anyhow::Result<Engine> {
    let store = data
        .location()
        .open_store()
        .await
        .context("opening the saga store")?;
    let builder = Engine::builder(store).engine_id(format!("{prefix}-coordinator"));
    saga.register(builder, NoopSteps::default())
        .build()
        .await
        .context("starting the engine")
}

/// What one coordinator-only run is.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Sagas to run.
    pub sagas: u64,
    /// Sagas in flight at once.
    pub concurrency: usize,
    /// The no-op saga run.
    pub saga: NoopSaga,
    /// Finished sagas put in the store before the run (see `prefill.rs`).
    pub prefilled: u64,
}

/// Runs `shape.sagas` no-op sagas, `shape.concurrency` at a time, each with `submit_and_wait`.
pub async fn run(
    backend: &str,
    data: &DataSet,
    prefix: &str,
    shape: Shape,
) -> anyhow::Result<Coordinator> {
    let Shape {
        sagas,
        concurrency,
        saga,
        prefilled,
    } = shape;
    let engine = start_engine(data, saga, prefix).await?;
    let mut memory = Memory {
        before_kib: measure::rss_kib(None),
        ..Memory::default()
    };
    let during = Arc::new(Mutex::new(Vec::new()));
    let marks = RSS_MARKS.map(|(percent, label)| (sagas * percent / 100, label));
    let (commits0, writes0) = (engine.store().commits(), engine.store().writes());
    let label = match prefilled {
        0 => format!("coordinator {backend} {}", saga.steps()),
        _ => format!("coordinator {backend} {} +{prefilled}", saga.steps()),
    };
    let bar = measure::progress(sagas, &label);
    let cpu = CpuMeter::start(None, data.postmaster_pid().await);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (engine, next, done, during, bar, prefix) = (
            engine.clone(),
            next.clone(),
            done.clone(),
            during.clone(),
            bar.clone(),
            prefix.to_string(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Latencies::new();
            let mut outcomes = Outcomes::default();
            let mut first_error = None;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= sagas {
                    break;
                }
                let gid = format!("{prefix}-{n}");
                let t = Instant::now();
                let waited = saga
                    .submit_and_wait(&engine, &gid, n, Duration::from_secs(60))
                    .await;
                latencies.record(t.elapsed());
                match waited {
                    Ok(Waited::Terminal(v)) => match v.status {
                        SagaStatus::Succeeded => outcomes.succeeded += 1,
                        SagaStatus::Compensated => outcomes.compensated += 1,
                        _ => outcomes.stuck += 1,
                    },
                    Ok(Waited::TimedOut(_)) => outcomes.unfinished += 1,
                    Err(e) => {
                        outcomes.errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some((_, label)) = marks.iter().find(|(at, _)| *at == finished)
                    && let (Some(kib), Ok(mut d)) = (measure::rss_kib(None), during.lock())
                {
                    d.push((label.to_string(), kib));
                }
                bar.inc(1);
            }
            (latencies, outcomes, first_error)
        }));
    }
    let mut latencies = Latencies::new();
    let mut outcomes = Outcomes::default();
    let mut errors = Vec::new();
    for w in workers {
        let (l, o, e) = w.await.context("a bench worker failed")?;
        latencies.merge(&l);
        outcomes.merge(&o);
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    let cpu = cpu.finish(sagas);
    bar.finish_and_clear();
    let commits = engine.store().commits() - commits0;
    let writes = engine.store().writes() - writes0;
    if let Some(e) = errors.first() {
        eprintln!("coordinator {backend}: {} errors, first: {e}", errors.len());
    }
    memory.peak_kib = measure::peak_rss_kib(None);
    engine.shutdown().await;
    drop(engine);
    tokio::time::sleep(Duration::from_millis(500)).await;
    memory.after_kib = measure::rss_kib(None);
    memory.during_kib = during.lock().map(|d| d.clone()).unwrap_or_default();
    let per = |x: u64| x as f64 / sagas.max(1) as f64;
    let steps = saga.steps();
    Ok(Coordinator {
        backend: backend.to_string(),
        sagas,
        concurrency,
        steps,
        prefilled,
        prefill_seconds: 0.0,
        cpu_us_per_step: cpu
            .bench_ms_per_saga
            .map(|ms| ms * 1000.0 / f64::from(steps)),
        cpu,
        seconds: elapsed.as_secs_f64(),
        per_second: outcomes.total() as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: latencies.summary(),
        outcomes,
        store_commits: commits,
        store_writes: writes,
        commits_per_saga: per(commits),
        writes_per_saga: per(writes),
        memory,
    })
}
