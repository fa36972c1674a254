//! `bench`: load against the running system, with sagas and without, compared in one run; and
//! the coordinator-only bench of the engine's own overhead.
//!
//! End to end, each mode gets a fresh data set and its own `order-example serve` child (this
//! same binary), seeded with plenty of stock, and N orders with unique ids at concurrency C:
//! - `saga`: one `POST /api/busi/submitOrder?wait=true&timeout_ms=60000` per order; latency is
//!   until the terminal reply.
//! - `direct`: the same four business writes in the same participant databases through the
//!   baseline endpoints of `direct.rs` (plain local transactions, no saga store, no barrier, no
//!   retries), called in order by this client, which calls the reverts of the done steps on a
//!   business failure.
//!
//! `--coordinator` instead runs no-op sagas of 2 to 16 steps through the `Engine` in this
//! process, on an empty store and with `--prefill N` on one of N finished sagas; `--recovery N`
//! kills an engine process with N sagas in flight and times their resumption. Every report
//! starts with the machine it was measured on. docs/bench.md describes the flags and fields.

mod child;
mod coordinator;
mod load;
mod machine;
mod measure;
mod noop;
mod prefill;
mod recovery;
mod report;

pub use recovery::{EngineArgs, child as engine_child};

use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use rand::Rng;

use child::{DataSet, Server};
use load::{Mode, OrderShape};
use machine::Machine;
use measure::{CpuMeter, Memory};
use noop::NoopSaga;
use report::{EndToEnd, Report};

/// Which modes to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Orders as sagas through `POST /api/busi/submitOrder?wait=true`.
    Saga,
    /// The no-saga baseline: the client calls the four `/api/direct/*` steps itself.
    Direct,
    /// Both, one after the other on fresh data sets, and their throughput ratio.
    Both,
}

/// Which databases to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// SQLite files in a temporary directory (WAL, synchronous=FULL).
    Sqlite,
    /// Fresh databases on the PostgreSQL server of `--database-url`.
    Postgres,
    /// SQLite, then PostgreSQL.
    Both,
}

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Orders per mode and backend (sagas with --coordinator).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub orders: u64,
    /// Orders in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: u64,
    /// `saga`, `direct`, or `both` (compared in one invocation).
    #[arg(long, value_enum, default_value_t = ModeArg::Both)]
    pub mode: ModeArg,
    /// `sqlite`, `postgres` (needs --database-url), or `both`.
    #[arg(long, value_enum, default_value_t = BackendArg::Sqlite)]
    pub backend: BackendArg,
    /// PostgreSQL server for `--backend postgres`, as a role that may CREATE DATABASE; the bench
    /// creates a fresh database per run (`sagabench_<run>_<mode>`) and drops it afterwards.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Load an already running `serve` at this base URL instead of starting one; seed it first
    /// with plenty of stock (`order-example seed --stock 1=100000000`). Both modes then share
    /// its data set.
    #[arg(long, conflicts_with_all = ["coordinator", "database_url"])]
    pub url: Option<String>,
    /// Run the coordinator-only bench: no-op sagas through the engine in this process, no
    /// HTTP, no participant databases.
    #[arg(long, conflicts_with = "recovery")]
    pub coordinator: bool,
    /// Steps of the no-op sagas (--coordinator, --recovery): a comma-separated list of 2, 4, 8
    /// and 16, one run per count (--recovery takes the first).
    #[arg(long, value_delimiter = ',', default_value = "4", value_parser = parse_step_count)]
    pub steps: Vec<u32>,
    /// With --coordinator, run each step count twice: on an empty store, then on a store
    /// that holds N finished sagas first; the report gives the throughput ratio.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub prefill: Option<u64>,
    /// Run the recovery bench instead: N no-op sagas in flight in an engine process, which is
    /// SIGKILLed and restarted on the same store; reports the time to the first resumed step
    /// and to the last finished saga.
    #[arg(long, conflicts_with = "url", value_parser = clap::value_parser!(u64).range(1..))]
    pub recovery: Option<u64>,
    /// How long the restarted engine of --recovery may take to finish every saga, seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub recovery_timeout: u64,
    /// With --url: the process id of that `serve`, to report its CPU time and memory.
    #[arg(long, requires = "url")]
    pub server_pid: Option<u32>,
    /// How long to measure the disk's fsync rate at the start, seconds (0: skip).
    #[arg(long, default_value = "1", value_parser = parse_seconds)]
    pub fsync_seconds: Duration,
    /// Give every order a fresh coupon (seeded first), so the coupon step writes too.
    #[arg(long, conflicts_with = "url")]
    pub coupons: bool,
    /// Product to order (one unit per order).
    #[arg(long, default_value_t = 1)]
    pub product: i64,
    /// Print the results as JSON instead of Markdown tables.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file (the Markdown still goes to stdout).
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,
    /// Keep the data sets (temporary directories, PostgreSQL databases) and the server logs.
    #[arg(long)]
    pub keep_data: bool,
}

