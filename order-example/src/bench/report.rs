//! The bench's results, printed as Markdown tables or as one JSON document.

use std::fmt::Write as _;

use serde::Serialize;

use super::machine::Machine;
use super::measure::{CpuUse, LatencySummary, Memory, Outcomes};

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
    /// `store_writes / orders`.
    pub store_writes_per_saga: Option<f64>,
    /// CPU time of the `serve` process and of the bench (the client) during the load.
    pub cpu: CpuUse,
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
    /// Steps of each saga (all no-op, compensatable).
    pub steps: u32,
    /// Finished sagas in the store before the run (`--prefill`; 0: an empty store).
    pub prefilled: u64,
    /// Seconds the prefill took, before the run (0 without one).
    pub prefill_seconds: f64,
    /// CPU time during the run: of the bench process, which is the engine (`serve_*` is
    /// `None`: there is no `serve`).
    pub cpu: CpuUse,
    /// `cpu.bench_ms_per_saga / steps`, in microseconds: the CPU cost of one step.
    pub cpu_us_per_step: Option<f64>,
}

/// The same coordinator run on an empty store and on one with `prefilled` finished sagas.
#[derive(Debug, Clone, Serialize)]
pub struct PrefillComparison {
    /// Backend of both runs.
    pub backend: String,
    /// Steps of each saga.
    pub steps: u32,
    /// Finished sagas put in the store first.
    pub prefilled: u64,
    /// Seconds the prefill took (not measured in the run).
    pub prefill_seconds: f64,
    /// Sagas per second on the empty store.
    pub empty_per_second: f64,
    /// Sagas per second on the prefilled store.
    pub prefilled_per_second: f64,
    /// `prefilled_per_second / empty_per_second`.
    pub ratio: f64,
}

