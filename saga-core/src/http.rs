//! HTTP glue for both ends of a step call (feature `http`).
//!
//! The barrier identity travels in headers: [`SAGA_GID`], [`SAGA_BRANCH`] (the step's persisted
//! name), [`SAGA_OP`] (`action` or `compensate`) and, optionally, [`SAGA_BARRIER`] (the number of
//! the handler's first barrier call, default 1). A step call also carries [`TRACEPARENT`], the
//! saga's W3C trace context ([`crate::trace`]), which the participant's barrier span continues.
//! Replies mean:
//!
//! | reply                                   | meaning                                        |
//! |-----------------------------------------|------------------------------------------------|
//! | 2xx                                     | done; the JSON body (if any) is the output     |
//! | 409 `{"error": reason}`                 | business failure                               |
//! | 425, 503                                | retry later                                    |
//! | anything else, a timeout, no connection | in doubt: retried (the barrier absorbs repeats) |
//!
//! - Participant side: the [`SagaHeaders`] extractor, [`SagaHeaders::call`] (the barrier call
//!   of the request, answered as a reply), and [`IntoResponse`] for [`ActionOutcome`],
//!   [`CompensationOutcome`], [`BarrierError`], [`StepError`] and [`Retry`], so that a handler is the
//!   barrier call itself. A participant answers its outcomes so:
//!
//! | outcome                                   | reply                                            |
//! |-------------------------------------------|--------------------------------------------------|
//! | [`ActionOutcome::Ran`]`(output)`          | 200, the output as JSON                          |
//! | [`ActionOutcome::Duplicate`]`(output)`    | 200, the first call's output, as it was stored   |
//! | [`ActionOutcome::Cancelled`]              | 409 `{"error": CANCELLED_REASON}`                |
//! | any [`CompensationOutcome`]                       | 200, empty body                                  |
//! | [`BarrierError::Business`]`(e)`           | `e`'s own reply (409 for [`StepError::Failure`]) |
//! | [`BarrierError::Database`]                | 503                                              |
//! | [`BarrierError::Reply`]                   | 500                                              |
//! | [`BarrierError::InvalidKey`]              | 400                                              |
//!
//!
//! ```
//! use axum::extract::State;
//! use axum::response::{IntoResponse, Response};
//! use saga_core::{Op, StepError};
//! use saga_core::http::SagaHeaders;
//! use sqlx::SqlitePool;
//!
//! async fn stock_deduct(headers: SagaHeaders, State(pool): State<SqlitePool>) -> Response {
//!     if let Err(rejection) = headers.expect("stock_deduct", &[Op::Action]) {
//!         return rejection.into_response();
//!     }
//!     headers
//!         .call(&pool, |conn| {
//!             Box::pin(async move {
//!                 // A database error is a retry (503): `?` converts it.
//!                 let done = sqlx::query(
//!                     "UPDATE stock SET stock = stock - 1 WHERE product_id = 1 AND stock >= 1",
//!                 )
//!                 .execute(&mut *conn)
//!                 .await?;
//!                 if done.rows_affected() == 0 {
//!                     return Err(StepError::failure("not enough stock"));
//!                 }
//!                 Ok(())
//!             })
//!         })
//!         .await
//! }
//!
//! let app: axum::Router<SqlitePool> =
//!     axum::Router::new().route("/api/busi/stockDeduct", axum::routing::post(stock_deduct));
//! ```
//!
//! Layers around such handlers act on both sides of the commit without touching them: a
//! [`BeforeCommit`] request extension runs inside the barrier's transaction just before its
//! commit, and a reply made from an [`ActionOutcome`] or a [`CompensationOutcome`] carries a
//! [`Committed`] response extension once the transaction has committed.
//!
//! - Coordinator side: [`StepClient`] sends the headers and maps the reply to a step result.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use sqlx::Pool;

pub use crate::barrier::CANCELLED_REASON;
use crate::barrier::{
    self, ActionOutcome, Barrier, BarrierDatabase, BarrierError, BusinessFuture,
    CompensationOutcome, InvalidKey,
};
use crate::step::{Op, Retry, StepContext, StepError};
use crate::trace::TraceParent;

