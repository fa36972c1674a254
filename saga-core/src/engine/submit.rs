//! Submitting sagas and waiting for them to finish, with the registry of waiting callers that
//! a local driver wakes when it stops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tracing::Instrument;

use super::capacity::Slot;
use super::registry::ErasedSaga;
use super::{Engine, EngineError, EngineEvent, Inner, SagaView, driver};
use crate::definition::SagaDefinition;
use crate::machine::{self, Event, SagaState, SagaStatus};
use crate::step::Saga;
use crate::store::{Inserted, InstanceRecord, NewInstance};
use crate::trace::{self, TraceParent};

/// Longest accepted gid, in bytes.
pub const MAX_GID_LEN: usize = 128;

/// How often a waiter looks at the store while a driver in this process is on its saga: the
/// driver's wake-up is what counts, this only covers a missed one. Seldom, so that thousands of
/// waiting callers cost the store little.
const POLL_WHILE_DRIVEN_HERE: Duration = Duration::from_secs(5);

/// How often a waiter looks at the store while the saga is driven by another engine, which
/// cannot wake it: short, as `submit_and_wait` callers are waiting on it.
const POLL_WHILE_DRIVEN_ELSEWHERE: Duration = Duration::from_millis(100);

/// `every`, give or take half of it at random: waiters that began together (a burst of
/// submits) look at the store at different moments instead of all at once.
fn spread(every: Duration) -> Duration {
    every.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// The fence of a saga this engine has just created: the insert is its first claim.
const FIRST_FENCE: i64 = 1;

/// What [`Engine::submit`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The gid.
    pub gid: String,
    /// Whether this call created the saga (`false`: an identical submit came first).
    pub created: bool,
    /// The saga's status now.
    pub status: SagaStatus,
    /// Its reason, if compensated or stuck.
    pub reason: Option<String>,
}

/// Options of [`Engine::submit_with`].
///
/// ```
/// use saga_core::{SubmitOptions, TraceParent};
///
/// // The `traceparent` header of the request that submits the saga, if it has a valid one.
/// let header = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// let options = SubmitOptions::new().traceparent(header.and_then(|h| h.parse::<TraceParent>().ok()));
/// assert!(options.traceparent.is_some());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubmitOptions {
    /// The caller's trace context, if any (see [`SubmitOptions::traceparent`]).
    pub traceparent: Option<TraceParent>,
}

impl SubmitOptions {
    /// The defaults: the saga continues the current span's trace when it is recorded in
    /// OpenTelemetry (feature `opentelemetry`), else it starts a trace of its own.
    pub fn new() -> Self {
        SubmitOptions::default()
    }

    /// The caller's trace context (a request's `traceparent` header): the saga's trace
    /// continues it, and every call of its steps, in whatever engine, carries its trace id.
    /// `None` leaves the default.
    pub fn traceparent(mut self, parent: impl Into<Option<TraceParent>>) -> Self {
        self.traceparent = parent.into();
        self
    }
}

/// How [`Engine::wait`] and [`Engine::submit_and_wait`] ended: the saga became terminal, or
/// the time ran out first. Either way with the saga's view, so that a caller can report its
/// status.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Waited {
    /// The saga is terminal (succeeded, compensated or stuck): its view.
    Terminal(SagaView),
    /// The time ran out while the saga was still running or compensating: its view as it was
    /// read at the deadline.
    TimedOut(SagaView),
}

impl Waited {
    /// The saga's view, terminal or not.
    pub fn view(&self) -> &SagaView {
        match self {
            Waited::Terminal(view) | Waited::TimedOut(view) => view,
        }
    }

    /// The saga's view, terminal or not.
    pub fn into_view(self) -> SagaView {
        match self {
            Waited::Terminal(view) | Waited::TimedOut(view) => view,
        }
    }

    /// The view if the saga is terminal, `None` if the time ran out.
    pub fn terminal(self) -> Option<SagaView> {
        match self {
            Waited::Terminal(view) => Some(view),
            Waited::TimedOut(_) => None,
        }
    }
}

