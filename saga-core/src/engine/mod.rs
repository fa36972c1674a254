//! The engine: drives saga instances through the state machine against a [`Store`].
//!
//! Each instance being driven has one task (its *driver*) that applies events to the pure
//! state machine, persists the new state under its fencing token, and only then starts the
//! step calls the transition asked for. A background poller claims instances whose lease is
//! free or expired (crashed engines, retries due). A driver renews its own lease while it waits.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use saga_core::{Saga, StepContext, StepError, Retry};
//! use saga_core::engine::Engine;
//! use saga_core::store::{Store, sqlite::SqliteOptions};
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
//! let store = Store::sqlite("saga.db", SqliteOptions::default()).await?;
//! let engine = Engine::builder(store).register::<MoveMoney, _>(Bank).build().await?;
//! let view = engine
//!     .submit_and_wait::<MoveMoney>("transfer-1", &Transfer { amount: 5 }, std::time::Duration::from_secs(5))
//!     .await?;
//! println!("{}", view.map(|v| v.status.to_string()).unwrap_or_default());
//! # Ok(()) }
//! ```

mod driver;
mod registry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};

use crate::definition::SagaDefinition;
use crate::machine::{self, Event, Limits, SagaState, SagaStatus};
use crate::step::{Saga, SagaSteps};
use crate::store::{Inserted, InstanceRecord, NewInstance, SagaSummary, Store, StoreError, now_ms};

use driver::Control;
use registry::{ErasedSaga, Registered};

/// Longest accepted gid, in bytes.
pub const MAX_GID_LEN: usize = 128;

/// Engine settings. [`EngineConfig::default`] matches the order example's defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This engine's identity as a lease owner. Keep it stable across restarts so that a
    /// restarted engine takes its own leases back at once.
    pub instance_id: String,
    /// How often the poller looks for due instances.
    pub poll_interval: Duration,
    /// Lease length; renewed every third of it while the engine runs.
    pub lease: Duration,
    /// First backoff delay of a retried call.
    pub retry_initial: Duration,
    /// Cap of the exponential backoff.
    pub retry_max: Duration,
    /// Timeout of one step call unless the step sets its own.
    pub step_timeout: Duration,
    /// Deadline of the forward phase before the point of no return, counted from submission.
    pub saga_deadline: Option<Duration>,
    /// Calls allowed to an undo, a pivot or a retriable step before the saga is parked `stuck`.
    pub max_attempts: u32,
    /// How long finished instances are kept.
    pub retention: Duration,
    /// How long a graceful shutdown lets running step calls finish.
    pub shutdown_grace: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            instance_id: format!("engine-{}", std::process::id()),
            poll_interval: Duration::from_millis(250),
            lease: Duration::from_secs(5),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            step_timeout: Duration::from_secs(3),
            saga_deadline: Some(Duration::from_secs(30)),
            max_attempts: 10,
            retention: Duration::from_secs(7 * 24 * 3600),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Errors of the engine's API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The gid is empty, too long or has characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid gid: {0}")]
    InvalidGid(String),
    /// An instance with this gid exists with a different saga or input.
    #[error("saga `{gid}` exists already with a different {what}")]
    Conflict {
        /// The gid.
        gid: String,
        /// `input`, `saga` (another saga's instance) or `definition` (another version of it).
        what: &'static str,
    },
    /// The saga type was not registered with this engine.
    #[error("saga `{0}` is not registered with this engine")]
    NotRegistered(String),
    /// The input could not be encoded.
    #[error("cannot encode the saga input: {0}")]
    Input(String),
    /// No instance has this gid.
    #[error("no saga with gid `{0}`")]
    NotFound(String),
    /// The instance's definition fingerprint is unknown to this engine; it is left untouched.
    #[error(
        "saga `{gid}` has definition fingerprint {fingerprint}, which this engine does not know"
    )]
    UnknownDefinition {
        /// The gid.
        gid: String,
        /// The stored fingerprint.
        fingerprint: String,
    },
    /// The operator action does not apply to the saga's current state.
    #[error("{0}")]
    Refused(String),
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// What [`Engine::submit`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The gid.
    pub gid: String,
    /// Whether this call created the instance (`false`: an identical submit came first).
    pub created: bool,
    /// The instance's status now.
    pub status: SagaStatus,
    /// Its reason, if compensated or stuck.
    pub reason: Option<String>,
}