/// A recovery run: sagas in flight in an engine process that is SIGKILLed, then restarted on
/// the same store with the same engine id.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovery {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Sagas in flight when the process was killed.
    pub sagas: u64,
    /// Steps of each saga.
    pub steps: u32,
    /// Seconds from the first submit until every saga was durable and had its first action
    /// running (held open) in the first process.
    pub submit_seconds: f64,
    /// Actions running in the first process when it was killed.
    pub held_at_kill: u64,
    /// From starting the second process to its engine being built (it has taken its own
    /// leases back by then), ms.
    pub restart_to_ready_ms: Option<f64>,
    /// From starting the second process to the first action it called, ms.
    pub restart_to_first_step_ms: Option<f64>,
    /// From starting the second process to the last saga's terminal transition (the highest
    /// `updated_at` in the store), ms.
    pub restart_to_last_finished_ms: Option<f64>,
    /// Sagas whose actions the second process called.
    pub resumed: u64,
    /// How the sagas ended, read from the store (`unfinished`: not terminal when the bench
    /// gave up, after `--recovery-timeout`).
    pub outcomes: Outcomes,
    /// Sagas submitted but missing from the store after the restart.
    pub lost: u64,
    /// CPU time of the second process, from its start to the last saga finished, ms.
    pub cpu_ms: Option<f64>,
    /// Resident size of the second process when the last saga finished, KiB.
    pub rss_kib: Option<u64>,
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
    /// Logical CPUs of the machine (also in `machine.cpus`).
    pub cpus: usize,
    /// When, on what and with which command the report was measured.
    pub machine: Machine,
    /// Empty against prefilled store, one per backend and step count (`--prefill`).
    pub prefill_comparisons: Vec<PrefillComparison>,
    /// Recovery runs (`--recovery`).
    pub recovery: Vec<Recovery>,
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
        let mut prefill = Vec::new();
        for full in self.coordinator.iter().filter(|r| r.prefilled > 0) {
            let empty = self
                .coordinator
                .iter()
                .find(|r| r.prefilled == 0 && r.backend == full.backend && r.steps == full.steps);
            if let Some(empty) = empty {
                prefill.push(PrefillComparison {
                    backend: full.backend.clone(),
                    steps: full.steps,
                    prefilled: full.prefilled,
                    prefill_seconds: full.prefill_seconds,
                    empty_per_second: empty.per_second,
                    prefilled_per_second: full.per_second,
                    ratio: if empty.per_second > 0.0 {
                        full.per_second / empty.per_second
                    } else {
                        0.0
                    },
                });
            }
        }
        self.prefill_comparisons = prefill;
    }

    /// The report as Markdown: the machine header, then a table per kind of run.
    pub fn markdown(&self) -> String {
        let mut s = self.machine.markdown();
        if !self.end_to_end.is_empty() {
            s.push_str("### End to end (HTTP, four participant databases)\n\n");
            s.push_str(
                "| backend | mode | orders | C | seconds | orders/s | p50 ms | p95 ms | p99 ms \
                 | succeeded | compensated | other | commits/saga | writes/saga \
                 | serve CPU ms/order | bench CPU ms/order | database CPU ms/order \
                 | server RSS before / peak / after | server RSS at 10% / 50% / 100% |\n",
            );
            s.push_str(
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:\
                 |---:|---|---|\n",
            );
            for r in &self.end_to_end {
                let o = &r.outcomes;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} \
                     | {} ({:.1}%) | {} ({:.1}%) | {} | {} | {} | {} | {} | {} | {} | {} |",
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
                    fixed(r.store_commits_per_saga, 2),
                    fixed(r.store_writes_per_saga, 2),
                    fixed(r.cpu.serve_ms_per_saga, 3),
                    fixed(r.cpu.bench_ms_per_saga, 3),
                    fixed(r.cpu.database_ms_per_saga, 3),
                    memory_cell(&r.server_memory),
                    curve_cell(&r.server_memory),
                );
            }
            s.push('\n');
        }
        if !self.comparisons.is_empty() {
            s.push_str(
                "### Saga against direct (same N and C; spawned servers get a fresh data set \
                 per mode)\n\n",
            );
            s.push_str(
                "| backend | sagas/s | direct orders/s | saga/direct | serve CPU ms/saga \
                 | serve CPU ms/direct order |\n",
            );
            s.push_str("|---|---:|---:|---:|---:|---:|\n");
            for c in &self.comparisons {
                let cpu = |mode: &str| {
                    self.end_to_end
                        .iter()
                        .find(|r| r.backend == c.backend && r.mode == mode)
                        .and_then(|r| r.cpu.serve_ms_per_saga)
                };
                let _ = writeln!(
                    s,
                    "| {} | {:.0} | {:.0} | {:.2} | {} | {} |",
                    c.backend,
                    c.saga_per_second,
                    c.direct_per_second,
                    c.ratio,
                    fixed(cpu("saga"), 3),
                    fixed(cpu("direct"), 3),
                );
            }
            s.push('\n');
        }
        if !self.coordinator.is_empty() {
            s.push_str("### Coordinator only (no-op steps, in process, durable store)\n\n");
            s.push_str(
                "| backend | steps | prefilled | sagas | C | seconds | sagas/s | p50 ms | p95 ms \
                 | p99 ms | succeeded | commits/saga | writes/saga | CPU ms/saga | CPU µs/step \
                 | database CPU ms/saga | RSS before / peak / after | RSS at 10% / 50% / 100% |\n",
            );
            s.push_str(
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:\
                 |---:|---|---|\n",
            );
            for r in &self.coordinator {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {} \
                     | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
                    r.backend,
                    r.steps,
                    r.prefilled,
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
                    fixed(r.cpu.bench_ms_per_saga, 3),
                    fixed(r.cpu_us_per_step, 1),
                    fixed(r.cpu.database_ms_per_saga, 3),
                    memory_cell(&r.memory),
                    curve_cell(&r.memory),
                );
            }
            s.push('\n');
        }
        if !self.prefill_comparisons.is_empty() {
            s.push_str("### A store of finished sagas against an empty one (coordinator only)\n\n");
            s.push_str(
                "| backend | steps | prefilled | prefill s | empty sagas/s | prefilled sagas/s \
                 | prefilled/empty |\n",
            );
            s.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
            for c in &self.prefill_comparisons {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.2} |",
                    c.backend,
                    c.steps,
                    c.prefilled,
                    c.prefill_seconds,
                    c.empty_per_second,
                    c.prefilled_per_second,
                    c.ratio
                );
            }
            s.push('\n');
        }
        if !self.recovery.is_empty() {
            s.push_str(
                "### Recovery (sagas in flight, the engine process SIGKILLed, restarted on the \
                 same store)\n\n",
            );
            s.push_str(
                "| backend | sagas | steps | submit s | restart to ready ms \
                 | restart to first step ms | restart to last finished ms | resumed | succeeded \
                 | other | lost | CPU ms | RSS |\n",
            );
            s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for r in &self.recovery {
                let o = &r.outcomes;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.backend,
                    r.sagas,
                    r.steps,
                    r.submit_seconds,
                    fixed(r.restart_to_ready_ms, 0),
                    fixed(r.restart_to_first_step_ms, 0),
                    fixed(r.restart_to_last_finished_ms, 0),
                    r.resumed,
                    o.succeeded,
                    o.compensated + o.stuck + o.unfinished + o.errors,
                    r.lost,
                    fixed(r.cpu_ms, 0),
                    mib(r.rss_kib),
                );
            }
            s.push('\n');
        }
        s
    }
}

/// `value` with `decimals` decimals, or `-` when there is none.
fn fixed(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) => format!("{v:.decimals$}"),
        None => "-".to_string(),
    }
}

