//! The payment service. Step `pay_create`: `payCreate` creates the order's payment document,
//! `pending`, and `payCreateRevert` cancels it. Step `payment_capture`, the pivot of the pay
//! saga: `paymentCapture` turns a pending payment `paid`. Each runs in the payment database
//! inside the barrier (docs/semantics.md).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use saga_core::StepError;
use saga_core::http::SagaHeaders;
use saga_core::store::now_ms;

use super::endpoint;
use crate::api::Valid;
use crate::db::{Db, Target, Tx, sql};
use crate::faults::{Faults, Point};
use crate::model::{OrderRequest, PayRequest};

/// The payment service's endpoints, on its database.
pub fn router(db: Db, faults: &Arc<Faults>) -> Router {
    Router::new()
        .route(
            "/api/busi/payCreate",
            endpoint::<OrderRequest>(Point::PaymentCreate, faults, post(pay_create)),
        )
        .route(
            "/api/busi/payCreateRevert",
            endpoint::<OrderRequest>(Point::PaymentCreateRevert, faults, post(pay_create_revert)),
        )
        .route(
            "/api/busi/paymentCapture",
            endpoint::<PayRequest>(Point::PaymentCapture, faults, post(payment_capture)),
        )
        .with_state(db)
}

/// `POST /api/busi/payCreate`, the action.
async fn pay_create(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(order): Valid<OrderRequest>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(create(tx, order))).await
}

/// `POST /api/busi/payCreateRevert`, the undo.
async fn pay_create_revert(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(order): Valid<OrderRequest>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(cancel(tx, order))).await
}

/// `POST /api/busi/paymentCapture`, the pivot of the pay saga.
async fn payment_capture(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(pay): Valid<PayRequest>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(capture(tx, pay))).await
}

/// Creates the order's payment document, `pending`, for the order's amount. An order id seen
/// before keeps its document.
pub async fn create(mut tx: Tx<'_>, order: OrderRequest) -> Result<(), StepError> {
    sql(r"
        INSERT INTO payments (order_id, amount_cents, status, created_at, updated_at)
        VALUES ($1, $2, 'pending', $3, $3)
        ON CONFLICT (order_id) DO NOTHING")
    .bind(&order.order_id)
    .bind(order.amount_cents)
    .bind(now_ms())
    .execute(&mut tx)
    .await?;
    Ok(())
}

/// Cancels the order's payment, if it is still `pending`.
pub async fn cancel(mut tx: Tx<'_>, order: OrderRequest) -> Result<(), StepError> {
    sql(r"
        UPDATE payments SET status = 'cancelled', updated_at = $2
        WHERE order_id = $1 AND status = 'pending'")
    .bind(&order.order_id)
    .bind(now_ms())
    .execute(&mut tx)
    .await?;
    Ok(())
}

/// Captures the order's payment: `pending` becomes `paid`, `paid` stays; a business failure
/// when there is no payment or it is cancelled.
pub async fn capture(mut tx: Tx<'_>, pay: PayRequest) -> Result<(), StepError> {
    let status = match find(&mut tx, &pay.order_id).await? {
        None => {
            return Err(StepError::failure(format!(
                "order {} has no payment",
                pay.order_id
            )));
        }
        Some((_, status)) => status,
    };
    match status.as_str() {
        "cancelled" => Err(StepError::failure(format!(
            "the payment of order {} is cancelled",
            pay.order_id
        ))),
        "paid" => Ok(()),
        _ => {
            sql(r"
                UPDATE payments SET status = 'paid', updated_at = $2
                WHERE order_id = $1 AND status = 'pending'")
            .bind(&pay.order_id)
            .bind(now_ms())
            .execute(&mut tx)
            .await?;
            Ok(())
        }
    }
}

/// The order's payment as `(amount_cents, status)`; `None` when it has none.
pub async fn find<'e>(
    on: impl Into<Target<'e>>,
    order_id: &str,
) -> sqlx::Result<Option<(i64, String)>> {
    sql(r"
        SELECT amount_cents, status FROM payments
        WHERE order_id = $1")
    .bind(order_id)
    .fetch_optional(on)
    .await
}
