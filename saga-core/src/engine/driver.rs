//! One task per saga instance being driven: apply an event, persist the new state under the
//! fence, then carry out the commands. Step calls run as tasks of their own and report back.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::registry::{AnyInput, ErasedSaga};
use super::{CrashPoint, EngineEvent, Inner};
use crate::clock::Clock;
use crate::definition::SagaDefinition;
use crate::machine::Phase;
use crate::machine::{self, Command, Event, Limits, SagaState, SagaStatus, StepState};
use crate::step::{Op, StepContext, StepError};
use crate::store::{AttemptOutcome, AttemptRecord, TransitionWrite};
use crate::trace::{self, TraceParent};

/// First wait before a failed store write is tried again.
const PERSIST_RETRY_FIRST_DELAY: Duration = Duration::from_millis(50);

/// Cap of the doubling wait between tries of a failed store write.
const PERSIST_RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

/// How long a driver keeps trying one store write before it gives the saga up to be claimed
/// again: enough to ride out a database restart or failover. The saga is left as stored, not
/// failed: its lease runs out and this engine or another one resumes it from the store.
const PERSIST_PATIENCE: Duration = Duration::from_secs(70);

/// Call durations are measured in ms and reported in seconds, as Prometheus expects.
const MS_PER_SECOND: f64 = 1000.0;

/// Most doublings of the backoff delay: keeps `1 << n` well inside `u64` (the product
/// saturates anyway, and any real cap is reached long before).
const MAX_BACKOFF_DOUBLINGS: u32 = 30;

/// Messages from the engine to a driver.
pub(crate) enum Control {
    /// An operator's event.
    Event(Event),
    /// Stop driving at once (shutdown, or a newer driver took over in this process).
    Stop,
}

/// What a driver starts from.
pub(crate) struct Start {
    pub saga: Arc<dyn ErasedSaga>,
    pub gid: String,
    pub fence: i64,
    pub input: AnyInput,
    /// The input as stored.
    pub input_json: Value,
    /// When the saga was created.
    pub created_at: i64,
    pub state: SagaState,
    pub deadline_at: Option<i64>,
    /// Commands of a transition already persisted (the submit's first dispatch).
    pub commands: Vec<Command>,
    /// The first event to apply.
    pub event: Option<Event>,
    /// The saga's persisted trace context.
    pub traceparent: TraceParent,
}

/// What a driver that stopped after persisting a terminal transition knows of the saga: the
/// state as stored, and when it was stored.
pub(crate) struct Finished {
    pub state: SagaState,
    pub updated_at: i64,
}

enum Outcome {
    Succeeded(Value),
    Failed(String),
    InDoubt(String),
}

struct CallResult {
    step: usize,
    op: Op,
    attempt: u32,
    started_at: i64,
    finished_at: i64,
    outcome: Outcome,
}

struct Driver {
    inner: Arc<Inner>,
    limits: Limits,
    saga: Arc<dyn ErasedSaga>,
    def: &'static SagaDefinition,
    gid: String,
    fence: i64,
    input: AnyInput,
    state: SagaState,
    deadline_at: Option<i64>,
    calls: HashMap<(usize, Op), (u32, AbortHandle)>,
    finished_calls: Vec<AttemptRecord>,
    results: mpsc::UnboundedSender<CallResult>,
    wake: Arc<Notify>,
    /// The `saga` span of this driver: the parent of its calls' spans.
    span: tracing::Span,
    /// What a call sends when its own span is not recorded: this driver's span when it is, else
    /// the persisted trace context.
    call_parent: TraceParent,
    /// When the last transition was persisted.
    updated_at: i64,
}

/// Whether the driver goes on after a transition.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// How a driver ended.
pub(crate) struct Stopped {
    /// The saga as stored, when the driver stopped because its last persisted transition was
    /// terminal.
    pub finished: Option<Finished>,
    /// Operator events that reached the driver after it had decided to stop: the engine hands
    /// them on as if no driver were here, so that an acknowledged action is not lost.
    pub pending: Vec<Event>,
}

