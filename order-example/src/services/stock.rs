//! The stock service, step `stock_deduct`: `stockDeduct` takes an order's count off its
//! product's stock when enough is left, `stockDeductRevert` puts it back. Both run in the stock
//! database inside the barrier, so a repeated call applies once, an undo without its action
//! changes nothing and an action after its undo is refused (docs/semantics.md).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use saga_core::StepError;
use saga_core::http::SagaHeaders;

use super::endpoint;
use crate::api::Valid;
use crate::db::{Db, Target, Tx, sql};
use crate::faults::{Faults, Point};
use crate::model::OrderRequest;

/// The stock service's endpoints, on its database.
pub fn router(db: Db, faults: &Arc<Faults>) -> Router {
    Router::new()
        .route(
            "/api/busi/stockDeduct",
            endpoint::<OrderRequest>(Point::StockDeduct, faults, post(stock_deduct)),
        )
        .route(
            "/api/busi/stockDeductRevert",
            endpoint::<OrderRequest>(Point::StockDeductRevert, faults, post(stock_deduct_revert)),
        )
        .with_state(db)
}

/// `POST /api/busi/stockDeduct`, the action.
async fn stock_deduct(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(order): Valid<OrderRequest>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(deduct(tx, order))).await
}

/// `POST /api/busi/stockDeductRevert`, the undo.
async fn stock_deduct_revert(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(order): Valid<OrderRequest>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(add_back(tx, order)))
        .await
}

/// Takes the order's count off its product's stock; a business failure when too little is
/// left or the product is unknown.
pub async fn deduct(mut tx: Tx<'_>, order: OrderRequest) -> Result<(), StepError> {
    let deducted = sql(r"
        UPDATE stock SET stock = stock - $2
        WHERE product_id = $1 AND stock >= $2")
    .bind(order.product_id)
    .bind(order.product_count)
    .execute(&mut tx)
    .await?;
    if deducted == 1 {
        return Ok(());
    }
    let reason = match level(&mut tx, order.product_id).await? {
        Some(left) => format!(
            "insufficient stock for product {}: {left} left, {} wanted",
            order.product_id, order.product_count
        ),
        None => format!("unknown product {}", order.product_id),
    };
    Err(StepError::failure(reason))
}

/// Puts the order's count back on its product's stock.
pub async fn add_back(mut tx: Tx<'_>, order: OrderRequest) -> Result<(), StepError> {
    sql(r"
        UPDATE stock SET stock = stock + $2
        WHERE product_id = $1")
    .bind(order.product_id)
    .bind(order.product_count)
    .execute(&mut tx)
    .await?;
    Ok(())
}

/// A product's stock; `None` for an unknown product.
pub async fn level<'e>(on: impl Into<Target<'e>>, product_id: i64) -> sqlx::Result<Option<i64>> {
    sql(r"
        SELECT stock FROM stock
        WHERE product_id = $1")
    .bind(product_id)
    .fetch_optional_scalar(on)
    .await
}

/// Sets a product's stock, adding the product if it is new (the seed).
pub async fn set<'e>(on: impl Into<Target<'e>>, product_id: i64, level: i64) -> sqlx::Result<()> {
    sql(r"
        INSERT INTO stock (product_id, stock) VALUES ($1, $2)
        ON CONFLICT (product_id) DO UPDATE SET stock = excluded.stock")
    .bind(product_id)
    .bind(level)
    .execute(on)
    .await?;
    Ok(())
}
