//! Reads of the services' rows: an order, a product's stock, a coupon, an order's payment
//! (docs/contract.md, "HTTP"). Unknown ids are 404, non-numeric ids in a path 400.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Api, ApiError};
use crate::services::{coupon, order, payment, stock};

/// `GET /api/orders/{order_id}`.
pub async fn order(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Some(o) = order::find(&api.services.order, &id).await? else {
        return Err(ApiError::not_found(format!("unknown order {id}")));
    };
    Ok(Json(json!({
        "order_id": o.order_id, "user_id": o.user_id, "product_id": o.product_id,
        "product_count": o.product_count, "amount_cents": o.amount_cents,
        "coupon_id": o.coupon_id, "status": o.status,
    }))
    .into_response())
}

/// `GET /api/stock/{product_id}`.
pub async fn stock(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id("product_id", &id)?;
    match stock::level(&api.services.stock, id).await? {
        Some(stock) => Ok(Json(json!({ "product_id": id, "stock": stock })).into_response()),
        None => Err(ApiError::not_found(format!("unknown product {id}"))),
    }
}

/// `GET /api/coupons/{coupon_id}`.
pub async fn coupon(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id("coupon_id", &id)?;
    match coupon::find(&api.services.coupon, id).await? {
        Some((user, used)) => {
            Ok(Json(json!({ "coupon_id": id, "user_id": user, "used": used })).into_response())
        }
        None => Err(ApiError::not_found(format!("unknown coupon {id}"))),
    }
}

/// `GET /api/payments/{order_id}`.
pub async fn payment(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match payment::find(&api.services.payment, &id).await? {
        Some((amount, status)) => Ok(Json(
            json!({ "order_id": id, "amount_cents": amount, "status": status }),
        )
        .into_response()),
        None => Err(ApiError::not_found(format!("order {id} has no payment"))),
    }
}

/// A numeric id from a path; 400 when it is not a whole number.
fn parse_id(name: &str, raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .map_err(|_| ApiError::bad_request(format!("{name} must be a whole number, got `{raw}`")))
}
