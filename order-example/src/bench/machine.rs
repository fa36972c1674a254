//! The machine a report was measured on: when, which CPU, how many cores, how fast the disk of
//! the data directory makes a write durable, and the command that ran. Printed at the head of
//! every report, so that its figures can be pasted with what they depend on.

use std::fmt::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// The bytes written before each `fdatasync` of the fsync probe: one page.
const FSYNC_WRITE: usize = 4096;

/// Where and on what a report was measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    /// When the run started, UTC, RFC 3339 (`2026-12-01T10:00:00Z`).
    pub date_utc: String,
    /// The CPU's model name (`/proc/cpuinfo`, else `lscpu`).
    pub cpu_model: Option<String>,
    /// Logical CPUs this process may run on.
    pub cpus: usize,
    /// Physical cores (distinct `physical id`/`core id` pairs of `/proc/cpuinfo`).
    pub cores: Option<usize>,
    /// Total memory (`MemTotal` of `/proc/meminfo`), KiB.
    pub memory_kib: Option<u64>,
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: Option<String>,
    /// Writes of one page made durable per second with `fdatasync`, one after another, in
    /// `fsync_dir`, over about `fsync_seconds`; `None` when skipped or when it failed.
    pub fsync_per_second: Option<f64>,
    /// The directory the fsync probe wrote in: the one the run's SQLite data sets are made in.
    pub fsync_dir: String,
    /// How long the probe ran, seconds (0: skipped).
    pub fsync_seconds: f64,
    /// `release` or `debug`: how this binary was built.
    pub build: String,
    /// The command line of the run, shell-quoted, with any password in a URL replaced by `***`.
    pub command: String,
}

impl Machine {
    /// Describes this machine now, probing fsync in `dir` for `fsync_for` (none when zero).
    pub fn probe(dir: &Path, fsync_for: Duration) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpu_model(&cpuinfo).or_else(lscpu_model);
        let fsync_per_second = if fsync_for.is_zero() {
            None
        } else {
            match fsync_rate(dir, fsync_for) {
                Ok(rate) => Some(rate),
                Err(e) => {
                    eprintln!("fsync probe in {} failed: {e}", dir.display());
                    None
                }
            }
        };
        Machine {
            date_utc: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cores: physical_cores(&cpuinfo),
            memory_kib: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| mem_total_kib(&m)),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|k| k.trim().to_string()),
            fsync_per_second,
            fsync_dir: dir.display().to_string(),
            fsync_seconds: fsync_for.as_secs_f64(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_string(),
            command: command_line(std::env::args()),
        }
    }

    /// The header of the Markdown report: a paragraph and the command, ready for the README.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let model = self.cpu_model.as_deref().unwrap_or("unknown CPU");
        let cores = match self.cores {
            Some(c) => format!("{c} cores, {} logical CPUs", self.cpus),
            None => format!("{} logical CPUs", self.cpus),
        };
        let memory = self
            .memory_kib
            .map(|k| format!(", {:.0} GiB", k as f64 / (1024.0 * 1024.0)))
            .unwrap_or_default();
        let kernel = self
            .kernel
            .as_ref()
            .map(|k| format!(", Linux {k}"))
            .unwrap_or_default();
        let fsync = match self.fsync_per_second {
            Some(rate) => format!(
                "fsync {rate:.0}/s (`fdatasync` of a {FSYNC_WRITE}-byte write in `{}`, {:.0} s)",
                self.fsync_dir, self.fsync_seconds
            ),
            None => "fsync not measured".to_string(),
        };
        let _ = writeln!(
            s,
            "Measured {} on {model} ({cores}{memory}{kernel}); {fsync}; {} build:\n",
            self.date_utc, self.build
        );
        let _ = writeln!(s, "```sh\n{}\n```\n", self.command);
        s
    }
}

/// The first `model name` of `/proc/cpuinfo`.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name" && !value.trim().is_empty()).then(|| value.trim().to_string())
    })
}

/// Distinct `(physical id, core id)` pairs of `/proc/cpuinfo`; the count of `processor` entries
/// when it names no cores (as in some virtual machines).
pub fn physical_cores(cpuinfo: &str) -> Option<usize> {
    let mut pairs = std::collections::BTreeSet::new();
    let mut processors = 0;
    for block in cpuinfo.split("\n\n") {
        let field = |name: &str| {
            block.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_string())
            })
        };
        if field("processor").is_none() {
            continue;
        }
        processors += 1;
        if let (Some(p), Some(c)) = (field("physical id"), field("core id")) {
            pairs.insert((p, c));
        }
    }
    match (pairs.len(), processors) {
        (0, 0) => None,
        (0, n) => Some(n),
        (n, _) => Some(n),
    }
}

