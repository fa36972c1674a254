//! Property tests of the pure saga state machine (`saga_core::machine`, docs/semantics.md).
//!
//! Random definitions (1 to 8 steps, a compensatable prefix, an optional pivot, retriable steps,
//! random `after` graphs, random attempt budgets) are driven by a simulated executor: it keeps the
//! commands the machine issued as outstanding calls and, following proptest-generated choices,
//! completes one of them with a random outcome, injects deadlines, operator requests, spurious
//! `Start`s and crashes (every outstanding call dropped, `in_flight` reset as a reload would,
//! then `Start`). After a bounded number of random choices everything succeeds, and a stuck saga
//! gets an operator's retry, so every run terminates. The properties are asserted over the
//! recorded trace of `(state before, event, state after, commands)`.

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use saga_core::definition::{RetryOverride, SagaDefinition, StepDefinition, StepKind};
use saga_core::machine::{
    self, Command, Event, Limits, Phase, SagaState, SagaStatus, StepState, StepStatus,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Generated definitions
// ---------------------------------------------------------------------------------------------

/// Step names: none is a substring of another, so "the reason names the step" is unambiguous.
const NAMES: [&str; 8] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];
const UNDOS: [&str; 8] = [
    "alpha_revert",
    "bravo_revert",
    "charlie_revert",
    "delta_revert",
    "echo_revert",
    "foxtrot_revert",
    "golf_revert",
    "hotel_revert",
];

/// Upper bound on the events of one simulated run (random ones plus the calm tail).
const MAX_EVENTS: usize = 200;
/// Upper bound on the random choices of one run; the rest of the run is "everything succeeds".
const MAX_RANDOM_CHOICES: usize = 80;

#[derive(Debug, Clone, Copy)]
struct StepSpec {
    /// 0 or 1: sequential (the previous step); 2 or 3: an explicit `after` drawn from `deps_mask`.
    deps_mode: u8,
    deps_mask: u8,
    max_attempts: Option<u32>,
}

fn arb_step_spec() -> impl Strategy<Value = StepSpec> {
    (
        0u8..4,
        any::<u8>(),
        proptest::option::weighted(0.3, 1u32..=4),
    )
        .prop_map(|(deps_mode, deps_mask, max_attempts)| StepSpec {
            deps_mode,
            deps_mask,
            max_attempts,
        })
}

/// Builds a legal definition: `n_comp` compensatable steps, then an optional pivot, then
/// retriable steps. Dependencies point only to earlier steps, and a compensatable step only to
/// compensatable ones. The slices are leaked: `SagaDefinition` holds `&'static` data.
fn build_definition(n: usize, has_pivot: bool, split: u8, specs: &[StepSpec]) -> SagaDefinition {
    let n_comp = if has_pivot {
        split as usize % n
    } else {
        split as usize % (n + 1)
    };
    let steps: Vec<StepDefinition> = (0..n)
        .map(|i| {
            let kind = if i < n_comp {
                StepKind::Compensatable
            } else if has_pivot && i == n_comp {
                StepKind::Pivot
            } else {
                StepKind::Retriable
            };
            let spec = specs[i];
            let after: Vec<usize> = if i == 0 {
                Vec::new()
            } else if spec.deps_mode < 2 {
                vec![i - 1]
            } else {
                (0..i)
                    .filter(|&d| spec.deps_mask & (1 << d) != 0)
                    .filter(|&d| kind != StepKind::Compensatable || d < n_comp)
                    .collect()
            };
            StepDefinition {
                name: NAMES[i],
                kind,
                after: Box::leak(after.into_boxed_slice()),
                compensation: (kind == StepKind::Compensatable).then_some(UNDOS[i]),
                output: "()",
                reads: &[],
                timeout_ms: None,
                retry: RetryOverride {
                    max_attempts: spec.max_attempts,
                    ..RetryOverride::default()
                },
            }
        })
        .collect();
    SagaDefinition {
        name: "generated",
        version: 1,
        steps: Box::leak(steps.into_boxed_slice()),
    }
}

fn arb_definition() -> impl Strategy<Value = SagaDefinition> {
    (
        1usize..=8,
        any::<bool>(),
        any::<u8>(),
        vec(arb_step_spec(), 8),
    )
        .prop_map(|(n, has_pivot, split, specs)| build_definition(n, has_pivot, split, &specs))
}

/// One random choice of the simulated executor: `(what, which, how)`.
type Choice = (u8, u8, u8);

#[derive(Debug, Clone)]
struct Scenario {
    def: SagaDefinition,
    limits: Limits,
    choices: Vec<Choice>,
}

fn arb_scenario() -> impl Strategy<Value = Scenario> {
    (
        arb_definition(),
        1u32..=4,
        vec(any::<Choice>(), 0..=MAX_RANDOM_CHOICES),
    )
        .prop_map(|(def, max_attempts, choices)| Scenario {
            def,
            limits: Limits { max_attempts },
            choices,
        })
}

// ---------------------------------------------------------------------------------------------
// The simulated executor
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // test-only trace; boxing buys nothing here
enum Entry {
    /// The process crashed: every outstanding call was lost and the state reloaded.
    Crash,
    /// One transition of the machine.
    Step {
        before: SagaState,
        event: Event,
        after: SagaState,
        commands: Vec<Command>,
    },
}

#[derive(Debug)]
struct Run {
    trace: Vec<Entry>,
    last: SagaState,
}

impl Run {
    fn steps(&self) -> impl Iterator<Item = (usize, &SagaState, &Event, &SagaState, &[Command])> {
        self.trace.iter().enumerate().filter_map(|(t, e)| match e {
            Entry::Step {
                before,
                event,
                after,
                commands,
            } => Some((t, before, event, after, commands.as_slice())),
            Entry::Crash => None,
        })
    }

