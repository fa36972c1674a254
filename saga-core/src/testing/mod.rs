//! Check a saga against every fault, deterministically, in `cargo test` (feature `testing`).
//!
//! [`Harness`] drives one saga, with the user's own steps and a fresh [`World`] (the
//! participants' databases) for every schedule, through the single-fault matrix derived from
//! the saga's definition and through random multi-fault schedules drawn from a seed:
//!
//! - for every action and compensation: the call fails before doing anything; it does its work
//!   and its reply is lost; it is delivered twice; it does its work and exceeds its timeout; a
//!   business failure where the step kind allows one; the reply lost and the step in doubt until
//!   the deadline (its compensation gets `None`); the action held back until after its
//!   compensation (a hang) ([`Fault`]);
//! - the engine crashing before and after it persists each transition, and a new engine
//!   recovering from the store ([`CrashAt`]).
//!
//! Each schedule runs on a paused Tokio runtime of its own, with the engine on
//! [`Clock::tokio`](crate::clock::Clock::tokio): time moves only when every task waits on it
//! (backoff, timeouts, the deadline and leases pass without sleeping), store calls and step calls
//! hold it still while their databases work, and the backoff's jitter is seeded. The store is
//! a real SQLite file. After each run the harness asserts the saga guarantee (every step
//! succeeded, or every compensatable step that may have started compensated exactly once in
//! reverse dependency order and nothing past the pivot; no step started before its
//! dependencies succeeded; a terminal status, `stuck` with a reason; a late action cancelled)
//! and then the user's invariant on a [`World::snapshot`].
//!
//! A failure prints its schedule and the run's [`Entry`] journal; a random schedule's seed
//! replays it alone with `SAGA_TEST_SEED=<seed>`. Step code under the harness must not sleep on
//! Tokio's clock inside a call (time is held still while a call runs).
//!
//! ```
//! use std::path::Path;
//!
//! use saga_core::barrier::{self, Barrier};
//! use saga_core::store::sqlite::open_pool;
//! use saga_core::testing::{Harness, World};
//! use saga_core::{Retry, Saga, SagaStatus, StepContext, StepError};
//! use sqlx::SqlitePool;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Transfer { amount: i64 }
//!
//! #[derive(Saga)]
//! #[saga(input = Transfer)]
//! enum MoveMoney {
//!     #[compensate(refund)]
//!     Debit,
//!     #[pivot]
//!     Credit,
//! }
//!
//! /// One account database: the balance of `from` and of `to`.
//! struct Bank { db: SqlitePool }
//!
//! impl MoveMoneySteps for Bank {
//!     async fn debit(&self, ctx: &StepContext, t: &Transfer) -> Result<(), StepError> {
//!         let amount = t.amount;
//!         Barrier::for_step(ctx).action(&self.db, move |tx| Box::pin(async move {
//!             sqlx::query("UPDATE account SET balance = balance - ?1 WHERE name = 'from'")
//!                 .bind(amount).execute(&mut *tx).await?;
//!             Ok::<_, StepError>(())
//!         })).await?.into()
//!     }
//!     async fn refund(&self, ctx: &StepContext, t: &Transfer, _: Option<()>) -> Result<(), Retry> {
//!         let amount = t.amount;
//!         Barrier::for_step(ctx).compensate(&self.db, move |tx| Box::pin(async move {
//!             sqlx::query("UPDATE account SET balance = balance + ?1 WHERE name = 'from'")
//!                 .bind(amount).execute(&mut *tx).await?;
//!             Ok::<_, Retry>(())
//!         })).await?.into()
//!     }
//!     async fn credit(&self, ctx: &StepContext, t: &Transfer) -> Result<(), StepError> {
//!         let amount = t.amount;
//!         Barrier::for_step(ctx).action(&self.db, move |tx| Box::pin(async move {
//!             sqlx::query("UPDATE account SET balance = balance + ?1 WHERE name = 'to'")
//!                 .bind(amount).execute(&mut *tx).await?;
//!             Ok::<_, StepError>(())
//!         })).await?.into()
//!     }
//! }
//!
//! /// The world of one schedule: a fresh database with 100 on `from` and 0 on `to`.
//! struct Accounts { db: SqlitePool }
//!
//! impl World for Accounts {
//!     type Steps = Bank;
//!     type Snapshot = (i64, i64);
//!
//!     async fn create(dir: &Path) -> Result<Self, String> {
//!         let db = open_pool(&dir.join("bank.db"), false, 2).await.map_err(|e| e.to_string())?;
//!         barrier::migrate(&db).await.map_err(|e| e.to_string())?;
//!         sqlx::raw_sql("CREATE TABLE account (name TEXT PRIMARY KEY, balance INTEGER NOT NULL);
//!                        INSERT INTO account VALUES ('from', 100), ('to', 0);")
//!             .execute(&db).await.map_err(|e| e.to_string())?;
//!         Ok(Accounts { db })
//!     }
//!
//!     fn steps(&self) -> Bank {
//!         Bank { db: self.db.clone() }
//!     }
//!
//!     async fn snapshot(&self) -> Result<(i64, i64), String> {
//!         sqlx::query_as("SELECT (SELECT balance FROM account WHERE name = 'from'),
//!                                (SELECT balance FROM account WHERE name = 'to')")
//!             .fetch_one(&self.db).await.map_err(|e| e.to_string())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let report = Harness::<MoveMoney, Accounts>::new(Transfer { amount: 30 })
//!     .invariant(|&(from, to), outcome| match outcome.status {
//!         SagaStatus::Succeeded if (from, to) == (70, 30) => Ok(()),
//!         SagaStatus::Compensated if (from, to) == (100, 0) => Ok(()),
//!         status => Err(format!("{status} with balances {from} and {to}")),
//!     })
//!     .random(20)
//!     .run()
//!     .await;
//! report.assert_ok();
//! # }
//! ```

