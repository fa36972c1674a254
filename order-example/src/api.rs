//! The order API of DESIGN.md section 7: submit and pay orders, read the services' rows and the
//! sagas, operator actions, health and metrics. Every 4xx and 5xx reply has a JSON body
//! `{"error": "..."}`.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use saga_core::engine::{Engine, EngineError, SagaView, Submitted};
use saga_core::machine::SagaStatus;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::db::{Db, Services};
use crate::model::{OrderRequest, PayRequest, Validate};
use crate::saga::{PayOrder, SubmitOrder};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

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
        (self.status, Json(json!({ "error": self.message }))).into_response()
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
            EngineError::ShuttingDown | EngineError::Store(_) => {
                ApiError::unavailable(e.to_string())
            }
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::unavailable(format!("database error: {e}"))
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

/// Shared state of the API routes.
#[derive(Clone)]
pub struct Api {
    /// The saga engine.
    pub engine: Engine,
    /// The services' databases.
    pub services: Services,
    /// Operator token; `None` refuses every operator action.
    pub admin_token: Option<String>,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
}

/// The API routes, with the participants' routes merged in, the body limit and JSON errors.
pub fn router(api: Api, participants: Router) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/metrics", get(metrics))
        .route("/api/busi/submitOrder", post(submit_order))
        .route("/api/busi/payOrder", post(pay_order))
        .route("/api/orders/{order_id}", get(get_order))
        .route("/api/stock/{product_id}", get(get_stock))
        .route("/api/coupons/{coupon_id}", get(get_coupon))
        .route("/api/payments/{order_id}", get(get_payment))
        .route("/api/sagas", get(list_sagas))
        .route("/api/sagas/{gid}", get(get_saga))
        .route("/api/sagas/{gid}/retry", post(retry_saga))
        .route("/api/sagas/{gid}/compensate", post(compensate_saga))
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
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
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

/// Reads the whole body within the limit; 413 beyond it.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {BODY_LIMIT} bytes"),
        )
    })
}

/// `wait` and `timeout_ms` query parameters.
fn wait_params(q: &HashMap<String, String>) -> Result<Option<Duration>, ApiError> {
    let timeout = match q.get("timeout_ms") {
        None => 10_000,
        Some(t) => t
            .parse::<u64>()
            .ok()
            .filter(|t| (1..=60_000).contains(t))
            .ok_or_else(|| {
                ApiError::invalid("timeout_ms must be a whole number from 1 to 60000")
            })?,
    };
    match q.get("wait").map(String::as_str) {
        None | Some("false") => Ok(None),
        Some("true") => Ok(Some(Duration::from_millis(timeout))),
        Some(_) => Err(ApiError::invalid("wait must be true or false")),
    }
}

fn submitted_reply(s: &Submitted) -> Response {
    status_reply(&s.gid, s.status, s.reason.as_deref())
}

fn status_reply(gid: &str, status: SagaStatus, reason: Option<&str>) -> Response {
    if status.is_terminal() {
        (
            StatusCode::OK,
            Json(json!({ "gid": gid, "status": status.as_str(), "reason": reason })),
        )
            .into_response()
    } else {
        (
            StatusCode::ACCEPTED,
            Json(json!({ "gid": gid, "status": status.as_str() })),
        )
            .into_response()
    }
}

async fn wait_reply(
    engine: &Engine,
    s: Submitted,
    wait: Option<Duration>,
) -> Result<Response, ApiError> {
    if let Some(timeout) = wait {
        if let Some(view) = engine.wait(&s.gid, timeout).await? {
            return Ok(status_reply(&view.gid, view.status, view.reason.as_deref()));
        }
        let now = engine.status(&s.gid).await?;
        if let Some(v) = now {
            return Ok(status_reply(&v.gid, v.status, v.reason.as_deref()));
        }
    }
    Ok(submitted_reply(&s))
}

async fn submit_order(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    let order: OrderRequest = parse_body(&body)?;
    let wait = wait_params(&q)?;
    let gid = format!("order-{}", order.order_id);
    let submitted = api.engine.submit::<SubmitOrder>(&gid, &order).await?;
    wait_reply(&api.engine, submitted, wait).await
}