/// The answer to a submit that found `existing` under its gid, with the same definition: the
/// saga as it is for an equal input, a conflict for another one.
fn repeat(
    gid: &str,
    existing: &InstanceRecord,
    input_json: &serde_json::Value,
) -> Result<Submitted, EngineError> {
    if existing.input != *input_json {
        return Err(EngineError::Conflict {
            gid: gid.to_string(),
            what: "input",
        });
    }
    Ok(Submitted {
        gid: gid.to_string(),
        created: false,
        status: existing.state.status,
        reason: existing.state.reason.clone(),
    })
}

/// A submit of `def` that found an instance of saga `found` (by name) under `gid`, of another
/// definition.
fn conflict(gid: &str, def: &SagaDefinition, found: &str) -> EngineError {
    EngineError::Conflict {
        gid: gid.to_string(),
        what: if found == def.name {
            "definition"
        } else {
            "saga"
        },
    }
}

/// Checks a gid: 1 to [`MAX_GID_LEN`] bytes of `[A-Za-z0-9_.:-]`.
pub(crate) fn validate_gid(gid: &str) -> Result<(), EngineError> {
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
    /// Submits saga `S` with `input` under `gid`, persists it, and starts driving it at once.
    /// Idempotent by gid: the same gid with an equal input returns the existing saga; a
    /// different input (or saga) is [`EngineError::Conflict`] and changes nothing.
    ///
    /// A new saga needs room: when the engine drives
    /// [`EngineConfig::max_in_flight`](super::EngineConfig::max_in_flight) sagas already, the
    /// gid is looked up and a repeat answered as usual, anything else is
    /// [`EngineError::Overloaded`] and creates nothing. A store that does not make the saga
    /// durable within [`EngineConfig::submit_timeout`](super::EngineConfig::submit_timeout) is
    /// [`EngineError::Unavailable`]; the saga is created only once durable, and a write that
    /// lands after the timeout still starts its driver.
    ///
    /// The saga's trace continues the current span's when it is recorded in OpenTelemetry
    /// (feature `opentelemetry`), else it is a new one; [`Engine::submit_with`] takes the
    /// caller's trace context.
    pub async fn submit<S: Saga>(
        &self,
        gid: &str,
        input: &S::Input,
    ) -> Result<Submitted, EngineError> {
        self.submit_with::<S>(gid, input, SubmitOptions::default())
            .await
    }

    /// Submits like [`Engine::submit`], with `options`: the saga's trace continues
    /// [`SubmitOptions::traceparent`] when it is set. The trace context is persisted with the
    /// new instance, in the same insert; a repeat submit of an existing gid leaves the trace
    /// it has.
    pub async fn submit_with<S: Saga>(
        &self,
        gid: &str,
        input: &S::Input,
        options: SubmitOptions,
    ) -> Result<Submitted, EngineError> {
        let def = S::definition();
        let span = tracing::debug_span!(
            "saga.submit",
            gid,
            saga = def.name,
            created = tracing::field::Empty
        );
        if let Some(parent) = &options.traceparent {
            trace::continue_trace(&span, parent);
        }
        // The persisted parent: this span when it is recorded, else the caller's (or the
        // current span's), else a new trace.
        let traceparent = trace::parent_for(
            &span,
            options
                .traceparent
                .or_else(trace::parent_for_current)
                .unwrap_or_else(TraceParent::random),
        );
        let submitted = self
            .submit_traced::<S>(gid, input, traceparent)
            .instrument(span.clone())
            .await;
        if let Ok(s) = &submitted {
            span.record("created", s.created);
        }
        submitted
    }

    async fn submit_traced<S: Saga>(
        &self,
        gid: &str,
        input: &S::Input,
        traceparent: TraceParent,
    ) -> Result<Submitted, EngineError> {
        validate_gid(gid)?;
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        let saga = self.registered::<S>()?;
        let input_json = serde_json::to_value(input).map_err(EngineError::Input)?;
        let timeout = self.inner.config.submit_timeout;
        let Some(slot) = self.inner.capacity.try_take() else {
            let found = tokio::time::timeout(timeout, self.find_repeat(gid, &saga, &input_json));
            return match found.await {
                Ok(Ok(Some(submitted))) => Ok(submitted),
                Ok(Ok(None)) => {
                    metrics::counter!("saga_submits_refused_total", "saga" => saga.definition().name)
                        .increment(1);
                    Err(EngineError::Overloaded {
                        limit: self.inner.capacity.limit(),
                    })
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(EngineError::Unavailable { waited: timeout }),
            };
        };
        // The insert and the driver it starts run as a task of their own, so that a caller who
        // stops waiting (the timeout below, a closed connection) never leaves a saga undriven.
        let engine = self.clone();
        let task = tokio::spawn(
            {
                let gid = gid.to_string();
                async move {
                    engine
                        .create(gid, saga, input_json, traceparent, slot)
                        .await
                }
            }
            .instrument(tracing::Span::current()),
        );
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down.
            Ok(Err(_)) => Err(EngineError::ShuttingDown),
            Err(_) => Err(EngineError::Unavailable { waited: timeout }),
        }
    }

    /// Inserts a new saga and drives it in `slot`, or answers a repeat of an existing one.
    async fn create(
        &self,
        gid: String,
        saga: Arc<dyn ErasedSaga>,
        input_json: serde_json::Value,
        traceparent: TraceParent,
        slot: Slot,
    ) -> Result<Submitted, EngineError> {
        let def = saga.definition();
        let now = self.inner.clock.now_ms();
        // Take the first transition before the insert, so the first calls are counted in the
        // commit that creates the saga.
        let (state, commands) =
            machine::transition(def, &self.limits(), &SagaState::new(def), Event::Start);
        let new = NewInstance {
            gid: gid.clone(),
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
            owner: self.inner.engine_id.clone(),
            lease_until: now + self.inner.config.lease.as_millis() as i64,
            now,
            traceparent,
        };
        let deadline_at = new.deadline_at;
        match self.inner.clock.io(self.inner.store.insert(new)).await? {
            Inserted::Created => {
                self.inner.events.publish(|| EngineEvent::Submitted {
                    gid: gid.clone(),
                    saga: def.name,
                });
                metrics::counter!("saga_started_total", "saga" => def.name).increment(1);
                tracing::debug!(gid, saga = def.name, "saga submitted");
                let input_any = saga.decode_input(&input_json).map_err(EngineError::Input)?;
                self.spawn_driver(
                    driver::Start {
                        saga,
                        gid: gid.clone(),
                        fence: FIRST_FENCE,
                        input: input_any,
                        input_json,
                        created_at: now,
                        state,
                        deadline_at,
                        commands,
                        event: None,
                        traceparent,
                    },
                    slot,
                );
                Ok(Submitted {
                    gid,
                    created: true,
                    status: SagaStatus::Running,
                    reason: None,
                })
            }
            Inserted::Conflict { saga, fingerprint } => {
                tracing::debug!(
                    gid,
                    saga,
                    fingerprint,
                    "the gid holds an instance of another definition"
                );
                Err(conflict(&gid, def, &saga))
            }
            Inserted::Exists(existing) => repeat(&gid, &existing, &input_json),
        }
    }

    /// The answer to a repeat of an existing saga `gid`, read from the store: `None` when
    /// there is no such saga.
    async fn find_repeat(
        &self,
        gid: &str,
        saga: &Arc<dyn ErasedSaga>,
        input_json: &serde_json::Value,
    ) -> Result<Option<Submitted>, EngineError> {
        let Some(existing) = self.inner.clock.io(self.inner.store.load(gid)).await? else {
            return Ok(None);
        };
        let def = saga.definition();
        if (existing.saga.as_str(), existing.fingerprint.as_str()) != (def.name, saga.fingerprint())
        {
            return Err(conflict(gid, def, &existing.saga));
        }
        repeat(gid, &existing, input_json).map(Some)
    }

    /// The registered saga a submit of `S` creates: `S` itself, if it is registered and is the
    /// newest registered version of its name.
    fn registered<S: Saga>(&self) -> Result<Arc<dyn ErasedSaga>, EngineError> {
        let def = S::definition();
        let newest = self
            .inner
            .by_name
            .get(def.name)
            .ok_or_else(|| EngineError::NotRegistered(def.name.to_string()))?;
        if newest.fingerprint() == def.fingerprint() {
            return Ok(newest.clone());
        }
        match self.inner.by_fingerprint.get(&def.fingerprint()) {
            Some(_) => Err(EngineError::Superseded {
                saga: def.name.to_string(),
                version: def.version,
                newest: newest.definition().version,
            }),
            None => Err(EngineError::NotRegistered(def.name.to_string())),
        }
    }

    /// Submits like [`Engine::submit`], then waits up to `timeout` for a terminal status, like
    /// [`Engine::wait`].
    pub async fn submit_and_wait<S: Saga>(
        &self,
        gid: &str,
        input: &S::Input,
        timeout: Duration,
    ) -> Result<Waited, EngineError> {
        self.submit::<S>(gid, input).await?;
        self.wait(gid, timeout).await
    }

    /// Waits up to `timeout` until the saga is terminal (succeeded, compensated or stuck).
    /// Returns [`Waited::Terminal`] with its view once it is, or [`Waited::TimedOut`] with its
    /// view at the deadline; [`EngineError::NotFound`] for an unknown gid.
    pub async fn wait(&self, gid: &str, timeout: Duration) -> Result<Waited, EngineError> {
        let until = tokio::time::Instant::now() + timeout;
        let waiter = Waiter::register(&self.inner, gid);
        self.wait_on(gid, until, &waiter.slot).await
    }

    async fn wait_on(
        &self,
        gid: &str,
        until: tokio::time::Instant,
        slot: &WaitSlot,
    ) -> Result<Waited, EngineError> {
        let notify = &slot.notify;
        // Right after a local submit the saga is being driven here: the first look at the
        // store can wait for its driver's word, which carries the saga as stored when the
        // driver finished it.
        if self.driven_here(gid) {
            let now = tokio::time::Instant::now();
            let poll = spread(POLL_WHILE_DRIVEN_HERE).min(until.saturating_duration_since(now));
            let _ = tokio::time::timeout(poll, notify.notified()).await;
        }
        loop {
            if let Some(view) = slot.take_finished() {
                return Ok(Waited::Terminal(view));
            }
            let view = self
                .status(gid)
                .await?
                .ok_or_else(|| EngineError::NotFound(gid.to_string()))?;
            if view.status.is_terminal() {
                return Ok(Waited::Terminal(view));
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(Waited::TimedOut(view));
            }
            // A local driver of this gid wakes us when it stops (`notify_one` keeps the
            // wake-up if it comes before we sleep); sagas driven elsewhere are polled, less
            // often when a driver here is on it.
            let poll = if self.driven_here(gid) {
                spread(POLL_WHILE_DRIVEN_HERE)
            } else {
                spread(POLL_WHILE_DRIVEN_ELSEWHERE)
            };
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
}

/// Where a local driver that stops tells one waiter: a wake-up, and the saga as stored when
/// the driver finished it (so that the waiter need not read it back).
#[derive(Default)]
pub(super) struct WaitSlot {
    notify: Notify,
    finished: Mutex<Option<SagaView>>,
}

impl WaitSlot {
    fn take_finished(&self) -> Option<SagaView> {
        self.finished.lock().ok().and_then(|mut f| f.take())
    }
}

/// One caller of [`Engine::wait`], registered under its gid until it is dropped (also when
/// the waiting future is cancelled).
struct Waiter<'a> {
    inner: &'a Inner,
    gid: &'a str,
    slot: Arc<WaitSlot>,
}

impl<'a> Waiter<'a> {
    fn register(inner: &'a Inner, gid: &'a str) -> Self {
        let slot = Arc::new(WaitSlot::default());
        if let Ok(mut w) = inner.waiters.lock() {
            w.entry(gid.to_string()).or_default().push(slot.clone());
        }
        Waiter { inner, gid, slot }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.inner.waiters.lock()
            && let Some(list) = w.get_mut(self.gid)
        {
            list.retain(|n| !Arc::ptr_eq(n, &self.slot));
            if list.is_empty() {
                w.remove(self.gid);
            }
        }
    }
}

/// Wakes every caller waiting on `gid`: its local driver has stopped, having finished the
/// saga as `finished` when it is given.
pub(super) fn wake_waiters(inner: &Inner, gid: &str, finished: Option<SagaView>) {
    let waiting = inner.waiters.lock().ok().and_then(|w| w.get(gid).cloned());
    for slot in waiting.into_iter().flatten() {
        if let Some(view) = &finished
            && let Ok(mut f) = slot.finished.lock()
        {
            *f = Some(view.clone());
        }
        slot.notify.notify_one();
    }
}