mod intercept;
mod journal;
mod recovery;
mod run;
mod schedule;
mod verdict;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use journal::Entry;
pub use recovery::{Log, Tap, kill, saga_violations, stall, tapped};
pub use schedule::{CrashAt, Fault, Injection, Schedule};

use crate::engine::{EngineConfig, SagaView};
use crate::machine::SagaStatus;
use crate::step::{Saga, SagaSteps};

/// The environment variable that replays one random schedule by its seed.
pub const SEED_VAR: &str = "SAGA_TEST_SEED";

/// The participants' side of a saga under test: their databases, created fresh for every
/// schedule, the steps implementation that works on them, and what the invariant looks at.
pub trait World: Sized + Send + Sync + 'static {
    /// The implementation of the saga's generated `{Enum}Steps` trait.
    type Steps: Send + Sync + 'static;
    /// What the invariant is checked on: the world's state, read once the saga has finished.
    type Snapshot: fmt::Debug + Send + 'static;

    /// Creates a fresh world with its databases in `dir` (a directory of its own for every
    /// schedule, removed afterwards).
    fn create(dir: &Path) -> impl Future<Output = Result<Self, String>> + Send;

    /// The steps implementation working on this world (called for every engine of a run).
    fn steps(&self) -> Self::Steps;

    /// Reads the world's state for the invariant.
    fn snapshot(&self) -> impl Future<Output = Result<Self::Snapshot, String>> + Send;
}

/// How one run of a schedule ended, as the invariant sees it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The saga's final status.
    pub status: SagaStatus,
    /// Why it was compensated or is stuck.
    pub reason: Option<String>,
    /// The saga's final view: its steps' statuses, attempts and outputs.
    pub view: SagaView,
    /// The schedule that ran.
    pub schedule: Schedule,
    /// What happened, in order.
    pub journal: Vec<Entry>,
}

type Invariant<W> =
    Arc<dyn Fn(&<W as World>::Snapshot, &Outcome) -> Result<(), String> + Send + Sync>;

/// Settings every run of a harness shares.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) config: EngineConfig,
    /// How much virtual time a run may take before it is reported as not terminal.
    pub(crate) patience: Duration,
}

/// Default [`Harness::workers`]: one per core of a small CI machine.
const DEFAULT_WORKERS: usize = 2;

/// Default virtual time a run may take: far beyond the default deadline and the backoff of
/// ten attempts.
const DEFAULT_PATIENCE: Duration = Duration::from_secs(3600);

/// The fault-matrix harness of saga `S` on world `W`; see the [module docs](self).
pub struct Harness<S: Saga, W: World> {
    input: Arc<S::Input>,
    invariant: Invariant<W>,
    settings: Settings,
    matrix: bool,
    random: u64,
    seed: u64,
    schedules: Vec<Schedule>,
    workers: usize,
    dir: Option<PathBuf>,
}