/// `MemTotal` of `/proc/meminfo`, KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn lscpu_model() -> Option<String> {
    let out = std::process::Command::new("lscpu").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| {
        let value = l.strip_prefix("Model name:")?.trim();
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// Writes one page at the start of a new file in `dir` and `fdatasync`s it, again and again for
/// `run_for` (at least once); returns the syncs per second. The file is removed afterwards.
pub fn fsync_rate(dir: &Path, run_for: Duration) -> std::io::Result<f64> {
    let file = tempfile::Builder::new()
        .prefix("order-bench-fsync-")
        .tempfile_in(dir)?;
    let page = [0x5au8; FSYNC_WRITE];
    // The first write allocates the block; the measured ones overwrite it in place.
    file.as_file().write_all_at(&page, 0)?;
    file.as_file().sync_all()?;
    let started = Instant::now();
    let mut syncs = 0u64;
    while syncs == 0 || started.elapsed() < run_for {
        file.as_file().write_all_at(&page, 0)?;
        file.as_file().sync_data()?;
        syncs += 1;
    }
    Ok(syncs as f64 / started.elapsed().as_secs_f64())
}

/// The arguments as one shell command line: each argument quoted when it needs it, and the
/// password of any `scheme://user:password@host` URL replaced by `***`.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| shell_quote(&hide_password(&a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// `arg` with the password of a URL in it (`://user:password@`) replaced by `***`.
fn hide_password(arg: &str) -> String {
    let Some(scheme_end) = arg.find("://").map(|i| i + 3) else {
        return arg.to_string();
    };
    let rest = &arg[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return arg.to_string();
    };
    match authority[..at].split_once(':') {
        Some((user, _)) => format!(
            "{}{user}:***{}",
            &arg[..scheme_end],
            &arg[scheme_end + at..]
        ),
        None => arg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\
        physical id\t: 0\ncore id\t\t: 0\ncpu cores\t: 2\n\n\
        processor\t: 1\nmodel name\t: AMD EPYC\nphysical id\t: 0\ncore id\t\t: 1\n\n\
        processor\t: 2\nmodel name\t: AMD EPYC\nphysical id\t: 0\ncore id\t\t: 1\n";

    #[test]
    fn cpuinfo_gives_the_model_and_the_physical_cores() {
        assert_eq!(cpu_model(CPUINFO).as_deref(), Some("AMD EPYC"));
        // Processors 1 and 2 are two threads of one core.
        assert_eq!(physical_cores(CPUINFO), Some(2));
    }

    #[test]
    fn cpuinfo_without_core_ids_counts_processors() {
        let text = "processor : 0\nmodel name : X\n\nprocessor : 1\nmodel name : X\n";
        assert_eq!(physical_cores(text), Some(2));
        assert_eq!(physical_cores(""), None);
        assert_eq!(cpu_model("processor : 0\nmodel name :\n"), None);
    }

    #[test]
    fn meminfo_gives_the_total() {
        let text = "MemTotal:       24570716 kB\nMemFree:         1234 kB\n";
        assert_eq!(mem_total_kib(text), Some(24_570_716));
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn the_command_line_is_quoted_and_hides_passwords() {
        let args = [
            "order-example",
            "bench",
            "--database-url",
            "postgres://bench:s3cret@127.0.0.1:5432/postgres?sslmode=disable",
            "--steps",
            "2,4,8,16",
            "it's",
            "",
        ]
        .map(String::from);
        assert_eq!(
            command_line(args),
            "order-example bench --database-url \
             'postgres://bench:***@127.0.0.1:5432/postgres?sslmode=disable' --steps 2,4,8,16 \
             'it'\\''s' ''"
        );
        let plain = ["postgres://u@h/db", "http://h:1/x"].map(String::from);
        assert_eq!(command_line(plain), "postgres://u@h/db http://h:1/x");
    }

    #[test]
    fn the_fsync_probe_syncs_at_least_once_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let rate = fsync_rate(dir.path(), Duration::ZERO).unwrap();
        assert!(rate > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_markdown_header_names_the_machine_and_the_command() {
        let m = Machine {
            date_utc: "2026-12-01T10:00:00Z".into(),
            cpu_model: Some("AMD EPYC".into()),
            cpus: 2,
            cores: Some(2),
            memory_kib: Some(24 * 1024 * 1024),
            kernel: None,
            fsync_per_second: Some(812.4),
            fsync_dir: "/tmp".into(),
            fsync_seconds: 1.0,
            build: "release".into(),
            command: "order-example bench --orders 5000".into(),
        };
        let md = m.markdown();
        assert!(md.starts_with(
            "Measured 2026-12-01T10:00:00Z on AMD EPYC (2 cores, 2 logical CPUs, 24 GiB)"
        ));
        assert!(md.contains("fsync 812/s"));
        assert!(md.contains("release build"));
        assert!(md.contains("```sh\norder-example bench --orders 5000\n```"));
    }
}
