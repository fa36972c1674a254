//! The no-saga baseline of `bench --mode direct`: the four business steps and their undos of
//! the participant services, the same functions on the same databases, but each in a plain
//! local transaction: no saga store, no barrier, no retries, no faults. Whoever calls them is
//! the coordinator (the bench client, a naive one).
//!
//! `POST /api/direct/{orderCreate,stockDeduct,couponUse,payCreate}` and their `*Revert`
//! endpoints take the submitOrder body and reply 200 `{"result": "ran"}`, 409 `{"error":
//! reason}` on a business failure (the transaction is rolled back), 503 on a database error.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use saga_core::StepError;
use serde_json::{Value, json};

use crate::api::Valid;
use crate::db::{Db, Tx, Work};
use crate::model::OrderRequest;
use crate::services::{Services, coupon, order, payment, stock};

/// The baseline routes on the services' databases.
pub fn router(services: Services) -> Router {
    Router::new()
        .route(
            "/api/direct/orderCreate",
            post(
                |s: State<Services>, Valid(o): Valid<OrderRequest>| async move {
                    plain(&s.order, move |tx| Box::pin(order::create(tx, o))).await
                },
            ),
        )
        .route(
            "/api/direct/orderCreateRevert",
            post(
                |s: State<Services>, Valid(o): Valid<OrderRequest>| async move {
                    plain(&s.order, move |tx| Box::pin(order::cancel(tx, o))).await
                },
            ),
        )
        .route(
            "/api/direct/stockDeduct",
            post(
                |s: State<Services>, Valid(o): Valid<OrderRequest>| async move {
                    plain(&s.stock, move |tx| Box::pin(stock::deduct(tx, o))).await
                },
            ),
        )
        .route(
            "/api/direct/stockDeductRevert",
            post(
                |s: State<Services>, Valid(o): Valid<OrderRequest>| async move {
                    plain(&s.stock, move |tx| Box::pin(stock::add_back(tx, o))).await
                },
            ),
        )
        .route(
            "/api/direct/couponUse",
            post(
                |s: State<Services>, Valid(o): Valid<OrderRequest>| async move {
                    plain(&s.coupon, move |tx| Box::pin(coupon::mark_used(tx, o))).await
                },
            ),
        )
        .route(
            "/api/direct/couponUseRevert",
            post(
                |s: State<Services>, Valid(o): Valid<OrderRequest>| async move {
                    plain(&s.coupon, move |tx| Box::pin(coupon::mark_unused(tx, o))).await
                },
            ),
        )
        .route(
            "/api/direct/payCreate",
            post(
                |s: State<Services>, Valid(o): Valid<OrderRequest>| async move {
                    plain(&s.payment, move |tx| Box::pin(payment::create(tx, o))).await
                },
            ),
        )
        .route(
            "/api/direct/payCreateRevert",
            post(
                |s: State<Services>, Valid(o): Valid<OrderRequest>| async move {
                    plain(&s.payment, move |tx| Box::pin(payment::cancel(tx, o))).await
                },
            ),
        )
        .with_state(services)
}

/// Runs a business step in a transaction of its own; a failed step rolls back with it, as
/// it would with the barrier.
async fn plain<F>(db: &Db, step: F) -> Result<Json<Value>, StepError>
where
    F: for<'c> FnOnce(Tx<'c>) -> Work<'c, (), StepError>,
{
    db.transaction(step).await?;
    Ok(Json(json!({ "result": "ran" })))
}