/// One step of a [`SagaView`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    /// Persisted step name.
    pub name: String,
    /// Step status.
    pub status: String,
    /// Calls of the action.
    pub attempts: u32,
    /// Calls of the undo.
    pub compensate_attempts: u32,
    /// The latest error seen.
    pub last_error: Option<String>,
    /// The action's output, once it succeeded.
    pub output: Option<serde_json::Value>,
}

/// A saga instance as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaView {
    /// The gid.
    pub gid: String,
    /// Saga name.
    pub saga: String,
    /// Status.
    pub status: SagaStatus,
    /// Why it was compensated or is stuck.
    pub reason: Option<String>,
    /// Steps in order.
    pub steps: Vec<StepView>,
    /// Input as JSON.
    pub input: serde_json::Value,
    /// Creation time, ms since epoch.
    pub created_at: i64,
    /// Last update, ms since epoch.
    pub updated_at: i64,
    /// Whether the saga may have passed its point of no return.
    pub past_pivot: bool,
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    store: Store,
    config: EngineConfig,
    sagas: Vec<Arc<dyn ErasedSaga>>,
}

impl EngineBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the instance id (lease owner).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.config.instance_id = id.into();
        self
    }

    /// Sets the lease length.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// Sets the poll interval.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.config.poll_interval = every;
        self
    }

    /// Sets the default retry backoff (exponential with jitter, from `initial` up to `max`).
    pub fn retry(mut self, initial: Duration, max: Duration) -> Self {
        self.config.retry_initial = initial;
        self.config.retry_max = max;
        self
    }

    /// Sets the default step timeout.
    pub fn step_timeout(mut self, timeout: Duration) -> Self {
        self.config.step_timeout = timeout;
        self
    }

    /// Sets the default saga deadline (`None`: no deadline).
    pub fn saga_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.config.saga_deadline = deadline;
        self
    }

    /// Sets the attempt budget of undos, pivots and retriable steps.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n.max(1);
        self
    }

    /// Sets how long finished instances are kept.
    pub fn retention(mut self, keep: Duration) -> Self {
        self.config.retention = keep;
        self
    }

    /// Registers saga `S` with `handler`, its implementation of the generated `{S}Steps` trait.
    pub fn register<S, H>(mut self, handler: H) -> Self
    where
        S: SagaSteps<H>,
        H: Send + Sync + 'static,
    {
        self.sagas.push(Arc::new(Registered::<S, H>::new(handler)));
        self
    }

    /// Starts the engine: takes back this instance id's own leases, then starts the poller,
    /// and the retention task.
    pub async fn build(self) -> Result<Engine, EngineError> {
        let mut by_fingerprint = HashMap::new();
        let mut by_name = HashMap::new();
        for saga in self.sagas {
            let def = saga.definition();
            if let Err(e) = def.validate() {
                return Err(EngineError::Refused(format!(
                    "invalid saga definition: {e}"
                )));
            }
            by_fingerprint.insert(saga.fingerprint().to_string(), saga.clone());
            by_name.insert(def.name.to_string(), saga);
        }
        let (shutdown_tx, _) = watch::channel(false);
        let engine = Engine {
            inner: Arc::new(Inner {
                store: self.store,
                config: self.config,
                by_fingerprint,
                by_name,
                drivers: Mutex::new(HashMap::new()),
                waiters: Mutex::new(HashMap::new()),
                shutdown: shutdown_tx,
            }),
        };
        let lease_until = engine.lease_until();
        // A process of this instance killed a moment ago may still hold row locks on the
        // server for a little while: transient refusals are tried again.
        let mut tries = 0;
        let own = loop {
            tries += 1;
            match engine
                .inner
                .store
                .claim_own(
                    &engine.inner.config.instance_id,
                    lease_until,
                    &engine.fingerprints(),
                )
                .await
            {
                Err(e) if e.is_transient() && tries < 10 => {
                    tracing::warn!(error = %e, "taking back own leases failed; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                other => break other?,
            }
        };
        if !own.is_empty() {
            tracing::info!(count = own.len(), "taking back this instance's own leases");
        }
        for gid in own {
            engine.spawn_from_store(&gid, Event::Start).await;
        }
        tokio::spawn(engine.clone().poll_loop());
        tokio::spawn(engine.clone().renew_loop());
        tokio::spawn(engine.clone().retention_loop());
        Ok(engine)
    }
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) config: EngineConfig,
    by_fingerprint: HashMap<String, Arc<dyn ErasedSaga>>,
    by_name: HashMap<String, Arc<dyn ErasedSaga>>,
    drivers: Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>,
    /// Callers of [`Engine::wait`], by gid: told when a local driver of that gid stops.
    waiters: Mutex<HashMap<String, Vec<Arc<Notify>>>>,
    shutdown: watch::Sender<bool>,
}

