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
use crate::model::{OrderRequest, PaymentCancel};
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
                |s: State<Services>, Valid(o): Valid<PaymentCancel>| async move {
                    plain(&s.payment, move |tx| Box::pin(payment::cancel(tx, o))).await
                },
            ),
        )
        .with_state(services)
}

/// Runs a business step in a transaction of its own; a failed step rolls back with it, as
/// it would with the barrier.
async fn plain<T, F>(db: &Db, step: F) -> Result<Json<Value>, StepError>
where
    F: for<'c> FnOnce(Tx<'c>) -> Work<'c, T, StepError>,
{
    db.transaction(step).await?;
    Ok(Json(json!({ "result": "ran" })))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::router;
    use crate::db::Location;
    use crate::services::{Services, stock};

    #[tokio::test]
    async fn baseline_steps_apply_every_call_with_no_barrier() {
        let dir = saga_testkit::temp_dir();
        let services = Services::open(&Location::Dir(dir.path().to_path_buf()))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/direct", listener.local_addr().unwrap());
        let app = router(services.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let http = reqwest::Client::new();
        let order = |count: i64| {
            json!({ "order_id": "d-1", "user_id": 1, "product_id": 1, "product_count": count,
                    "amount_cents": 100, "coupon_id": null })
        };
        for _ in 0..2 {
            let reply = http
                .post(format!("{url}/stockDeduct"))
                .json(&order(10))
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), 200);
            assert_eq!(
                reply.json::<serde_json::Value>().await.unwrap(),
                json!({ "result": "ran" })
            );
        }
        assert_eq!(stock::level(&services.stock, 1).await.unwrap(), Some(80));
        let reply = http
            .post(format!("{url}/stockDeduct"))
            .json(&order(81))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 409);
        assert_eq!(stock::level(&services.stock, 1).await.unwrap(), Some(80));
    }
}
