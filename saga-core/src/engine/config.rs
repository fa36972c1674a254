//! Engine settings and the builder that starts an engine with them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::capacity::Capacity;
use super::id;
use super::registry::{ErasedSaga, Registered};
use super::{Engine, EngineError, Inner};
use super::{Events, Probe};
use crate::clock::Clock;
use crate::step::SagaSteps;
use crate::store::Store;

/// Default [`EngineConfig::poll_interval`]: a due retry or an expired lease is noticed within a
/// quarter of a second, for four small queries a second.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Default [`EngineConfig::lease`]: long enough to ride out a slow commit or a busy runtime
/// (it is renewed every third of it), short enough that a crashed engine's sagas resume elsewhere
/// within seconds.
const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// Default [`EngineConfig::retry_initial`]: a blip in a participant is usually over this soon.
const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(100);

/// Default [`EngineConfig::retry_max`]: a participant that is down for a while is still tried
/// every few seconds, without being flooded.
const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(5);

/// Default [`EngineConfig::step_timeout`]: well above a healthy participant's latency, so that a
/// timeout (an in-doubt outcome) means the participant is in trouble.
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// Default [`EngineConfig::saga_deadline`]: a saga that cannot reach its pivot in this time is
/// rolled back rather than left holding reservations.
const DEFAULT_SAGA_DEADLINE: Option<Duration> = Some(Duration::from_secs(30));

/// Default [`EngineConfig::max_attempts`]: with the default backoff the nine waits between ten
/// calls add up to some 15 to 20 seconds, enough for a participant to restart before an operator
/// is asked to look.
const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// Default [`EngineConfig::retention`]: a week, so that last week's sagas can still be looked
/// up when a customer asks.
const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default [`EngineConfig::shutdown_grace`]: lets a call within the default step timeout finish.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Default [`EngineConfig::max_in_flight`]: far above what two cores drive at once (some
/// thousand sagas a second, each in flight for milliseconds), low enough that a flood of submits
/// cannot grow the engine's memory, tasks and connections without bound.
const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;

/// Default [`EngineConfig::submit_timeout`]: a store that commits within this time is merely
/// slow; beyond it the caller is better told to come back than kept waiting.
const DEFAULT_SUBMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Engine settings. [`EngineConfig::default`] matches the order example's defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This engine's identity as a lease owner (the *engine id*). It should stay the same
    /// across restarts, so that a restarted engine takes its own leases back at once instead
    /// of waiting them out. Default: `None`, an id derived when the engine is built.
    ///
    /// The derived id is `{hostname}-{hash}`: the host's name, and the first 12 hex digits of
    /// the SHA-256 of the canonical path of the running executable, the canonical current
    /// directory and the store's identity (the SQLite file's canonical path, or
    /// `{database}/{schema}` as the PostgreSQL server names them), each followed by a zero
    /// byte. So it is the same for every start of one deployment on one host.
    ///
    /// Two live engines must never share an id, or both would drive one saga: an engine with
    /// the derived id holds it exclusively for its lifetime, on SQLite with an OS lock on the
    /// file `{store file}-engine-{16 hex digits}.lock` beside the store file, on PostgreSQL
    /// with a session advisory lock (`pg_try_advisory_lock` on a hash of the id) on a
    /// connection of its own. When another live engine holds it (or the hold cannot be taken),
    /// the engine runs as `{derived}-{process id}`, which a restart does not keep, and logs a
    /// warning. Operators who run several engines of one deployment on one host should set
    /// each its own id.
    ///
    /// An id set here is used as it is, without a hold: it must not be in use by another live
    /// engine on the same store.
    pub engine_id: Option<String>,
    /// How often the poller looks for due sagas. Default: 250 ms.
    pub poll_interval: Duration,
    /// Lease length; renewed every third of it while the engine runs. Default: 5 s.
    pub lease: Duration,
    /// First backoff delay of a retried call. Default: 100 ms.
    pub retry_initial: Duration,
    /// Cap of the exponential backoff. Default: 5 s.
    pub retry_max: Duration,
    /// Timeout of one step call unless the step sets its own. Default: 3 s.
    pub step_timeout: Duration,
    /// Deadline of the forward phase before the point of no return, counted from submission.
    /// Default: 30 s.
    pub saga_deadline: Option<Duration>,
    /// Calls allowed to an undo, a pivot or a retriable step before the saga is parked `stuck`.
    /// Default: 10.
    pub max_attempts: u32,
    /// How long finished sagas are kept. Default: 7 days.
    pub retention: Duration,
    /// How long a graceful shutdown lets running step calls finish. Default: 5 s.
    pub shutdown_grace: Duration,
    /// Most sagas this engine drives at once: submitted here, claimed by its poller, taken back
    /// or resumed by an operator. A submit of a new saga beyond it is
    /// [`EngineError::Overloaded`] and creates nothing; the poller claims no more than the room
    /// left. Default: 10,000.
    pub max_in_flight: usize,
    /// How long a submit waits for the store to make the new saga durable before it answers
    /// [`EngineError::Unavailable`]. The write may still land afterwards and the saga then
    /// runs; a repeat of the submit finds it. Default: 5 s.
    pub submit_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            engine_id: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            lease: DEFAULT_LEASE,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
            step_timeout: DEFAULT_STEP_TIMEOUT,
            saga_deadline: DEFAULT_SAGA_DEADLINE,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retention: DEFAULT_RETENTION,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            submit_timeout: DEFAULT_SUBMIT_TIMEOUT,
        }
    }
}

