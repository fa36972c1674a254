//! Hooks for schedules of the engine's own recovery, with several engines on one store: a
//! [`Tap`] that records every engine's events into one shared [`Log`] and crashes its engine at
//! a chosen crash point, [`kill`] and [`stall`] to stop an engine as if its process had died or
//! pause it as if its process were stopped, and [`saga_violations`], the harness's check of the
//! saga guarantee, on events recorded this way.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::journal::Entry;
use crate::definition::SagaDefinition;
use crate::engine::{CrashPoint, Engine, EngineBuilder, EngineEvent, Probe, SagaView};

/// The events of every engine of a run, in the order they were published, each with the label
/// of its engine; wakes a waiter on every event and crash.
#[derive(Debug, Default)]
pub struct Log {
    events: Mutex<Vec<(String, EngineEvent)>>,
    wake: Notify,
}

impl Log {
    /// An empty log.
    pub fn new() -> Arc<Log> {
        Arc::new(Log::default())
    }

    /// Every event so far, with the label of the engine that published it.
    pub fn events(&self) -> Vec<(String, EngineEvent)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The events of the instance `gid`, without their labels.
    pub fn events_of(&self, gid: &str) -> Vec<EngineEvent> {
        self.events
            .lock()
            .map(|e| {
                e.iter()
                    .filter(|(_, ev)| ev.gid() == gid)
                    .map(|(_, ev)| ev.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for the next event or crash (one that came since the last wait counts).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Wakes a waiter of [`Log::changed`] as an event would: for news from outside the engines.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    fn push(&self, label: &str, event: &EngineEvent) {
        if let Ok(mut e) = self.events.lock() {
            e.push((label.to_string(), event.clone()));
        }
        self.wake.notify_one();
    }
}

/// The synchronous observer of one engine: records its events into a [`Log`] under a label,
/// and stops it at its `n`-th crash point (counting from 1 every point where a driver is about
/// to write a transition and every point where it has written one), as if its process had
/// died there. Set it with [`tapped`]; once it has fired, the engine must be [`kill`]ed.
#[derive(Debug)]
pub struct Tap {
    label: String,
    log: Arc<Log>,
    crash_at: Option<u64>,
    points: AtomicU64,
    crashed: AtomicBool,
}

impl Tap {
    /// A tap recording into `log` under `label`, crashing at the `crash_at`-th crash point of
    /// its engine (never with `None`).
    pub fn new(label: impl Into<String>, log: Arc<Log>, crash_at: Option<u64>) -> Arc<Tap> {
        Arc::new(Tap {
            label: label.into(),
            log,
            crash_at,
            points: AtomicU64::new(0),
            crashed: AtomicBool::new(false),
        })
    }

    /// Whether the crash point was reached: the engine is dying.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Crash points passed so far.
    pub fn points(&self) -> u64 {
        self.points.load(Ordering::SeqCst)
    }
}

impl Probe for Tap {
    fn observe(&self, event: &EngineEvent) {
        self.log.push(&self.label, event);
    }

    fn crash(&self, _gid: &str, _point: CrashPoint) -> bool {
        if self.crashed() {
            return true;
        }
        let n = self.points.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash_at == Some(n) {
            self.crashed.store(true, Ordering::SeqCst);
            self.log.wake.notify_one();
            return true;
        }
        false
    }
}

/// `builder` with `tap` observing the engine it builds.
pub fn tapped(builder: EngineBuilder, tap: Arc<Tap>) -> EngineBuilder {
    builder.probe(tap)
}

/// Stops `engine` at once as if its process had died: its loops and drivers stop where they
/// are, its calls are abandoned, no lease is released. Another engine, or a new one of the same
/// engine id, recovers its sagas from the store.
pub fn kill(engine: &Engine) {
    engine.kill();
}

/// Stalls `engine` (`true`) as if its process were paused, or lets it go on (`false`): while
/// stalled it neither renews its leases nor claims sagas, so that once a lease runs out another
/// engine claims the saga and the fence moves past this engine's. Its drivers stall as far as
/// their calls do: a call held by the test holds its driver.
pub fn stall(engine: &Engine, on: bool) {
    engine.stall(on);
}

/// The harness's check of the saga guarantee on one instance: `view` is its final view,
/// `events` its events from every engine in the order they were published (see
/// [`Log::events_of`]), `calls` the calls that reached each step's action and compensation, by
/// step index. Empty when the guarantee holds (a terminal status, `stuck` with a reason; all
/// steps succeeded, or every compensatable step whose action was called compensated exactly
/// once and nothing past the pivot; no step started before what it waits on succeeded, no
/// compensation before the compensations of the steps that depend on it).
pub fn saga_violations(
    def: &SagaDefinition,
    view: &SagaView,
    events: &[EngineEvent],
    calls: &[(u32, u32)],
) -> Vec<String> {
    let entries: Vec<Entry> = events.iter().cloned().map(Entry::Engine).collect();
    super::verdict::violations(def, Some(view), &entries, calls)
}
