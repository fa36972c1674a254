//! The coordinator-only bench: sagas of four in-process no-op steps through the saga-core
//! [`Engine`] on a durable store, with no HTTP and no participant database. What it measures
//! is the engine's own cost per saga: state transitions, store commits, wake-ups.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use saga_core::engine::Engine;
use saga_core::machine::SagaStatus;
use saga_core::{Retry, Saga, StepContext, StepError, Waited};
use serde::{Deserialize, Serialize};

use super::child::DataSet;
use super::measure::{self, Latencies, Memory, Outcomes};
use super::report::Coordinator;

/// The input of a no-op saga.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Noop {
    /// The saga's number in the run.
    pub n: u64,
}

/// Four compensatable steps that do nothing: the shape of `SubmitOrder` without participants.
#[derive(Saga)]
#[saga(input = Noop)]
pub enum NoopOrder {
    /// First step.
    #[compensate(first_undo)]
    First,
    /// Second step.
    #[compensate(second_undo)]
    Second,
    /// Third step.
    #[compensate(third_undo)]
    Third,
    /// Fourth step.
    #[compensate(fourth_undo)]
    Fourth,
}

/// The no-op step implementations.
struct NoopSteps;

impl NoopOrderSteps for NoopSteps {
    async fn first(&self, _: &StepContext, _: &Noop) -> Result<(), StepError> {
        Ok(())
    }
    async fn first_undo(&self, _: &StepContext, _: &Noop, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn second(&self, _: &StepContext, _: &Noop) -> Result<(), StepError> {
        Ok(())
    }
    async fn second_undo(&self, _: &StepContext, _: &Noop, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn third(&self, _: &StepContext, _: &Noop) -> Result<(), StepError> {
        Ok(())
    }
    async fn third_undo(&self, _: &StepContext, _: &Noop, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn fourth(&self, _: &StepContext, _: &Noop) -> Result<(), StepError> {
        Ok(())
    }
    async fn fourth_undo(&self, _: &StepContext, _: &Noop, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
}

/// Runs `sagas` no-op sagas, `concurrency` at a time, each with `submit_and_wait`.
pub async fn run(
    backend: &str,
    data: &DataSet,
    prefix: &str,
    sagas: u64,
    concurrency: usize,
) -> anyhow::Result<Coordinator> {
    // A durable store, like the one `serve` opens.
    let store = data
        .location()
        .open_store()
        .await
        .context("opening the saga store")?;
    let engine = Engine::builder(store)
        .engine_id(format!("{prefix}-coordinator"))
        .register::<NoopOrder, _>(NoopSteps)
        .build()
        .await
        .context("starting the engine")?;
    let mut memory = Memory {
        before_kib: measure::rss_kib(None),
        ..Memory::default()
    };
    let during = Arc::new(Mutex::new(Vec::new()));
    let marks = [(sagas / 10, "10%"), (sagas / 2, "50%"), (sagas, "100%")];
    let (commits0, writes0) = (engine.store().commits(), engine.store().writes());
    let bar = measure::progress(sagas, &format!("coordinator {backend}"));
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
                let waited = engine
                    .submit_and_wait::<NoopOrder>(&gid, &Noop { n }, Duration::from_secs(60))
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
    Ok(Coordinator {
        backend: backend.to_string(),
        sagas,
        concurrency,
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