/// Builds an [`Engine`]; start with [`Engine::builder`].
pub struct EngineBuilder {
    store: Store,
    config: EngineConfig,
    sagas: Vec<Arc<dyn ErasedSaga>>,
    clock: Clock,
    probe: Option<Arc<dyn Probe>>,
}

impl Engine {
    /// Starts building an engine on `store`.
    pub fn builder(store: Store) -> EngineBuilder {
        EngineBuilder {
            store,
            config: EngineConfig::default(),
            sagas: Vec::new(),
            clock: Clock::system(),
            probe: None,
        }
    }
}

impl EngineBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the engine id (the lease owner), used as it is instead of the derived default (see
    /// [`EngineConfig::engine_id`]).
    pub fn engine_id(mut self, id: impl Into<String>) -> Self {
        self.config.engine_id = Some(id.into());
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

    /// Sets the attempt budget of undos, pivots and retriable steps (at least one call, or
    /// every such step would be parked before it ran).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n.max(1);
        self
    }

    /// Sets how long finished sagas are kept.
    pub fn retention(mut self, keep: Duration) -> Self {
        self.config.retention = keep;
        self
    }

    /// Sets how many sagas the engine drives at once (at least one).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n.max(1);
        self
    }

    /// Sets how long a submit waits for the store.
    pub fn submit_timeout(mut self, timeout: Duration) -> Self {
        self.config.submit_timeout = timeout;
        self
    }

    /// Sets the clock the engine reads the time from (default: [`Clock::system`]); a test runs
    /// the engine on virtual time with [`Clock::tokio`] on a paused runtime.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the probe that sees every event synchronously and decides crash points.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn probe(mut self, probe: Arc<dyn Probe>) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Registers an already type-erased saga.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn register_erased(mut self, saga: Arc<dyn ErasedSaga>) -> Self {
        self.sagas.push(saga);
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

    /// Starts the engine: checks every registered definition, settles the engine id (deriving
    /// and holding the default one, see [`EngineConfig::engine_id`]), takes back this engine
    /// id's own leases, then starts the poller, the lease renewal and the retention task.
    ///
    /// Fails with [`EngineError::InvalidDefinition`] for a hand-written definition that breaks
    /// a rule of [`SagaDefinition::validate`](crate::SagaDefinition::validate), and with
    /// [`EngineError::Store`] when the store stays unavailable.
    pub async fn build(self) -> Result<Engine, EngineError> {
        let mut by_fingerprint = HashMap::new();
        let mut by_name = HashMap::new();
        for saga in self.sagas {
            let def = saga.definition();
            def.validate()
                .map_err(|problem| EngineError::InvalidDefinition {
                    saga: def.name,
                    problem,
                })?;
            by_fingerprint.insert(saga.fingerprint().to_string(), saga.clone());
            // A submit by name uses the newest registered version; older ones drain.
            let newer = by_name
                .get(def.name)
                .is_none_or(|known: &Arc<dyn ErasedSaga>| known.definition().version < def.version);
            if newer {
                by_name.insert(def.name.to_string(), saga);
            }
        }
        let id = id::resolve(self.config.engine_id.as_deref(), &self.store).await?;
        let mut config = self.config;
        config.engine_id = Some(id.id.clone());
        let (shutdown_tx, _) = watch::channel(false);
        let capacity = Capacity::new(config.max_in_flight);
        let engine = Engine {
            inner: Arc::new(Inner {
                store: self.store,
                config,
                engine_id: id.id,
                _id_hold: id.hold,
                by_fingerprint,
                by_name,
                capacity,
                drivers: Mutex::new(HashMap::new()),
                waiters: Mutex::new(HashMap::new()),
                shutdown: shutdown_tx,
                clock: self.clock,
                events: Events::new(self.probe),
                killed: std::sync::atomic::AtomicBool::new(false),
                stalled: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        engine.take_back_own_leases().await?;
        engine.start_background_tasks();
        Ok(engine)
    }
}
