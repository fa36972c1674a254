//! The engine's transitions as typed events: a saga submitted, a step call started and
//! finished, compensation started, a saga finished or stuck. [`Engine::events`] subscribes to
//! them; a test, a service or the console can assert on or show them instead of keeping a
//! journal of its own. Nothing is built or sent while nobody subscribes.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::Engine;
use crate::machine::SagaStatus;
use crate::step::Op;
use crate::store::AttemptOutcome;

/// Events kept for a subscriber that lags behind, before it misses some
/// ([`broadcast::error::RecvError::Lagged`]).
const EVENTS_CAPACITY: usize = 1024;

/// One thing that happened to a saga instance in this engine.
///
/// Step calls and their outcomes are published when the transition that records them has been
/// persisted; a call abandoned before it finished has a start and no finish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// A submit created the instance (not sent for a repeat of an existing gid).
    Submitted {
        /// The instance's gid.
        gid: String,
        /// The saga's persisted name.
        saga: &'static str,
    },
    /// The engine called a step's action or compensation.
    StepStarted {
        /// The instance's gid.
        gid: String,
        /// The step's persisted name.
        step: &'static str,
        /// Action or compensation.
        op: Op,
        /// The attempt number of this op of the step, from 1.
        attempt: u32,
    },
    /// A step call finished, and its outcome is persisted.
    StepFinished {
        /// The instance's gid.
        gid: String,
        /// The step's persisted name.
        step: &'static str,
        /// Action or compensation.
        op: Op,
        /// The attempt number of this op of the step, from 1.
        attempt: u32,
        /// Succeeded, business failure or in doubt.
        outcome: AttemptOutcome,
        /// The business failure's reason or the in-doubt error.
        error: Option<String>,
    },
    /// The instance turned to compensation (persisted).
    CompensationStarted {
        /// The instance's gid.
        gid: String,
        /// Why: `{step}: {reason}`, the deadline or an operator.
        reason: Option<String>,
    },
    /// The instance finished, `succeeded` or `compensated` (persisted).
    Finished {
        /// The instance's gid.
        gid: String,
        /// `succeeded` or `compensated`.
        status: SagaStatus,
        /// Why it was compensated.
        reason: Option<String>,
    },
    /// The instance was parked `stuck` for an operator (persisted).
    Stuck {
        /// The instance's gid.
        gid: String,
        /// Why it is stuck.
        reason: Option<String>,
    },
}

impl EngineEvent {
    /// The gid of the instance the event is about.
    pub fn gid(&self) -> &str {
        match self {
            EngineEvent::Submitted { gid, .. }
            | EngineEvent::StepStarted { gid, .. }
            | EngineEvent::StepFinished { gid, .. }
            | EngineEvent::CompensationStarted { gid, .. }
            | EngineEvent::Finished { gid, .. }
            | EngineEvent::Stuck { gid, .. } => gid,
        }
    }
}

impl std::fmt::Display for EngineEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineEvent::Submitted { gid, saga } => write!(f, "{gid}: submitted ({saga})"),
            EngineEvent::StepStarted {
                gid,
                step,
                op,
                attempt,
            } => write!(f, "{gid}: {step} {op} #{attempt} started"),
            EngineEvent::StepFinished {
                gid,
                step,
                op,
                attempt,
                outcome,
                error,
            } => {
                write!(f, "{gid}: {step} {op} #{attempt} {}", outcome.as_str())?;
                match error {
                    Some(e) => write!(f, ": {e}"),
                    None => Ok(()),
                }
            }
            EngineEvent::CompensationStarted { gid, reason } => write!(
                f,
                "{gid}: compensation started: {}",
                reason.as_deref().unwrap_or("")
            ),
            EngineEvent::Finished {
                gid,
                status,
                reason,
            } => match reason {
                Some(r) => write!(f, "{gid}: {status}: {r}"),
                None => write!(f, "{gid}: {status}"),
            },
            EngineEvent::Stuck { gid, reason } => {
                write!(f, "{gid}: stuck: {}", reason.as_deref().unwrap_or(""))
            }
        }
    }
}

/// Where a driver is about to go on in its persisting of a transition: the points at which
/// [`Probe::crash`] may stop the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    /// Before a transition is written.
    BeforePersist,
    /// After a transition is written, before its commands run.
    AfterPersist,
}

/// A synchronous observer of the engine, set by `saga_core::testing`: sees every event in
/// order and decides where the engine crashes.
pub(crate) trait Probe: Send + Sync {
    /// Called with every event, in the order the engine publishes them.
    fn observe(&self, event: &EngineEvent);
    /// Called by a driver at `point` of the instance `gid`; `true` stops the driver there as if
    /// the process had died (the probe then stops the whole engine).
    fn crash(&self, gid: &str, point: CrashPoint) -> bool;
}

/// The engine's publisher: a broadcast channel, and the probe when one is set.
#[derive(Clone)]
pub(crate) struct Events {
    tx: broadcast::Sender<EngineEvent>,
    probe: Option<Arc<dyn Probe>>,
}

impl Events {
    pub(crate) fn new(probe: Option<Arc<dyn Probe>>) -> Events {
        let (tx, _) = broadcast::channel(EVENTS_CAPACITY);
        Events { tx, probe }
    }

    /// Whether anybody listens: when not, events are not even built.
    pub(crate) fn listening(&self) -> bool {
        self.probe.is_some() || self.tx.receiver_count() > 0
    }

    /// Publishes the event `make` builds, if anybody listens.
    pub(crate) fn publish(&self, make: impl FnOnce() -> EngineEvent) {
        if !self.listening() {
            return;
        }
        let event = make();
        if let Some(probe) = &self.probe {
            probe.observe(&event);
        }
        let _ = self.tx.send(event);
    }

    /// Whether the probe stops the engine at `point` of `gid`.
    pub(crate) fn crash(&self, gid: &str, point: CrashPoint) -> bool {
        self.probe.as_ref().is_some_and(|p| p.crash(gid, point))
    }

    fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.tx.subscribe()
    }
}

impl Engine {
    /// Subscribes to this engine's events from now on. A subscriber that falls more than 1,024
    /// events behind misses the oldest ones (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }
}
