//! What a step implementation sees and returns.
//!
//! `#[derive(Saga)]` generates a trait (`{Enum}Steps`) with one async method per action and per
//! compensation. Actions of compensatable and pivot steps return `Result<Output, StepError>`;
//! retriable actions and compensations return `Result<_, Retry>`, so the compiler rejects a
//! business failure where the saga cannot take one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::definition::SagaDefinition;
use crate::trace::TraceParent;

/// A boxed, `Send` future, as returned by the type-erased step dispatch.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an action did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StepError {
    /// A business failure (no stock, coupon already used). The saga turns to compensation with
    /// this reason. Only compensatable and pivot steps can return it.
    Failure(String),
    /// The outcome is in doubt (transport error, overload, "try later"): the step is retried
    /// with backoff.
    Retry(String),
}

impl StepError {
    /// A business failure with this reason.
    pub fn failure(reason: impl Into<String>) -> Self {
        StepError::Failure(reason.into())
    }

    /// An in-doubt outcome with this reason.
    pub fn retry(reason: impl Into<String>) -> Self {
        StepError::Retry(reason.into())
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Failure(r) => write!(f, "business failure: {r}"),
            StepError::Retry(r) => write!(f, "retry: {r}"),
        }
    }
}

impl std::error::Error for StepError {}

/// A request to try again later: the only error a retriable action or a compensation can return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry(pub String);

impl Retry {
    /// A retry request with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Retry(reason.into())
    }
}

impl fmt::Display for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retry: {}", self.0)
    }
}

impl std::error::Error for Retry {}

impl From<Retry> for StepError {
    fn from(r: Retry) -> Self {
        StepError::Retry(r.0)
    }
}

#[cfg(feature = "runtime")]
/// A database error inside the business code is a [`StepError::Retry`], so that `?` works on
/// sqlx calls in a closure that returns `Result<_, StepError>`: the transaction is rolled back,
/// barrier rows included, so the call is safe to repeat, exactly as for
/// [`crate::barrier::BarrierError::Database`].
impl From<sqlx::Error> for StepError {
    fn from(e: sqlx::Error) -> Self {
        StepError::Retry(format!("participant database error: {e}"))
    }
}

#[cfg(feature = "runtime")]
/// A database error inside an undo's business code is a [`Retry`], so that `?` works on sqlx
/// calls in a closure that returns `Result<_, Retry>`, as for [`StepError`].
impl From<sqlx::Error> for Retry {
    fn from(e: sqlx::Error) -> Self {
        Retry(format!("participant database error: {e}"))
    }
}

/// Which side of a step is being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// The step's forward action.
    Action,
    /// The step's compensation.
    Compensate,
}

impl Op {
    /// `action` or `compensate`, as persisted and sent in the `Saga-Op` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Action => "action",
            Op::Compensate => "compensate",
        }
    }

    /// Parses `action` or `compensate`.
    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "action" => Some(Op::Action),
            "compensate" => Some(Op::Compensate),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a step call knows about itself.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The saga instance's global id.
    pub gid: String,
    /// The persisted step name (the barrier's `branch_id`).
    pub step: &'static str,
    /// Action or compensation.
    pub op: Op,
    /// 1 for the first call of this op, 2 for the first retry, and so on.
    pub attempt: u32,
    /// The W3C trace context this call continues: the saga's trace, with this call's span as
    /// the parent when spans are recorded (see [`crate::trace`]). `http::StepClient` (feature
    /// `http`) sends it as the `traceparent` header. `None` only for a context made by hand.
    pub traceparent: Option<TraceParent>,
}

impl StepContext {
    /// A key that is the same for every attempt of this op of this step of this saga instance:
    /// `{gid}/{step}/{op}`. Hand it to services that deduplicate on a key.
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}/{}", self.gid, self.step, self.op)
    }
}

/// The raw result of an action, with its output as JSON.
pub type RawActionResult = Result<serde_json::Value, StepError>;

/// A saga type: an enum with `#[derive(Saga)]`.
pub trait Saga: Send + Sync + 'static {
    /// The saga's input, persisted as JSON with the instance and handed to every step.
    type Input: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The saga's static step table.
    fn definition() -> &'static SagaDefinition;
}

/// The decoded outputs of a saga's steps, read from a [`SagaView`](crate::SagaView) with
/// [`SagaView::outputs`](crate::SagaView::outputs). `#[derive(Saga)]` implements it with a
/// generated struct `{Enum}Outputs` holding one `Option<Output>` field per step that has an
/// output, named after the step's action (`None` until the step has succeeded).
pub trait SagaOutputs: Saga {
    /// The generated `{Enum}Outputs` struct.
    type Outputs;

    /// Decodes the persisted outputs, one per step in declaration order.
    fn decode_outputs(
        outputs: Vec<Option<serde_json::Value>>,
    ) -> Result<Self::Outputs, OutputsError>;
}

/// Why a view's outputs could not be read as a saga's outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputsError {
    /// The view is of another saga (or of another shape of this saga).
    #[error("the view is of saga `{found}`, not `{expected}` with these steps")]
    OtherSaga {
        /// The saga asked for.
        expected: &'static str,
        /// The saga of the view.
        found: String,
    },
    /// A persisted output does not decode as its step's output type.
    #[error("the output of step `{step}` does not decode as its type: {source}")]
    Decode {
        /// The step's persisted name.
        step: &'static str,
        /// The decoding error.
        source: serde_json::Error,
    },
}

/// Type-erased dispatch from a step index to the implementation `H` of the saga's generated
/// `{Enum}Steps` trait. Generated by `#[derive(Saga)]` for every `H` that implements it.
#[diagnostic::on_unimplemented(
    message = "`{H}` does not implement the steps of saga `{Self}`",
    label = "this type must implement the trait `{Self}Steps` generated by `#[derive(Saga)]`",
    note = "add `impl {Self}Steps for {H}` with one async method per action and per compensation"
)]
pub trait SagaSteps<H>: Saga {
    /// Runs the action of step `step`, with the persisted outputs of the steps it reads
    /// ([`StepDefinition::reads`](crate::StepDefinition::reads), in that order).
    fn run_action<'a>(
        handler: &'a H,
        step: usize,
        ctx: &'a StepContext,
        input: &'a Self::Input,
        reads: Vec<serde_json::Value>,
    ) -> BoxFuture<'a, RawActionResult>;

    /// Runs the compensation of step `step` with its persisted output (`None` if it was lost)
    /// and the outputs of the steps it reads.
    fn run_compensation<'a>(
        handler: &'a H,
        step: usize,
        ctx: &'a StepContext,
        input: &'a Self::Input,
        output: Option<serde_json::Value>,
        reads: Vec<serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), Retry>>;
}
