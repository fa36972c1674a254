//! The pure saga state machine: `(state, event) -> (state, commands)`, no I/O.
//!
//! The engine persists every new state before it carries out the commands that came with it,
//! so after a crash the persisted state alone says what may have happened: a step may have
//! started exactly when it is *ready* (its dependencies succeeded) and has not finished. No
//! "started" marker is needed; repeated calls are absorbed by the participants' barrier.
//!
//! Rules (docs/semantics.md, "The state machine"):
//! - Forward: a step is dispatched once its dependencies have succeeded. A pivot also waits for
//!   every compensatable step, and a retriable step for the pivot (or, without a pivot, for every
//!   compensatable step), so that nothing undoable can still be running once the saga is past
//!   its point of no return.
//! - A business failure turns the saga to compensation. An in-doubt outcome is retried.
//! - Compensation undoes every step that may have started (succeeded, failed or in doubt), a step
//!   only after every step depending on it is undone; steps that never started are `skipped`.
//! - Undos and steps past the point of no return that exhaust their attempt budget park the
//!   saga as `stuck`; an operator's retry gives them a fresh budget.

use std::fmt;

use serde_json::Value;

use crate::definition::{SagaDefinition, StepKind};

/// The status of a saga instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaStatus {
    /// Going forward.
    Running,
    /// Undoing the steps that may have started.
    Compensating,
    /// Every step succeeded. Terminal.
    Succeeded,
    /// Every step that may have started was undone. Terminal.
    Compensated,
    /// A compensation, a pivot or a retriable step used up its attempt budget; parked for an operator.
    Stuck,
}

impl SagaStatus {
    /// All statuses, in lifecycle order.
    pub const ALL: [SagaStatus; 5] = [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Succeeded,
        SagaStatus::Compensated,
        SagaStatus::Stuck,
    ];

    /// The persisted and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Succeeded => "succeeded",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Stuck => "stuck",
        }
    }

    /// Parses a persisted name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether no further transition will happen without an operator.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaStatus::Succeeded | SagaStatus::Compensated | SagaStatus::Stuck
        )
    }

    /// Whether the saga has finished for good (succeeded or compensated).
    pub fn is_finished(self) -> bool {
        matches!(self, SagaStatus::Succeeded | SagaStatus::Compensated)
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepStatus {
    /// Not finished: never started, in flight, or in doubt.
    Pending,
    /// The action succeeded; its output is stored.
    Succeeded,
    /// The action reported a business failure.
    Failed,
    /// The compensation ran (a null compensation counts).
    Compensated,
    /// Never started, so nothing to compensate.
    Skipped,
}

impl StepStatus {
    /// The persisted and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Compensated => "compensated",
            StepStatus::Skipped => "skipped",
        }
    }

    /// Parses a persisted name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            StepStatus::Pending,
            StepStatus::Succeeded,
            StepStatus::Failed,
            StepStatus::Compensated,
            StepStatus::Skipped,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Direction of a saga: needed to resume a `stuck` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Running the actions.
    Forward,
    /// Running the compensations.
    Compensating,
}

impl Phase {
    /// The persisted name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Compensating => "compensating",
        }
    }

    /// Parses a persisted name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "forward" => Some(Phase::Forward),
            "compensating" => Some(Phase::Compensating),
            _ => None,
        }
    }
}

/// The state of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepState {
    /// Step status.
    pub status: StepStatus,
    /// Calls of the action so far.
    pub attempts: u32,
    /// Calls of the compensation so far.
    pub compensate_attempts: u32,
    /// `attempts` when the current attempt budget began (an operator's retry starts a new one).
    pub attempts_base: u32,
    /// `compensate_attempts` when the current attempt budget began.
    pub compensate_attempts_base: u32,
    /// The action's output, once it succeeded.
    pub output: Option<Value>,
    /// The latest error seen, kept after a later success.
    pub last_error: Option<String>,
    /// Whether a call of this step is in flight or waiting on its backoff. Runtime only: it is
    /// never persisted, and a reloaded state has no call in flight.
    pub in_flight: bool,
}

