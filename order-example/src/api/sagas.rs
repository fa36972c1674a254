//! The sagas as the engine stores them: one saga's view with its steps, the listing, and the
//! operator actions `retry` and `compensate` (docs/contract.md, "Operator actions, precisely"
//! and "Listing").

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use saga_core::engine::SagaView;
use saga_core::machine::SagaStatus;
use serde_json::{Value, json};

use super::{Api, ApiError};

/// `GET /api/sagas/{gid}`.
pub async fn view(State(api): State<Api>, Path(gid): Path<String>) -> Result<Response, ApiError> {
    match api.engine.status(&gid).await? {
        Some(v) => Ok(Json(saga_json(&v)).into_response()),
        None => Err(ApiError::not_found(format!("no saga with gid {gid}"))),
    }
}

/// `GET /api/sagas?status=S&limit=N`: newest first.
pub async fn list(
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
            // An unfinished saga of a definition this release does not know waits for an
            // engine that does (README, "Deploying a changed saga").
            let not_driven =
                (!r.status.is_terminal() && !api.engine.knows(&r.fingerprint)).then(|| {
                    format!(
                        "no engine of this release knows its definition {}",
                        r.fingerprint
                    )
                });
            json!({
                "gid": r.gid, "saga": r.saga, "status": r.status.as_str(), "reason": r.reason,
                "created_at": timestamp(r.created_at), "updated_at": timestamp(r.updated_at),
                "fingerprint": r.fingerprint, "not_driven": not_driven,
            })
        })
        .collect();
    let unknown: Vec<Value> = api
        .engine
        .unknown_definitions()
        .await?
        .iter()
        .map(|u| json!({ "saga": u.saga, "fingerprint": u.fingerprint, "instances": u.instances }))
        .collect();
    Ok(Json(json!({ "sagas": sagas, "unknown_definitions": unknown })).into_response())
}

/// `POST /api/sagas/{gid}/retry`: wakes the saga now; a stuck one gets a fresh attempt budget.
pub async fn retry(
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

/// `POST /api/sagas/{gid}/compensate`: turns a saga that has not passed its pivot to
/// compensation.
pub async fn compensate(
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

/// Operator actions need the operator token: 403 when none is configured or when a browser
/// sent the request from another origin (a present, foreign `Origin` header), 401 when the
/// request's bearer token is missing or wrong (compared in constant time).
fn authorize(api: &Api, headers: &HeaderMap) -> Result<(), ApiError> {
    if !api.auth.is_enabled() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "operator actions are disabled: start serve with --admin-token",
        ));
    }
    if !api.auth.origin_allowed(headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "operator actions are refused from another origin",
        ));
    }
    if !api.auth.check_bearer(headers) {
        tracing::warn!("operator action refused: missing or wrong operator token");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong operator token (Authorization: Bearer TOKEN)",
        ));
    }
    Ok(())
}

/// The JSON view of a saga.
fn saga_json(v: &SagaView) -> Value {
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
            "output": s.output,
        })).collect::<Vec<_>>(),
        "created_at": timestamp(v.created_at),
        "updated_at": timestamp(v.updated_at),
    })
}

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds.
fn timestamp(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
