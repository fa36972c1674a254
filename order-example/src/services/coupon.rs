//! The coupon service, step `coupon_use`: `couponUse` marks the order's coupon used when it
//! belongs to the buyer and is unused, `couponUseRevert` makes it unused again. Both run in the
//! coupon database inside the barrier (docs/semantics.md). Two orders racing for one coupon:
//! the conditional update lets exactly one of them have it.

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

/// The coupon service's endpoints, on its database.
pub fn router(db: Db, faults: &Arc<Faults>) -> Router {
    Router::new()
        .route(
            "/api/busi/couponUse",
            endpoint::<OrderRequest>(Point::CouponUse, faults, post(coupon_use)),
        )
        .route(
            "/api/busi/couponUseRevert",
            endpoint::<OrderRequest>(Point::CouponUseRevert, faults, post(coupon_use_revert)),
        )
        .with_state(db)
}

/// `POST /api/busi/couponUse`, the action.
async fn coupon_use(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(order): Valid<OrderRequest>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(mark_used(tx, order)))
        .await
}

/// `POST /api/busi/couponUseRevert`, the undo.
async fn coupon_use_revert(
    State(db): State<Db>,
    saga: SagaHeaders,
    Valid(order): Valid<OrderRequest>,
) -> Response {
    db.call(&saga, move |tx| Box::pin(mark_unused(tx, order)))
        .await
}

/// Marks the order's coupon used by the order; a business failure when the coupon is unknown,
/// belongs to someone else or is used already. An order without a coupon changes nothing.
pub async fn mark_used(mut tx: Tx<'_>, order: OrderRequest) -> Result<(), StepError> {
    let Some(coupon_id) = order.coupon_id else {
        return Ok(());
    };
    let marked = sql(r"
        UPDATE coupons SET used = 1, order_id = $3
        WHERE coupon_id = $1 AND user_id = $2 AND used = 0")
    .bind(coupon_id)
    .bind(order.user_id)
    .bind(&order.order_id)
    .execute(&mut tx)
    .await?;
    if marked == 1 {
        return Ok(());
    }
    let reason = match find(&mut tx, coupon_id).await? {
        None => format!("unknown coupon {coupon_id}"),
        Some((owner, _)) if owner != order.user_id => {
            format!(
                "coupon {coupon_id} does not belong to user {}",
                order.user_id
            )
        }
        Some(_) => format!("coupon {coupon_id} is already used"),
    };
    Err(StepError::failure(reason))
}

/// Makes the order's coupon unused again, if this order holds it.
pub async fn mark_unused(mut tx: Tx<'_>, order: OrderRequest) -> Result<(), StepError> {
    let Some(coupon_id) = order.coupon_id else {
        return Ok(());
    };
    sql(r"
        UPDATE coupons SET used = 0, order_id = NULL
        WHERE coupon_id = $1 AND order_id = $2")
    .bind(coupon_id)
    .bind(&order.order_id)
    .execute(&mut tx)
    .await?;
    Ok(())
}

/// A coupon's owner and whether it is used; `None` for an unknown coupon.
pub async fn find<'e>(
    on: impl Into<Target<'e>>,
    coupon_id: i64,
) -> sqlx::Result<Option<(i64, bool)>> {
    let row: Option<(i64, i64)> = sql(r"
        SELECT user_id, used FROM coupons
        WHERE coupon_id = $1")
    .bind(coupon_id)
    .fetch_optional(on)
    .await?;
    Ok(row.map(|(owner, used)| (owner, used != 0)))
}

/// Gives a coupon to a user, unused, adding the coupon if it is new (the seed).
pub async fn set_owner<'e>(
    on: impl Into<Target<'e>>,
    coupon_id: i64,
    user_id: i64,
) -> sqlx::Result<()> {
    sql(r"
        INSERT INTO coupons (coupon_id, user_id, used, order_id) VALUES ($1, $2, 0, NULL)
        ON CONFLICT (coupon_id)
        DO UPDATE SET user_id = excluded.user_id, used = 0, order_id = NULL")
    .bind(coupon_id)
    .bind(user_id)
    .execute(on)
    .await?;
    Ok(())
}
