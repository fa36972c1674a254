//! The journal of one run: every engine event, injected fault, crash and late call in the
//! order they happened, and the state the interceptor and the probe share (call counts, held
//! calls, which crashes have fired).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::intercept::Held;
use super::schedule::{CrashAt, Fault, Schedule};
use crate::clock::Clock;
use crate::definition::SagaDefinition;
use crate::engine::{CrashPoint, EngineEvent, Probe};
use crate::step::Op;

/// One line of a run's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An event the engine published.
    Engine(EngineEvent),
    /// A fault the harness injected into a call.
    Injected {
        /// The step's persisted name.
        step: &'static str,
        /// Action or compensation.
        op: Op,
        /// Which call of that op, from 1.
        call: u32,
        /// The fault.
        fault: Fault,
    },
    /// The engine crashed there; a new one recovers from the store.
    Crashed(CrashAt),
    /// A new engine started on the store after a crash (the first is 1).
    Recovered(u32),
    /// A held-back action call reached its step after the saga had finished.
    Late {
        /// The step's persisted name.
        step: &'static str,
        /// No earlier call of the action had run: it must be cancelled (else it is a
        /// duplicate, answered with the first call's reply).
        first: bool,
        /// Whether the step answered success.
        succeeded: bool,
        /// What it answered.
        answer: String,
    },
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Engine(e) => write!(f, "{e}"),
            Entry::Injected {
                step,
                op,
                call,
                fault,
            } => write!(f, "inject {fault} into {step} {op} call {call}"),
            Entry::Crashed(at) => write!(f, "{at}"),
            Entry::Recovered(n) => write!(f, "engine {n} starts on the store and recovers"),
            Entry::Late { step, answer, .. } => write!(f, "late {step} action arrives: {answer}"),
        }
    }
}

/// The state of one run, shared by the interceptor, the probe and the runner.
pub(crate) struct Journal {
    def: &'static SagaDefinition,
    schedule: Schedule,
    clock: Clock,
    entries: Mutex<Vec<Entry>>,
    /// Calls that reached the interceptor, by step and op.
    calls: Mutex<HashMap<(usize, Op), u32>>,
    /// Steps whose later action calls all fail before doing anything (until the deadline).
    doomed: Mutex<HashSet<usize>>,
    /// Steps whose action code has run: a business failure is no longer possible for them, a
    /// participant answers their repeats as duplicates.
    ran: Mutex<HashSet<usize>>,
    held: Mutex<Vec<Held>>,
    /// Transitions persisted so far (the submit's is number 0).
    persisted: AtomicUsize,
    fired: Mutex<Vec<bool>>,
    crashed: AtomicBool,
    finished: AtomicBool,
    /// Woken at a crash and when the saga finishes.
    pub(crate) wake: Notify,
}

impl Journal {
    pub(crate) fn new(def: &'static SagaDefinition, schedule: Schedule, clock: Clock) -> Journal {
        let fired = vec![false; schedule.crashes.len()];
        Journal {
            def,
            schedule,
            clock,
            entries: Mutex::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
            doomed: Mutex::new(HashSet::new()),
            ran: Mutex::new(HashSet::new()),
            held: Mutex::new(Vec::new()),
            persisted: AtomicUsize::new(0),
            fired: Mutex::new(fired),
            crashed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    pub(crate) fn push(&self, entry: Entry) {
        if let Ok(mut e) = self.entries.lock() {
            e.push(entry);
        }
    }

    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Transitions persisted so far, the submit's included.
    pub(crate) fn persisted(&self) -> usize {
        self.persisted.load(Ordering::SeqCst)
    }

    /// Counts a call of `op` of `step` and returns the fault it gets, journalled.
    pub(crate) fn fault_for(&self, step: usize, op: Op) -> Option<Fault> {
        let call = match self.calls.lock() {
            Ok(mut calls) => {
                let n = calls.entry((step, op)).or_insert(0);
                *n += 1;
                *n
            }
            Err(_) => return None,
        };
        let doomed = op == Op::Action && self.doomed.lock().is_ok_and(|d| d.contains(&step));
        let ran = op == Op::Action && self.ran.lock().is_ok_and(|r| r.contains(&step));
        let fault = match self.schedule.fault(step, op, call) {
            _ if doomed => Some(Fault::ErrorBefore),
            Some(Fault::BusinessFailure) if ran => None,
            fault => fault,
        };
        if let Some(fault) = fault {
            if matches!(fault, Fault::LostUntilDeadline | Fault::Hang)
                && let Ok(mut d) = self.doomed.lock()
            {
                d.insert(step);
            }
            self.push(Entry::Injected {
                step: self.def.steps[step].name,
                op,
                call,
                fault,
            });
        }
        fault
    }

    /// The action code of `step` is about to run.
    pub(crate) fn action_runs(&self, step: usize) {
        if let Ok(mut r) = self.ran.lock() {
            r.insert(step);
        }
    }

    /// Whether the action code of `step` has run.
    pub(crate) fn action_ran(&self, step: usize) -> bool {
        self.ran.lock().is_ok_and(|r| r.contains(&step))
    }

    /// Calls of `op` of `step` that reached the interceptor.
    pub(crate) fn calls(&self, step: usize, op: Op) -> u32 {
        self.calls
            .lock()
            .map(|c| c.get(&(step, op)).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub(crate) fn hold(&self, held: Held) {
        if let Ok(mut h) = self.held.lock() {
            h.push(held);
        }
    }

    pub(crate) fn take_held(&self) -> Vec<Held> {
        self.held
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default()
    }

    /// Whether a crash has fired since the last [`Journal::recovered`].
    pub(crate) fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    pub(crate) fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// A new engine, the `n`-th, is about to start after a crash.
    pub(crate) fn recovered(&self, n: u32) {
        self.crashed.store(false, Ordering::SeqCst);
        self.push(Entry::Recovered(n));
    }
}

impl Probe for Journal {
    fn observe(&self, event: &EngineEvent) {
        if matches!(
            event,
            EngineEvent::Finished { .. } | EngineEvent::Stuck { .. }
        ) {
            self.finished.store(true, Ordering::SeqCst);
            self.wake.notify_one();
        }
        self.push(Entry::Engine(event.clone()));
    }

    fn crash(&self, _gid: &str, point: CrashPoint) -> bool {
        let n = self.persisted();
        if point == CrashPoint::AfterPersist {
            self.persisted.fetch_add(1, Ordering::SeqCst);
        }
        if self.crashed() {
            // The engine is dying: none of its drivers goes on.
            return true;
        }
        let at = match point {
            CrashPoint::BeforePersist => CrashAt::Before(n),
            CrashPoint::AfterPersist => CrashAt::After(n),
        };
        let Ok(mut fired) = self.fired.lock() else {
            return false;
        };
        let Some(i) = self.schedule.crashes.iter().position(|c| *c == at) else {
            return false;
        };
        if fired[i] {
            return false;
        }
        fired[i] = true;
        drop(fired);
        self.crashed.store(true, Ordering::SeqCst);
        self.push(Entry::Crashed(at));
        self.wake.notify_one();
        true
    }
}
