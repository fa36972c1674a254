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
use crate::model::{OrderRequest, PayRequest, Payment, PaymentCancel, PaymentId};

/// The payment service's endpoints, on its database.
pub fn router(db: Db, faults: &Arc<Faults>) -> Router {
    Router::new()
        .route(
            "/api/busi/payCreate",
            endpoint::<OrderRequest>(Point::PaymentCreate, faults, post(pay_create)),
        )
        .route(
            "/api/busi/payCreateRevert",
            endpoint::<PaymentCancel>(Point::PaymentCreateRevert, faults, post(pay_create_revert)),
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

/// `POST /api/busi/payCreateRevert`, the compensation.
async fn pay_create_revert(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(cancel_call): Valid<PaymentCancel>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(cancel(tx, cancel_call)))
        .await
}

/// `POST /api/busi/paymentCapture`, the pivot of the pay saga.
async fn payment_capture(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(pay): Valid<PayRequest>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(capture(tx, pay))).await
}

/// A new payment id: `pay-` and 16 random hex digits.
fn new_payment_id() -> PaymentId {
    PaymentId(format!("pay-{:016x}", rand::random::<u64>()))
}

/// Creates the order's payment document, `pending`, for the order's amount, and answers with
/// its id. An order id seen before keeps its document and its id.
pub async fn create(mut tx: Tx<'_>, order: OrderRequest) -> Result<Payment, StepError> {
    let payment_id: String = sql(r"
        INSERT INTO payments (order_id, payment_id, amount_cents, status, created_at, updated_at)
        VALUES ($1, $2, $3, 'pending', $4, $4)
        ON CONFLICT (order_id) DO UPDATE
        SET payment_id = COALESCE(payments.payment_id, excluded.payment_id)
        RETURNING payment_id")
    .bind(&order.order_id)
    .bind(new_payment_id().0)
    .bind(order.amount_cents)
    .bind(now_ms())
    .fetch_optional_scalar(&mut tx)
    .await?
    .ok_or_else(|| StepError::retry("the payment upsert returned no row"))?;
    Ok(Payment {
        order_id: order.order_id,
        payment_id: PaymentId(payment_id),
    })
}

/// Cancels the order's payment, if it is still `pending`: by its id when the call names it, by
/// the order's id otherwise (the saga lost `payCreate`'s reply, or the caller does not share it).
pub async fn cancel(mut tx: Tx<'_>, call: PaymentCancel) -> Result<(), StepError> {
    match call.payment_id {
        Some(PaymentId(payment_id)) => {
            sql(r"
                UPDATE payments SET status = 'cancelled', updated_at = $3
                WHERE order_id = $1 AND payment_id = $2 AND status = 'pending'")
            .bind(&call.order.order_id)
            .bind(payment_id)
            .bind(now_ms())
            .execute(&mut tx)
            .await?
        }
        None => {
            sql(r"
                UPDATE payments SET status = 'cancelled', updated_at = $2
                WHERE order_id = $1 AND status = 'pending'")
            .bind(&call.order.order_id)
            .bind(now_ms())
            .execute(&mut tx)
            .await?
        }
    };
    Ok(())
}

/// Captures the order's payment: `pending` becomes `paid`, `paid` stays; a business failure
/// when there is no payment or it is cancelled. Answers with the payment.
pub async fn capture(mut tx: Tx<'_>, pay: PayRequest) -> Result<Payment, StepError> {
    let Some((_, status)) = find(&mut tx, &pay.order_id).await? else {
        return Err(StepError::failure(format!(
            "order {} has no payment",
            pay.order_id
        )));
    };
    if status == "cancelled" {
        return Err(StepError::failure(format!(
            "the payment of order {} is cancelled",
            pay.order_id
        )));
    }
    let payment_id: String = sql(r"
        UPDATE payments SET status = 'paid', payment_id = COALESCE(payment_id, $2), updated_at = $3
        WHERE order_id = $1 AND status IN ('pending', 'paid')
        RETURNING payment_id")
    .bind(&pay.order_id)
    .bind(new_payment_id().0)
    .bind(now_ms())
    .fetch_optional_scalar(&mut tx)
    .await?
    .ok_or_else(|| StepError::retry("the payment changed during its capture"))?;
    Ok(Payment {
        order_id: pay.order_id,
        payment_id: PaymentId(payment_id),
    })
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