    fn dispatched_actions(&self) -> BTreeSet<usize> {
        self.steps()
            .flat_map(|(_, _, _, _, cmds)| cmds.iter())
            .filter_map(|c| match c {
                Command::RunAction { step, .. } => Some(*step),
                _ => None,
            })
            .collect()
    }
}

struct Sim<'d> {
    def: &'d SagaDefinition,
    limits: Limits,
    state: SagaState,
    /// Calls issued and not yet answered, dropped or abandoned.
    outstanding: Vec<Command>,
    trace: Vec<Entry>,
}

fn command_step(c: &Command) -> Option<(usize, bool)> {
    match c {
        Command::RunAction { step, .. } => Some((*step, true)),
        Command::RunCompensation { step, .. } => Some((*step, false)),
        _ => None,
    }
}

/// The call an event answers: `(step, is_action)`.
fn answered_call(e: &Event) -> Option<(usize, bool)> {
    match e {
        Event::ActionSucceeded { step, .. }
        | Event::ActionFailed { step, .. }
        | Event::ActionInDoubt { step, .. } => Some((*step, true)),
        Event::CompensationSucceeded { step } | Event::CompensationInDoubt { step, .. } => {
            Some((*step, false))
        }
        _ => None,
    }
}

impl<'d> Sim<'d> {
    fn new(def: &'d SagaDefinition, limits: Limits) -> Self {
        Sim {
            def,
            limits,
            state: SagaState::new(def),
            outstanding: Vec::new(),
            trace: Vec::new(),
        }
    }

    fn apply(&mut self, event: Event) {
        let (after, commands) =
            machine::transition(self.def, &self.limits, &self.state, event.clone());
        if let Some(call) = answered_call(&event)
            && let Some(i) = self
                .outstanding
                .iter()
                .position(|c| command_step(c) == Some(call))
        {
            self.outstanding.remove(i);
        }
        for c in &commands {
            match c {
                Command::RunAction { .. } | Command::RunCompensation { .. } => {
                    self.outstanding.push(c.clone())
                }
                Command::AbandonActions => self
                    .outstanding
                    .retain(|c| !matches!(c, Command::RunAction { .. })),
                // The engine stops driving and aborts every call it still has.
                Command::Finish => self.outstanding.clear(),
            }
        }
        let before = std::mem::replace(&mut self.state, after.clone());
        self.trace.push(Entry::Step {
            before,
            event,
            after,
            commands,
        });
    }

    fn crash(&mut self) {
        self.outstanding.clear();
        for s in &mut self.state.steps {
            s.in_flight = false;
        }
        self.trace.push(Entry::Crash);
        self.apply(Event::Start);
    }

    /// Answers outstanding call `idx`; `how` picks the outcome.
    fn complete(&mut self, idx: usize, how: u8) {
        let event = match self.outstanding[idx] {
            Command::RunAction { step, attempt, .. } => match how % 16 {
                0..=8 => Event::ActionSucceeded {
                    step,
                    output: json!({ "step": step, "attempt": attempt }),
                },
                9..=12 => Event::ActionInDoubt {
                    step,
                    error: format!("timeout on call {attempt}"),
                },
                _ => Event::ActionFailed {
                    step,
                    reason: "business says no".into(),
                },
            },
            Command::RunCompensation { step, .. } => {
                if how % 4 < 3 {
                    Event::CompensationSucceeded { step }
                } else {
                    Event::CompensationInDoubt {
                        step,
                        error: "undo timed out".into(),
                    }
                }
            }
            _ => unreachable!("only calls are outstanding"),
        };
        self.apply(event);
    }

    fn random_step(&mut self, (what, which, how): Choice) {
        match what % 100 {
            0..=3 => self.crash(),
            4..=7 => self.apply(Event::DeadlinePassed),
            8..=10 => self.apply(Event::CompensateRequested {
                reason: "operator".into(),
            }),
            11..=13 => self.apply(Event::RetryRequested),
            14..=15 => self.apply(Event::Start),
            _ if self.outstanding.is_empty() => {
                if how % 2 == 0 {
                    self.apply(Event::RetryRequested)
                } else {
                    self.apply(Event::CompensateRequested {
                        reason: "operator".into(),
                    })
                }
            }
            _ => self.complete(which as usize % self.outstanding.len(), how),
        }
    }

    /// "Everything succeeds" mode: answer the oldest call with success; retry a stuck saga.
    fn calm_step(&mut self) {
        if !self.outstanding.is_empty() {
            self.complete(0, 0);
        } else if self.state.status == SagaStatus::Stuck {
            self.apply(Event::RetryRequested);
        } else {
            // Nothing to wait on although the saga is not finished: the liveness check of the
            // trace reports it; a `Start` keeps the simulation going.
            self.apply(Event::Start);
        }
    }
}

fn simulate(s: &Scenario) -> Run {
    let mut sim = Sim::new(&s.def, s.limits);
    sim.apply(Event::Start);
    let mut choices = s.choices.iter();
    let mut events = 1;
    while !sim.state.status.is_finished() && events < MAX_EVENTS {
        match choices.next() {
            Some(&c) => sim.random_step(c),
            None => sim.calm_step(),
        }
        events += 1;
    }
    Run {
        trace: sim.trace,
        last: sim.state,
    }
}

// ---------------------------------------------------------------------------------------------
// Properties over a trace
// ---------------------------------------------------------------------------------------------