const AFTER_HELP: &str = "\
Examples:
  order-example bench                                   # SQLite, saga and direct, 2000 orders at C=64
  order-example bench --backend postgres --database-url postgres://postgres@127.0.0.1:5432/postgres
  order-example bench --coordinator --backend both --database-url postgres://...
  order-example bench --coordinator --orders 100000     # RSS at 10%, 50% and 100%
  order-example bench --coordinator --steps 2,4,8,16    # CPU per step as sagas grow
  order-example bench --coordinator --prefill 1000000   # a store of finished sagas against an empty one
  order-example bench --recovery 10000                  # SIGKILL with 10,000 sagas in flight, restart
  order-example bench --url http://127.0.0.1:8081 --mode saga --server-pid 4242

The orders use product --product, one unit each, no coupon unless --coupons, and ids with a
random prefix per run. Latency is until the terminal reply (saga) or the last call (direct).
Memory is the resident size of the `serve` child (end to end) or of this process
(coordinator) before, at its peak (VmHWM) and after the load, and at 10, 50 and 100 % of it.
CPU is user and system time from /proc/PID/stat, of the `serve` child and of this process.
Every report starts with the date, the CPU, the fsync rate of the temporary directory and the
command. docs/bench.md describes every flag and field.";

/// Seconds, as a whole or decimal number of 0 or more.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("`{s}` is not a number of seconds (0 or more)"))
}

/// One `--steps` entry: a step count the bench has a no-op saga for.
fn parse_step_count(s: &str) -> Result<u32, String> {
    noop::parse_step_counts(s).map(|counts| counts[0])
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::server::init_tracing("warn");
    let backends: &[&str] = match args.backend {
        BackendArg::Sqlite => &["sqlite"],
        BackendArg::Postgres => &["postgres"],
        BackendArg::Both => &["sqlite", "postgres"],
    };
    if backends.contains(&"postgres") && args.database_url.is_none() && args.url.is_none() {
        bail!(
            "--backend postgres needs --database-url postgres://USER@HOST:PORT/DB of a role that \
             may CREATE DATABASE; the bench creates and drops its own databases there"
        );
    }
    let modes: &[Mode] = match args.mode {
        ModeArg::Saga => &[Mode::Saga],
        ModeArg::Direct => &[Mode::Direct],
        ModeArg::Both => &[Mode::Saga, Mode::Direct],
    };
    let steps = step_counts(&args)?;
    let run_id = format!("{:08x}", rand::rng().random::<u32>());
    let concurrency = args.concurrency as usize;
    // The SQLite data sets are made in the temporary directory: probe its disk.
    let machine = Machine::probe(&std::env::temp_dir(), args.fsync_seconds);
    let mut report = Report {
        cpus: machine.cpus,
        machine,
        ..Report::default()
    };
    if let Some(sagas) = args.recovery {
        let saga = NoopSaga::with_steps(steps[0]).context("no no-op saga of that many steps")?;
        for backend in backends {
            let data = fresh_data_set(&args, backend, &run_id, "recovery").await?;
            let result = recovery::run(
                backend,
                &data,
                &format!("bench-{run_id}"),
                sagas,
                saga,
                concurrency,
                Duration::from_secs(args.recovery_timeout),
            )
            .await;
            data.remove(args.keep_data).await?;
            report.recovery.push(result?);
        }
    } else if args.coordinator {
        for backend in backends {
            for &count in &steps {
                let saga =
                    NoopSaga::with_steps(count).context("no no-op saga of that many steps")?;
                let mut runs = vec![0];
                runs.extend(args.prefill);
                for prefilled in runs {
                    let label = format!("coord{count}p{prefilled}");
                    let data = fresh_data_set(&args, backend, &run_id, &label).await?;
                    let prefix = format!("bench-{run_id}");
                    let result = async {
                        let prefill_seconds = match prefilled {
                            0 => 0.0,
                            n => {
                                eprintln!("{backend}: putting {n} finished sagas in the store");
                                prefill::run(&data, saga, &prefix, n).await?.as_secs_f64()
                            }
                        };
                        let shape = coordinator::Shape {
                            sagas: args.orders,
                            concurrency,
                            saga,
                            prefilled,
                        };
                        let mut row = coordinator::run(backend, &data, &prefix, shape).await?;
                        row.prefill_seconds = prefill_seconds;
                        anyhow::Ok(row)
                    }
                    .await;
                    data.remove(args.keep_data).await?;
                    report.coordinator.push(result?);
                }
            }
        }
    } else if let Some(url) = &args.url {
        let client = http_client(concurrency)?;
        let url = url.trim_end_matches('/');
        let stock = load::stock(&client, url, args.product)
            .await
            .with_context(|| format!("reading the stock of product {} at {url}", args.product))?;
        let needed = (args.orders * modes.len() as u64) as i64;
        if stock < needed {
            bail!(
                "product {} has {stock} in stock at {url}, {needed} needed; seed plenty first: \
                 order-example seed --data-dir D --stock {}=100000000 (or --database-url)",
                args.product,
                args.product
            );
        }
        for mode in modes {
            let shape = OrderShape {
                prefix: format!("b{run_id}{}", &mode.as_str()[..1]),
                product: args.product,
                first_coupon: None,
            };
            let pids = (args.server_pid, None);
            let result = end_to_end(&client, url, pids, "external", *mode, &shape, &args).await?;
            report.end_to_end.push(result);
        }
    } else {
        for backend in backends {
            for mode in modes {
                let result = spawned_end_to_end(&args, backend, *mode, &run_id).await?;
                report.end_to_end.push(result);
            }
        }
    }
    report.compare();
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.markdown());
    }
    Ok(())
}

