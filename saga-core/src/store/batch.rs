//! A batch of the group-commit writer: the writes of many sagas, turned into the five JSON
//! arrays that each dialect's batch statement (`sqlite/batch.sql`, `postgres/batch.sql`) reads,
//! and the statement's returned rows turned back into each write's outcome.

use std::collections::HashSet;

use serde::Serialize;

use super::record::{NewInstance, TransitionWrite};
use crate::machine::StepState;
use crate::trace::TraceParent;

/// One write queued for the group-commit writer.
pub(crate) enum WriteOp {
    /// Create an instance with its steps.
    Insert(NewInstance),
    /// Persist a transition under a fence.
    Transition(TransitionWrite),
}

impl WriteOp {
    fn gid(&self) -> &str {
        match self {
            WriteOp::Insert(new) => &new.gid,
            WriteOp::Transition(w) => &w.gid,
        }
    }
}

/// What one write did.
#[derive(Debug)]
pub(crate) enum WriteOutcome {
    /// Whether the insert created the instance (if not, the store reads the one that exists).
    Created(bool),
    /// Whether the fence matched and the transition applied.
    Applied(bool),
}

/// A row the batch statement returns: `created` with the gid and fence of a new instance, or
/// `applied` with the gid and fence of a transition that applied.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct BatchRow {
    /// `created` or `applied`.
    pub kind: String,
    /// The instance.
    pub gid: String,
    /// Its fence.
    pub fence: i64,
}

/// The five parameters of a batch statement, in order: instances to create, their steps,
/// transitions of instances, their steps, finished calls. Step and call rows carry the fence
/// of their transition, so that the SQL applies them only where the transition applied.
pub(crate) struct BatchPlan<'a> {
    ops: &'a [&'a WriteOp],
    /// The first insert of each gid in the batch (a later one of the same gid finds it).
    first_insert: HashSet<usize>,
    /// The five arrays, serialized as JSON.
    pub params: [String; 5],
}

/// A row of `saga_instance` to create.
#[derive(Serialize)]
struct NewInstanceRow<'a> {
    gid: &'a str,
    saga: &'a str,
    fingerprint: &'a str,
    input: String,
    deadline_at: Option<i64>,
    owner: &'a str,
    lease_until: i64,
    now: i64,
    traceparent: TraceParent,
}

/// A row of `saga_step` to create or update. `fence` is the transition's (1 for a new
/// instance); `name` and `fingerprint` are set for new rows only.
#[derive(Serialize)]
struct StepRow<'a> {
    gid: &'a str,
    idx: usize,
    fence: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<&'a str>,
    status: &'static str,
    attempts: u32,
    compensate_attempts: u32,
    attempts_base: u32,
    compensate_attempts_base: u32,
    output: Option<String>,
    last_error: Option<&'a str>,
    now: i64,
}

impl<'a> StepRow<'a> {
    fn new(gid: &'a str, idx: usize, s: &'a StepState, now: i64, fence: i64) -> Self {
        StepRow {
            gid,
            idx,
            fence,
            name: None,
            fingerprint: None,
            status: s.status.as_str(),
            attempts: s.attempts,
            compensate_attempts: s.compensate_attempts,
            attempts_base: s.attempts_base,
            compensate_attempts_base: s.compensate_attempts_base,
            output: s.output.as_ref().map(|v| v.to_string()),
            last_error: s.last_error.as_deref(),
            now,
        }
    }
}

/// A transition of a `saga_instance` row, applied where `fence` still matches.
#[derive(Serialize)]
struct TransitionRow<'a> {
    gid: &'a str,
    fence: i64,
    status: &'static str,
    phase: &'static str,
    reason: Option<&'a str>,
    cause: Option<&'a str>,
    next_wake_at: i64,
    lease_until: i64,
    release: bool,
    now: i64,
}

