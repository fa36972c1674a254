//! `submitOrder` and `payOrder`: each starts a saga, idempotently by the order id, and answers
//! at once or, with `?wait=true`, once the saga is terminal (docs/contract.md, "HTTP" and
//! "Submit replies").

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use saga_core::engine::{Engine, SubmitOptions, Submitted};
use saga_core::http::TRACEPARENT;
use saga_core::machine::SagaStatus;
use saga_core::trace::TraceParent;
use serde_json::json;

use super::{Api, ApiError, Valid};
use crate::model::{OrderRequest, PayRequest};
use crate::saga::{PayOrder, SubmitOrder};
use crate::services::order;

/// `POST /api/busi/submitOrder`: starts the order's `SubmitOrder` saga, gid `order-{order_id}`,
/// continuing the request's `traceparent`.
pub async fn submit_order(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Valid(order): Valid<OrderRequest>,
) -> Result<Response, ApiError> {
    let wait = wait_params(&q)?;
    let gid = format!("order-{}", order.order_id);
    let submitted = api
        .engine
        .submit_with::<SubmitOrder>(&gid, &order, submit_options(&headers))
        .await?;
    wait_reply(&api.engine, submitted, wait).await
}

/// `POST /api/busi/payOrder`: starts the order's `PayOrder` saga, gid `pay-{order_id}`, once
/// its `SubmitOrder` saga has succeeded and the order is `created` or `paid`, continuing the
/// request's `traceparent`.
pub async fn pay_order(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Valid(pay): Valid<PayRequest>,
) -> Result<Response, ApiError> {
    let wait = wait_params(&q)?;
    let gid = format!("pay-{}", pay.order_id);
    let options = submit_options(&headers);
    // A repeat returns the same saga whatever happened to the order since.
    if api.engine.status(&gid).await?.is_some() {
        let s = api
            .engine
            .submit_with::<PayOrder>(&gid, &pay, options)
            .await?;
        return wait_reply(&api.engine, s, wait).await;
    }
    let submit_gid = format!("order-{}", pay.order_id);
    let submit = api.engine.status(&submit_gid).await?;
    let order = order::find(&api.services.order, &pay.order_id).await?;
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
    if order.status != "created" && order.status != "paid" {
        return Err(ApiError::conflict(format!(
            "order {} is {}; only created or paid orders can be paid",
            pay.order_id, order.status
        )));
    }
    let s = api
        .engine
        .submit_with::<PayOrder>(&gid, &pay, options)
        .await?;
    wait_reply(&api.engine, s, wait).await
}

/// The submit's options: the request's `traceparent`, when it has a valid one (an invalid one
/// is ignored, as W3C Trace Context asks: the saga starts a trace of its own).
fn submit_options(headers: &HeaderMap) -> SubmitOptions {
    let traceparent = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceParent>().ok());
    SubmitOptions::new().traceparent(traceparent)
}

/// `wait` and `timeout_ms` query parameters: how long to wait for a terminal status, if at all.
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

/// 200 `{"gid", "status", "reason"}` for a terminal saga, else 202 `{"gid", "status"}`.
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

/// The reply to a submit: its status now, or after waiting up to `wait` for a terminal one.
async fn wait_reply(
    engine: &Engine,
    s: Submitted,
    wait: Option<Duration>,
) -> Result<Response, ApiError> {
    if let Some(timeout) = wait {
        // 200 with the terminal view, or 202 with the view at the deadline.
        let view = engine.wait(&s.gid, timeout).await?.into_view();
        return Ok(status_reply(&view.gid, view.status, view.reason.as_deref()));
    }
    Ok(status_reply(&s.gid, s.status, s.reason.as_deref()))
}