impl Default for StepState {
    fn default() -> Self {
        StepState {
            status: StepStatus::Pending,
            attempts: 0,
            compensate_attempts: 0,
            attempts_base: 0,
            compensate_attempts_base: 0,
            output: None,
            last_error: None,
            in_flight: false,
        }
    }
}

/// The state of one saga instance.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaState {
    /// Saga status.
    pub status: SagaStatus,
    /// Forward or compensating.
    pub phase: Phase,
    /// Why the saga was compensated or is stuck.
    pub reason: Option<String>,
    /// Why compensation began, kept while the saga is stuck so that a resumed compensation ends
    /// with it as its reason.
    pub cause: Option<String>,
    /// One entry per step of the definition.
    pub steps: Vec<StepState>,
}

impl SagaState {
    /// The state of a newly submitted saga of `def`.
    pub fn new(def: &SagaDefinition) -> Self {
        SagaState {
            status: SagaStatus::Running,
            phase: Phase::Forward,
            reason: None,
            cause: None,
            steps: vec![StepState::default(); def.len()],
        }
    }
}

/// Attempt budgets, from the engine's configuration and the step's own overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls a compensation, a pivot or a retriable step may take before the saga is parked as
    /// `stuck` (a step's `retry(max_attempts)` overrides it).
    pub max_attempts: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_attempts: 10 }
    }
}

/// Something that happened to a saga.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Start or resume driving (after submit, after a restart, after a takeover): dispatch
    /// every step that is ready.
    Start,
    /// The action of `step` succeeded with this output.
    ActionSucceeded {
        /// Step index.
        step: usize,
        /// The output, as JSON.
        output: Value,
    },
    /// The action of `step` reported a business failure.
    ActionFailed {
        /// Step index.
        step: usize,
        /// The business reason.
        reason: String,
    },
    /// The action of `step` ended in doubt (retry request, transport error, timeout, panic).
    ActionInDoubt {
        /// Step index.
        step: usize,
        /// What was seen.
        error: String,
    },
    /// The compensation of `step` succeeded.
    CompensationSucceeded {
        /// Step index.
        step: usize,
    },
    /// The compensation of `step` asked to be retried or ended in doubt.
    CompensationInDoubt {
        /// Step index.
        step: usize,
        /// What was seen.
        error: String,
    },
    /// The saga's deadline passed. Turns a saga before its point of no return to compensation.
    DeadlinePassed,
    /// An operator asked to compensate.
    CompensateRequested {
        /// Reason recorded on the saga.
        reason: String,
    },
    /// An operator asked to retry: a stuck saga gets a fresh attempt budget and resumes.
    RetryRequested,
}

/// Work the engine must do after persisting the new state.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Call the action of `step`.
    RunAction {
        /// Step index.
        step: usize,
        /// Number of this call (1-based, counted over the step's life).
        attempt: u32,
        /// Calls in doubt so far in the current budget: 0 runs at once, `n` waits the n-th
        /// backoff delay first.
        backoff: u32,
    },
    /// Call the compensation of `step`.
    RunCompensation {
        /// Step index.
        step: usize,
        /// Number of this call (1-based).
        attempt: u32,
        /// As for [`Command::RunAction`].
        backoff: u32,
        /// The step's output, `None` when it never succeeded or its output was lost.
        output: Option<Value>,
    },
    /// Abandon every action still in flight or waiting: the saga turned to compensation and
    /// their outcomes are in doubt.
    AbandonActions,
    /// Stop driving: the saga reached `succeeded`, `compensated` or `stuck`.
    Finish,
}

/// The index of the point of no return: the pivot, or without one the first retriable step.
pub fn point_of_no_return(def: &SagaDefinition) -> Option<usize> {
    def.pivot()
        .or_else(|| def.steps.iter().position(|s| s.kind == StepKind::Retriable))
}

