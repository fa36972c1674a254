//! What every bench run measures: latencies (hdrhistogram), outcomes, resident memory, CPU time,
//! and the progress bar shown while it runs.

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
    /// A business failure, then the done steps were compensated.
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

/// The shares of the work at which the resident size is sampled during a run.
pub const RSS_MARKS: [(u64, &str); 3] = [(10, "10%"), (50, "50%"), (100, "100%")];

/// Samples the resident size of process `pid` (the bench itself with `None`) while `bar`
/// advances: once at each of [`RSS_MARKS`] (the first look at or past the share), until every
/// mark is taken or the returned task is aborted. 100 % is taken by the caller at the end of the
/// load, with [`finish_curve`].
pub fn sample_rss_curve(
    pid: Option<u32>,
    bar: ProgressBar,
    total: u64,
) -> tokio::task::JoinHandle<Vec<(String, u64)>> {
    tokio::spawn(async move {
        let mut taken = Vec::new();
        for (percent, label) in RSS_MARKS.iter().filter(|(p, _)| *p < 100) {
            let at = total.saturating_mul(*percent) / 100;
            while bar.position() < at {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some(kib) = rss_kib(pid) {
                taken.push((label.to_string(), kib));
            }
        }
        taken
    })
}

/// The curve of [`sample_rss_curve`] with its last point (100 %) read now.
pub async fn finish_curve(
    sampler: tokio::task::JoinHandle<Vec<(String, u64)>>,
    pid: Option<u32>,
) -> Vec<(String, u64)> {
    let mut curve = if sampler.is_finished() {
        sampler.await.unwrap_or_default()
    } else {
        // The load ended before a mark was reached (it failed): no further samples.
        sampler.abort();
        Vec::new()
    };
    if let Some(kib) = rss_kib(pid) {
        curve.push(("100%".to_string(), kib));
    }
    curve
}

/// CPU time (user and system) a process has used so far, from `/proc/<pid>/stat` (the bench
/// itself with `None`); `None` when the process is gone or the file unreadable.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let ticks = stat_cpu_ticks(&std::fs::read_to_string(path).ok()?)?;
    Some(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second(),
    ))
}

/// `utime + stime` (fields 14 and 15, in clock ticks) of a `/proc/<pid>/stat` line.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    stat_fields(stat).map(|f| f.utime + f.stime)
}

/// The fields of a `/proc/<pid>/stat` line the bench reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFields {
    /// Field 4: the parent's process id.
    pub ppid: u32,
    /// Field 14: user time, clock ticks.
    pub utime: u64,
    /// Field 15: system time, clock ticks.
    pub stime: u64,
    /// Fields 16 and 17: user and system time of the children the process has waited for.
    pub children: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// itself hold spaces and parentheses, so the fields are counted from the last `)`.
pub fn stat_fields(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state): field N is `fields[N - 3]`.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        children: field(16)? + field(17)?,
    })
}

/// CPU time of process `root`, of the children it has waited for, and of its live children:
/// all that a PostgreSQL server's postmaster and its backends have used, whether a backend
/// still runs or has exited. `None` when `root` is not a process of this machine.
pub fn tree_cpu_time(root: u32) -> Option<Duration> {
    let mut ticks = None;
    let mut children = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(f) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| stat_fields(&s))
        else {
            continue;
        };
        if pid == root {
            ticks = Some(f.utime + f.stime + f.children);
        } else if f.ppid == root {
            children += f.utime + f.stime;
        }
    }
    ticks.map(|t| Duration::from_secs_f64((t + children) as f64 / clock_ticks_per_second()))
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf(3) only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// CPU time of the `serve` child (when there is one), of the bench process and of a local
/// PostgreSQL server (when there is one) across a load.
pub struct CpuMeter {
    serve: Option<(u32, Duration)>,
    bench: Option<Duration>,
    database: Option<(u32, Duration)>,
}