/// Header carrying the saga instance's gid.
pub const SAGA_GID: HeaderName = HeaderName::from_static("saga-gid");
/// Header carrying the branch id: the step's persisted name.
pub const SAGA_BRANCH: HeaderName = HeaderName::from_static("saga-branch");
/// Header carrying the op: `action` or `compensate`.
pub const SAGA_OP: HeaderName = HeaderName::from_static("saga-op");
/// Optional header carrying the number of the handler's first barrier call (default 1).
pub const SAGA_BARRIER: HeaderName = HeaderName::from_static("saga-barrier");
/// The W3C trace context header: every step call sends the saga's trace in it (see
/// [`crate::trace`]).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The barrier identity of a step call, read from the request headers.
///
/// Rejects the request with 400 and `{"error": "..."}` naming the header when one is missing or
/// invalid (see [`barrier::validate_gid`], [`barrier::validate_branch`]). The extractor also
/// picks up a [`BeforeCommit`] hook that a layer attached to the request, for
/// [`SagaHeaders::call`]. Two values are equal when they name the same call, whatever hook or
/// trace context they carry.
#[derive(Debug, Clone)]
pub struct SagaHeaders {
    /// `Saga-Gid`: the saga instance's gid.
    pub gid: String,
    /// `Saga-Branch`: the step's persisted name.
    pub branch: String,
    /// `Saga-Op`: action or compensation.
    pub op: Op,
    /// `Saga-Barrier`: the number of the first barrier call, if sent.
    pub barrier: Option<u32>,
    /// `traceparent`: the step call's W3C trace context, if sent and valid (an invalid one is
    /// ignored, as W3C Trace Context asks, and the call is served all the same).
    pub traceparent: Option<TraceParent>,
    before_commit: Option<BeforeCommit>,
}

impl PartialEq for SagaHeaders {
    fn eq(&self, other: &Self) -> bool {
        (&self.gid, &self.branch, self.op, self.barrier)
            == (&other.gid, &other.branch, other.op, other.barrier)
    }
}

impl Eq for SagaHeaders {}

impl SagaHeaders {
    /// The barrier for this call, numbered from `Saga-Barrier` (default 1); each of its calls
    /// takes the next barrier id, and its span continues the call's `traceparent`.
    pub fn barrier(&self) -> Barrier {
        let mut barrier = Barrier::validated(
            self.gid.clone(),
            self.branch.clone(),
            self.op,
            self.barrier.unwrap_or(1),
        );
        barrier.continue_trace(self.traceparent);
        barrier
    }

    /// Runs `business` inside this call's barrier on `pool` and answers with the outcome: the
    /// handler of a participant endpoint in one call.
    ///
    /// The barrier is [`SagaHeaders::barrier`] (so `Saga-Barrier` is honoured); the call is
    /// [`Barrier::action`] or [`Barrier::compensate`] as `Saga-Op` says, and the request's
    /// [`BeforeCommit`] hook, if a layer attached one, runs inside the transaction just before
    /// the commit ([`Barrier::before_commit`]). The reply is the [`IntoResponse`] mapping of the
    /// result (see the [module docs](self)): 200 with the output, 200 with the first call's
    /// stored output for a duplicate action, 200 for any undo outcome, 409 [`CANCELLED_REASON`]
    /// for a late action, the business error's own reply (409 for [`StepError::Failure`], 503
    /// for [`StepError::Retry`]), 503 for a database error.
    ///
    /// Each call starts from the first barrier id again: a handler that makes several barrier
    /// calls takes [`SagaHeaders::barrier`] once and calls it instead.
    pub async fn call<DB, T, E, F>(&self, pool: &Pool<DB>, business: F) -> Response
    where
        DB: BarrierDatabase,
        T: Serialize + DeserializeOwned + 'static,
        E: IntoResponse + 'static,
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BusinessFuture<'c, T, E>,
    {
        let mut barrier = self.barrier();
        if let Some(hook) = self.before_commit.clone() {
            barrier.before_commit(move |outcome| hook.run(outcome));
        }
        match self.op {
            Op::Action => barrier
                .action(pool, move |conn| {
                    let run = business(conn);
                    Box::pin(async move { run.await.map(Output::Fresh) })
                })
                .await
                .into_response(),
            Op::Compensate => barrier.compensate(pool, business).await.into_response(),
        }
    }

    /// These headers with `hook` as their [`BeforeCommit`] hook, for a caller that builds the
    /// headers itself rather than through the extractor.
    pub fn with_before_commit(mut self, hook: BeforeCommit) -> Self {
        self.before_commit = Some(hook);
        self
    }

