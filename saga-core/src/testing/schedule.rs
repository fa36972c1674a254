//! Schedules: which faults hit which calls, and where the engine crashes. The single-fault
//! matrix is derived from the saga's definition; random multi-fault schedules from a seed.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::definition::{SagaDefinition, StepKind};
use crate::step::Op;

/// What happens to one call of a step's action or compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The call fails before it does anything: in doubt, and nothing applied.
    ErrorBefore,
    /// The call does its work, and its reply is lost: in doubt after the commit.
    ReplyLost,
    /// The call is delivered twice, one after the other; the engine hears the second reply.
    Duplicate,
    /// The call does its work, then exceeds its step timeout without replying.
    Timeout,
    /// The participant refuses with a business failure, doing nothing (actions of compensatable
    /// and pivot steps only).
    BusinessFailure,
    /// The call does its work, its reply is lost, and every later call of it fails before it
    /// does anything, until the saga's deadline turns it to compensation: the compensation gets
    /// `None` for work that applied (compensatable actions only).
    LostUntilDeadline,
    /// The call is held back and reaches the step only after the saga has finished; meanwhile it
    /// times out and every later call of it fails before it does anything, until the deadline
    /// turns the saga to compensation: the compensation arrives before its action, the action
    /// late (compensatable actions only).
    Hang,
}

impl Fault {
    /// Every fault, in the matrix's order.
    pub const ALL: [Fault; 7] = [
        Fault::ErrorBefore,
        Fault::ReplyLost,
        Fault::Duplicate,
        Fault::Timeout,
        Fault::BusinessFailure,
        Fault::LostUntilDeadline,
        Fault::Hang,
    ];

    /// Whether this fault can hit `op` of a step of `kind`.
    pub fn applies(self, kind: StepKind, op: Op) -> bool {
        match (self, op) {
            (Fault::ErrorBefore | Fault::ReplyLost | Fault::Duplicate | Fault::Timeout, _) => {
                op == Op::Action || kind == StepKind::Compensatable
            }
            (Fault::BusinessFailure, Op::Action) => kind != StepKind::Retriable,
            (Fault::LostUntilDeadline | Fault::Hang, Op::Action) => kind == StepKind::Compensatable,
            (_, Op::Compensate) => false,
        }
    }

    /// A short name: `error_before`, `reply_lost`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::ErrorBefore => "error_before",
            Fault::ReplyLost => "reply_lost",
            Fault::Duplicate => "duplicate",
            Fault::Timeout => "timeout",
            Fault::BusinessFailure => "business_failure",
            Fault::LostUntilDeadline => "lost_until_deadline",
            Fault::Hang => "hang",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fault on the `call`-th call (from 1) of `op` of the step at index `step`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The step's index.
    pub step: usize,
    /// The step's persisted name.
    pub name: &'static str,
    /// Action or compensation.
    pub op: Op,
    /// Which call of that op the fault hits, from 1, counted over the whole schedule.
    pub call: u32,
    /// What happens to it.
    pub fault: Fault,
}

/// Where the engine crashes: before or after it persists a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashAt {
    /// Before the `n`-th transition is written (from 1: the first after the submit's).
    Before(usize),
    /// After the `n`-th transition is written, before its commands run (0: the submit's).
    After(usize),
}

impl fmt::Display for CrashAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashAt::Before(n) => write!(f, "engine crash before persisting transition {n}"),
            CrashAt::After(n) => write!(f, "engine crash after persisting transition {n}"),
        }
    }
}

/// One schedule: the faults and the crashes of one run of the saga.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// The faults, each on one call.
    pub faults: Vec<Injection>,
    /// The crashes, each once; after each a new engine recovers from the store.
    pub crashes: Vec<CrashAt>,
    /// The seed a random schedule was drawn from (`SAGA_TEST_SEED` replays it).
    pub seed: Option<u64>,
}

impl Schedule {
    /// The fault for the `call`-th call of `op` of `step`, if any.
    pub fn fault(&self, step: usize, op: Op, call: u32) -> Option<Fault> {
        self.faults
            .iter()
            .find(|i| i.step == step && i.op == op && i.call == call)
            .map(|i| i.fault)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.faults.is_empty() && self.crashes.is_empty() {
            f.write_str("no faults")?;
        }
        let mut first = true;
        for i in &self.faults {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{} {} call {}: {}", i.name, i.op, i.call, i.fault)?;
        }
        for c in &self.crashes {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{c}")?;
        }
        if let Some(seed) = self.seed {
            write!(f, " (seed {seed})")?;
        }
        Ok(())
    }
}