/// Drives the saga until it finishes or the driver is stopped.
pub(crate) async fn run(
    inner: Arc<Inner>,
    limits: Limits,
    start: Start,
    mut control: mpsc::UnboundedReceiver<Control>,
) -> Stopped {
    let (results_tx, mut results) = mpsc::unbounded_channel();
    let def = start.saga.definition();
    let span = tracing::info_span!(
        "saga",
        gid = %start.gid,
        saga = def.name,
        engine = %inner.engine_id,
        fence = start.fence
    );
    trace::continue_trace(&span, &start.traceparent);
    let call_parent = trace::parent_for(&span, start.traceparent);
    let mut d = Driver {
        inner,
        limits,
        def,
        saga: start.saga,
        gid: start.gid,
        fence: start.fence,
        input: start.input,
        state: start.state,
        deadline_at: start.deadline_at,
        calls: HashMap::new(),
        finished_calls: Vec::new(),
        results: results_tx,
        wake: Arc::new(Notify::new()),
        span: span.clone(),
        call_parent,
        updated_at: 0,
    };
    let clock = d.inner.clock.clone();
    let controls = &mut control;
    let work = async move {
        // The submit persisted these commands' transition.
        if !start.commands.is_empty() && d.crashes(CrashPoint::AfterPersist) {
            return None;
        }
        if d.execute(start.commands) == Flow::Stop {
            return d.finished();
        }
        if let Some(event) = start.event
            && d.apply(event).await == Flow::Stop
        {
            return d.finished();
        }
        loop {
            let deadline = d.deadline_pending();
            let flow = tokio::select! {
                Some(r) = results.recv() => {
                    match d.on_result(r) {
                        Some(event) => d.apply(event).await,
                        None => Flow::Continue,
                    }
                }
                c = controls.recv() => match c {
                    Some(Control::Event(event)) => {
                        if event == Event::RetryRequested {
                            d.wake.notify_waiters();
                        }
                        d.apply(event).await
                    }
                    Some(Control::Stop) | None => Flow::Stop,
                },
                _ = sleep_until_ms(&clock, deadline), if deadline.is_some() => {
                    d.apply(Event::DeadlinePassed).await
                }
            };
            if flow == Flow::Stop {
                break;
            }
        }
        d.abort_calls(None);
        d.finished()
    };
    let finished = work.instrument(span).await;
    // From here on an operator's send fails and takes the path of a saga driven nowhere; what
    // was sent before is handed back.
    control.close();
    let mut pending = Vec::new();
    while let Ok(c) = control.try_recv() {
        if let Control::Event(event) = c {
            pending.push(event);
        }
    }
    Stopped { finished, pending }
}