/// One caller of [`Engine::wait`], registered under its gid until it is dropped (also when
/// the waiting future is cancelled).
struct Waiter<'a> {
    inner: &'a Inner,
    gid: &'a str,
    notify: Arc<Notify>,
}

impl<'a> Waiter<'a> {
    fn register(inner: &'a Inner, gid: &'a str) -> Self {
        let notify = Arc::new(Notify::new());
        if let Ok(mut w) = inner.waiters.lock() {
            w.entry(gid.to_string()).or_default().push(notify.clone());
        }
        Waiter { inner, gid, notify }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.inner.waiters.lock()
            && let Some(list) = w.get_mut(self.gid)
        {
            list.retain(|n| !Arc::ptr_eq(n, &self.notify));
            if list.is_empty() {
                w.remove(self.gid);
            }
        }
    }
}

/// The saga engine. Cheap to clone; all clones drive the same instances.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Checks a gid: 1 to 128 bytes of `[A-Za-z0-9_.:-]`.
pub fn validate_gid(gid: &str) -> Result<(), EngineError> {
    if gid.is_empty() || gid.len() > MAX_GID_LEN {
        return Err(EngineError::InvalidGid(format!(
            "must be 1 to {MAX_GID_LEN} characters, got {}",
            gid.len()
        )));
    }
    if let Some(c) = gid
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(EngineError::InvalidGid(format!(
            "character {c:?} is not one of [A-Za-z0-9_.:-]"
        )));
    }
    Ok(())
}

