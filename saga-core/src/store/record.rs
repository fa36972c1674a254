//! What the store reads and writes: saga instances, their transitions and the finished calls
//! of their steps, as plain Rust values.

use serde_json::Value;

use crate::machine::{Phase, SagaState, SagaStatus, StepState};
use crate::step::Op;
use crate::trace::TraceParent;

/// A saga instance to create.
#[derive(Debug, Clone)]
pub(crate) struct NewInstance {
    /// Global id.
    pub gid: String,
    /// Saga name.
    pub saga: String,
    /// Definition fingerprint.
    pub fingerprint: String,
    /// Input as JSON.
    pub input: Value,
    /// Step names in order.
    pub steps: Vec<String>,
    /// The steps' initial states (after the first dispatch, so that the first calls are counted
    /// in the same commit that creates the instance).
    pub states: Vec<StepState>,
    /// Deadline (ms since epoch) for the forward phase before the point of no return.
    pub deadline_at: Option<i64>,
    /// The submitting engine, which owns the instance from the start.
    pub owner: String,
    /// Lease end of the submitting engine.
    pub lease_until: i64,
    /// Creation time.
    pub now: i64,
    /// The saga's trace context, persisted with the instance.
    pub traceparent: TraceParent,
}

/// A persisted saga instance.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    /// Global id.
    pub gid: String,
    /// Saga name.
    pub saga: String,
    /// Definition fingerprint.
    pub fingerprint: String,
    /// Input as JSON.
    pub input: Value,
    /// Status, phase, reason and steps.
    pub state: SagaState,
    /// Step names in order.
    pub step_names: Vec<String>,
    /// Deadline (ms since epoch).
    pub deadline_at: Option<i64>,
    /// When the instance is next due.
    pub next_wake_at: i64,
    /// The engine id of the engine holding the lease.
    pub owner: Option<String>,
    /// Lease end.
    pub lease_until: i64,
    /// Fencing token, bumped on every claim.
    pub fence: i64,
    /// Creation time.
    pub created_at: i64,
    /// Last update time.
    pub updated_at: i64,
    /// The W3C trace context the saga's calls continue (see [`crate::trace`]); `None` for an
    /// instance created before traces were kept.
    pub traceparent: Option<TraceParent>,
}

/// How one call of an action or a compensation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The call succeeded.
    Succeeded,
    /// The call answered a business failure.
    Failed,
    /// The call's outcome is unknown: an error, a timeout, a retry answer or an abandoned call.
    InDoubt,
}

impl AttemptOutcome {
    /// The persisted name: `succeeded`, `failed` or `in_doubt`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::InDoubt => "in_doubt",
        }
    }

    /// Parses a persisted name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "succeeded" => Some(AttemptOutcome::Succeeded),
            "failed" => Some(AttemptOutcome::Failed),
            "in_doubt" => Some(AttemptOutcome::InDoubt),
            _ => None,
        }
    }
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finished call of an action or a compensation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// Global id.
    pub gid: String,
    /// Step name.
    pub step: String,
    /// The action or the compensation.
    pub op: Op,
    /// Call number.
    pub attempt: i64,
    /// Engine id of the engine that made the call.
    pub owner: String,
    /// Fencing token it held.
    pub fence: i64,
    /// Start (ms since epoch).
    pub started_at: i64,
    /// End (ms since epoch).
    pub finished_at: i64,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Error text, if any.
    pub error: Option<String>,
}

/// The persisted effect of one or more transitions of one instance.
#[derive(Debug, Clone)]
pub(crate) struct TransitionWrite {
    /// Global id.
    pub gid: String,
    /// The fencing token the writer holds.
    pub fence: i64,
    /// New status.
    pub status: SagaStatus,
    /// New phase.
    pub phase: Phase,
    /// New reason.
    pub reason: Option<String>,
    /// Why compensation began.
    pub cause: Option<String>,
    /// When the instance is next due if nobody drives it.
    pub next_wake_at: i64,
    /// New lease end.
    pub lease_until: i64,
    /// Give up ownership (the saga finished or parked, or the engine stops driving it).
    pub release: bool,
    /// Changed steps, by step index.
    pub steps: Vec<(usize, StepState)>,
    /// Calls that finished.
    pub attempts: Vec<AttemptRecord>,
    /// Write time.
    pub now: i64,
}

/// A row of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaSummary {
    /// Global id.
    pub gid: String,
    /// Saga name.
    pub saga: String,
    /// The fingerprint of the definition it was submitted with.
    pub fingerprint: String,
    /// Status.
    pub status: SagaStatus,
    /// Reason, if compensated or stuck.
    pub reason: Option<String>,
    /// Creation time (ms since epoch).
    pub created_at: i64,
    /// Last update (ms since epoch).
    pub updated_at: i64,
}

/// What submitting an instance did.
#[derive(Debug, Clone)]
pub(crate) enum Inserted {
    /// Created, owned by the submitter with fence 1.
    Created,
    /// An instance of this gid and of the same definition exists already; it was left as it was.
    Exists(Box<InstanceRecord>),
    /// An instance of this gid exists with another definition (saga name or fingerprint).
    Conflict {
        /// Its saga name.
        saga: String,
        /// Its definition fingerprint.
        fingerprint: String,
    },
}

/// Which instances a page of the listing holds ([`Store::list_page`](super::Store::list_page)):
/// the newest that match every filter given, from below the cursor on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only instances of this status.
    pub status: Option<SagaStatus>,
    /// Only instances of the saga of this persisted name; an empty name matches any.
    pub saga: Option<String>,
    /// Only instances whose gid starts with this; an empty prefix matches any.
    pub gid_prefix: Option<String>,
    /// Only instances that come after this position in the listing's order; `None` starts with
    /// the newest.
    pub after: Option<ListCursor>,
    /// Rows at most.
    pub limit: u32,
}

impl ListQuery {
    /// The first `limit` rows of the whole listing.
    pub fn newest(limit: u32) -> Self {
        ListQuery {
            status: None,
            saga: None,
            gid_prefix: None,
            after: None,
            limit,
        }
    }
}

/// A position in the listing's order (newest first, ties by gid descending): the row a page
/// ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// Creation time of the row (ms since epoch).
    pub created_at: i64,
    /// Its gid.
    pub gid: String,
}

impl ListCursor {
    /// The position just past `row`: the next page starts with the row listed after it.
    pub fn after(row: &SagaSummary) -> Self {
        ListCursor {
            created_at: row.created_at,
            gid: row.gid.clone(),
        }
    }
}