    /// Checks that the call is for `branch` with one of `ops`: an endpoint serves one step, and
    /// an action endpoint does not take an undo (and vice versa). The error is a 400 rejection.
    pub fn expect(&self, branch: &str, ops: &[Op]) -> Result<(), SagaHeadersRejection> {
        if self.branch != branch {
            return Err(SagaHeadersRejection::new(
                &SAGA_BRANCH,
                format!(
                    "this endpoint serves step `{branch}`, not `{}`",
                    self.branch
                ),
            ));
        }
        if !ops.contains(&self.op) {
            return Err(SagaHeadersRejection::new(
                &SAGA_OP,
                format!("this endpoint does not serve op `{}`", self.op),
            ));
        }
        Ok(())
    }

    fn parse(parts: &Parts) -> Result<Self, SagaHeadersRejection> {
        let gid = required(parts, &SAGA_GID)?;
        barrier::validate_gid(gid).map_err(|e| SagaHeadersRejection::invalid(&SAGA_GID, e))?;
        let branch = required(parts, &SAGA_BRANCH)?;
        barrier::validate_branch(branch)
            .map_err(|e| SagaHeadersRejection::invalid(&SAGA_BRANCH, e))?;
        let op = barrier::parse_op(required(parts, &SAGA_OP)?)
            .map_err(|e| SagaHeadersRejection::invalid(&SAGA_OP, e))?;
        let barrier = match optional(parts, &SAGA_BARRIER)? {
            None => None,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    return Err(SagaHeadersRejection::new(
                        &SAGA_BARRIER,
                        format!("expected a barrier number from 1, got {raw:?}"),
                    ));
                }
            },
        };
        let traceparent = parts
            .headers
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| TraceParent::parse(v).ok());
        Ok(SagaHeaders {
            gid: gid.to_string(),
            branch: branch.to_string(),
            op,
            barrier,
            traceparent,
            before_commit: parts.extensions.get::<BeforeCommit>().cloned(),
        })
    }
}

/// A hook that a layer attaches to a request (as a request extension) to run inside the local
/// transaction of the barrier call that [`SagaHeaders::call`] makes for it, once the barrier has
/// decided and any business code has run, just before the commit, whatever the outcome. It gets
/// the outcome's label (`ran`, `duplicate`, `null_compensation`, `cancelled`); it does not run
/// when the business code fails.
///
/// Meant for instrumentation and fault injection ("die before the commit") that stay outside
/// the handlers:
///
/// ```
/// use axum::extract::Request;
/// use axum::middleware::Next;
/// use axum::response::Response;
/// use saga_core::http::BeforeCommit;
///
/// async fn log_commits(mut request: Request, next: Next) -> Response {
///     let hook = BeforeCommit::new(|outcome| eprintln!("about to commit: {outcome}"));
///     request.extensions_mut().insert(hook);
///     next.run(request).await
/// }
/// ```
#[derive(Clone)]
pub struct BeforeCommit(Arc<dyn Fn(&'static str) + Send + Sync>);

impl BeforeCommit {
    /// A hook that calls `hook` with the outcome's label.
    pub fn new(hook: impl Fn(&'static str) + Send + Sync + 'static) -> Self {
        BeforeCommit(Arc::new(hook))
    }

    fn run(&self, outcome: &'static str) {
        (self.0)(outcome)
    }
}

impl fmt::Debug for BeforeCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BeforeCommit(..)")
    }
}

/// A response extension on every reply made from an [`ActionOutcome`] or a [`CompensationOutcome`]: the
/// barrier's local transaction has committed, with this outcome. Replies of a failed call (a business error, a
/// database error) carry none. A layer reads it to act after the commit, before the reply
/// leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The outcome's label: `ran`, `duplicate`, `null_compensation` or `cancelled`.
    pub outcome: &'static str,
}

impl<S: Send + Sync> FromRequestParts<S> for SagaHeaders {
    type Rejection = SagaHeadersRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        SagaHeaders::parse(parts)
    }
}

fn optional<'p>(
    parts: &'p Parts,
    name: &HeaderName,
) -> Result<Option<&'p str>, SagaHeadersRejection> {
    match parts.headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| SagaHeadersRejection::new(name, "the value is not visible ASCII")),
    }
}

fn required<'p>(parts: &'p Parts, name: &HeaderName) -> Result<&'p str, SagaHeadersRejection> {
    optional(parts, name)?.ok_or_else(|| SagaHeadersRejection::new(name, "missing"))
}

/// A missing or invalid barrier header: answered with 400 and `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header {header}: {message}")]
pub struct SagaHeadersRejection {
    header: &'static str,
    message: String,
}

impl SagaHeadersRejection {
    fn new(header: &HeaderName, message: impl Into<String>) -> Self {
        SagaHeadersRejection {
            header: display_name(header),
            message: message.into(),
        }
    }