impl Engine {
    /// Starts building an engine on `store`.
    pub fn builder(store: Store) -> EngineBuilder {
        EngineBuilder {
            store,
            config: EngineConfig::default(),
            sagas: Vec::new(),
        }
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The store the engine drives.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn lease_until(&self) -> i64 {
        now_ms() + self.inner.config.lease.as_millis() as i64
    }

    fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Submits saga `S` with `input` under `gid`, persists it, and starts driving it at once.
    /// Idempotent by gid: the same gid with an equal input returns the existing instance; a
    /// different input (or saga) is [`EngineError::Conflict`] and changes nothing.
    pub async fn submit<S: Saga>(
        &self,
        gid: &str,
        input: &S::Input,
    ) -> Result<Submitted, EngineError> {
        validate_gid(gid)?;
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        let def = S::definition();
        let saga = self
            .inner
            .by_name
            .get(def.name)
            .filter(|s| s.fingerprint() == def.fingerprint())
            .cloned()
            .ok_or_else(|| EngineError::NotRegistered(def.name.to_string()))?;
        let input_json =
            serde_json::to_value(input).map_err(|e| EngineError::Input(e.to_string()))?;
        let now = now_ms();
        // Take the first transition before the insert, so the first calls are counted in the
        // commit that creates the instance.
        let (state, commands) =
            machine::transition(def, &self.limits(), &SagaState::new(def), Event::Start);
        let new = NewInstance {
            gid: gid.to_string(),
            saga: def.name.to_string(),
            fingerprint: saga.fingerprint().to_string(),
            input: input_json.clone(),
            steps: def.steps.iter().map(|s| s.name.to_string()).collect(),
            states: state.steps.clone(),
            deadline_at: self
                .inner
                .config
                .saga_deadline
                .map(|d| now + d.as_millis() as i64),
            owner: self.inner.config.instance_id.clone(),
            lease_until: now + self.inner.config.lease.as_millis() as i64,
            now,
        };
        let deadline_at = new.deadline_at;
        match self.inner.store.insert(new).await? {
            Inserted::Created => {
                metrics::counter!("saga_started_total", "saga" => def.name).increment(1);
                tracing::debug!(gid, saga = def.name, "saga submitted");
                let input_any = saga.decode_input(&input_json).map_err(EngineError::Input)?;
                self.spawn_driver(driver::Start {
                    saga,
                    gid: gid.to_string(),
                    fence: 1,
                    input: input_any,
                    state,
                    deadline_at,
                    commands,
                    event: None,
                });
                Ok(Submitted {
                    gid: gid.to_string(),
                    created: true,
                    status: SagaStatus::Running,
                    reason: None,
                })
            }
            Inserted::Conflict { saga, .. } => Err(EngineError::Conflict {
                gid: gid.to_string(),
                what: if saga == def.name {
                    "definition"
                } else {
                    "saga"
                },
            }),
            Inserted::Exists => {
                let existing = self
                    .inner
                    .store
                    .load(gid)
                    .await?
                    .ok_or_else(|| EngineError::NotFound(gid.to_string()))?;
                if existing.saga != def.name {
                    return Err(EngineError::Conflict {
                        gid: gid.to_string(),
                        what: "saga",
                    });
                }
                if existing.input != input_json {
                    return Err(EngineError::Conflict {
                        gid: gid.to_string(),
                        what: "input",
                    });
                }
                Ok(Submitted {
                    gid: gid.to_string(),
                    created: false,
                    status: existing.state.status,
                    reason: existing.state.reason,
                })
            }
        }
    }

    /// Submits like [`Engine::submit`], then waits up to `timeout` for a terminal status.
    /// Returns the view once terminal, or `None` if the time ran out.
    pub async fn submit_and_wait<S: Saga>(
        &self,
        gid: &str,
        input: &S::Input,
        timeout: Duration,
    ) -> Result<Option<SagaView>, EngineError> {
        self.submit::<S>(gid, input).await?;
        self.wait(gid, timeout).await
    }

    /// Waits up to `timeout` until the instance is terminal (succeeded, compensated or stuck).
    /// Returns `None` if the time ran out; [`EngineError::NotFound`] for an unknown gid.
    pub async fn wait(
        &self,
        gid: &str,
        timeout: Duration,
    ) -> Result<Option<SagaView>, EngineError> {
        let until = tokio::time::Instant::now() + timeout;
        let waiter = Waiter::register(&self.inner, gid);
        self.wait_on(gid, until, &waiter.notify).await
    }

    async fn wait_on(
        &self,
        gid: &str,
        until: tokio::time::Instant,
        notify: &Notify,
    ) -> Result<Option<SagaView>, EngineError> {
        // Right after a local submit the saga is being driven here: the first look at the
        // store can wait for its driver's word.
        if self.driven_here(gid) {
            let now = tokio::time::Instant::now();
            let poll = Duration::from_millis(1000).min(until.saturating_duration_since(now));
            let _ = tokio::time::timeout(poll, notify.notified()).await;
        }
        loop {
            let view = self
                .status(gid)
                .await?
                .ok_or_else(|| EngineError::NotFound(gid.to_string()))?;
            if view.status.is_terminal() {
                return Ok(Some(view));
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(None);
            }
            // A local driver of this gid wakes us when it stops (`notify_one` keeps the
            // wake-up if it comes before we sleep); sagas driven elsewhere are polled, less
            // often when a driver here is on it.
            let poll = Duration::from_millis(if self.driven_here(gid) { 1000 } else { 100 });
            let _ = tokio::time::timeout((until - now).min(poll), notify.notified()).await;
        }
    }

    fn driven_here(&self, gid: &str) -> bool {
        self.inner
            .drivers
            .lock()
            .map(|d| d.contains_key(gid))
            .unwrap_or(false)
    }

    /// Reads an instance.
    pub async fn status(&self, gid: &str) -> Result<Option<SagaView>, EngineError> {
        let Some(record) = self.inner.store.load(gid).await? else {
            return Ok(None);
        };
        Ok(Some(self.view(record)))
    }

    fn view(&self, record: InstanceRecord) -> SagaView {
        let past_pivot = self
            .inner
            .by_fingerprint
            .get(&record.fingerprint)
            .map(|s| machine::past_point_of_no_return(s.definition(), &record.state))
            .unwrap_or(false);
        SagaView {
            steps: record
                .step_names
                .iter()
                .zip(&record.state.steps)
                .map(|(name, s)| StepView {
                    name: name.clone(),
                    status: s.status.as_str().to_string(),
                    attempts: s.attempts,
                    compensate_attempts: s.compensate_attempts,
                    last_error: s.last_error.clone(),
                    output: s.output.clone(),
                })
                .collect(),
            gid: record.gid,
            saga: record.saga,
            status: record.state.status,
            reason: record.state.reason,
            input: record.input,
            created_at: record.created_at,
            updated_at: record.updated_at,
            past_pivot,
        }
    }

    /// Lists instances, newest first, optionally of one status.
    pub async fn list(
        &self,
        status: Option<SagaStatus>,
        limit: u32,
    ) -> Result<Vec<SagaSummary>, EngineError> {
        Ok(self.inner.store.list(status, limit).await?)
    }

    /// Operator action: wake a running or compensating saga now (skipping its backoff), or give
    /// a stuck one a fresh attempt budget and resume it where it stopped. Refused for finished
    /// sagas.
    pub async fn retry(&self, gid: &str) -> Result<(), EngineError> {
        let record = self
            .inner
            .store
            .load(gid)
            .await?
            .ok_or_else(|| EngineError::NotFound(gid.to_string()))?;
        if !machine::can_retry(&record.state) {
            return Err(EngineError::Refused(format!(
                "saga `{gid}` has finished ({})",
                record.state.status
            )));
        }
        self.operator_event(record, Event::RetryRequested).await
    }

    /// Operator action: turn a saga that has not passed its pivot to compensation (an attempt
    /// in flight is abandoned as in doubt), or resume a saga stuck while compensating. Refused
    /// past the pivot and once finished.
    pub async fn compensate(&self, gid: &str) -> Result<(), EngineError> {
        let record = self
            .inner
            .store
            .load(gid)
            .await?
            .ok_or_else(|| EngineError::NotFound(gid.to_string()))?;
        let saga = self.saga_for(&record)?;
        if !machine::can_compensate(saga.definition(), &record.state) {
            let why = if record.state.status.is_finished() {
                format!("saga `{gid}` has finished ({})", record.state.status)
            } else {
                format!("saga `{gid}` has passed its pivot and can only go forward")
            };
            return Err(EngineError::Refused(why));
        }
        self.operator_event(
            record,
            Event::CompensateRequested {
                reason: "compensation requested by an operator".into(),
            },
        )
        .await
    }

    async fn operator_event(
        &self,
        record: InstanceRecord,
        event: Event,
    ) -> Result<(), EngineError> {
        let local = self
            .inner
            .drivers
            .lock()
            .ok()
            .and_then(|d| d.get(&record.gid).cloned());
        if let Some(tx) = local
            && tx.send(Control::Event(event.clone())).is_ok()
        {
            return Ok(());
        }
        // Not driven here: take the instance (fencing out any other driver) and drive it.
        let saga = self.saga_for(&record)?;
        let Some(fence) = self
            .inner
            .store
            .claim_one(
                &record.gid,
                &self.inner.config.instance_id,
                self.lease_until(),
            )
            .await?
        else {
            return Err(EngineError::NotFound(record.gid));
        };
        let record = self
            .inner
            .store
            .load(&record.gid)
            .await?
            .ok_or_else(|| EngineError::NotFound(record.gid.clone()))?;
        self.spawn_record(saga, record, fence, event);
        Ok(())
    }

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

    /// The definitions registered with this engine.
    pub fn definitions(&self) -> Vec<&'static SagaDefinition> {
        self.inner
            .by_name
            .values()
            .map(|s| s.definition())
            .collect()
    }