/// Whether the action of `step` may be started: every dependency succeeded, plus the implicit
/// ordering around the point of no return.
pub fn is_ready(def: &SagaDefinition, state: &SagaState, step: usize) -> bool {
    let succeeded = |i: usize| state.steps[i].status == StepStatus::Succeeded;
    if !def.steps[step].after.iter().all(|&d| succeeded(d)) {
        return false;
    }
    let all_compensatable_done = || {
        def.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == StepKind::Compensatable)
            .all(|(i, _)| succeeded(i))
    };
    match def.steps[step].kind {
        StepKind::Compensatable => true,
        StepKind::Pivot => all_compensatable_done(),
        StepKind::Retriable => match def.pivot() {
            Some(p) => succeeded(p),
            None => all_compensatable_done(),
        },
    }
}

/// Whether `step` may have started: it finished, or it is ready (and may be in flight or in doubt).
pub fn may_have_started(def: &SagaDefinition, state: &SagaState, step: usize) -> bool {
    match state.steps[step].status {
        StepStatus::Succeeded | StepStatus::Failed | StepStatus::Compensated => true,
        StepStatus::Skipped => false,
        StepStatus::Pending => state.steps[step].attempts > 0 || is_ready(def, state, step),
    }
}

/// Whether the saga may have passed its point of no return, after which it can only go forward.
pub fn past_point_of_no_return(def: &SagaDefinition, state: &SagaState) -> bool {
    match point_of_no_return(def) {
        Some(p) => state.steps[p].status != StepStatus::Failed && may_have_started(def, state, p),
        None => false,
    }
}

/// Whether an operator's `compensate` is allowed: the saga is running, compensating, or stuck
/// while compensating, and has not passed its point of no return.
pub fn can_compensate(def: &SagaDefinition, state: &SagaState) -> bool {
    match state.status {
        SagaStatus::Running | SagaStatus::Compensating => !past_point_of_no_return(def, state),
        SagaStatus::Stuck => {
            state.phase == Phase::Compensating || !past_point_of_no_return(def, state)
        }
        SagaStatus::Succeeded | SagaStatus::Compensated => false,
    }
}

/// Whether an operator's `retry` is allowed: the saga has not finished.
pub fn can_retry(state: &SagaState) -> bool {
    !state.status.is_finished()
}