async fn pay_order(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    let pay: PayRequest = parse_body(&body)?;
    let wait = wait_params(&q)?;
    let gid = format!("pay-{}", pay.order_id);
    // A repeat returns the same saga whatever happened to the order since.
    if api.engine.status(&gid).await?.is_some() {
        let s = api.engine.submit::<PayOrder>(&gid, &pay).await?;
        return wait_reply(&api.engine, s, wait).await;
    }
    let submit_gid = format!("order-{}", pay.order_id);
    let submit = api.engine.status(&submit_gid).await?;
    let order = read_order(&api.services.order, &pay.order_id).await?;
    let order = match (submit, order) {
        (None, None) => {
            return Err(ApiError::not_found(format!(
                "unknown order {}",
                pay.order_id
            )));
        }
        (Some(v), _) if v.status != SagaStatus::Succeeded => {
            return Err(ApiError::conflict(format!(
                "order {} cannot be paid: its submitOrder saga is {}",
                pay.order_id, v.status
            )));
        }
        (None, Some(_)) => {
            return Err(ApiError::conflict(format!(
                "order {} has no submitOrder saga",
                pay.order_id
            )));
        }
        (Some(_), None) => {
            return Err(ApiError::not_found(format!(
                "unknown order {}",
                pay.order_id
            )));
        }
        (Some(_), Some(order)) => order,
    };
    let status = order["status"].as_str().unwrap_or_default();
    if status != "created" && status != "paid" {
        return Err(ApiError::conflict(format!(
            "order {} is {status}; only created or paid orders can be paid",
            pay.order_id
        )));
    }
    let s = api.engine.submit::<PayOrder>(&gid, &pay).await?;
    wait_reply(&api.engine, s, wait).await
}

fn parse_id(name: &str, raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .map_err(|_| ApiError::bad_request(format!("{name} must be a whole number, got `{raw}`")))
}

/// Reads an order row as the API shows it.
pub async fn read_order(db: &Db, order_id: &str) -> Result<Option<Value>, sqlx::Error> {
    const SQL: &str = "SELECT order_id, user_id, product_id, product_count, amount_cents, coupon_id, status FROM orders WHERE order_id = $1";
    type Row = (String, i64, i64, i64, i64, Option<i64>, String);
    let row: Option<Row> = match db {
        Db::Sqlite(p) => sqlx::query_as(SQL).bind(order_id).fetch_optional(p).await?,
        Db::Postgres(p) => sqlx::query_as(SQL).bind(order_id).fetch_optional(p).await?,
    };
    Ok(row.map(
        |(order_id, user_id, product_id, product_count, amount_cents, coupon_id, status)| {
            json!({
                "order_id": order_id, "user_id": user_id, "product_id": product_id,
                "product_count": product_count, "amount_cents": amount_cents,
                "coupon_id": coupon_id, "status": status,
            })
        },
    ))
}

/// Reads a product's stock.
pub async fn read_stock(db: &Db, product_id: i64) -> Result<Option<i64>, sqlx::Error> {
    const SQL: &str = "SELECT stock FROM stock WHERE product_id = $1";
    match db {
        Db::Sqlite(p) => {
            sqlx::query_scalar(SQL)
                .bind(product_id)
                .fetch_optional(p)
                .await
        }
        Db::Postgres(p) => {
            sqlx::query_scalar(SQL)
                .bind(product_id)
                .fetch_optional(p)
                .await
        }
    }
}

/// Reads a coupon as `(user_id, used)`.
pub async fn read_coupon(db: &Db, coupon_id: i64) -> Result<Option<(i64, bool)>, sqlx::Error> {
    const SQL: &str = "SELECT user_id, used FROM coupons WHERE coupon_id = $1";
    let row: Option<(i64, i64)> = match db {
        Db::Sqlite(p) => {
            sqlx::query_as(SQL)
                .bind(coupon_id)
                .fetch_optional(p)
                .await?
        }
        Db::Postgres(p) => {
            sqlx::query_as(SQL)
                .bind(coupon_id)
                .fetch_optional(p)
                .await?
        }
    };
    Ok(row.map(|(u, used)| (u, used != 0)))
}