/// The step counts of `--steps`, each once; only with --coordinator or --recovery unless it
/// is the default. `--prefill` only with --coordinator.
fn step_counts(args: &BenchArgs) -> anyhow::Result<Vec<u32>> {
    let mut counts: Vec<u32> = Vec::new();
    for &n in &args.steps {
        if counts.contains(&n) {
            bail!("--steps lists {n} twice");
        }
        counts.push(n);
    }
    let no_op_bench = args.coordinator || args.recovery.is_some();
    if !no_op_bench && counts != [4] {
        bail!("--steps is for the no-op sagas of --coordinator and --recovery");
    }
    if args.prefill.is_some() && !args.coordinator {
        bail!("--prefill fills the store of the coordinator bench: add --coordinator");
    }
    Ok(counts)
}

fn http_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTP client")
}

/// A fresh data set for one run: a temporary directory, or a new PostgreSQL database.
async fn fresh_data_set(
    args: &BenchArgs,
    backend: &str,
    run_id: &str,
    label: &str,
) -> anyhow::Result<DataSet> {
    match (backend, &args.database_url) {
        ("postgres", Some(url)) => {
            DataSet::postgres(url, &format!("sagabench_{run_id}_{label}")).await
        }
        ("postgres", None) => bail!("--backend postgres needs --database-url"),
        _ => DataSet::sqlite(label),
    }
}

/// One mode on one backend: fresh data set, seed, start `serve`, load, stop, clean up.
async fn spawned_end_to_end(
    args: &BenchArgs,
    backend: &str,
    mode: Mode,
    run_id: &str,
) -> anyhow::Result<EndToEnd> {
    let data = fresh_data_set(args, backend, run_id, mode.as_str()).await?;
    let result = async {
        // Coupons with ids past the default seed's (101 to 105), one per order.
        let first_coupon = args.coupons.then_some(1_000_000);
        let coupons: Vec<i64> = match first_coupon {
            Some(first) => (0..args.orders as i64).map(|i| first + i).collect(),
            None => Vec::new(),
        };
        eprintln!("{backend} {}: seeding", mode.as_str());
        let stock = (args.orders as i64).saturating_mul(10).max(100_000_000);
        child::seed(&data, args.product, stock, &coupons).await?;
        let log = std::env::temp_dir().join(format!(
            "order-bench-{run_id}-{backend}-{}.log",
            mode.as_str()
        ));
        let server = Server::start(&data, log.clone()).await?;
        let client = http_client(args.concurrency as usize)?;
        let shape = OrderShape {
            prefix: format!("b{run_id}"),
            product: args.product,
            first_coupon,
        };
        let pids = (Some(server.pid), data.postmaster_pid().await);
        let result = end_to_end(&client, &server.base_url, pids, backend, mode, &shape, args).await;
        if result.as_ref().is_ok_and(|r| r.outcomes.errors > 0) {
            eprintln!("the server's log ends with:\n{}", server.log_tail());
        }
        server.stop().await?;
        if args.keep_data {
            eprintln!("server log: {}", log.display());
        } else {
            let _ = std::fs::remove_file(&log);
        }
        result
    }
    .await;
    data.remove(args.keep_data).await?;
    result
}