fn max_for(def: &SagaDefinition, limits: &Limits, step: usize) -> u32 {
    def.steps[step]
        .retry
        .max_attempts
        .unwrap_or(limits.max_attempts)
        .max(1)
}

fn kinds(def: &SagaDefinition) -> Vec<StepKind> {
    def.steps.iter().map(|s| s.kind).collect()
}

/// Property 1: every run ends `succeeded` (every step succeeded, each once, with the output of
/// its successful call) or `compensated`.
fn check_terminal(def: &SagaDefinition, run: &Run) -> Result<(), TestCaseError> {
    let last = &run.last;
    prop_assert!(
        last.status.is_finished(),
        "run did not finish within {MAX_EVENTS} events: {last:?}"
    );
    match last.status {
        SagaStatus::Succeeded => {
            prop_assert_eq!(last.phase, Phase::Forward);
            for (i, s) in last.steps.iter().enumerate() {
                prop_assert_eq!(s.status, StepStatus::Succeeded, "step {}", i);
                let outputs: Vec<&Value> = run
                    .steps()
                    .filter_map(|(_, b, e, a, _)| match e {
                        Event::ActionSucceeded { step, output } if *step == i && a != b => {
                            Some(output)
                        }
                        _ => None,
                    })
                    .collect();
                prop_assert_eq!(outputs.len(), 1, "step {} succeeded more than once", i);
                prop_assert_eq!(s.output.as_ref(), Some(outputs[0]));
            }
        }
        SagaStatus::Compensated => {
            prop_assert_eq!(last.phase, Phase::Compensating);
            for (i, s) in last.steps.iter().enumerate() {
                let ok = match def.steps[i].kind {
                    StepKind::Compensatable => {
                        matches!(s.status, StepStatus::Compensated | StepStatus::Skipped)
                    }
                    StepKind::Pivot => matches!(s.status, StepStatus::Failed | StepStatus::Skipped),
                    StepKind::Retriable => s.status == StepStatus::Skipped,
                };
                prop_assert!(
                    ok,
                    "step {} ({:?}) ends {:?}",
                    i,
                    def.steps[i].kind,
                    s.status
                );
            }
        }
        _ => unreachable!(),
    }
    Ok(())
}

/// Property 2: a compensated run undid every compensatable step that may have started, each
/// undo succeeding exactly once, in reverse dependency order; it never dispatched anything at or
/// after the point of no return except a pivot that then failed; steps never dispatched are
/// skipped; a failed pivot stays failed.
fn check_compensated(def: &SagaDefinition, run: &Run) -> Result<(), TestCaseError> {
    // Reverse dependency order holds on every run, also ones resumed after being stuck.
    for (t, _, _, after, cmds) in run.steps() {
        for c in cmds {
            if let Command::RunCompensation { step, .. } = c {
                for (j, d) in def.steps.iter().enumerate() {
                    if d.after.contains(step) {
                        prop_assert!(
                            matches!(
                                after.steps[j].status,
                                StepStatus::Compensated | StepStatus::Skipped
                            ) || d.kind != StepKind::Compensatable,
                            "entry {}: undo of {} issued while its dependent {} is {:?}",
                            t,
                            step,
                            j,
                            after.steps[j].status
                        );
                    }
                }
            }
        }
    }

    // When each undo succeeded (applied and changed the state), per step.
    let mut undone_at: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (t, before, event, after, _) in run.steps() {
        if let Event::CompensationSucceeded { step } = event
            && before != after
        {
            undone_at.entry(*step).or_default().push(t);
        }
    }

    // A failed pivot stays failed.
    if let Some(p) = def.pivot() {
        let failed_at = run
            .steps()
            .position(|(_, _, _, a, _)| a.steps[p].status == StepStatus::Failed);
        if let Some(f) = failed_at {
            for (t, _, _, a, _) in run.steps().skip(f) {
                prop_assert_eq!(
                    a.steps[p].status,
                    StepStatus::Failed,
                    "entry {}: failed pivot changed",
                    t
                );
            }
        }
    }

    if run.last.status != SagaStatus::Compensated {
        prop_assert!(
            undone_at.is_empty(),
            "undo succeeded in a run that ended {:?}",
            run.last.status
        );
        return Ok(());
    }

    let dispatched = run.dispatched_actions();
    let pnr = machine::point_of_no_return(def);
    for (i, step_def) in def.steps.iter().enumerate() {
        let status = run.last.steps[i].status;
        let undos = undone_at.get(&i).map_or(0, Vec::len);
        if step_def.kind == StepKind::Compensatable && dispatched.contains(&i) {
            prop_assert_eq!(
                status,
                StepStatus::Compensated,
                "step {} was dispatched but not undone",
                i
            );
        }
        if !dispatched.contains(&i) {
            prop_assert_eq!(
                status,
                StepStatus::Skipped,
                "step {} never dispatched but ends {:?}",
                i,
                status
            );
        }
        if status == StepStatus::Compensated {
            prop_assert_eq!(undos, 1, "step {} undone {} times", i, undos);
        } else {
            prop_assert_eq!(undos, 0, "step {} ends {:?} but was undone", i, status);
        }
        if let Some(p) = pnr
            && i >= p
            && dispatched.contains(&i)
        {
            prop_assert!(
                step_def.kind == StepKind::Pivot && status == StepStatus::Failed,
                "step {} at or past the point of no return {} was dispatched in a compensated run",
                i,
                p
            );
        }
    }
    // A step's undo succeeded only after the undo of every dependent succeeded.
    for (&i, ti) in &undone_at {
        for (j, d) in def.steps.iter().enumerate() {
            if d.after.contains(&i)
                && let Some(tj) = undone_at.get(&j)
            {
                prop_assert!(
                    tj[0] < ti[0],
                    "step {} undone (entry {}) before its dependent {} (entry {})",
                    i,
                    ti[0],
                    j,
                    tj[0]
                );
            }
        }
    }
    Ok(())
}