/// Reads a payment as `(amount_cents, status)`.
pub async fn read_payment(db: &Db, order_id: &str) -> Result<Option<(i64, String)>, sqlx::Error> {
    const SQL: &str = "SELECT amount_cents, status FROM payments WHERE order_id = $1";
    match db {
        Db::Sqlite(p) => sqlx::query_as(SQL).bind(order_id).fetch_optional(p).await,
        Db::Postgres(p) => sqlx::query_as(SQL).bind(order_id).fetch_optional(p).await,
    }
}

async fn get_order(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match read_order(&api.services.order, &id).await? {
        Some(o) => Ok(Json(o).into_response()),
        None => Err(ApiError::not_found(format!("unknown order {id}"))),
    }
}

async fn get_stock(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id("product_id", &id)?;
    match read_stock(&api.services.stock, id).await? {
        Some(stock) => Ok(Json(json!({ "product_id": id, "stock": stock })).into_response()),
        None => Err(ApiError::not_found(format!("unknown product {id}"))),
    }
}

async fn get_coupon(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id("coupon_id", &id)?;
    match read_coupon(&api.services.coupon, id).await? {
        Some((user, used)) => {
            Ok(Json(json!({ "coupon_id": id, "user_id": user, "used": used })).into_response())
        }
        None => Err(ApiError::not_found(format!("unknown coupon {id}"))),
    }
}

async fn get_payment(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match read_payment(&api.services.payment, &id).await? {
        Some((amount, status)) => Ok(Json(
            json!({ "order_id": id, "amount_cents": amount, "status": status }),
        )
        .into_response()),
        None => Err(ApiError::not_found(format!("order {id} has no payment"))),
    }
}

/// Formats ms since the epoch as RFC 3339 UTC with milliseconds.
pub fn timestamp(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The JSON view of a saga.
pub fn saga_json(v: &SagaView) -> Value {
    json!({
        "gid": v.gid,
        "saga": v.saga,
        "status": v.status.as_str(),
        "reason": v.reason,
        "steps": v.steps.iter().map(|s| json!({
            "name": s.name,
            "status": s.status.as_str(),
            "attempts": s.attempts,
            "compensate_attempts": s.compensate_attempts,
            "last_error": s.last_error,
        })).collect::<Vec<_>>(),
        "created_at": timestamp(v.created_at),
        "updated_at": timestamp(v.updated_at),
    })
}

async fn get_saga(State(api): State<Api>, Path(gid): Path<String>) -> Result<Response, ApiError> {
    match api.engine.status(&gid).await? {
        Some(v) => Ok(Json(saga_json(&v)).into_response()),
        None => Err(ApiError::not_found(format!("no saga with gid {gid}"))),
    }
}

async fn list_sagas(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let status = match q.get("status") {
        None => None,
        Some(s) => Some(SagaStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown status `{s}`; one of running, compensating, succeeded, compensated, stuck"
            ))
        })?),
    };
    let limit = match q.get("limit") {
        None => 50,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::invalid("limit must be a whole number from 1 to 1000"))?,
    };
    let rows = api.engine.list(status, limit).await?;
    let sagas: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "gid": r.gid, "saga": r.saga, "status": r.status.as_str(), "reason": r.reason,
                "created_at": timestamp(r.created_at), "updated_at": timestamp(r.updated_at),
            })
        })
        .collect();
    Ok(Json(json!({ "sagas": sagas })).into_response())
}

fn authorize(api: &Api, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &api.admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "operator actions are disabled: start serve with --admin-token",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(token.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong operator token (Authorization: Bearer TOKEN)",
        ));
    }
    Ok(())
}

async fn retry_saga(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(gid): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&api, &headers)?;
    api.engine.retry(&gid).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "gid": gid, "action": "retry" })),
    )
        .into_response())
}

async fn compensate_saga(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(gid): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&api, &headers)?;
    api.engine.compensate(&gid).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "gid": gid, "action": "compensate" })),
    )
        .into_response())
}

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
    metrics::gauge!("saga_engine_driving").set(api.engine.driving() as f64);
    let body = api.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
