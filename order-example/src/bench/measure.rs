//! What every bench run measures: latencies (hdrhistogram), outcomes, resident memory, and the
//! progress bar shown while it runs.

use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Latencies of one run, in microseconds: 1 µs to one hour at 3 significant digits.
pub struct Latencies(Histogram<u64>);

impl Latencies {
    /// An empty recorder.
    pub fn new() -> Self {
        // Infallible: the bounds are constant and valid (low >= 1, high >= 2 * low, sigfig <= 5).
        Latencies(
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
        )
    }

    /// Records one latency.
    pub fn record(&mut self, took: Duration) {
        self.0.saturating_record(took.as_micros().max(1) as u64);
    }

    /// Adds another recorder's samples (one recorder per worker, merged at the end).
    pub fn merge(&mut self, other: &Latencies) {
        // Both share the same bounds, so adding cannot go out of range.
        let _ = self.0.add(&other.0);
    }

    /// The summary printed in the report.
    pub fn summary(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p95_ms: ms(self.0.value_at_quantile(0.95)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            max_ms: ms(self.0.max()),
            mean_ms: self.0.mean() / 1000.0,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// How the orders (or sagas) of a run ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcomes {
    /// Every step done.
    pub succeeded: u64,
    /// A business failure, then the done steps were undone.
    pub compensated: u64,
    /// Parked for an operator (saga mode only).
    pub stuck: u64,
    /// Not terminal within the wait timeout (saga mode only).
    pub unfinished: u64,
    /// A transport error or an unexpected reply.
    pub errors: u64,
}

impl Outcomes {
    /// Adds another worker's counts.
    pub fn merge(&mut self, o: &Outcomes) {
        self.succeeded += o.succeeded;
        self.compensated += o.compensated;
        self.stuck += o.stuck;
        self.unfinished += o.unfinished;
        self.errors += o.errors;
    }

    /// All counted.
    pub fn total(&self) -> u64 {
        self.succeeded + self.compensated + self.stuck + self.unfinished + self.errors
    }

    /// `part` as a share of the total, 0 to 1.
    pub fn share(&self, part: u64) -> f64 {
        match self.total() {
            0 => 0.0,
            t => part as f64 / t as f64,
        }
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`); `None` for the bench process.
pub fn proc_status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident set size of a process (the bench itself with `None`), in KiB.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    proc_status_kib(pid, "VmRSS")
}

/// Peak resident set size since the process started (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    proc_status_kib(pid, "VmHWM")
}

/// Resident memory of the measured process around a run, in KiB.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// Before the load.
    pub before_kib: Option<u64>,
    /// Highest (`VmHWM`) by the end of the load.
    pub peak_kib: Option<u64>,
    /// After the load.
    pub after_kib: Option<u64>,
    /// During the load, by share of the work done (`10%`, `50%`, `100%`).
    pub during_kib: Vec<(String, u64)>,
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>24} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(label.to_string());
    bar
}