/// Property 3: only compensatable steps are ever undone, and once the pivot succeeded (or, without
/// a pivot, once a retriable step was dispatched) the saga never turns to compensation.
fn check_forward_only_past_pivot(def: &SagaDefinition, run: &Run) -> Result<(), TestCaseError> {
    let pivot = def.pivot();
    let mut committed = false;
    for (t, before, _, after, cmds) in run.steps() {
        if committed {
            prop_assert!(
                before.phase == Phase::Forward && after.phase == Phase::Forward,
                "entry {}: turned to compensation past the point of no return",
                t
            );
        }
        for c in cmds {
            if let Command::RunCompensation { step, .. } = c {
                prop_assert_eq!(
                    def.steps[*step].kind,
                    StepKind::Compensatable,
                    "entry {}: undo of a non-compensatable step",
                    t
                );
                prop_assert!(
                    pivot.is_none_or(|p| *step < p),
                    "entry {}: undo of a step at or after the pivot",
                    t
                );
                prop_assert!(
                    !committed,
                    "entry {}: undo issued past the point of no return",
                    t
                );
            }
        }
        let pivot_succeeded = pivot.is_some_and(|p| after.steps[p].status == StepStatus::Succeeded);
        let retriable_dispatched = cmds.iter().any(|c| {
            matches!(c, Command::RunAction { step, .. } if def.steps[*step].kind == StepKind::Retriable)
        });
        committed |= pivot_succeeded || retriable_dispatched;
    }
    Ok(())
}

/// Property 4: an action is dispatched only while driving forward, for a pending step, when
/// every `after` dependency succeeded (before this transition, or by the very event it
/// handles), a pivot only once every compensatable step succeeded, a retriable step only once
/// the pivot (without one: every compensatable step) succeeded.
fn check_dispatch_only_when_ready(def: &SagaDefinition, run: &Run) -> Result<(), TestCaseError> {
    let all_comp_ok = |s: &SagaState| {
        def.steps
            .iter()
            .zip(&s.steps)
            .all(|(d, st)| d.kind != StepKind::Compensatable || st.status == StepStatus::Succeeded)
    };
    for (t, before, event, after, cmds) in run.steps() {
        for c in cmds {
            let Command::RunAction { step, .. } = c else {
                continue;
            };
            let step = *step;
            prop_assert!(
                after.status == SagaStatus::Running && after.phase == Phase::Forward,
                "entry {}: action dispatched while {:?}",
                t,
                after.status
            );
            prop_assert_eq!(before.steps[step].status, StepStatus::Pending);
            for &d in def.steps[step].after {
                let by_this_event =
                    matches!(event, Event::ActionSucceeded { step: s, .. } if *s == d);
                prop_assert!(
                    before.steps[d].status == StepStatus::Succeeded || by_this_event,
                    "entry {}: step {} dispatched while its dependency {} is {:?}",
                    t,
                    step,
                    d,
                    before.steps[d].status
                );
                prop_assert_eq!(after.steps[d].status, StepStatus::Succeeded);
            }
            match def.steps[step].kind {
                StepKind::Compensatable => {}
                StepKind::Pivot => prop_assert!(
                    all_comp_ok(after),
                    "entry {}: pivot dispatched before every compensatable step succeeded",
                    t
                ),
                StepKind::Retriable => match def.pivot() {
                    Some(p) => prop_assert_eq!(
                        after.steps[p].status,
                        StepStatus::Succeeded,
                        "entry {}: retriable step {} dispatched before the pivot succeeded",
                        t,
                        step
                    ),
                    None => prop_assert!(
                        all_comp_ok(after),
                        "entry {}: retriable step dispatched before every compensatable step \
                         succeeded",
                        t
                    ),
                },
            }
        }
    }
    Ok(())
}

/// Property 5: no call is issued for a step that already has one outstanding (a crash drops
/// them all), `in_flight` marks exactly the steps with an outstanding call, a running or
/// compensating saga always has a call to wait on, actions are issued only forward and undos
/// only toward compensation, and calls are numbered consecutively over a step's life.
fn check_no_double_dispatch(run: &Run) -> Result<(), TestCaseError> {
    // (step, is_action)
    let mut outstanding: BTreeSet<(usize, bool)> = BTreeSet::new();
    let mut action_calls: BTreeMap<usize, u32> = BTreeMap::new();
    let mut undo_calls: BTreeMap<usize, u32> = BTreeMap::new();
    for (t, entry) in run.trace.iter().enumerate() {
        let Entry::Step {
            before: _,
            event,
            after,
            commands,
        } = entry
        else {
            outstanding.clear();
            continue;
        };
        if let Some(call) = answered_call(event) {
            outstanding.remove(&call);
        }
        for c in commands {
            match c {
                Command::RunAction { step, attempt, .. }
                | Command::RunCompensation { step, attempt, .. } => {
                    let is_action = matches!(c, Command::RunAction { .. });
                    prop_assert!(
                        !outstanding.contains(&(*step, true))
                            && !outstanding.contains(&(*step, false)),
                        "entry {}: {:?} issued while step {} has a call outstanding",
                        t,
                        c,
                        step
                    );
                    outstanding.insert((*step, is_action));
                    let expected_phase = if is_action {
                        Phase::Forward
                    } else {
                        Phase::Compensating
                    };
                    prop_assert_eq!(after.phase, expected_phase, "entry {}: {:?}", t, c);
                    let calls = if is_action {
                        &mut action_calls
                    } else {
                        &mut undo_calls
                    };
                    let n = calls.entry(*step).or_default();
                    *n += 1;
                    prop_assert_eq!(*attempt, *n, "entry {}: {:?} misnumbered", t, c);
                }
                Command::AbandonActions => outstanding.retain(|&(_, a)| !a),
                Command::Finish => {
                    prop_assert!(
                        after.status.is_terminal(),
                        "entry {}: Finish while {:?}",
                        t,
                        after.status
                    );
                    outstanding.clear();
                }
            }
        }
        let in_flight: BTreeSet<usize> = after
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.in_flight)
            .map(|(i, _)| i)
            .collect();
        let with_call: BTreeSet<usize> = outstanding.iter().map(|&(s, _)| s).collect();
        prop_assert_eq!(
            &in_flight,
            &with_call,
            "entry {}: in_flight vs outstanding calls",
            t
        );
        if matches!(after.status, SagaStatus::Running | SagaStatus::Compensating) {
            prop_assert!(
                !outstanding.is_empty(),
                "entry {}: {:?} saga waits on nothing: {:?}",
                t,
                after.status,
                after
            );
        }
        if after.status.is_terminal() && !before_terminal(entry) {
            prop_assert!(
                commands.contains(&Command::Finish),
                "entry {}: became {:?} without Finish",
                t,
                after.status
            );
        }
    }
    Ok(())
}