/// A row of `saga_attempt`; `wfence` is the fence of the transition that records it.
#[derive(Serialize)]
struct AttemptRow<'a> {
    gid: &'a str,
    step: &'a str,
    op: &'static str,
    attempt: i64,
    owner: &'a str,
    fence: i64,
    wfence: i64,
    started_at: i64,
    finished_at: i64,
    outcome: &'static str,
    error: Option<&'a str>,
}

impl<'a> BatchPlan<'a> {
    /// Lays out `ops` as the batch statement's parameters.
    pub fn new(ops: &'a [&'a WriteOp]) -> Self {
        // Rows go in gid order, the order in which the store's multi-row statements lock.
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by(|&a, &b| ops[a].gid().cmp(ops[b].gid()));
        let mut seen = HashSet::new();
        let mut first_insert = HashSet::new();
        let (mut instances, mut new_steps, mut transitions, mut steps, mut attempts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for idx in order {
            match ops[idx] {
                WriteOp::Insert(n) => {
                    if !seen.insert(n.gid.as_str()) {
                        continue;
                    }
                    first_insert.insert(idx);
                    instances.push(NewInstanceRow {
                        gid: &n.gid,
                        saga: &n.saga,
                        fingerprint: &n.fingerprint,
                        input: n.input.to_string(),
                        deadline_at: n.deadline_at,
                        owner: &n.owner,
                        lease_until: n.lease_until,
                        now: n.now,
                        traceparent: n.traceparent,
                    });
                    for (i, (name, s)) in n.steps.iter().zip(&n.states).enumerate() {
                        let mut row = StepRow::new(&n.gid, i, s, n.now, 1);
                        row.name = Some(name);
                        row.fingerprint = Some(&n.fingerprint);
                        new_steps.push(row);
                    }
                }
                WriteOp::Transition(w) => {
                    transitions.push(TransitionRow {
                        gid: &w.gid,
                        fence: w.fence,
                        status: w.status.as_str(),
                        phase: w.phase.as_str(),
                        reason: w.reason.as_deref(),
                        cause: w.cause.as_deref(),
                        next_wake_at: w.next_wake_at,
                        lease_until: w.lease_until,
                        release: w.release,
                        now: w.now,
                    });
                    for (i, s) in &w.steps {
                        steps.push(StepRow::new(&w.gid, *i, s, w.now, w.fence));
                    }
                    for a in &w.attempts {
                        attempts.push(AttemptRow {
                            gid: &a.gid,
                            step: &a.step,
                            op: a.op.as_str(),
                            attempt: a.attempt,
                            owner: &a.owner,
                            fence: a.fence,
                            wfence: w.fence,
                            started_at: a.started_at,
                            finished_at: a.finished_at,
                            outcome: a.outcome.as_str(),
                            error: a.error.as_deref(),
                        });
                    }
                }
            }
        }
        BatchPlan {
            ops,
            first_insert,
            params: [
                json_array(&instances),
                json_array(&new_steps),
                json_array(&transitions),
                json_array(&steps),
                json_array(&attempts),
            ],
        }
    }

    /// Each write's outcome from the rows the batch statement returned.
    pub fn outcomes(&self, rows: Vec<BatchRow>) -> Vec<WriteOutcome> {
        let (mut created, mut applied) = (HashSet::new(), HashSet::new());
        for row in rows {
            if row.kind == "created" {
                created.insert(row.gid);
            } else {
                applied.insert((row.gid, row.fence));
            }
        }
        self.ops
            .iter()
            .enumerate()
            .map(|(idx, op)| match op {
                WriteOp::Insert(n) => WriteOutcome::Created(
                    self.first_insert.contains(&idx) && created.contains(&n.gid),
                ),
                WriteOp::Transition(w) => {
                    WriteOutcome::Applied(applied.contains(&(w.gid.clone(), w.fence)))
                }
            })
            .collect()
    }
}

fn json_array<T: Serialize>(rows: &[T]) -> String {
    // Plain structs of strings, numbers and booleans: serializing them cannot fail.
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".into())
}