    fn invalid(header: &HeaderName, error: InvalidKey) -> Self {
        SagaHeadersRejection::new(header, error.to_string())
    }

    /// The header's name as documented (`Saga-Gid`, ...).
    pub fn header(&self) -> &'static str {
        self.header
    }
}

fn display_name(header: &HeaderName) -> &'static str {
    match header.as_str() {
        "saga-gid" => "Saga-Gid",
        "saga-branch" => "Saga-Branch",
        "saga-op" => "Saga-Op",
        "saga-barrier" => "Saga-Barrier",
        _ => "Saga-*",
    }
}

impl IntoResponse for SagaHeadersRejection {
    fn into_response(self) -> Response {
        error_response(StatusCode::BAD_REQUEST, self.to_string())
    }
}

/// A JSON error reply: `status` with `{"error": message}`.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The output of an action answered over HTTP: a first call's, or a duplicate's as it was
/// stored, so that a duplicate's reply is the first call's body whatever the output type.
enum Output<T> {
    Fresh(T),
    Stored(Box<RawValue>),
}

impl<T: Serialize> Serialize for Output<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Output::Fresh(output) => output.serialize(serializer),
            Output::Stored(raw) => raw.serialize(serializer),
        }
    }
}

impl<'de, T> Deserialize<'de> for Output<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Output::Stored)
    }
}

/// The reply of `outcome`, with the [`Committed`] extension.
fn committed(outcome: &'static str, mut response: Response) -> Response {
    response.extensions_mut().insert(Committed { outcome });
    response
}

/// `Ran(output)` and `Duplicate(output)`: 200 with the output as JSON (for a duplicate, the
/// first call's). `Cancelled`: 409 with [`CANCELLED_REASON`]. Each reply carries the
/// [`Committed`] extension.
impl<T: Serialize> IntoResponse for ActionOutcome<T> {
    fn into_response(self) -> Response {
        let outcome = self.as_str();
        let response = match self {
            ActionOutcome::Ran(output) | ActionOutcome::Duplicate(output) => {
                (StatusCode::OK, Json(output)).into_response()
            }
            ActionOutcome::Cancelled => error_response(StatusCode::CONFLICT, CANCELLED_REASON),
        };
        committed(outcome, response)
    }
}

/// 200 with an empty body, whatever the outcome: the step is compensated. The reply carries the
/// [`Committed`] extension.
impl<T> IntoResponse for CompensationOutcome<T> {
    fn into_response(self) -> Response {
        committed(self.as_str(), StatusCode::OK.into_response())
    }
}

/// `Business(e)`: `e`'s own reply (409 for a [`StepError::Failure`]). `Database`: 503, retry
/// later (the transaction was rolled back). `Reply`: 500, in doubt (nothing was committed; the
/// stored reply does not decode as the endpoint's output type). `InvalidKey`: 400.
impl<E: IntoResponse> IntoResponse for BarrierError<E> {
    fn into_response(self) -> Response {
        match self {
            BarrierError::Business(e) => e.into_response(),
            BarrierError::Database(e) => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("participant database error: {e}"),
            ),
            BarrierError::Reply(e) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("participant reply error: {e}"),
            ),
            BarrierError::InvalidKey(e) => error_response(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
}

/// `Failure(reason)`: 409 `{"error": reason}`; `Retry(reason)`: 503 `{"error": reason}`.
impl IntoResponse for StepError {
    fn into_response(self) -> Response {
        match self {
            StepError::Failure(reason) => error_response(StatusCode::CONFLICT, reason),
            StepError::Retry(reason) => error_response(StatusCode::SERVICE_UNAVAILABLE, reason),
        }
    }
}

/// 503 `{"error": reason}`.
impl IntoResponse for Retry {
    fn into_response(self) -> Response {
        error_response(StatusCode::SERVICE_UNAVAILABLE, self.0)
    }
}

/// Calls participant endpoints for a saga's steps over HTTP: `POST {base_url}{path}` with the
/// input as JSON and the barrier headers, mapping the reply as the module docs describe.
///
/// ```no_run
/// # async fn run(ctx: &saga_core::StepContext) -> Result<(), saga_core::StepError> {
/// use std::time::Duration;
/// let stock = saga_core::http::StepClient::new("http://127.0.0.1:8081")
///     .timeout(Duration::from_secs(3));
/// let () = stock.call("/api/busi/stockDeduct", ctx, &serde_json::json!({"product_id": 1})).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StepClient {
    client: reqwest::Client,
    base_url: String,
    timeout: Option<Duration>,
}