fn before_terminal(e: &Entry) -> bool {
    matches!(e, Entry::Step { before, .. } if before.status.is_terminal())
}

/// Property 6: a saga is parked as stuck exactly when a pivot or retriable action, or an undo,
/// ends in doubt having used up its attempt budget; the reason names the step.
fn check_stuck(def: &SagaDefinition, limits: &Limits, run: &Run) -> Result<(), TestCaseError> {
    for (t, before, event, after, cmds) in run.steps() {
        let became_stuck = after.status == SagaStatus::Stuck && before.status != SagaStatus::Stuck;
        let live = |step: usize| before.steps[step].in_flight;
        let exhausted = match event {
            Event::ActionInDoubt { step, .. } | Event::ActionFailed { step, .. }
                if live(*step)
                    && before.status == SagaStatus::Running
                    && (def.steps[*step].kind == StepKind::Retriable
                        || (def.steps[*step].kind == StepKind::Pivot
                            && matches!(event, Event::ActionInDoubt { .. }))) =>
            {
                let s: &StepState = &before.steps[*step];
                Some((
                    *step,
                    s.attempts - s.attempts_base >= max_for(def, limits, *step),
                ))
            }
            Event::CompensationInDoubt { step, .. }
                if live(*step) && before.status == SagaStatus::Compensating =>
            {
                let s = &before.steps[*step];
                Some((
                    *step,
                    s.compensate_attempts - s.compensate_attempts_base
                        >= max_for(def, limits, *step),
                ))
            }
            _ => None,
        };
        match exhausted {
            Some((step, true)) => {
                prop_assert!(
                    became_stuck,
                    "entry {}: step {} used up its budget but the saga is {:?}",
                    t,
                    step,
                    after.status
                );
                let reason = after.reason.as_deref().unwrap_or("");
                prop_assert!(
                    reason.contains(def.steps[step].name),
                    "entry {}: stuck reason {:?} does not name {}",
                    t,
                    reason,
                    def.steps[step].name
                );
                prop_assert!(cmds.contains(&Command::Finish));
            }
            Some((step, false)) => prop_assert!(
                !became_stuck,
                "entry {}: step {} parked within its budget",
                t,
                step
            ),
            None => prop_assert!(!became_stuck, "entry {}: {:?} parked the saga", t, event),
        }
    }
    Ok(())
}

/// Property 7: the transition is a function (the same state and event give the same result),
/// and results for a step not in flight, a retry of a saga that is not stuck, a deadline past the
/// point of no return and a refused compensate change nothing.
fn check_deterministic_and_inert(
    def: &SagaDefinition,
    limits: &Limits,
    run: &Run,
) -> Result<(), TestCaseError> {
    for (t, before, event, after, cmds) in run.steps() {
        let (again, again_cmds) = machine::transition(def, limits, before, event.clone());
        prop_assert_eq!(&again, after, "entry {}: transition not deterministic", t);
        prop_assert_eq!(again_cmds.as_slice(), cmds, "entry {}: commands differ", t);

        let mut inert = Vec::new();
        // One probe step per entry, rotating over the steps not in flight.
        let n = def.len();
        if let Some(p) = (0..n)
            .map(|k| (t + k) % n)
            .find(|&i| !after.steps[i].in_flight)
        {
            inert.extend([
                Event::ActionSucceeded {
                    step: p,
                    output: json!("late"),
                },
                Event::ActionFailed {
                    step: p,
                    reason: "late".into(),
                },
                Event::ActionInDoubt {
                    step: p,
                    error: "late".into(),
                },
                Event::CompensationSucceeded { step: p },
                Event::CompensationInDoubt {
                    step: p,
                    error: "late".into(),
                },
            ]);
        }
        if after.status != SagaStatus::Stuck {
            inert.push(Event::RetryRequested);
        }
        if after.status != SagaStatus::Running || machine::past_point_of_no_return(def, after) {
            inert.push(Event::DeadlinePassed);
        }
        if !machine::can_compensate(def, after) {
            inert.push(Event::CompensateRequested {
                reason: "refused".into(),
            });
        }
        for e in inert {
            let (s, c) = machine::transition(def, limits, after, e.clone());
            prop_assert_eq!(&s, after, "entry {}: {:?} changed the state", t, e);
            prop_assert!(c.is_empty(), "entry {}: {:?} issued {:?}", t, e, c);
        }
    }
    Ok(())
}