/// Applies `event` to `state` and returns the new state and the commands to carry out once it
/// is persisted. Events that do not apply to the current state (a late result for a step that
/// is no longer in flight, a deadline past the pivot) leave the state unchanged.
pub fn transition(
    def: &SagaDefinition,
    limits: &Limits,
    state: &SagaState,
    event: Event,
) -> (SagaState, Vec<Command>) {
    let mut next = state.clone();
    let mut commands = Vec::new();
    let max_for = |step: usize| {
        def.steps[step]
            .retry
            .max_attempts
            .unwrap_or(limits.max_attempts)
            .max(1)
    };
    match event {
        Event::Start => {
            if next.status == SagaStatus::Running || next.status == SagaStatus::Compensating {
                dispatch(def, &mut next, &mut commands);
            }
        }
        Event::ActionSucceeded { step, output } => {
            if next.phase == Phase::Forward && is_live(&next, step) {
                let s = &mut next.steps[step];
                s.in_flight = false;
                s.status = StepStatus::Succeeded;
                s.output = Some(output);
                dispatch(def, &mut next, &mut commands);
            }
        }
        Event::ActionFailed { step, reason } => {
            if next.phase == Phase::Forward && is_live(&next, step) {
                let s = &mut next.steps[step];
                s.in_flight = false;
                s.last_error = Some(reason.clone());
                if def.steps[step].kind == StepKind::Retriable {
                    // A retriable step cannot fail for a business reason: the failure is a retry.
                    in_doubt_forward(def, &mut next, step, max_for(step), &mut commands);
                } else {
                    s.status = StepStatus::Failed;
                    turn_to_compensation(
                        def,
                        &mut next,
                        format!("{}: {reason}", def.steps[step].name),
                        &mut commands,
                    );
                }
            }
        }
        Event::ActionInDoubt { step, error } => {
            if next.phase == Phase::Forward && is_live(&next, step) {
                let s = &mut next.steps[step];
                s.in_flight = false;
                s.last_error = Some(error);
                in_doubt_forward(def, &mut next, step, max_for(step), &mut commands);
            }
        }
        Event::CompensationSucceeded { step } => {
            if next.phase == Phase::Compensating
                && next.status == SagaStatus::Compensating
                && next.steps[step].in_flight
            {
                let s = &mut next.steps[step];
                s.in_flight = false;
                s.status = StepStatus::Compensated;
                dispatch(def, &mut next, &mut commands);
            }
        }
        Event::CompensationInDoubt { step, error } => {
            if next.phase == Phase::Compensating
                && next.status == SagaStatus::Compensating
                && next.steps[step].in_flight
            {
                let max = max_for(step);
                let s = &mut next.steps[step];
                s.last_error = Some(error.clone());
                if s.compensate_attempts - s.compensate_attempts_base >= max {
                    s.in_flight = false;
                    park(
                        def,
                        &mut next,
                        step,
                        "compensation",
                        max,
                        &error,
                        &mut commands,
                    );
                } else {
                    s.compensate_attempts += 1;
                    commands.push(Command::RunCompensation {
                        step,
                        attempt: s.compensate_attempts,
                        backoff: s.compensate_attempts - s.compensate_attempts_base - 1,
                        output: s.output.clone(),
                    });
                }
            }
        }
        Event::DeadlinePassed => {
            if next.status == SagaStatus::Running && !past_point_of_no_return(def, &next) {
                turn_to_compensation(def, &mut next, "saga deadline passed".into(), &mut commands);
            }
        }
        Event::CompensateRequested { reason } => {
            if can_compensate(def, &next) {
                match next.phase {
                    Phase::Forward => {
                        if next.status == SagaStatus::Stuck {
                            next.status = SagaStatus::Running;
                        }
                        turn_to_compensation(def, &mut next, reason, &mut commands);
                    }
                    Phase::Compensating => {
                        if next.status == SagaStatus::Stuck {
                            resume(def, &mut next, &mut commands);
                        }
                    }
                }
            }
        }
        Event::RetryRequested => {
            if next.status == SagaStatus::Stuck {
                resume(def, &mut next, &mut commands);
            }
        }
    }
    (next, commands)
}

/// Whether a result for `step` is expected: the saga drives forward and the step is in flight.
fn is_live(state: &SagaState, step: usize) -> bool {
    state.status == SagaStatus::Running
        && state.steps[step].status == StepStatus::Pending
        && state.steps[step].in_flight
}

fn in_doubt_forward(
    def: &SagaDefinition,
    state: &mut SagaState,
    step: usize,
    max: u32,
    commands: &mut Vec<Command>,
) {
    let kind = def.steps[step].kind;
    let used = state.steps[step].attempts - state.steps[step].attempts_base;
    let bounded_by_budget =
        kind != StepKind::Compensatable || def.steps[step].retry.max_attempts.is_some();
    if bounded_by_budget && used >= max {
        let error = state.steps[step].last_error.clone().unwrap_or_default();
        if kind == StepKind::Compensatable {
            state.steps[step].status = StepStatus::Pending;
            turn_to_compensation(
                def,
                state,
                format!(
                    "{}: no answer after {max} attempts: {error}",
                    def.steps[step].name
                ),
                commands,
            );
        } else {
            park(def, state, step, "action", max, &error, commands);
        }
        return;
    }
    let s = &mut state.steps[step];
    s.attempts += 1;
    s.in_flight = true;
    commands.push(Command::RunAction {
        step,
        attempt: s.attempts,
        backoff: s.attempts - s.attempts_base - 1,
    });
}

fn park(
    def: &SagaDefinition,
    state: &mut SagaState,
    step: usize,
    what: &str,
    max: u32,
    error: &str,
    commands: &mut Vec<Command>,
) {
    state.status = SagaStatus::Stuck;
    state.reason = Some(format!(
        "{} {what} failed {max} times; last error: {error}",
        def.steps[step].name
    ));
    for s in &mut state.steps {
        s.in_flight = false;
    }
    commands.push(Command::AbandonActions);
    commands.push(Command::Finish);
}