fn curve_cell(m: &Memory) -> String {
    if m.during_kib.is_empty() {
        return "-".to_string();
    }
    m.during_kib
        .iter()
        .map(|(_, kib)| mib(Some(*kib)))
        .collect::<Vec<_>>()
        .join(" / ")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::measure::Latencies;

    fn coordinator(backend: &str, steps: u32, prefilled: u64, per_second: f64) -> Coordinator {
        Coordinator {
            backend: backend.into(),
            sagas: 100,
            concurrency: 8,
            seconds: 100.0 / per_second,
            per_second,
            latency: Latencies::new().summary(),
            outcomes: Outcomes {
                succeeded: 100,
                ..Outcomes::default()
            },
            store_commits: 20,
            store_writes: 500,
            commits_per_saga: 0.2,
            writes_per_saga: 5.0,
            memory: Memory::default(),
            steps,
            prefilled,
            prefill_seconds: if prefilled > 0 { 2.5 } else { 0.0 },
            cpu: CpuUse {
                bench_ms: Some(40.0),
                bench_ms_per_saga: Some(0.4),
                ..CpuUse::default()
            },
            cpu_us_per_step: Some(400.0 / f64::from(steps)),
        }
    }

    fn end_to_end(mode: &str, per_second: f64) -> EndToEnd {
        EndToEnd {
            backend: "sqlite".into(),
            mode: mode.into(),
            orders: 100,
            concurrency: 8,
            seconds: 100.0 / per_second,
            per_second,
            latency: Latencies::new().summary(),
            outcomes: Outcomes::default(),
            succeeded_share: 1.0,
            compensated_share: 0.0,
            server_memory: Memory {
                during_kib: vec![("10%".into(), 1024), ("50%".into(), 2048)],
                ..Memory::default()
            },
            store_commits: None,
            store_writes: None,
            store_commits_per_saga: None,
            store_writes_per_saga: None,
            cpu: CpuUse {
                serve_ms: Some(150.0),
                serve_ms_per_saga: Some(1.5),
                bench_ms: Some(10.0),
                bench_ms_per_saga: Some(0.1),
                ..CpuUse::default()
            },
        }
    }

    fn report() -> Report {
        let mut report = Report {
            end_to_end: vec![end_to_end("saga", 500.0), end_to_end("direct", 1000.0)],
            coordinator: vec![
                coordinator("sqlite", 4, 0, 4000.0),
                coordinator("sqlite", 4, 1000, 3600.0),
                coordinator("sqlite", 8, 0, 2000.0),
                coordinator("postgres", 4, 1000, 1500.0),
            ],
            recovery: vec![Recovery {
                backend: "sqlite".into(),
                sagas: 100,
                steps: 4,
                restart_to_first_step_ms: Some(12.0),
                ..Recovery::default()
            }],
            ..Report::default()
        };
        report.compare();
        report
    }

    #[test]
    fn compare_pairs_each_prefilled_run_with_its_empty_one() {
        let report = report();
        assert_eq!(report.comparisons.len(), 1);
        assert_eq!(report.comparisons[0].ratio, 0.5);
        // The PostgreSQL run has no empty run of its step count: no ratio.
        assert_eq!(report.prefill_comparisons.len(), 1);
        let c = &report.prefill_comparisons[0];
        assert_eq!(
            (c.backend.as_str(), c.steps, c.prefilled),
            ("sqlite", 4, 1000)
        );
        assert_eq!(c.ratio, 3600.0 / 4000.0);
        assert_eq!(c.prefill_seconds, 2.5);
    }

    #[test]
    fn the_json_keeps_the_old_fields_and_has_the_new_ones() {
        let json = serde_json::to_value(report()).unwrap();
        for key in ["end_to_end", "comparisons", "coordinator", "cpus"] {
            assert!(json.get(key).is_some(), "{key} is missing");
        }
        for key in ["machine", "prefill_comparisons", "recovery"] {
            assert!(json.get(key).is_some(), "{key} is missing");
        }
        let row = &json["end_to_end"][0];
        assert_eq!(row["cpu"]["serve_ms_per_saga"], 1.5);
        assert_eq!(row["store_writes_per_saga"], serde_json::Value::Null);
        assert_eq!(row["server_memory"]["during_kib"][1][0], "50%");
        let row = &json["coordinator"][2];
        assert_eq!(row["steps"], 8);
        assert_eq!(row["cpu_us_per_step"], 50.0);
        assert_eq!(row["cpu"]["serve_ms"], serde_json::Value::Null);
        assert_eq!(json["recovery"][0]["restart_to_first_step_ms"], 12.0);
        assert_eq!(json["machine"]["command"], "");
    }

    #[test]
    fn the_markdown_has_a_table_per_kind_of_run() {
        let md = report().markdown();
        assert!(md.starts_with("Measured "));
        for heading in [
            "### End to end",
            "### Saga against direct",
            "### Coordinator only",
            "### A store of finished sagas against an empty one",
            "### Recovery",
        ] {
            assert!(md.contains(heading), "{heading} is missing:\n{md}");
        }
        assert!(md.contains("| 1.500 | 0.100 | - |"), "{md}");
        assert!(
            md.contains("| sqlite | 4 | 1000 | 2.5 | 4000 | 3600 | 0.90 |"),
            "{md}"
        );
        // Every table row has as many cells as its header.
        for table in md.split("\n\n").filter(|t| t.starts_with('|')) {
            let cells = |l: &str| l.matches('|').count();
            let mut lines = table.lines();
            let header = cells(lines.next().unwrap());
            assert!(lines.all(|l| cells(l) == header), "{table}");
        }
    }
}