/// The compensation receives the step's output when the action succeeded, `None` otherwise.
fn check_undo_outputs(run: &Run) -> Result<(), TestCaseError> {
    for (t, _, _, after, cmds) in run.steps() {
        for c in cmds {
            if let Command::RunCompensation { step, output, .. } = c {
                let s = &after.steps[*step];
                let expected = if s.status == StepStatus::Succeeded {
                    s.output.clone()
                } else {
                    None
                };
                prop_assert!(
                    s.status != StepStatus::Succeeded || s.output.is_some(),
                    "entry {}: succeeded step {} lost its output",
                    t,
                    step
                );
                prop_assert_eq!(
                    output,
                    &expected,
                    "entry {}: undo of {} got the wrong output",
                    t,
                    step
                );
            }
        }
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_definitions_are_legal(def in arb_definition()) {
        prop_assert_eq!(def.validate(), Ok(()));
        let kinds = kinds(&def);
        let first_forward_only = kinds.iter().position(|k| *k != StepKind::Compensatable);
        if let Some(f) = first_forward_only {
            prop_assert!(kinds[f..].iter().all(|k| *k != StepKind::Compensatable));
            prop_assert!(kinds[f + 1..].iter().all(|k| *k == StepKind::Retriable));
        }
    }

    #[test]
    fn every_run_ends_succeeded_or_compensated(s in arb_scenario()) {
        prop_assert_eq!(s.def.validate(), Ok(()));
        let run = simulate(&s);
        check_terminal(&s.def, &run)?;
    }

    #[test]
    fn compensation_undoes_every_started_step_once_in_reverse_dependency_order(s in arb_scenario()) {
        let run = simulate(&s);
        check_compensated(&s.def, &run)?;
        check_undo_outputs(&run)?;
    }

    #[test]
    fn nothing_is_compensated_once_the_pivot_succeeded(s in arb_scenario()) {
        let run = simulate(&s);
        check_forward_only_past_pivot(&s.def, &run)?;
    }

    #[test]
    fn an_action_is_dispatched_only_when_its_dependencies_succeeded(s in arb_scenario()) {
        let run = simulate(&s);
        check_dispatch_only_when_ready(&s.def, &run)?;
    }

    #[test]
    fn a_step_never_has_two_calls_outstanding(s in arb_scenario()) {
        let run = simulate(&s);
        check_no_double_dispatch(&run)?;
    }

    #[test]
    fn stuck_only_when_a_budget_is_used_up_and_the_reason_names_the_step(s in arb_scenario()) {
        let run = simulate(&s);
        check_stuck(&s.def, &s.limits, &run)?;
    }

    #[test]
    fn transition_is_deterministic_and_ignores_events_that_do_not_apply(s in arb_scenario()) {
        let run = simulate(&s);
        check_deterministic_and_inert(&s.def, &s.limits, &run)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------------

const fn step(
    name: &'static str,
    kind: StepKind,
    after: &'static [usize],
    compensation: Option<&'static str>,
) -> StepDefinition {
    StepDefinition::new(name, kind, after, compensation)
}

/// The article's order saga: four compensatable steps in sequence.
static SUBMIT_ORDER: SagaDefinition = SagaDefinition {
    name: "submit_order",
    version: 1,
    steps: &[
        step(
            "order_create",
            StepKind::Compensatable,
            &[],
            Some("order_create_revert"),
        ),
        step(
            "stock_deduct",
            StepKind::Compensatable,
            &[0],
            Some("stock_deduct_revert"),
        ),
        step(
            "coupon_use",
            StepKind::Compensatable,
            &[1],
            Some("coupon_use_revert"),
        ),
        step(
            "pay_create",
            StepKind::Compensatable,
            &[2],
            Some("pay_create_revert"),
        ),
    ],
};

/// Reserve (compensatable), capture (pivot), ship (retriable).
static RESERVE_CAPTURE_SHIP: SagaDefinition = SagaDefinition {
    name: "reserve_capture_ship",
    version: 1,
    steps: &[
        step(
            "reserve",
            StepKind::Compensatable,
            &[],
            Some("reserve_revert"),
        ),
        step("capture", StepKind::Pivot, &[0], None),
        step("ship", StepKind::Retriable, &[1], None),
    ],
};

fn run_action(step: usize, attempt: u32, backoff: u32) -> Command {
    Command::RunAction {
        step,
        attempt,
        backoff,
    }
}

fn run_undo(step: usize, attempt: u32, backoff: u32, output: Option<Value>) -> Command {
    Command::RunCompensation {
        step,
        attempt,
        backoff,
        output,
    }
}

struct Driver {
    def: &'static SagaDefinition,
    limits: Limits,
    state: SagaState,
}

impl Driver {
    fn new(def: &'static SagaDefinition, max_attempts: u32) -> Self {
        assert_eq!(def.validate(), Ok(()));
        Driver {
            def,
            limits: Limits { max_attempts },
            state: SagaState::new(def),
        }
    }

    fn send(&mut self, event: Event) -> Vec<Command> {
        let (next, commands) = machine::transition(self.def, &self.limits, &self.state, event);
        self.state = next;
        commands
    }

    fn statuses(&self) -> Vec<StepStatus> {
        self.state.steps.iter().map(|s| s.status).collect()
    }
}

#[test]
fn order_saga_with_stock_failing_undoes_the_failed_step_then_the_order_only() {
    let mut d = Driver::new(&SUBMIT_ORDER, 10);
    assert_eq!(d.send(Event::Start), vec![run_action(0, 1, 0)]);
    let order = json!({ "order_id": 7 });
    assert_eq!(
        d.send(Event::ActionSucceeded {
            step: 0,
            output: order.clone()
        }),
        vec![run_action(1, 1, 0)]
    );
    // Out of stock: the failed step gets a null compensation first (it may have started), with
    // no output.
    assert_eq!(
        d.send(Event::ActionFailed {
            step: 1,
            reason: "out of stock".into()
        }),
        vec![run_undo(1, 1, 0, None)]
    );
    assert_eq!(d.state.status, SagaStatus::Compensating);
    assert_eq!(
        d.state.reason.as_deref(),
        Some("stock_deduct: out of stock")
    );
    assert_eq!(
        d.statuses(),
        [
            StepStatus::Succeeded,
            StepStatus::Failed,
            StepStatus::Skipped,
            StepStatus::Skipped
        ]
    );
    // Then the order, with its output.
    assert_eq!(
        d.send(Event::CompensationSucceeded { step: 1 }),
        vec![run_undo(0, 1, 0, Some(order))]
    );
    assert_eq!(
        d.send(Event::CompensationSucceeded { step: 0 }),
        vec![Command::Finish]
    );
    assert_eq!(d.state.status, SagaStatus::Compensated);
    assert_eq!(
        d.statuses(),
        [
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Skipped,
            StepStatus::Skipped
        ]
    );
}

#[test]
fn deadline_before_the_pivot_turns_to_compensation() {
    let mut d = Driver::new(&RESERVE_CAPTURE_SHIP, 3);
    assert_eq!(d.send(Event::Start), vec![run_action(0, 1, 0)]);
    // The reservation is in flight (its outcome unknown) when the deadline passes.
    assert_eq!(
        d.send(Event::DeadlinePassed),
        vec![Command::AbandonActions, run_undo(0, 1, 0, None)]
    );
    assert_eq!(d.state.status, SagaStatus::Compensating);
    assert_eq!(d.state.reason.as_deref(), Some("saga deadline passed"));
    // The late answer of the abandoned call changes nothing.
    let before = d.state.clone();
    assert!(
        d.send(Event::ActionSucceeded {
            step: 0,
            output: json!(1)
        })
        .is_empty()
    );
    assert_eq!(d.state, before);
    assert_eq!(
        d.send(Event::CompensationSucceeded { step: 0 }),
        vec![Command::Finish]
    );
    assert_eq!(d.state.status, SagaStatus::Compensated);
    assert_eq!(
        d.statuses(),
        [
            StepStatus::Compensated,
            StepStatus::Skipped,
            StepStatus::Skipped
        ]
    );
}

#[test]
fn deadline_after_the_pivot_started_is_ignored() {
    let mut d = Driver::new(&RESERVE_CAPTURE_SHIP, 3);
    d.send(Event::Start);
    assert_eq!(
        d.send(Event::ActionSucceeded {
            step: 0,
            output: json!("r")
        }),
        vec![run_action(1, 1, 0)]
    );
    // The pivot is in flight: it may have happened, so the saga can only go forward.
    let before = d.state.clone();
    assert!(d.send(Event::DeadlinePassed).is_empty());
    assert_eq!(d.state, before);
    // Still so while the pivot is in doubt and retried.
    assert_eq!(
        d.send(Event::ActionInDoubt {
            step: 1,
            error: "timeout".into()
        }),
        vec![run_action(1, 2, 1)]
    );
    let before = d.state.clone();
    assert!(d.send(Event::DeadlinePassed).is_empty());
    assert!(
        d.send(Event::CompensateRequested {
            reason: "operator".into()
        })
        .is_empty()
    );
    assert_eq!(d.state, before);
    assert_eq!(
        d.send(Event::ActionSucceeded {
            step: 1,
            output: json!("c")
        }),
        vec![run_action(2, 1, 0)]
    );
    assert_eq!(
        d.send(Event::ActionSucceeded {
            step: 2,
            output: json!("s")
        }),
        vec![Command::Finish]
    );
    assert_eq!(d.state.status, SagaStatus::Succeeded);
}

#[test]
fn stuck_compensation_resumes_with_a_fresh_budget_on_retry() {
    let mut d = Driver::new(&SUBMIT_ORDER, 2);
    d.send(Event::Start);
    d.send(Event::ActionSucceeded {
        step: 0,
        output: json!("o"),
    });
    assert_eq!(
        d.send(Event::ActionFailed {
            step: 1,
            reason: "out of stock".into()
        }),
        vec![run_undo(1, 1, 0, None)]
    );
    let in_doubt = || Event::CompensationInDoubt {
        step: 1,
        error: "stock service down".into(),
    };
    assert_eq!(d.send(in_doubt()), vec![run_undo(1, 2, 1, None)]);
    // Two calls used: the budget is spent, the saga is parked.
    assert_eq!(
        d.send(in_doubt()),
        vec![Command::AbandonActions, Command::Finish]
    );
    assert_eq!(d.state.status, SagaStatus::Stuck);
    assert_eq!(d.state.phase, Phase::Compensating);
    let reason = d.state.reason.clone().unwrap();
    assert!(reason.contains("stock_deduct"), "{reason}");
    assert!(reason.contains("stock service down"), "{reason}");
    // Nothing moves a stuck saga but an operator.
    assert!(d.send(Event::Start).is_empty());
    assert!(d.send(Event::DeadlinePassed).is_empty());
    // Retry: a fresh budget of two calls, the first without backoff.
    assert_eq!(d.send(Event::RetryRequested), vec![run_undo(1, 3, 0, None)]);
    assert_eq!(d.state.status, SagaStatus::Compensating);
    assert_eq!(d.send(in_doubt()), vec![run_undo(1, 4, 1, None)]);
    assert_eq!(
        d.send(in_doubt()),
        vec![Command::AbandonActions, Command::Finish]
    );
    assert_eq!(d.state.status, SagaStatus::Stuck);
    // Retry again, and this time the undo succeeds; the order is undone next.
    assert_eq!(d.send(Event::RetryRequested), vec![run_undo(1, 5, 0, None)]);
    assert_eq!(
        d.send(Event::CompensationSucceeded { step: 1 }),
        vec![run_undo(0, 1, 0, Some(json!("o")))]
    );
    assert_eq!(
        d.send(Event::CompensationSucceeded { step: 0 }),
        vec![Command::Finish]
    );
    assert_eq!(d.state.status, SagaStatus::Compensated);
}

#[test]
fn failed_pivot_stays_failed_and_the_prefix_is_undone() {
    let mut d = Driver::new(&RESERVE_CAPTURE_SHIP, 3);
    d.send(Event::Start);
    d.send(Event::ActionSucceeded {
        step: 0,
        output: json!("r"),
    });
    assert_eq!(
        d.send(Event::ActionFailed {
            step: 1,
            reason: "card declined".into()
        }),
        vec![run_undo(0, 1, 0, Some(json!("r")))]
    );
    assert_eq!(
        d.send(Event::CompensationSucceeded { step: 0 }),
        vec![Command::Finish]
    );
    assert_eq!(
        d.statuses(),
        [
            StepStatus::Compensated,
            StepStatus::Failed,
            StepStatus::Skipped
        ]
    );
}

#[test]
fn retriable_step_treats_failure_as_retry_and_parks_when_its_budget_is_spent() {
    let mut d = Driver::new(&RESERVE_CAPTURE_SHIP, 2);
    d.send(Event::Start);
    d.send(Event::ActionSucceeded {
        step: 0,
        output: json!("r"),
    });
    d.send(Event::ActionSucceeded {
        step: 1,
        output: json!("c"),
    });
    assert_eq!(
        d.send(Event::ActionFailed {
            step: 2,
            reason: "carrier says no".into()
        }),
        vec![run_action(2, 2, 1)]
    );
    assert_eq!(
        d.send(Event::ActionInDoubt {
            step: 2,
            error: "timeout".into()
        }),
        vec![Command::AbandonActions, Command::Finish]
    );
    assert_eq!(d.state.status, SagaStatus::Stuck);
    assert_eq!(d.state.phase, Phase::Forward);
    assert!(d.state.reason.as_deref().unwrap().contains("ship"));
    // Past the pivot an operator cannot compensate, only retry.
    assert!(
        d.send(Event::CompensateRequested {
            reason: "operator".into()
        })
        .is_empty()
    );
    assert_eq!(d.send(Event::RetryRequested), vec![run_action(2, 3, 0)]);
    assert_eq!(
        d.send(Event::ActionSucceeded {
            step: 2,
            output: json!("s")
        }),
        vec![Command::Finish]
    );
    assert_eq!(d.state.status, SagaStatus::Succeeded);
}

/// Guards the generators: the simulated runs must keep reaching every interesting path, or the
/// properties above would pass vacuously.
#[test]
fn simulated_runs_cover_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..2_000 {
        let s = arb_scenario().new_tree(&mut runner).unwrap().current();
        let run = simulate(&s);
        let mut hit = |k: &'static str| *seen.entry(k).or_default() += 1;
        match run.last.status {
            SagaStatus::Succeeded => hit("succeeded"),
            SagaStatus::Compensated => hit("compensated"),
            _ => hit("unfinished"),
        }
        if s.def.steps.iter().any(|d| d.after.len() > 1) {
            hit("join");
        }
        for e in &run.trace {
            let Entry::Step {
                before,
                event,
                after,
                commands,
            } = e
            else {
                hit("crash");
                continue;
            };
            if after.status == SagaStatus::Stuck && before.status != SagaStatus::Stuck {
                hit(match after.phase {
                    Phase::Forward => "stuck forward",
                    Phase::Compensating => "stuck compensating",
                });
            }
            if before.phase == Phase::Forward && after.phase == Phase::Compensating {
                hit(match event {
                    Event::DeadlinePassed => "deadline compensates",
                    Event::CompensateRequested { .. } => "operator compensates",
                    Event::ActionFailed { step, .. } if s.def.pivot() == Some(*step) => {
                        "pivot fails"
                    }
                    Event::ActionFailed { .. } => "business failure",
                    Event::ActionInDoubt { .. } => "compensatable budget spent",
                    _ => "other turn",
                });
            }
            let undos = commands
                .iter()
                .filter(|c| matches!(c, Command::RunCompensation { .. }))
                .count();
            if undos > 1 {
                hit("parallel undos");
            }
            if before.status == SagaStatus::Stuck && after.status != SagaStatus::Stuck {
                hit("resumed");
            }
        }
    }
    for k in [
        "succeeded",
        "compensated",
        "join",
        "crash",
        "stuck forward",
        "stuck compensating",
        "deadline compensates",
        "operator compensates",
        "pivot fails",
        "business failure",
        "compensatable budget spent",
        "parallel undos",
        "resumed",
    ] {
        assert!(
            seen.get(k).copied().unwrap_or(0) > 20,
            "{k} rarely reached: {seen:?}"
        );
    }
    assert_eq!(seen.get("unfinished"), None, "{seen:?}");
    assert_eq!(seen.get("other turn"), None, "{seen:?}");
}
