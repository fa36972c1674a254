//! The order service. Step `order_create`: `orderCreate` records the order as `created`,
//! `orderCreateRevert` cancels it. Step `order_mark_paid` of the pay saga: `orderMarkPaid`
//! marks it `paid`. Each runs in the order database inside the barrier (docs/semantics.md).

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
use crate::model::{MarkPaid, OrderId, OrderRequest};

/// The order service's endpoints, on its database.
pub fn router(db: Db, faults: &Arc<Faults>) -> Router {
    Router::new()
        .route(
            "/api/busi/orderCreate",
            endpoint::<OrderRequest>(Point::OrderCreate, faults, post(order_create)),
        )
        .route(
            "/api/busi/orderCreateRevert",
            endpoint::<OrderRequest>(Point::OrderCreateRevert, faults, post(order_create_revert)),
        )
        .route(
            "/api/busi/orderMarkPaid",
            endpoint::<MarkPaid>(Point::OrderMarkPaid, faults, post(order_mark_paid)),
        )
        .with_state(db)
}

/// `POST /api/busi/orderCreate`, the action.
async fn order_create(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(order): Valid<OrderRequest>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(create(tx, order))).await
}

/// `POST /api/busi/orderCreateRevert`, the compensation.
async fn order_create_revert(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(order): Valid<OrderRequest>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(cancel(tx, order))).await
}

/// `POST /api/busi/orderMarkPaid`, the retriable action of the pay saga.
async fn order_mark_paid(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(paid): Valid<MarkPaid>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(mark_paid(tx, paid)))
        .await
}

/// Records the order as `created` and answers with its key. An order id seen before keeps its
/// row: the same order placed again is the same order.
pub async fn create(mut tx: Tx<'_>, order: OrderRequest) -> Result<OrderId, StepError> {
    sql(r"
        INSERT INTO orders (order_id, user_id, product_id, product_count, amount_cents, coupon_id,
                            status, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, 'created', $7, $7)
        ON CONFLICT (order_id) DO NOTHING")
    .bind(&order.order_id)
    .bind(order.user_id)
    .bind(order.product_id)
    .bind(order.product_count)
    .bind(order.amount_cents)
    .bind(order.coupon_id)
    .bind(now_ms())
    .execute(&mut tx)
    .await?;
    Ok(OrderId {
        order_id: order.order_id,
    })
}

/// Cancels the order, if it is still `created`.
pub async fn cancel(mut tx: Tx<'_>, order: OrderRequest) -> Result<(), StepError> {
    sql(r"
        UPDATE orders SET status = 'cancelled', updated_at = $2
        WHERE order_id = $1 AND status = 'created'")
    .bind(&order.order_id)
    .bind(now_ms())
    .execute(&mut tx)
    .await?;
    Ok(())
}

/// Marks the order `paid`, with the payment that paid it when the call names it; a refusal
/// when it is neither `created` nor `paid` (the pay saga retries it, since the payment is
/// captured by then).
pub async fn mark_paid(mut tx: Tx<'_>, paid: MarkPaid) -> Result<(), StepError> {
    let pay = paid.pay;
    let marked = sql(r"
        UPDATE orders SET status = 'paid', payment_id = COALESCE($3, payment_id), updated_at = $2
        WHERE order_id = $1 AND status IN ('created', 'paid')")
    .bind(&pay.order_id)
    .bind(now_ms())
    .bind(paid.payment_id.map(|p| p.0))
    .execute(&mut tx)
    .await?;
    if marked == 1 {
        Ok(())
    } else {
        Err(StepError::failure(format!(
            "order {} cannot be marked paid",
            pay.order_id
        )))
    }
}

/// An order as the order API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Order {
    /// Its id.
    pub order_id: String,
    /// The buyer.
    pub user_id: i64,
    /// The product bought.
    pub product_id: i64,
    /// How many.
    pub product_count: i64,
    /// The price.
    pub amount_cents: i64,
    /// The coupon used, if any.
    pub coupon_id: Option<i64>,
    /// `created`, `cancelled` or `paid`.
    pub status: String,
}

/// The order `order_id`, if it exists.
pub async fn find<'e>(on: impl Into<Target<'e>>, order_id: &str) -> sqlx::Result<Option<Order>> {
    sql(r"
        SELECT order_id, user_id, product_id, product_count, amount_cents, coupon_id, status
        FROM orders
        WHERE order_id = $1")
    .bind(order_id)
    .fetch_optional(on)
    .await
}
