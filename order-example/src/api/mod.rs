//! The order API (docs/contract.md, "HTTP"): the routes, their errors and request bodies.
//!
//! - [`orders`]: `submitOrder` and `payOrder`, which start sagas.
//! - [`reads`]: the services' rows (orders, stock, coupons, payments).
//! - [`sagas`]: the saga view, the listing and the operator actions.
//!
//! Every 4xx and 5xx reply has a JSON body `{"error": "..."}`, those of axum itself included.

mod orders;
mod reads;
mod sagas;

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use saga_core::console::{self, OperatorAuth};
use saga_core::engine::{Engine, EngineError};
use saga_core::machine::SagaStatus;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::model::Validate;
use crate::services::Services;

/// Largest accepted request body, on every endpoint.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long a request body may take to arrive, on every endpoint: a slow client cannot hold a
/// handler (and its connection) for longer.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// `Retry-After` of every 503: the store or a service's database is unreachable, or the engine
/// is full; either is usually over within seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// How long `/healthz` waits for each database's answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Shared state of the API routes.
#[derive(Clone)]
pub struct Api {
    /// The saga engine.
    pub engine: Engine,
    /// The services' databases.
    pub services: Services,
    /// The operator token and its guards; without a token every operator action and the
    /// console are refused.
    pub auth: OperatorAuth,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
}

/// The API routes, with the participants' routes merged in, the body limit and JSON errors,
/// and the operator console at `/console`.
pub fn router(api: Api, participants: Router) -> Router {
    let console = console::router(api.engine.clone(), api.auth.clone());
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/busi/submitOrder", post(orders::submit_order))
        .route("/api/busi/payOrder", post(orders::pay_order))
        .route("/api/orders/{order_id}", get(reads::order))
        .route("/api/stock/{product_id}", get(reads::stock))
        .route("/api/coupons/{coupon_id}", get(reads::coupon))
        .route("/api/payments/{order_id}", get(reads::payment))
        .route("/api/sagas", get(sagas::list))
        .route("/api/sagas/{gid}", get(sagas::view))
        .route("/api/sagas/{gid}/retry", post(sagas::retry))
        .route("/api/sagas/{gid}/compensate", post(sagas::compensate))
        .with_state(api)
        .merge(participants)
        .fallback(|| async { ApiError::not_found("no such path") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path",
            )
        })
        .layer(axum::middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    // The console answers its own errors (HTML for a browser, else JSON) within a smaller
    // body limit, so it sits outside the API's layers.
    Router::new().nest("/console", console).merge(routes)
}

/// An error reply: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// A reply with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    /// 422.
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, m)
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    /// 500.
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
    /// 503: try again later.
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = saga_core::http::error_response(self.status, self.message);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match &e {
            EngineError::Conflict { .. }
            | EngineError::Finished { .. }
            | EngineError::PastPivot { .. } => ApiError::conflict(e.to_string()),
            EngineError::NotFound(_) => ApiError::not_found(e.to_string()),
            EngineError::InvalidGid(_) | EngineError::Input(_) => ApiError::invalid(e.to_string()),
            EngineError::Store(_) => ApiError::unavailable(e.to_string()),
            _ if e.is_retriable() => ApiError::unavailable(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::unavailable(format!("database error: {e}"))
    }
}

/// Reads the whole body within [`BODY_LIMIT`] and [`BODY_TIMEOUT`]; 413 beyond the one, 408
/// beyond the other.
pub async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {BODY_LIMIT} bytes"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Parses a JSON body: 400 when it is not JSON, 422 when a field is missing, of the wrong type,
/// unknown or out of range.
pub fn parse_body<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    let parsed: T = serde_json::from_value(value).map_err(|e| ApiError::invalid(e.to_string()))?;
    parsed.validate().map_err(|e| ApiError::invalid(e.0))?;
    Ok(parsed)
}

/// A request body of the contract, read with [`read_body`] and checked with [`parse_body`]
/// (413, 400, 422). Any content type is read as JSON.
#[derive(Debug, Clone)]
pub struct Valid<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Validate> FromRequest<S> for Valid<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let body = read_body(request.into_body()).await?;
        parse_body(&body).map(Valid)
    }
}

/// Gives every error reply a JSON body, including the ones axum's extractors produce.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let bytes = axum::body::to_bytes(response.into_body(), BODY_LIMIT)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let status = if status == StatusCode::PAYLOAD_TOO_LARGE || message.contains("length limit") {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        status
    };
    ApiError::new(status, message).into_response()
}

/// `GET /healthz`: 200 `{"status": "ok"}` when the saga store and every service's database
/// answer a trivial query within a second, else 503 `{"error"}` naming those that did not.
async fn healthz(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let store = async {
        let pinged = api.engine.store().ping(HEALTH_TIMEOUT).await;
        ("saga store", pinged.map_err(|e| e.to_string()))
    };
    let services = api.services.named().map(|(name, db)| async move {
        (
            name,
            db.ping(HEALTH_TIMEOUT).await.map_err(|e| e.to_string()),
        )
    });
    let (store, services) = futures::join!(store, futures::future::join_all(services));
    let unreachable: Vec<String> = std::iter::once(store)
        .chain(services)
        .filter_map(|(name, pinged)| pinged.err().map(|e| format!("{name}: {e}")))
        .collect();
    if unreachable.is_empty() {
        Ok(Json(json!({ "status": "ok" })))
    } else {
        Err(ApiError::unavailable(format!(
            "unreachable: {}",
            unreachable.join("; ")
        )))
    }
}

/// `GET /metrics`: the Prometheus text, with the saga counts by status refreshed first (the
/// engine keeps its own metrics current itself).
async fn metrics(State(api): State<Api>) -> Response {
    if let Ok(counts) = api.engine.store().count_by_status().await {
        for status in SagaStatus::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == status)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            metrics::gauge!("saga_instances", "status" => status.as_str()).set(n as f64);
        }
    }
    let body = api.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