/// A reply, classified.
enum Reply {
    Success(Vec<u8>),
    Failure(String),
    InDoubt(String),
}

impl StepClient {
    /// A client for the participant at `base_url` (`http://host:port`), with a new
    /// `reqwest::Client` and no timeout of its own (the engine bounds each step call).
    pub fn new(base_url: impl Into<String>) -> Self {
        StepClient::with_client(reqwest::Client::new(), base_url)
    }

    /// A client for the participant at `base_url` sharing `client` (and its connection pool).
    pub fn with_client(client: reqwest::Client, base_url: impl Into<String>) -> Self {
        StepClient {
            client,
            base_url: base_url.into().trim_end_matches('/').to_string(),
            timeout: None,
        }
    }

    /// Gives up on a call after `timeout` (the outcome is then in doubt).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The participant's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Calls an action: `Ok` with the decoded output on 2xx (an empty body decodes as `null`, so
    /// `()` and `Option` outputs work), [`StepError::Failure`] with the participant's reason on
    /// 409, [`StepError::Retry`] on 425 and 503 and whenever the outcome is in doubt.
    pub async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        ctx: &StepContext,
        body: &impl Serialize,
    ) -> Result<T, StepError> {
        let url = self.url(path);
        match self.send(&url, ctx, ctx.op, body).await {
            Reply::Success(bytes) => decode(&bytes).map_err(|e| {
                StepError::Retry(format!(
                    "POST {url}: in doubt: the 2xx reply's body is not the step's output: {e}"
                ))
            }),
            Reply::Failure(reason) => Err(StepError::Failure(reason)),
            Reply::InDoubt(reason) => Err(StepError::Retry(reason)),
        }
    }

    /// Calls an undo (with `Saga-Op: compensate`): `Ok` on 2xx, a [`Retry`] otherwise. A 409 is
    /// a retry too: an undo cannot fail the saga.
    pub async fn compensate(
        &self,
        path: &str,
        ctx: &StepContext,
        body: &impl Serialize,
    ) -> Result<(), Retry> {
        let url = self.url(path);
        match self.send(&url, ctx, Op::Compensate, body).await {
            Reply::Success(_) => Ok(()),
            Reply::Failure(reason) => Err(Retry(format!(
                "POST {url}: the undo was refused with 409 ({reason}); an undo cannot fail, retrying"
            ))),
            Reply::InDoubt(reason) => Err(Retry(reason)),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.base_url)
        } else {
            format!("{}/{path}", self.base_url)
        }
    }

    async fn send(&self, url: &str, ctx: &StepContext, op: Op, body: &impl Serialize) -> Reply {
        let mut request = self
            .client
            .post(url)
            .header(SAGA_GID, ctx.gid.as_str())
            .header(SAGA_BRANCH, ctx.step)
            .header(SAGA_OP, op.as_str())
            .json(body);
        if let Some(parent) = &ctx.traceparent {
            request = request.header(TRACEPARENT, parent.to_string());
        }
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Reply::InDoubt(transport_error(url, &e)),
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes.to_vec(),
            Err(e) => return Reply::InDoubt(transport_error(url, &e)),
        };
        if status.is_success() {
            return Reply::Success(bytes);
        }
        let reason = reason(status, &bytes);
        match status {
            StatusCode::CONFLICT => Reply::Failure(reason),
            StatusCode::TOO_EARLY | StatusCode::SERVICE_UNAVAILABLE => Reply::InDoubt(format!(
                "POST {url}: the participant asked to retry later ({status}): {reason}"
            )),
            _ => Reply::InDoubt(format!(
                "POST {url}: in doubt: unexpected reply {status}: {reason}"
            )),
        }
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_value(serde_json::Value::Null)
    } else {
        serde_json::from_slice(bytes)
    }
}

/// The reason in an error reply: `{"error": ...}`, `{"reason": ...}`, the text, or the status.
fn reason(status: StatusCode, bytes: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(bytes) {
        for key in ["error", "reason"] {
            if let Some(serde_json::Value::String(reason)) = map.get(key) {
                return reason.clone();
            }
        }
    }
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        status.to_string()
    } else {
        // Bound what ends up in a step's persisted `last_error`.
        text.chars().take(500).collect()
    }
}

fn transport_error(url: &str, error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        format!("POST {url}: in doubt: timed out")
    } else if error.is_connect() {
        format!("POST {url}: in doubt: cannot connect")
    } else {
        format!("POST {url}: in doubt: transport error")
    };
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}
