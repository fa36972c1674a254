//! What the harness asserts of every run, on top of the user's invariant: the saga
//! guarantee, read from the saga's final view and the run's journal.

use super::journal::Entry;
use crate::definition::{SagaDefinition, StepKind};
use crate::engine::{EngineEvent, SagaView};
use crate::machine::{SagaStatus, StepStatus};
use crate::step::Op;
use crate::store::AttemptOutcome;

/// The violations of the saga guarantee in one run; empty when it holds.
///
/// `calls` holds, per step, the calls that reached its action and its compensation.
pub(crate) fn violations(
    def: &SagaDefinition,
    view: Option<&SagaView>,
    entries: &[Entry],
    calls: &[(u32, u32)],
) -> Vec<String> {
    let mut out = Vec::new();
    let Some(view) = view else {
        out.push("the saga instance is not in the store".to_string());
        return out;
    };
    let status = view.status;
    if !status.is_terminal() {
        out.push(format!(
            "the saga did not reach a terminal status: it is {status}"
        ));
    }
    let step_status = |i: usize| view.steps.get(i).map(|s| s.status);
    match status {
        SagaStatus::Succeeded => {
            for (i, s) in def.steps.iter().enumerate() {
                if step_status(i) != Some(StepStatus::Succeeded) {
                    out.push(format!(
                        "the saga succeeded but step {} is {}",
                        s.name,
                        step_status(i).map(|s| s.as_str()).unwrap_or("missing")
                    ));
                }
            }
        }
        SagaStatus::Compensated => {
            for (i, s) in def.steps.iter().enumerate() {
                let called = calls.get(i).is_some_and(|c| c.0 > 0);
                match s.kind {
                    StepKind::Compensatable if called => {
                        if step_status(i) != Some(StepStatus::Compensated) {
                            out.push(format!(
                                "step {} may have started but is {}, not compensated",
                                s.name,
                                step_status(i).map(|s| s.as_str()).unwrap_or("missing")
                            ));
                        }
                        let done = finished(entries, s.name, Op::Compensate, true);
                        if done != 1 {
                            out.push(format!(
                                "step {} was compensated {done} times, not exactly once",
                                s.name
                            ));
                        }
                    }
                    StepKind::Pivot if finished(entries, s.name, Op::Action, true) > 0 => {
                        out.push(format!(
                            "the saga was compensated after its pivot {} succeeded",
                            s.name
                        ));
                    }
                    StepKind::Retriable if called => out.push(format!(
                        "the saga was compensated after the retriable step {} started",
                        s.name
                    )),
                    _ => {}
                }
            }
        }
        SagaStatus::Stuck if view.reason.as_deref().is_none_or(str::is_empty) => {
            out.push("the saga is stuck without a reason".to_string());
        }
        _ => {}
    }
    out.extend(order(def, entries));
    for e in entries {
        if let Entry::Late {
            step,
            first: true,
            succeeded: true,
            answer,
        } = e
            && let Some(i) = def.step_index(step)
            && step_status(i) == Some(StepStatus::Compensated)
        {
            out.push(format!(
                "the late action of {step} arrived after its compensation and {answer}: \
                 it must be cancelled"
            ));
        }
    }
    out
}

/// How many persisted calls of `op` of `step` succeeded (`true`) or did anything else.
fn finished(entries: &[Entry], step: &str, op: Op, succeeded: bool) -> usize {
    entries
        .iter()
        .filter(|e| {
            matches!(e, Entry::Engine(EngineEvent::StepFinished { step: s, op: o, outcome, .. })
                if *s == step && *o == op && (*outcome == AttemptOutcome::Succeeded) == succeeded)
        })
        .count()
}

/// No action started before everything it waits on succeeded; no compensation started before
/// every step that depends on it was compensated.
fn order(def: &SagaDefinition, entries: &[Entry]) -> Vec<String> {
    let mut out = Vec::new();
    let n = def.steps.len();
    let mut succeeded = vec![false; n];
    let mut compensated = vec![false; n];
    let mut action_called = vec![false; n];
    for e in entries {
        let Entry::Engine(event) = e else { continue };
        match event {
            EngineEvent::StepStarted { step, op, .. } => {
                let Some(i) = def.step_index(step) else {
                    continue;
                };
                match op {
                    Op::Action => {
                        action_called[i] = true;
                        for (d, needed) in def.guaranteed(i).into_iter().enumerate() {
                            if needed && !succeeded[d] {
                                out.push(format!(
                                    "{step} started before {} succeeded",
                                    def.steps[d].name
                                ));
                            }
                        }
                    }
                    Op::Compensate => {
                        for (k, later) in def.steps.iter().enumerate() {
                            let depends = later.after.contains(&i);
                            if depends
                                && later.kind == StepKind::Compensatable
                                && action_called[k]
                                && !compensated[k]
                            {
                                out.push(format!(
                                    "the compensation of {step} started before {} was compensated",
                                    later.name
                                ));
                            }
                        }
                    }
                }
            }
            EngineEvent::StepFinished {
                step,
                op,
                outcome: AttemptOutcome::Succeeded,
                ..
            } => {
                if let Some(i) = def.step_index(step) {
                    match op {
                        Op::Action => succeeded[i] = true,
                        Op::Compensate => compensated[i] = true,
                    }
                }
            }
            _ => {}
        }
    }
    out.dedup();
    out
}
