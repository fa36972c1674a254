//! The engine: drives sagas through the state machine against a [`Store`].
//!
//! Each saga being driven has one task (its *driver*) that applies events to the pure state
//! machine, persists the new state under its fencing token, and only then starts the step calls
//! the transition asked for. A background poller claims sagas whose lease is free or expired
//! (crashed engines, retries due). A driver renews its own lease while it waits. An engine owns
//! its leases under its *engine id* ([`Engine::engine_id`]): the configured one, or by default one
//! derived from the deployment and held exclusively while the engine lives
//! ([`EngineConfig::engine_id`]).
//!
//! The parts, one file each: settings and the builder ([`EngineConfig`], [`EngineBuilder`]),
//! submitting and waiting ([`Engine::submit`], [`Engine::wait`], [`Waited`]), reading
//! ([`Engine::status`], [`SagaView`]), operator actions ([`Engine::retry`],
//! [`Engine::compensate`]), errors ([`EngineError`]), the background loops, the per-saga driver
//! and the type-erased registry of sagas.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use saga_core::{Engine, Retry, Saga, StepContext, StepError, Store, Waited};
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
//! struct Bank;
//! impl MoveMoneySteps for Bank {
//!     async fn debit(&self, _: &StepContext, _: &Transfer) -> Result<(), StepError> { Ok(()) }
//!     async fn refund(&self, _: &StepContext, _: &Transfer, _: Option<()>) -> Result<(), Retry> { Ok(()) }
//!     async fn credit(&self, _: &StepContext, _: &Transfer) -> Result<(), StepError> { Ok(()) }
//! }
//!
//! let store = Store::sqlite("saga.db", Default::default()).await?;
//! let engine = Engine::builder(store).register::<MoveMoney, _>(Bank).build().await?;
//! let waited = engine
//!     .submit_and_wait::<MoveMoney>("transfer-1", &Transfer { amount: 5 }, std::time::Duration::from_secs(5))
//!     .await?;
//! match waited {
//!     Waited::Terminal(view) => println!("{}", view.status),
//!     Waited::TimedOut(view) => println!("still {} after 5 s", view.status),
//! }
//! # Ok(()) }
//! ```

mod background;
mod capacity;
mod config;
mod crash;
mod driver;
mod error;
mod events;
mod id;
mod operator;
pub(crate) mod registry;
mod submit;
mod versions;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::machine::{Event, Limits};
use crate::store::{IdHold, InstanceRecord, Store};
use crate::trace::TraceParent;

pub use config::{EngineBuilder, EngineConfig};
pub use error::EngineError;
pub use events::EngineEvent;
pub(crate) use events::{CrashPoint, Events, Probe};
#[cfg(feature = "console")]
pub(crate) use submit::validate_gid;
pub use submit::{MAX_GID_LEN, SubmitOptions, Submitted, Waited};
pub use versions::UnknownDefinition;
pub use view::{SagaView, StepView};

use capacity::{Capacity, Slot};
use driver::Control;
use registry::ErasedSaga;

/// How often a graceful shutdown looks whether every driver has stopped on its own.
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);

/// Pause between telling the remaining drivers to stop and releasing the leases: lets each
/// driver task see the stop and abort its calls before another engine may take its saga.
const SHUTDOWN_SETTLE: Duration = Duration::from_millis(20);

/// State shared by every clone of an [`Engine`] and by its drivers.
pub(crate) struct Inner {
    pub(crate) store: Store,
    /// The configuration, with the engine id in use.
    pub(crate) config: EngineConfig,
    /// The engine id in use: the configured one, the derived default or its fallback.
    pub(crate) engine_id: String,
    /// The exclusive hold on a derived engine id, let go when the engine's last handle and task
    /// are gone.
    _id_hold: Option<IdHold>,
    /// The registered sagas by definition fingerprint: what a stored saga is driven with.
    by_fingerprint: HashMap<String, Arc<dyn ErasedSaga>>,
    /// The newest registered version of each saga, by name: what a submit creates.
    by_name: HashMap<String, Arc<dyn ErasedSaga>>,
    /// The slots of the sagas driven at once ([`EngineConfig::max_in_flight`]).
    pub(crate) capacity: Arc<Capacity>,
    /// The driver of each saga driven in this process, by gid.
    drivers: Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>,
    /// Callers of [`Engine::wait`], by gid: told when a local driver of that gid stops.
    waiters: Mutex<HashMap<String, Vec<Arc<submit::WaitSlot>>>>,
    /// `true` once [`Engine::shutdown`] has begun.
    shutdown: watch::Sender<bool>,
    /// Where the engine reads the time.
    pub(crate) clock: Clock,
    /// The publisher of [`EngineEvent`]s.
    pub(crate) events: Events,
    /// `true` once the engine was stopped as if its process had died ([`Engine::kill`]).
    killed: std::sync::atomic::AtomicBool,
    /// `true` while the engine is stalled as if its process were paused ([`Engine::stall`]):
    /// it neither renews its leases nor claims sagas.
    stalled: std::sync::atomic::AtomicBool,
}

