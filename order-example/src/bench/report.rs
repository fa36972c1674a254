//! The bench's results, printed as Markdown tables or as one JSON document.

use std::fmt::Write as _;

use serde::Serialize;

use super::measure::{LatencySummary, Memory, Outcomes};

/// One end-to-end run: N orders at concurrency C against a `serve`.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    /// `sqlite`, `postgres`, or `external` (`--url`).
    pub backend: String,
    /// `saga` or `direct`.
    pub mode: String,
    /// Orders sent.
    pub orders: u64,
    /// Orders in flight at once.
    pub concurrency: usize,
    /// Wall time of the load.
    pub seconds: f64,
    /// Finished orders per second (sagas/s in saga mode).
    pub per_second: f64,
    /// Latency of one order until its terminal reply.
    pub latency: LatencySummary,
    /// How the orders ended.
    pub outcomes: Outcomes,
    /// Share of orders that succeeded, 0 to 1.
    pub succeeded_share: f64,
    /// Share of orders that were compensated, 0 to 1.
    pub compensated_share: f64,
    /// Resident memory of the `serve` process.
    pub server_memory: Memory,
    /// Saga store commits during the load, from the server's `/metrics` (saga mode).
    pub store_commits: Option<u64>,
    /// Saga store writes (submits and transitions) during the load, from `/metrics`.
    pub store_writes: Option<u64>,
    /// `store_commits / orders`.
    pub store_commits_per_saga: Option<f64>,
}

/// Saga against direct throughput on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Backend of both runs.
    pub backend: String,
    /// Sagas per second.
    pub saga_per_second: f64,
    /// Direct (no-saga) orders per second.
    pub direct_per_second: f64,
    /// `saga_per_second / direct_per_second`.
    pub ratio: f64,
}

/// One coordinator-only run: N no-op four-step sagas through the engine.
#[derive(Debug, Clone, Serialize)]
pub struct Coordinator {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Sagas run.
    pub sagas: u64,
    /// Sagas in flight at once.
    pub concurrency: usize,
    /// Wall time.
    pub seconds: f64,
    /// Sagas per second.
    pub per_second: f64,
    /// Latency of one `submit_and_wait`.
    pub latency: LatencySummary,
    /// How the sagas ended.
    pub outcomes: Outcomes,
    /// Group commits of the store during the run.
    pub store_commits: u64,
    /// Store writes (submits and transitions) during the run.
    pub store_writes: u64,
    /// `store_commits / sagas`.
    pub commits_per_saga: f64,
    /// `store_writes / sagas`.
    pub writes_per_saga: f64,
    /// Resident memory of the bench process (the engine runs in it).
    pub memory: Memory,
}

/// Everything one `bench` invocation measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// End-to-end runs.
    pub end_to_end: Vec<EndToEnd>,
    /// Saga/direct ratios, one per backend that ran both modes.
    pub comparisons: Vec<Comparison>,
    /// Coordinator-only runs.
    pub coordinator: Vec<Coordinator>,
    /// Logical CPUs of the machine.
    pub cpus: usize,
}

impl Report {
    /// Fills in the saga/direct ratio of every backend that ran both modes.
    pub fn compare(&mut self) {
        let mut out = Vec::new();
        for saga in self.end_to_end.iter().filter(|r| r.mode == "saga") {
            let direct = self
                .end_to_end
                .iter()
                .find(|r| r.mode == "direct" && r.backend == saga.backend);
            if let Some(direct) = direct {
                out.push(Comparison {
                    backend: saga.backend.clone(),
                    saga_per_second: saga.per_second,
                    direct_per_second: direct.per_second,
                    ratio: if direct.per_second > 0.0 {
                        saga.per_second / direct.per_second
                    } else {
                        0.0
                    },
                });
            }
        }
        self.comparisons = out;
    }

    /// The report as Markdown tables.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        if !self.end_to_end.is_empty() {
            s.push_str("### End to end (HTTP, four participant databases)\n\n");
            s.push_str(
                "| backend | mode | orders | C | seconds | orders/s | p50 ms | p95 ms | p99 ms \
                 | succeeded | compensated | other | commits/saga | server RSS before / peak / after |\n",
            );
            s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
            for r in &self.end_to_end {
                let o = &r.outcomes;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} \
                     | {} ({:.1}%) | {} ({:.1}%) | {} | {} | {} |",
                    r.backend,
                    r.mode,
                    r.orders,
                    r.concurrency,
                    r.seconds,
                    r.per_second,
                    r.latency.p50_ms,
                    r.latency.p95_ms,
                    r.latency.p99_ms,
                    o.succeeded,
                    100.0 * r.succeeded_share,
                    o.compensated,
                    100.0 * r.compensated_share,
                    o.stuck + o.unfinished + o.errors,
                    r.store_commits_per_saga
                        .map(|c| format!("{c:.2}"))
                        .unwrap_or_else(|| "-".into()),
                    memory_cell(&r.server_memory),
                );
            }
            s.push('\n');
        }
        if !self.comparisons.is_empty() {
            s.push_str("### Saga against direct (same N and C; spawned servers get a fresh data set per mode)\n\n");
            s.push_str("| backend | sagas/s | direct orders/s | saga/direct |\n");
            s.push_str("|---|---:|---:|---:|\n");
            for c in &self.comparisons {
                let _ = writeln!(
                    s,
                    "| {} | {:.0} | {:.0} | {:.2} |",
                    c.backend, c.saga_per_second, c.direct_per_second, c.ratio
                );
            }
            s.push('\n');
        }
        if !self.coordinator.is_empty() {
            s.push_str("### Coordinator only (four no-op steps, in process, durable store)\n\n");
            s.push_str(
                "| backend | sagas | C | seconds | sagas/s | p50 ms | p95 ms | p99 ms | succeeded \
                 | commits/saga | writes/saga | RSS before / peak / after | RSS at 10% / 50% / 100% |\n",
            );
            s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
            for r in &self.coordinator {
                let during = r
                    .memory
                    .during_kib
                    .iter()
                    .map(|(_, kib)| mib(Some(*kib)))
                    .collect::<Vec<_>>()
                    .join(" / ");
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {:.2} | {:.2} | {} | {} |",
                    r.backend,
                    r.sagas,
                    r.concurrency,
                    r.seconds,
                    r.per_second,
                    r.latency.p50_ms,
                    r.latency.p95_ms,
                    r.latency.p99_ms,
                    r.outcomes.succeeded,
                    r.commits_per_saga,
                    r.writes_per_saga,
                    memory_cell(&r.memory),
                    during,
                );
            }
            s.push('\n');
        }
        let _ = writeln!(s, "Machine: {} logical CPUs.", self.cpus);
        s
    }
}

fn mib(kib: Option<u64>) -> String {
    match kib {
        Some(k) => format!("{:.1} MiB", k as f64 / 1024.0),
        None => "-".to_string(),
    }
}

fn memory_cell(m: &Memory) -> String {
    if m.before_kib.is_none() && m.peak_kib.is_none() && m.after_kib.is_none() {
        return "-".to_string();
    }
    format!(
        "{} / {} / {}",
        mib(m.before_kib),
        mib(m.peak_kib),
        mib(m.after_kib)
    )
}