impl<S, W> Harness<S, W>
where
    S: SagaSteps<W::Steps>,
    W: World,
{
    /// A harness that submits `input` in every schedule: the single-fault matrix, no random
    /// schedules, an invariant that accepts everything, the engine's default settings.
    pub fn new(input: S::Input) -> Self {
        Harness {
            input: Arc::new(input),
            invariant: Arc::new(|_, _| Ok(())),
            settings: Settings {
                config: EngineConfig::default(),
                patience: DEFAULT_PATIENCE,
            },
            matrix: true,
            random: 0,
            seed: 1,
            schedules: Vec::new(),
            workers: DEFAULT_WORKERS,
            dir: None,
        }
    }

    /// The user's invariant, checked after every run on the world's snapshot and the outcome.
    pub fn invariant(
        mut self,
        invariant: impl Fn(&W::Snapshot, &Outcome) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.invariant = Arc::new(invariant);
        self
    }

    /// Also runs `n` random multi-fault schedules, of seeds `seed`, `seed + 1`, ...
    pub fn random(mut self, n: u64) -> Self {
        self.random = n;
        self
    }

    /// The first seed of the random schedules (default 1).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether to run the single-fault matrix (default: yes).
    pub fn matrix(mut self, on: bool) -> Self {
        self.matrix = on;
        self
    }

    /// Also runs this schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// The engine's settings in every run (the engine id is the harness's own).
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.settings.config = config;
        self
    }

    /// How many schedules run at once, each on a thread of its own (default 2).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Where each run's directory is made (default: `/dev/shm` where it exists, else the
    /// system's temporary directory).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Runs every schedule and reports the ones that broke the saga guarantee or the
    /// invariant. With `SAGA_TEST_SEED` set, runs only the random schedule of that seed.
    pub async fn run(self) -> Report {
        let started = Instant::now();
        let task = tokio::task::spawn_blocking(move || self.run_blocking());
        match task.await {
            Ok(mut report) => {
                report.elapsed = started.elapsed();
                report
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn run_blocking(self) -> Report {
        let def = S::definition();
        let replay = std::env::var(SEED_VAR)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let base = self.dir.clone().unwrap_or_else(default_dir);
        // A run without faults, and one with the last fallible step failing: how many
        // transitions each persists, for the crash points and the random schedules' range.
        let mut failing = Schedule::default();
        if let Some(t) = def
            .steps
            .iter()
            .rposition(|s| s.kind != crate::definition::StepKind::Retriable)
        {
            failing.faults.push(Injection {
                step: t,
                name: def.steps[t].name,
                op: crate::step::Op::Action,
                call: 1,
                fault: Fault::BusinessFailure,
            });
        }
        let counts: Vec<usize> = [Schedule::default(), failing]
            .into_iter()
            .map(|s| self.run_one(s, &base).1.saturating_sub(1))
            .collect();
        let mut schedules = Vec::new();
        let mut matrix = 0;
        match replay {
            Some(seed) => schedules.push(schedule::random(def, counts[0], seed)),
            None => {
                if self.matrix {
                    let m = schedule::matrix(def, &counts);
                    matrix = m.len();
                    schedules.extend(m);
                }
                schedules.extend(
                    (0..self.random)
                        .map(|i| schedule::random(def, counts[0], self.seed.wrapping_add(i))),
                );
                schedules.extend(self.schedules.iter().cloned());
            }
        }
        let next = AtomicUsize::new(0);
        let results: std::sync::Mutex<Vec<(usize, Option<Failure>)>> =
            std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..self.workers.min(schedules.len().max(1)) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(s) = schedules.get(i) else { break };
                        let (failure, _) = self.run_one(s.clone(), &base);
                        if let Ok(mut r) = results.lock() {
                            r.push((i, failure));
                        }
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_default();
        results.sort_by_key(|(i, _)| *i);
        Report {
            schedules: schedules.len(),
            matrix,
            random: if replay.is_some() {
                1
            } else {
                self.random as usize
            },
            transitions: counts,
            failures: results.into_iter().filter_map(|(_, f)| f).collect(),
            elapsed: Duration::ZERO,
        }
    }

    /// Runs one schedule on a paused runtime of its own: its failure, if any, and the
    /// transitions it persisted.
    fn run_one(&self, schedule: Schedule, base: &Path) -> (Option<Failure>, usize) {
        let fail = |violations: Vec<String>, journal: Vec<Entry>| Failure {
            schedule: schedule.clone(),
            violations,
            journal,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build();
        let runtime = match runtime {
            Ok(r) => r,
            Err(e) => return (Some(fail(vec![format!("no runtime: {e}")], Vec::new())), 0),
        };
        let dir = match tempfile::Builder::new()
            .prefix("saga-test-")
            .tempdir_in(base)
        {
            Ok(d) => d,
            Err(e) => {
                let problem = format!("no directory in {}: {e}", base.display());
                return (Some(fail(vec![problem], Vec::new())), 0);
            }
        };
        let ran = runtime.block_on(run::run::<S, W>(
            &self.settings,
            &self.input,
            schedule.clone(),
            dir.path(),
        ));
        drop(runtime);
        let transitions = ran.transitions;
        if let Some(error) = ran.error {
            return (Some(fail(vec![error], ran.entries)), transitions);
        }
        let mut violations =
            verdict::violations(S::definition(), ran.view.as_ref(), &ran.entries, &ran.calls);
        if let Some(view) = ran.view {
            let outcome = Outcome {
                status: view.status,
                reason: view.reason.clone(),
                view,
                schedule: schedule.clone(),
                journal: ran.entries.clone(),
            };
            match &ran.snapshot {
                Ok(snapshot) => {
                    if let Err(broken) = (self.invariant)(snapshot, &outcome) {
                        violations.push(format!("invariant: {broken}"));
                    }
                }
                Err(e) => violations.push(format!("the world's snapshot failed: {e}")),
            }
        }
        if violations.is_empty() {
            (None, transitions)
        } else {
            (Some(fail(violations, ran.entries)), transitions)
        }
    }
}

fn default_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A schedule that broke the saga guarantee or the invariant.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The schedule.
    pub schedule: Schedule,
    /// What was broken.
    pub violations: Vec<String>,
    /// What happened, in order.
    pub journal: Vec<Entry>,
}

impl Failure {
    /// Whether the journal holds `entry`.
    pub fn saw(&self, entry: &Entry) -> bool {
        self.journal.contains(entry)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schedule: {}", self.schedule)?;
        if let Some(seed) = self.schedule.seed {
            writeln!(f, "replay it: {SEED_VAR}={seed} cargo test ...")?;
        }
        writeln!(f, "broken:")?;
        for v in &self.violations {
            writeln!(f, "  - {v}")?;
        }
        writeln!(f, "what happened:")?;
        for (i, e) in self.journal.iter().enumerate() {
            writeln!(f, "  {:>3}. {e}", i + 1)?;
        }
        Ok(())
    }
}

/// What a [`Harness::run`] found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Schedules run.
    pub schedules: usize,
    /// Of which the single-fault matrix.
    pub matrix: usize,
    /// Of which random.
    pub random: usize,
    /// Transitions the run without faults, and the run with the last fallible step failing,
    /// persisted after the submit's: the range of the crash points.
    pub transitions: Vec<usize>,
    /// The schedules that broke something, in the order they were listed.
    pub failures: Vec<Failure>,
    /// How long the whole run took, in real time.
    pub elapsed: Duration,
}

/// Failures printed in full by [`Report::assert_ok`]; the rest are counted.
const PRINTED_FAILURES: usize = 5;

impl Report {
    /// Panics with the failing schedules, their violations and journals, if any failed.
    pub fn assert_ok(&self) {
        if self.failures.is_empty() {
            return;
        }
        let mut text = format!(
            "{} of {} schedules broke the saga:\n",
            self.failures.len(),
            self.schedules
        );
        for failure in self.failures.iter().take(PRINTED_FAILURES) {
            text.push_str(&format!("\n{failure}"));
        }
        if self.failures.len() > PRINTED_FAILURES {
            text.push_str(&format!(
                "\n... and {} more\n",
                self.failures.len() - PRINTED_FAILURES
            ));
        }
        panic!("{text}");
    }

    /// The failure of the schedule with exactly these faults and no crash, if it failed.
    pub fn failure_of(&self, faults: &[Injection]) -> Option<&Failure> {
        self.failures
            .iter()
            .find(|f| f.schedule.faults == faults && f.schedule.crashes.is_empty())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} schedules ({} matrix, {} random), {} failed, in {:.2} s",
            self.schedules,
            self.matrix,
            self.random,
            self.failures.len(),
            self.elapsed.as_secs_f64()
        )
    }
}