async fn sleep_until_ms(clock: &Clock, at: Option<i64>) {
    let wait = at.map(|t| (t - clock.now_ms()).max(0) as u64).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

impl Driver {
    /// The saga as stored, when the last persisted transition left it terminal (and the engine
    /// was not stopped as if its process had died).
    fn finished(self) -> Option<Finished> {
        let finished =
            self.updated_at != 0 && self.state.status.is_terminal() && !self.inner.is_killed();
        finished.then_some(Finished {
            state: self.state,
            updated_at: self.updated_at,
        })
    }

    /// Whether the engine stops this driver at `point`, as if its process had died there.
    fn crashes(&self, point: CrashPoint) -> bool {
        self.inner.is_killed() || self.inner.events.crash(&self.gid, point)
    }

    /// Publishes what a persisted transition from `before` did: the calls it records, the turn
    /// to compensation.
    fn publish_persisted(&self, before: &SagaState, attempts: &[AttemptRecord]) {
        let events = &self.inner.events;
        for a in attempts {
            let step = self
                .def
                .steps
                .iter()
                .find(|s| s.name == a.step)
                .map(|s| s.name);
            events.publish(|| EngineEvent::StepFinished {
                gid: self.gid.clone(),
                step: step.unwrap_or(""),
                op: a.op,
                attempt: a.attempt as u32,
                outcome: a.outcome,
                error: a.error.clone(),
            });
        }
        if before.phase == Phase::Forward && self.state.phase == Phase::Compensating {
            events.publish(|| EngineEvent::CompensationStarted {
                gid: self.gid.clone(),
                reason: self.state.reason.clone(),
            });
        }
    }

    /// The deadline to watch, while the saga runs forward before its point of no return.
    fn deadline_pending(&self) -> Option<i64> {
        if self.state.status != SagaStatus::Running
            || machine::past_point_of_no_return(self.def, &self.state)
        {
            return None;
        }
        self.deadline_at
    }

    fn on_result(&mut self, r: CallResult) -> Option<Event> {
        // Only the call we are waiting for counts; an abandoned or superseded one is ignored.
        match self.calls.get(&(r.step, r.op)) {
            Some((attempt, _)) if *attempt == r.attempt => {
                self.calls.remove(&(r.step, r.op));
            }
            _ => return None,
        }
        let name = self.def.steps[r.step].name;
        let (outcome, error) = match &r.outcome {
            Outcome::Succeeded(_) => (AttemptOutcome::Succeeded, None),
            Outcome::Failed(reason) => (AttemptOutcome::Failed, Some(reason.clone())),
            Outcome::InDoubt(error) => (AttemptOutcome::InDoubt, Some(error.clone())),
        };
        metrics::counter!("saga_step_attempts_total", "saga" => self.def.name, "step" => name,
            "op" => r.op.as_str(), "outcome" => outcome.as_str())
        .increment(1);
        metrics::histogram!("saga_step_duration_seconds", "saga" => self.def.name, "step" => name,
            "op" => r.op.as_str(), "outcome" => outcome.as_str())
        .record((r.finished_at - r.started_at) as f64 / MS_PER_SECOND);
        match &r.outcome {
            Outcome::Succeeded(_) => {
                tracing::debug!(step = name, op = %r.op, attempt = r.attempt, "call succeeded")
            }
            _ => {
                let error = error.as_deref().unwrap_or("");
                tracing::info!(
                    step = name,
                    op = %r.op,
                    attempt = r.attempt,
                    outcome = outcome.as_str(),
                    error,
                    "call did not succeed"
                )
            }
        }
        let record = self.attempt_record(&r, outcome, error);
        self.finished_calls.push(record);
        Some(match (r.op, r.outcome) {
            (Op::Action, Outcome::Succeeded(output)) => Event::ActionSucceeded {
                step: r.step,
                output,
            },
            (Op::Action, Outcome::Failed(reason)) => Event::ActionFailed {
                step: r.step,
                reason,
            },
            (Op::Action, Outcome::InDoubt(error)) => Event::ActionInDoubt {
                step: r.step,
                error,
            },
            (Op::Compensate, Outcome::Succeeded(_)) => {
                Event::CompensationSucceeded { step: r.step }
            }
            (Op::Compensate, Outcome::Failed(error) | Outcome::InDoubt(error)) => {
                Event::CompensationInDoubt {
                    step: r.step,
                    error,
                }
            }
        })
    }

    /// The store's record of one finished call, written with the next transition. The one place
    /// the driver builds an [`AttemptRecord`].
    fn attempt_record(
        &self,
        r: &CallResult,
        outcome: AttemptOutcome,
        error: Option<String>,
    ) -> AttemptRecord {
        AttemptRecord {
            gid: self.gid.clone(),
            step: self.def.steps[r.step].name.to_string(),
            op: r.op,
            attempt: i64::from(r.attempt),
            owner: self.inner.engine_id.clone(),
            fence: self.fence,
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome,
            error,
        }
    }

    /// Applies an event: transition, persist, then carry out the commands.
    async fn apply(&mut self, event: Event) -> Flow {
        let (next, commands) = machine::transition(self.def, &self.limits, &self.state, event);
        if next == self.state && commands.is_empty() && self.finished_calls.is_empty() {
            return Flow::Continue;
        }
        let finish = commands.contains(&Command::Finish);
        let delay_ms = commands
            .iter()
            .filter_map(|c| match c {
                Command::RunAction { step, backoff, .. }
                | Command::RunCompensation { step, backoff, .. } => {
                    Some(self.backoff(*step, *backoff).as_millis() as i64)
                }
                _ => None,
            })
            .min()
            .unwrap_or(0);
        if self.crashes(CrashPoint::BeforePersist) {
            return Flow::Stop;
        }
        let now = self.inner.clock.now_ms();
        let write = TransitionWrite {
            gid: self.gid.clone(),
            fence: self.fence,
            status: next.status,
            phase: next.phase,
            reason: next.reason.clone(),
            cause: next.cause.clone(),
            next_wake_at: now + delay_ms,
            lease_until: now + self.inner.config.lease.as_millis() as i64,
            release: finish,
            steps: changed_steps(&self.state, &next),
            attempts: std::mem::take(&mut self.finished_calls),
            now,
        };
        let attempts = if self.inner.events.listening() {
            write.attempts.clone()
        } else {
            Vec::new()
        };
        if !self.persist(write).await {
            return Flow::Stop;
        }
        let before_state = std::mem::replace(&mut self.state, next);
        self.updated_at = now;
        self.publish_persisted(&before_state, &attempts);
        if finish {
            self.on_finish(before_state.status);
        }
        if self.crashes(CrashPoint::AfterPersist) {
            return Flow::Stop;
        }
        self.execute(commands)
    }

    fn on_finish(&self, before: SagaStatus) {
        let status = self.state.status;
        self.inner.events.publish(|| match status {
            SagaStatus::Stuck => EngineEvent::Stuck {
                gid: self.gid.clone(),
                reason: self.state.reason.clone(),
            },
            _ => EngineEvent::Finished {
                gid: self.gid.clone(),
                status,
                reason: self.state.reason.clone(),
            },
        });
        metrics::counter!("saga_finished_total", "saga" => self.def.name, "status" => status.as_str())
            .increment(1);
        match status {
            SagaStatus::Stuck => tracing::error!(
                reason = self.state.reason.as_deref().unwrap_or(""),
                "saga is stuck and needs an operator"
            ),
            _ => tracing::debug!(
                status = %status,
                reason = self.state.reason.as_deref().unwrap_or(""),
                from = %before,
                "saga finished"
            ),
        }
    }

    /// Writes under the fence. Retries database errors for [`PERSIST_PATIENCE`]; `false` when
    /// the fence is stale (another engine owns the saga) or the store stays unavailable. A try
    /// cut short by the patience running out may still land; the fence keeps that harmless.
    async fn persist(&mut self, write: TransitionWrite) -> bool {
        let until = tokio::time::Instant::now() + PERSIST_PATIENCE;
        let mut wait = PERSIST_RETRY_FIRST_DELAY;
        let mut failures = 0u32;
        loop {
            let written = self.inner.clock.io(self.inner.store.write(write.clone()));
            let tried = tokio::time::timeout_at(until, written).await;
            match tried {
                Ok(Ok(true)) => {
                    if failures > 0 {
                        tracing::info!(
                            failures,
                            "persisted the transition after the store came back"
                        );
                    }
                    return true;
                }
                Ok(Ok(false)) => {
                    tracing::warn!(fence = self.fence, "lease lost to another engine; stopping");
                    metrics::counter!("saga_fenced_writes_total").increment(1);
                    return false;
                }
                Ok(Err(e)) => {
                    failures += 1;
                    // The first failure says what is wrong; the retries that follow are noise.
                    if failures == 1 {
                        tracing::warn!(error = %e, "persisting a transition failed; retrying");
                    } else {
                        tracing::debug!(error = %e, failures, "persisting a transition failed again");
                    }
                }
                Err(_) => break,
            }
            if tokio::time::Instant::now() + wait >= until {
                break;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(PERSIST_RETRY_MAX_DELAY);
        }
        tracing::error!(
            patience_s = PERSIST_PATIENCE.as_secs(),
            "store unavailable; leaving the saga to be claimed again"
        );
        false
    }

    fn execute(&mut self, commands: Vec<Command>) -> Flow {
        for command in commands {
            match command {
                Command::RunAction {
                    step,
                    attempt,
                    backoff,
                } => self.spawn_call(step, Op::Action, attempt, backoff, None),
                Command::RunCompensation {
                    step,
                    attempt,
                    backoff,
                    output,
                } => self.spawn_call(step, Op::Compensate, attempt, backoff, output),
                Command::AbandonActions => self.abort_calls(Some(Op::Action)),
                Command::Finish => {
                    self.abort_calls(None);
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

    fn abort_calls(&mut self, op: Option<Op>) {
        self.calls.retain(|(_, call_op), (_, handle)| {
            if op.is_none_or(|o| o == *call_op) {
                handle.abort();
                false
            } else {
                true
            }
        });
    }

    /// The n-th backoff delay of `step`: exponential from the initial delay, capped, with
    /// "equal jitter" (half fixed, half random) so that retries of many sagas spread out.
    fn backoff(&self, step: usize, n: u32) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let retry = self.def.steps[step].retry;
        let initial = retry
            .initial_ms
            .unwrap_or(self.inner.config.retry_initial.as_millis() as u64);
        let max = retry
            .max_ms
            .unwrap_or(self.inner.config.retry_max.as_millis() as u64);
        let exp = initial
            .saturating_mul(1u64 << (n - 1).min(MAX_BACKOFF_DOUBLINGS))
            .min(max);
        let half = exp / 2;
        let jitter = if half > 0 {
            self.inner.clock.jitter(half)
        } else {
            0
        };
        Duration::from_millis(half + jitter)
    }

    fn spawn_call(
        &mut self,
        step: usize,
        op: Op,
        attempt: u32,
        backoff: u32,
        output: Option<Value>,
    ) {
        let delay = self.backoff(step, backoff);
        let timeout = self.def.steps[step]
            .timeout()
            .unwrap_or(self.inner.config.step_timeout);
        // The outputs this step reads: its dependencies succeeded before it started, so each
        // is in the persisted state (a missing one is reported by the dispatch, not called).
        let reads: Vec<Value> = self.def.steps[step]
            .reads
            .iter()
            .map(|&r| self.state.steps[r].output.clone().unwrap_or(Value::Null))
            .collect();
        let saga = self.saga.clone();
        let input = self.input.clone();
        let gid = self.gid.clone();
        let (name, saga_name) = (self.def.steps[step].name, self.def.name);
        let (parent_span, call_parent) = (self.span.clone(), self.call_parent);
        let results = self.results.clone();
        let wake = self.wake.clone();
        let (clock, events) = (self.inner.clock.clone(), self.inner.events.clone());
        let handle = tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wake.notified() => {}
                }
            }
            let span = tracing::debug_span!(
                parent: &parent_span,
                "saga.step",
                gid = %gid,
                saga = saga_name,
                step = name,
                op = op.as_str(),
                attempt,
                outcome = tracing::field::Empty,
                error = tracing::field::Empty,
                otel.kind = "client",
            );
            let ctx = StepContext {
                gid,
                step: name,
                op,
                attempt,
                traceparent: Some(trace::parent_for(&span, call_parent)),
            };
            events.publish(|| EngineEvent::StepStarted {
                gid: ctx.gid.clone(),
                step: name,
                op,
                attempt,
            });
            let call = match op {
                Op::Action => saga.run_action(step, ctx, input, reads),
                Op::Compensate => {
                    let fut = saga.run_compensation(step, ctx, input, output, reads);
                    Box::pin(async move {
                        fut.await
                            .map(|()| Value::Null)
                            .map_err(|r| StepError::Retry(r.0))
                    })
                }
            };
            let started_at = clock.now_ms();
            let result = tokio::time::timeout(timeout, AssertUnwindSafe(call).catch_unwind())
                .instrument(span.clone())
                .await;
            let outcome = match result {
                Err(_) => Outcome::InDoubt(format!("timed out after {} ms", timeout.as_millis())),
                Ok(Err(panic)) => {
                    Outcome::InDoubt(format!("step panicked: {}", panic_message(&panic)))
                }
                Ok(Ok(Ok(v))) => Outcome::Succeeded(v),
                Ok(Ok(Err(StepError::Failure(r)))) => Outcome::Failed(r),
                Ok(Ok(Err(StepError::Retry(r)))) => Outcome::InDoubt(r),
            };
            match &outcome {
                Outcome::Succeeded(_) => span.record("outcome", "succeeded"),
                Outcome::Failed(reason) => span
                    .record("outcome", "failed")
                    .record("error", reason.as_str()),
                Outcome::InDoubt(error) => span
                    .record("outcome", "in_doubt")
                    .record("error", error.as_str()),
            };
            let _ = results.send(CallResult {
                step,
                op,
                attempt,
                started_at,
                finished_at: clock.now_ms(),
                outcome,
            });
        });
        if let Some((_, old)) = self
            .calls
            .insert((step, op), (attempt, handle.abort_handle()))
        {
            old.abort();
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Steps whose persisted fields changed (the in-flight marker is not persisted).
fn changed_steps(before: &SagaState, after: &SagaState) -> Vec<(usize, StepState)> {
    before
        .steps
        .iter()
        .zip(&after.steps)
        .enumerate()
        .filter(|(_, (b, a))| {
            b.status != a.status
                || b.attempts != a.attempts
                || b.compensate_attempts != a.compensate_attempts
                || b.attempts_base != a.attempts_base
                || b.compensate_attempts_base != a.compensate_attempts_base
                || b.output != a.output
                || b.last_error != a.last_error
        })
        .map(|(i, (_, a))| (i, a.clone()))
        .collect()
}