fn resume(def: &SagaDefinition, state: &mut SagaState, commands: &mut Vec<Command>) {
    state.status = match state.phase {
        Phase::Forward => SagaStatus::Running,
        Phase::Compensating => SagaStatus::Compensating,
    };
    state.reason = match state.phase {
        Phase::Forward => None,
        Phase::Compensating => state.cause.clone(),
    };
    for s in &mut state.steps {
        s.attempts_base = s.attempts;
        s.compensate_attempts_base = s.compensate_attempts;
    }
    dispatch(def, state, commands);
}

fn turn_to_compensation(
    def: &SagaDefinition,
    state: &mut SagaState,
    reason: String,
    commands: &mut Vec<Command>,
) {
    // Decide which steps may have started before in-flight markers are cleared.
    let started: Vec<bool> = (0..def.len())
        .map(|i| may_have_started(def, state, i))
        .collect();
    let had_in_flight = state.steps.iter().any(|s| s.in_flight);
    for (i, s) in state.steps.iter_mut().enumerate() {
        s.in_flight = false;
        if !started[i] {
            s.status = StepStatus::Skipped;
        }
    }
    state.status = SagaStatus::Compensating;
    state.phase = Phase::Compensating;
    state.reason = Some(reason.clone());
    state.cause = Some(reason);
    if had_in_flight {
        commands.push(Command::AbandonActions);
    }
    dispatch(def, state, commands);
}

/// Whether `step` still needs its compensation.
fn needs_compensation(def: &SagaDefinition, state: &SagaState, step: usize) -> bool {
    def.steps[step].kind == StepKind::Compensatable
        && matches!(
            state.steps[step].status,
            StepStatus::Succeeded | StepStatus::Failed | StepStatus::Pending
        )
}

/// Issues every call that may start now and closes the saga when nothing is left.
fn dispatch(def: &SagaDefinition, state: &mut SagaState, commands: &mut Vec<Command>) {
    match state.phase {
        Phase::Forward => {
            if state
                .steps
                .iter()
                .all(|s| s.status == StepStatus::Succeeded)
            {
                state.status = SagaStatus::Succeeded;
                commands.push(Command::Finish);
                return;
            }
            for i in 0..def.len() {
                if state.steps[i].status == StepStatus::Pending
                    && !state.steps[i].in_flight
                    && is_ready(def, state, i)
                {
                    let s = &mut state.steps[i];
                    s.attempts += 1;
                    s.in_flight = true;
                    commands.push(Command::RunAction {
                        step: i,
                        attempt: s.attempts,
                        backoff: 0,
                    });
                }
            }
        }
        Phase::Compensating => {
            if (0..def.len()).all(|i| !needs_compensation(def, state, i)) {
                for (i, s) in state.steps.iter_mut().enumerate() {
                    if s.status == StepStatus::Pending
                        || (s.status == StepStatus::Succeeded
                            && def.steps[i].kind != StepKind::Compensatable)
                    {
                        s.status = StepStatus::Skipped;
                    }
                }
                state.status = SagaStatus::Compensated;
                commands.push(Command::Finish);
                return;
            }
            for i in (0..def.len()).rev() {
                if !needs_compensation(def, state, i) || state.steps[i].in_flight {
                    continue;
                }
                // Compensate a step only after every step that depends on it is compensated or skipped.
                let dependents_clear = def
                    .steps
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.after.contains(&i))
                    .all(|(j, _)| !needs_compensation(def, state, j));
                if dependents_clear {
                    let s = &mut state.steps[i];
                    s.compensate_attempts += 1;
                    s.in_flight = true;
                    let output = if s.status == StepStatus::Succeeded {
                        s.output.clone()
                    } else {
                        None
                    };
                    commands.push(Command::RunCompensation {
                        step: i,
                        attempt: s.compensate_attempts,
                        backoff: 0,
                        output,
                    });
                }
            }
        }
    }
}