    fn fingerprints(&self) -> Vec<String> {
        self.inner.by_fingerprint.keys().cloned().collect()
    }

    fn limits(&self) -> Limits {
        Limits {
            max_attempts: self.inner.config.max_attempts,
        }
    }

    /// Number of instances this engine is driving right now.
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
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drivers: Vec<_> = self
            .inner
            .drivers
            .lock()
            .map(|mut d| d.drain().map(|(_, tx)| tx).collect())
            .unwrap_or_default();
        for tx in drivers {
            let _ = tx.send(Control::Stop);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Err(e) = self
            .inner
            .store
            .release_all(&self.inner.config.instance_id)
            .await
        {
            tracing::warn!(error = %e, "could not release leases at shutdown");
        }
    }

    /// Claims one due instance by gid from the store and drives it (used after claims).
    async fn spawn_from_store(&self, gid: &str, event: Event) {
        let record = match self.inner.store.load(gid).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(gid, error = %e, "could not load a claimed saga");
                return;
            }
        };
        match self.saga_for(&record) {
            Ok(saga) => {
                let fence = record.fence;
                self.spawn_record(saga, record, fence, event);
            }
            Err(e) => {
                tracing::error!(gid, error = %e, "refusing to drive a saga of an unknown definition");
                let _ = self
                    .inner
                    .store
                    .write(crate::store::TransitionWrite {
                        gid: record.gid.clone(),
                        fence: record.fence,
                        status: record.state.status,
                        phase: record.state.phase,
                        reason: record.state.reason.clone(),
                        cause: record.state.cause.clone(),
                        next_wake_at: now_ms() + self.inner.config.lease.as_millis() as i64,
                        lease_until: 0,
                        release: true,
                        steps: Vec::new(),
                        attempts: Vec::new(),
                        now: now_ms(),
                    })
                    .await;
            }
        }
    }

    fn spawn_record(
        &self,
        saga: Arc<dyn ErasedSaga>,
        record: InstanceRecord,
        fence: i64,
        event: Event,
    ) {
        let input = match saga.decode_input(&record.input) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(gid = record.gid, error = %e, "cannot decode the saga input");
                return;
            }
        };
        self.spawn_driver(driver::Start {
            saga,
            gid: record.gid,
            fence,
            input,
            state: record.state,
            deadline_at: record.deadline_at,
            commands: Vec::new(),
            event: Some(event),
        });
    }

    fn spawn_driver(&self, start: driver::Start) {
        let (tx, rx) = mpsc::unbounded_channel();
        let gid = start.gid.clone();
        if let Ok(mut d) = self.inner.drivers.lock()
            && let Some(old) = d.insert(gid.clone(), tx)
        {
            let _ = old.send(Control::Stop);
        }
        let engine = self.clone();
        tokio::spawn(async move {
            driver::run(engine.inner.clone(), engine.limits(), start, rx).await;
            // A newer driver for the same gid may have replaced this one: remove only our own
            // entry, whose receiver is gone now.
            if let Ok(mut d) = engine.inner.drivers.lock()
                && d.get(&gid).is_some_and(|tx| tx.is_closed())
            {
                d.remove(&gid);
            }
            let waiting = engine
                .inner
                .waiters
                .lock()
                .ok()
                .and_then(|w| w.get(&gid).cloned());
            for n in waiting.into_iter().flatten() {
                n.notify_one();
            }
        });
    }

    async fn poll_loop(self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.poll_interval) => {}
                _ = shutdown.changed() => return,
            }
            if self.is_shutting_down() {
                return;
            }
            let now = now_ms();
            let claimed = self
                .inner
                .store
                .claim_due(
                    &self.inner.config.instance_id,
                    self.lease_until(),
                    now,
                    64,
                    &self.fingerprints(),
                )
                .await;
            match claimed {
                Ok(gids) => {
                    for gid in gids {
                        tracing::info!(gid, "claimed a due saga");
                        self.spawn_from_store(&gid, Event::Start).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming due sagas failed"),
            }
        }
    }

    /// Renews this engine's leases on the sagas it drives, in one statement every third of the
    /// lease, and takes back its own instances that have no driver here any more.
    async fn renew_loop(self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let every = self.inner.config.lease / 3;
        let owner = self.inner.config.instance_id.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            let driving: Vec<String> = self
                .inner
                .drivers
                .lock()
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            if !driving.is_empty()
                && let Err(e) = self
                    .inner
                    .store
                    .renew_leases(&owner, self.lease_until(), &driving)
                    .await
            {
                tracing::warn!(error = %e, "renewing leases failed");
            }
            let orphans = match self.inner.store.own_expired(&owner, now_ms()).await {
                Ok(gids) => gids,
                Err(e) => {
                    tracing::warn!(error = %e, "looking for orphaned sagas failed");
                    continue;
                }
            };
            for gid in orphans {
                let live = self
                    .inner
                    .drivers
                    .lock()
                    .map(|d| d.get(&gid).is_some_and(|tx| !tx.is_closed()))
                    .unwrap_or(true);
                if live {
                    continue;
                }
                match self
                    .inner
                    .store
                    .claim_one(&gid, &owner, self.lease_until())
                    .await
                {
                    Ok(Some(_)) => {
                        tracing::info!(gid, "taking back an orphaned saga");
                        self.spawn_from_store(&gid, Event::Start).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(gid, error = %e, "taking back an orphaned saga failed")
                    }
                }
            }
        }
    }

    async fn retention_loop(self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            match self
                .inner
                .store
                .cleanup_older_than(self.inner.config.retention)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "removed finished sagas past retention"),
                Err(e) => tracing::warn!(error = %e, "retention cleanup failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