fn injection(def: &SagaDefinition, step: usize, op: Op, call: u32, fault: Fault) -> Injection {
    Injection {
        step,
        name: def.steps[step].name,
        op,
        call,
        fault,
    }
}

/// The last step that can fail for a business reason: its failure makes every compensation
/// before it run.
fn trigger(def: &SagaDefinition) -> Option<usize> {
    def.steps
        .iter()
        .rposition(|s| s.kind != StepKind::Retriable)
}

/// The single-fault matrix: every fault that applies to every action and compensation, on its
/// first call (a compensation's fault with the business failure of the last step that can fail,
/// so that it runs), and a crash before and after each transition of `transitions` (the numbers
/// of transitions the runs without faults and with that failure persisted).
pub fn matrix(def: &SagaDefinition, transitions: &[usize]) -> Vec<Schedule> {
    let mut out = vec![Schedule::default()];
    let trigger = trigger(def);
    for (step, s) in def.steps.iter().enumerate() {
        for op in [Op::Action, Op::Compensate] {
            for fault in Fault::ALL {
                if !fault.applies(s.kind, op) {
                    continue;
                }
                let mut faults = vec![injection(def, step, op, 1, fault)];
                if op == Op::Compensate
                    && let Some(t) = trigger
                {
                    faults.push(injection(def, t, Op::Action, 1, Fault::BusinessFailure));
                }
                out.push(Schedule {
                    faults,
                    ..Schedule::default()
                });
            }
        }
    }
    let failing: Vec<Injection> = trigger
        .map(|t| vec![injection(def, t, Op::Action, 1, Fault::BusinessFailure)])
        .unwrap_or_default();
    for (run, &count) in transitions.iter().enumerate() {
        let faults = if run == 0 {
            Vec::new()
        } else {
            failing.clone()
        };
        for n in 0..=count {
            let mut crashes = vec![CrashAt::After(n)];
            if n > 0 {
                crashes.insert(0, CrashAt::Before(n));
            }
            for crash in crashes {
                out.push(Schedule {
                    faults: faults.clone(),
                    crashes: vec![crash],
                    seed: None,
                });
            }
        }
    }
    out
}

/// Most faults one random schedule injects.
const MAX_RANDOM_FAULTS: usize = 4;

/// Most crashes one random schedule injects.
const MAX_RANDOM_CRASHES: usize = 2;

/// The random schedule of `seed`: one to four faults on random calls (the first three of
/// each op) of random steps, and up to two crashes within `transitions` (a fault-free run's
/// count, plus some).
pub fn random(def: &SagaDefinition, transitions: usize, seed: u64) -> Schedule {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults: Vec<Injection> = Vec::new();
    for _ in 0..rng.random_range(1..=MAX_RANDOM_FAULTS) {
        let step = rng.random_range(0..def.steps.len());
        let kind = def.steps[step].kind;
        let op = if kind == StepKind::Compensatable && rng.random_bool(0.5) {
            Op::Compensate
        } else {
            Op::Action
        };
        let choices: Vec<Fault> = Fault::ALL
            .into_iter()
            .filter(|f| f.applies(kind, op))
            .collect();
        let fault = choices[rng.random_range(0..choices.len())];
        let call = rng.random_range(1..=3);
        if faults
            .iter()
            .any(|i| i.step == step && i.op == op && i.call == call)
        {
            continue;
        }
        faults.push(injection(def, step, op, call, fault));
    }
    let mut crashes = Vec::new();
    for _ in 0..rng.random_range(0..=MAX_RANDOM_CRASHES) {
        let n = rng.random_range(0..=transitions + 2);
        let crash = if n > 0 && rng.random_bool(0.5) {
            CrashAt::Before(n)
        } else {
            CrashAt::After(n)
        };
        if !crashes.contains(&crash) {
            crashes.push(crash);
        }
    }
    Schedule {
        faults,
        crashes,
        seed: Some(seed),
    }
}