/// Loads the server at `base_url` in one mode; `pids` are its process id (when we started it
/// or were told it) and the local PostgreSQL server's postmaster (when there is one).
async fn end_to_end(
    client: &reqwest::Client,
    base_url: &str,
    (pid, postmaster): (Option<u32>, Option<u32>),
    backend: &str,
    mode: Mode,
    shape: &OrderShape,
    args: &BenchArgs,
) -> anyhow::Result<EndToEnd> {
    let concurrency = args.concurrency as usize;
    // Only a server we started has a pid to read; `--url` reports no memory.
    let rss = |read: fn(Option<u32>) -> Option<u64>| pid.and_then(|p| read(Some(p)));
    let before_kib = rss(measure::rss_kib);
    let counters0 = match mode {
        Mode::Saga => load::store_counters(client, base_url).await,
        Mode::Direct => None,
    };
    let bar = measure::progress(args.orders, &format!("{backend} {}", mode.as_str()));
    let curve = pid.map(|p| measure::sample_rss_curve(Some(p), bar.clone(), args.orders));
    let cpu = CpuMeter::start(pid, postmaster);
    let load = load::run(
        client,
        base_url,
        mode,
        shape,
        args.orders,
        concurrency,
        &bar,
    )
    .await;
    let cpu = cpu.finish(args.orders);
    bar.finish_and_clear();
    let during_kib = match curve {
        Some(curve) => measure::finish_curve(curve, pid).await,
        None => Vec::new(),
    };
    let peak_kib = rss(measure::peak_rss_kib);
    let counters = match counters0 {
        Some((c0, w0)) => load::store_counters(client, base_url)
            .await
            .map(|(c, w)| (c.saturating_sub(c0), w.saturating_sub(w0))),
        None => None,
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_kib = rss(measure::rss_kib);
    for e in &load.errors {
        eprintln!("{backend} {}: {e}", mode.as_str());
    }
    let seconds = load.elapsed.as_secs_f64();
    Ok(EndToEnd {
        backend: backend.to_string(),
        mode: mode.as_str().to_string(),
        orders: args.orders,
        concurrency,
        seconds,
        per_second: load.outcomes.total() as f64 / seconds.max(1e-9),
        latency: load.latencies.summary(),
        succeeded_share: load.outcomes.share(load.outcomes.succeeded),
        compensated_share: load.outcomes.share(load.outcomes.compensated),
        outcomes: load.outcomes,
        server_memory: Memory {
            before_kib,
            peak_kib,
            after_kib,
            during_kib,
        },
        store_commits: counters.map(|(c, _)| c),
        store_writes: counters.map(|(_, w)| w),
        store_commits_per_saga: counters.map(|(c, _)| c as f64 / args.orders as f64),
        store_writes_per_saga: counters.map(|(_, w)| w as f64 / args.orders as f64),
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, String> {
        let argv = std::iter::once("bench").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map(|c| c.bench)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_are_the_old_bench() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.steps, vec![4]);
        assert_eq!(args.prefill, None);
        assert_eq!(args.recovery, None);
        assert_eq!(args.fsync_seconds, Duration::from_secs(1));
        assert!(step_counts(&args).is_ok());
    }

    #[test]
    fn the_new_flags_parse() {
        let args = parse(&[
            "--coordinator",
            "--steps",
            "2,4,8,16",
            "--prefill",
            "1000000",
        ])
        .unwrap();
        assert_eq!(args.steps, vec![2, 4, 8, 16]);
        assert_eq!(args.prefill, Some(1_000_000));
        assert_eq!(step_counts(&args).unwrap(), vec![2, 4, 8, 16]);
        let args = parse(&[
            "--recovery",
            "10000",
            "--steps",
            "8",
            "--fsync-seconds",
            "0.5",
        ])
        .unwrap();
        assert_eq!(args.recovery, Some(10_000));
        assert_eq!(args.fsync_seconds, Duration::from_millis(500));
        assert_eq!(step_counts(&args).unwrap(), vec![8]);
        let args = parse(&["--url", "http://127.0.0.1:1", "--server-pid", "42"]).unwrap();
        assert_eq!(args.server_pid, Some(42));
    }

    #[test]
    fn bad_combinations_are_refused() {
        for bad in [
            &["--steps", "3"][..],
            &["--prefill", "0"],
            &["--recovery", "0"],
            &["--recovery", "10", "--coordinator"],
            &["--recovery", "10", "--url", "http://h:1"],
            &["--server-pid", "42"],
            &["--fsync-seconds", "x"],
            &["--fsync-seconds=-1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        for bad in [
            &["--coordinator", "--steps", "4,4"][..],
            &["--prefill", "10"],
            &["--recovery", "10", "--prefill", "10"],
            &["--steps", "2"],
        ] {
            let args = parse(bad).unwrap();
            assert!(step_counts(&args).is_err(), "{bad:?} was accepted");
        }
    }
}
