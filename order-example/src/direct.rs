//! The no-saga baseline of `bench --mode direct`: the same four business steps and their undos
//! as the participant endpoints, on the same databases with the same SQL (the `business!`
//! macro), but in a plain local transaction each: no saga store, no barrier, no retries, no
//! faults. Whoever calls them is the coordinator (the bench client, a naive one).
//!
//! `POST /api/direct/{orderCreate,stockDeduct,couponUse,payCreate}` and their `*Revert`
//! endpoints take the submitOrder body and reply 200 `{"result": "ran"}`, 409 `{"error":
//! reason}` on a business failure (the transaction is rolled back), 503 on a database error.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use saga_core::store::now_ms;

use crate::api::{ApiError, parse_body};
use crate::db::{Db, Services};
use crate::faults::Point;
use crate::model::OrderRequest;
use crate::participants::{Body, Refusal, business};

/// Path and business step of each baseline endpoint.
const ENDPOINTS: [(&str, Point); 8] = [
    ("/api/direct/orderCreate", Point::OrderCreate),
    ("/api/direct/orderCreateRevert", Point::OrderCreateRevert),
    ("/api/direct/stockDeduct", Point::StockDeduct),
    ("/api/direct/stockDeductRevert", Point::StockDeductRevert),
    ("/api/direct/couponUse", Point::CouponUse),
    ("/api/direct/couponUseRevert", Point::CouponUseRevert),
    ("/api/direct/payCreate", Point::PaymentCreate),
    ("/api/direct/payCreateRevert", Point::PaymentCreateRevert),
];

/// The baseline routes on the services' databases.
pub fn router(services: Services) -> Router {
    let mut router = Router::new();
    for (path, point) in ENDPOINTS {
        router = router.route(
            path,
            post(move |State(s): State<Services>, body: Bytes| async move {
                handle(s, point, body).await
            }),
        );
    }
    router.with_state(services)
}

async fn handle(services: Services, point: Point, body: Bytes) -> Result<Response, ApiError> {
    let body = Body::Order(parse_body::<OrderRequest>(&body)?);
    let db = match point {
        Point::OrderCreate | Point::OrderCreateRevert => &services.order,
        Point::StockDeduct | Point::StockDeductRevert => &services.stock,
        Point::CouponUse | Point::CouponUseRevert => &services.coupon,
        _ => &services.payment,
    };
    let refused = |r: Refusal| match r {
        Refusal::Failure(reason) => ApiError::conflict(reason),
        Refusal::Db(e) => ApiError::unavailable(format!("database error: {e}")),
    };
    // A failed step rolls back with its transaction (dropped uncommitted), like the barrier's.
    match db {
        Db::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            business!(&mut *tx, point, &body).map_err(refused)?;
            tx.commit().await?;
        }
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            business!(&mut *tx, point, &body).map_err(refused)?;
            tx.commit().await?;
        }
    }
    Ok(axum::Json(serde_json::json!({ "result": "ran" })).into_response())
}