impl CpuMeter {
    /// Reads the processes' CPU time now; `serve_pid` is `None` without a child to read,
    /// `postmaster` `None` without a PostgreSQL server on this machine.
    pub fn start(serve_pid: Option<u32>, postmaster: Option<u32>) -> CpuMeter {
        CpuMeter {
            serve: serve_pid.and_then(|pid| Some((pid, cpu_time(Some(pid))?))),
            bench: cpu_time(None),
            database: postmaster.and_then(|pid| Some((pid, tree_cpu_time(pid)?))),
        }
    }

    /// The CPU time used since [`CpuMeter::start`], in total and per saga (or order).
    pub fn finish(&self, sagas: u64) -> CpuUse {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let serve_ms = self
            .serve
            .and_then(|(pid, before)| Some(ms(cpu_time(Some(pid))?.saturating_sub(before))));
        let bench_ms = self
            .bench
            .and_then(|before| Some(ms(cpu_time(None)?.saturating_sub(before))));
        let database_ms = self
            .database
            .and_then(|(pid, before)| Some(ms(tree_cpu_time(pid)?.saturating_sub(before))));
        let per = |total: Option<f64>| total.map(|t| t / sagas.max(1) as f64);
        CpuUse {
            serve_ms,
            serve_ms_per_saga: per(serve_ms),
            bench_ms,
            bench_ms_per_saga: per(bench_ms),
            database_ms,
            database_ms_per_saga: per(database_ms),
        }
    }
}

/// CPU time (user and system, from `/proc/<pid>/stat`, in clock ticks of 10 ms on most
/// systems) spent during a load.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    /// Of the `serve` process; `None` when the bench started none (`--coordinator`, or `--url`
    /// without `--server-pid`).
    pub serve_ms: Option<f64>,
    /// `serve_ms` per saga (or order).
    pub serve_ms_per_saga: Option<f64>,
    /// Of the bench process: the load's client, and with `--coordinator` the engine too.
    pub bench_ms: Option<f64>,
    /// `bench_ms` per saga (or order).
    pub bench_ms_per_saga: Option<f64>,
    /// Of the PostgreSQL server (its postmaster and backends) when it runs on this machine;
    /// `None` on SQLite, whose work is done inside the processes above.
    pub database_ms: Option<f64>,
    /// `database_ms` per saga (or order).
    pub database_ms_per_saga: Option<f64>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_adds_utime_and_stime() {
        let stat = "4242 (order-example) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    731 129 0 0 20 0 9 0 1000 123456789 4567 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some(860));
    }

    #[test]
    fn stat_cpu_ticks_counts_fields_after_the_last_parenthesis() {
        // A command name with spaces and a parenthesis of its own.
        let stat = "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 9 1 1 1";
        assert_eq!(stat_cpu_ticks(stat), Some(11));
    }

    #[test]
    fn stat_fields_read_the_parent_and_the_waited_for_children() {
        let stat = "4242 (postgres) S 17 4242 4242 0 -1 4194560 1234 0 0 0 \
                    731 129 40 2 20 0 9 0 1000 123456789 4567 18446744073709551615";
        let f = stat_fields(stat).unwrap();
        assert_eq!(
            f,
            StatFields {
                ppid: 17,
                utime: 731,
                stime: 129,
                children: 42
            }
        );
    }

    #[test]
    fn this_process_is_the_root_of_its_own_tree() {
        let pid = std::process::id();
        let own = cpu_time(None).unwrap();
        // Its own time and its children's: at least what it has used itself.
        assert!(tree_cpu_time(pid).unwrap() >= own);
        assert_eq!(tree_cpu_time(u32::MAX), None);
    }

    #[test]
    fn stat_cpu_ticks_rejects_a_short_or_garbled_line() {
        assert_eq!(stat_cpu_ticks(""), None);
        assert_eq!(stat_cpu_ticks("1 (x) S 1 2 3"), None);
        assert_eq!(stat_cpu_ticks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s"), None);
    }

    #[test]
    fn this_process_has_used_cpu_time_and_it_grows() {
        let before = cpu_time(None).expect("/proc/self/stat is readable on Linux");
        // Spin until the clock tick counter moves; CPU time never goes back.
        let mut x = 0u64;
        let mut after = before;
        while after == before {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            after = cpu_time(None).expect("readable");
        }
        assert!(after > before);
    }
}