/// The saga engine. Cheap to clone; all clones drive the same sagas.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// The engine's configuration, with the engine id in use.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The engine id this engine owns its leases under: the configured one, or the one derived
    /// when it was built (see [`EngineConfig::engine_id`]).
    pub fn engine_id(&self) -> &str {
        &self.inner.engine_id
    }

    /// The store the engine drives.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Number of sagas this engine is driving right now.
    pub fn driving(&self) -> usize {
        self.inner.drivers.lock().map(|d| d.len()).unwrap_or(0)
    }

    /// Graceful shutdown: stop claiming and accepting submits, let running calls finish for up
    /// to the configured grace, then stop every driver and release this engine's leases so
    /// another engine can take over at once.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let until = tokio::time::Instant::now() + self.inner.config.shutdown_grace;
        while self.driving() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(SHUTDOWN_POLL).await;
        }
        self.stop_drivers();
        tokio::time::sleep(SHUTDOWN_SETTLE).await;
        let released = self
            .inner
            .clock
            .io(self.inner.store.release_all(&self.inner.engine_id));
        if let Err(e) = released.await {
            tracing::warn!(error = %e, "could not release leases at shutdown");
        }
    }

    /// The clock the engine reads the time from ([`EngineBuilder::clock`]).
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    fn lease_until(&self) -> i64 {
        self.inner.clock.now_ms() + self.inner.config.lease.as_millis() as i64
    }

    fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    fn fingerprints(&self) -> Vec<String> {
        self.inner.by_fingerprint.keys().cloned().collect()
    }

    fn limits(&self) -> Limits {
        Limits {
            max_attempts: self.inner.config.max_attempts,
        }
    }

    /// The registered saga a stored saga is driven with, by its definition fingerprint.
    fn saga_for(&self, record: &InstanceRecord) -> Result<Arc<dyn ErasedSaga>, EngineError> {
        self.inner
            .by_fingerprint
            .get(&record.fingerprint)
            .cloned()
            .ok_or_else(|| EngineError::UnknownDefinition {
                gid: record.gid.clone(),
                fingerprint: record.fingerprint.clone(),
            })
    }

    /// Tells every driver of this process to stop at once, and forgets them.
    fn stop_drivers(&self) {
        let drivers: Vec<_> = self
            .inner
            .drivers
            .lock()
            .map(|mut d| d.drain().map(|(_, tx)| tx).collect())
            .unwrap_or_default();
        for tx in drivers {
            let _ = tx.send(Control::Stop);
        }
    }

    /// Drives a stored saga that this engine holds under `fence`, starting with `event`, in
    /// `slot`.
    fn spawn_record(
        &self,
        saga: Arc<dyn ErasedSaga>,
        record: InstanceRecord,
        fence: i64,
        event: Event,
        slot: Slot,
    ) {
        let input = match saga.decode_input(&record.input) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(gid = record.gid, error = %e, "cannot decode the saga input");
                return;
            }
        };
        let traceparent = record
            .traceparent
            .unwrap_or_else(|| TraceParent::derived(&record.gid));
        self.spawn_driver(
            driver::Start {
                saga,
                gid: record.gid,
                fence,
                input,
                state: record.state,
                input_json: record.input,
                created_at: record.created_at,
                deadline_at: record.deadline_at,
                commands: Vec::new(),
                event: Some(event),
                traceparent,
            },
            slot,
        );
    }

    /// Starts a driver task in `slot`, which it holds until it stops, and registers it under
    /// its gid, replacing (and stopping) an older driver of the same gid in this process.
    fn spawn_driver(&self, mut start: driver::Start, slot: Slot) {
        if self.is_killed() {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let gid = start.gid.clone();
        if let Ok(mut d) = self.inner.drivers.lock() {
            if let Some(old) = d.insert(gid.clone(), tx) {
                let _ = old.send(Control::Stop);
            }
            metrics::gauge!("saga_in_flight").set(d.len() as f64);
        }
        let engine = self.clone();
        // Only the view of a finished saga needs them; the driver does not.
        let (input, created_at) = (std::mem::take(&mut start.input_json), start.created_at);
        tokio::spawn(async move {
            let def = start.saga.definition();
            let stopped = driver::run(engine.inner.clone(), engine.limits(), start, rx).await;
            // The slot goes first, so that once `driving()` no longer counts this driver, its
            // room is free for a new submit.
            drop(slot);
            // A newer driver for the same gid may have replaced this one: remove only our own
            // entry, whose receiver is gone now.
            if let Ok(mut d) = engine.inner.drivers.lock()
                && d.get(&gid).is_some_and(|tx| tx.is_closed())
            {
                d.remove(&gid);
                metrics::gauge!("saga_in_flight").set(d.len() as f64);
            }
            let finished = stopped.finished;
            let view = finished.map(|f| view::of_finished(def, &gid, input, created_at, f));
            submit::wake_waiters(&engine.inner, &gid, view);
            for event in stopped.pending {
                engine.redeliver(&gid, event).await;
            }
        });
    }
}
