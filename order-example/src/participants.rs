//! The four participant services (order, stock, coupon, payment) as axum routes. Every
//! handler's local work runs inside the sub-transaction barrier, in the service's own database,
//! in the barrier's transaction; the crash-before-commit fault fires at the end of the work.

use std::sync::Arc;
use tracing::Instrument;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use saga_core::Op;
use saga_core::barrier::{Barrier, BarrierError, BarrierOutcome};
use saga_core::http::SagaHeaders;
use saga_core::store::now_ms;

use crate::api::{ApiError, parse_body};
use crate::db::{Db, Services};
use crate::faults::{Before, Faults, Point};
use crate::model::{OrderRequest, PayRequest};

/// The business code of each endpoint, written once for both dialects (the SQL uses `$n`
/// placeholders, which SQLite and PostgreSQL both accept).
macro_rules! business {
    ($conn:expr, $point:expr, $body:expr) => {{
        let conn = $conn;
        let now = now_ms();
        let result: Result<(), Refusal> = match ($point, $body) {
            (Point::OrderCreate, Body::Order(o)) => {
                sqlx::query("INSERT INTO orders (order_id, user_id, product_id, product_count, amount_cents, coupon_id, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'created', $7, $7) ON CONFLICT (order_id) DO NOTHING")
                    .bind(&o.order_id)
                    .bind(o.user_id)
                    .bind(o.product_id)
                    .bind(o.product_count)
                    .bind(o.amount_cents)
                    .bind(o.coupon_id)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
            (Point::OrderCreateRevert, Body::Order(o)) => {
                sqlx::query("UPDATE orders SET status = 'cancelled', updated_at = $2 WHERE order_id = $1 AND status = 'created'")
                    .bind(&o.order_id)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
            (Point::StockDeduct, Body::Order(o)) => {
                let done = sqlx::query("UPDATE stock SET stock = stock - $2 WHERE product_id = $1 AND stock >= $2")
                    .bind(o.product_id)
                    .bind(o.product_count)
                    .execute(&mut *conn)
                    .await?;
                if done.rows_affected() == 1 {
                    Ok(())
                } else {
                    let known: Option<i64> = sqlx::query_scalar("SELECT stock FROM stock WHERE product_id = $1")
                        .bind(o.product_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                    Err(Refusal::Failure(match known {
                        Some(left) => format!("insufficient stock for product {}: {left} left, {} wanted", o.product_id, o.product_count),
                        None => format!("unknown product {}", o.product_id),
                    }))
                }
            }
            (Point::StockDeductRevert, Body::Order(o)) => {
                sqlx::query("UPDATE stock SET stock = stock + $2 WHERE product_id = $1")
                    .bind(o.product_id)
                    .bind(o.product_count)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
            (Point::CouponUse, Body::Order(o)) => match o.coupon_id {
                None => Ok(()),
                Some(coupon) => {
                    let done = sqlx::query("UPDATE coupons SET used = 1, order_id = $3 WHERE coupon_id = $1 AND user_id = $2 AND used = 0")
                        .bind(coupon)
                        .bind(o.user_id)
                        .bind(&o.order_id)
                        .execute(&mut *conn)
                        .await?;
                    if done.rows_affected() == 1 {
                        Ok(())
                    } else {
                        let owner: Option<i64> = sqlx::query_scalar("SELECT user_id FROM coupons WHERE coupon_id = $1")
                            .bind(coupon)
                            .fetch_optional(&mut *conn)
                            .await?;
                        Err(Refusal::Failure(match owner {
                            None => format!("unknown coupon {coupon}"),
                            Some(u) if u != o.user_id => format!("coupon {coupon} does not belong to user {}", o.user_id),
                            Some(_) => format!("coupon {coupon} is already used"),
                        }))
                    }
                }
            },
            (Point::CouponUseRevert, Body::Order(o)) => {
                if let Some(coupon) = o.coupon_id {
                    sqlx::query("UPDATE coupons SET used = 0, order_id = NULL WHERE coupon_id = $1 AND order_id = $2")
                        .bind(coupon)
                        .bind(&o.order_id)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            }
            (Point::PaymentCreate, Body::Order(o)) => {
                sqlx::query("INSERT INTO payments (order_id, amount_cents, status, created_at, updated_at) VALUES ($1, $2, 'pending', $3, $3) ON CONFLICT (order_id) DO NOTHING")
                    .bind(&o.order_id)
                    .bind(o.amount_cents)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
            (Point::PaymentCreateRevert, Body::Order(o)) => {
                sqlx::query("UPDATE payments SET status = 'cancelled', updated_at = $2 WHERE order_id = $1 AND status = 'pending'")
                    .bind(&o.order_id)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
            (Point::PaymentCapture, Body::Pay(p)) => {
                let status: Option<String> = sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1")
                    .bind(&p.order_id)
                    .fetch_optional(&mut *conn)
                    .await?;
                match status.as_deref() {
                    None => Err(Refusal::Failure(format!("order {} has no payment", p.order_id))),
                    Some("cancelled") => Err(Refusal::Failure(format!("the payment of order {} is cancelled", p.order_id))),
                    Some("paid") => Ok(()),
                    Some(_) => {
                        sqlx::query("UPDATE payments SET status = 'paid', updated_at = $2 WHERE order_id = $1 AND status = 'pending'")
                            .bind(&p.order_id)
                            .bind(now)
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    }
                }
            }
            (Point::OrderMarkPaid, Body::Pay(p)) => {
                let done = sqlx::query("UPDATE orders SET status = 'paid', updated_at = $2 WHERE order_id = $1 AND status IN ('created', 'paid')")
                    .bind(&p.order_id)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                if done.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(Refusal::Failure(format!("order {} cannot be marked paid", p.order_id)))
                }
            }
            _ => Err(Refusal::Failure("request body does not fit the endpoint".to_string())),
        };
        result
    }};
}
pub(crate) use business;

/// Shared state of the participant routes.
#[derive(Clone)]
pub struct Participants {
    /// The services' databases.
    pub services: Services,
    /// Configured faults.
    pub faults: Arc<Faults>,
}

/// The request a participant endpoint handles.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Order(OrderRequest),
    Pay(PayRequest),
}

impl Body {
    fn order_id(&self) -> &str {
        match self {
            Body::Order(o) => &o.order_id,
            Body::Pay(p) => &p.order_id,
        }
    }
}

/// Why the business code refused.
pub(crate) enum Refusal {
    Failure(String),
    Db(sqlx::Error),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Failure(reason) => f.write_str(reason),
            Refusal::Db(e) => write!(f, "database error: {e}"),
        }
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        Refusal::Db(e)
    }
}

/// Endpoint table: path, fault point, persisted branch name, op.
const ENDPOINTS: [(&str, Point, &str, Op); 10] = [
    (
        "/api/busi/orderCreate",
        Point::OrderCreate,
        "order_create",
        Op::Action,
    ),
    (
        "/api/busi/orderCreateRevert",
        Point::OrderCreateRevert,
        "order_create",
        Op::Compensate,
    ),
    (
        "/api/busi/stockDeduct",
        Point::StockDeduct,
        "stock_deduct",
        Op::Action,
    ),
    (
        "/api/busi/stockDeductRevert",
        Point::StockDeductRevert,
        "stock_deduct",
        Op::Compensate,
    ),
    (
        "/api/busi/couponUse",
        Point::CouponUse,
        "coupon_use",
        Op::Action,
    ),
    (
        "/api/busi/couponUseRevert",
        Point::CouponUseRevert,
        "coupon_use",
        Op::Compensate,
    ),
    (
        "/api/busi/payCreate",
        Point::PaymentCreate,
        "pay_create",
        Op::Action,
    ),
    (
        "/api/busi/payCreateRevert",
        Point::PaymentCreateRevert,
        "pay_create",
        Op::Compensate,
    ),
    (
        "/api/busi/paymentCapture",
        Point::PaymentCapture,
        "payment_capture",
        Op::Action,
    ),
    (
        "/api/busi/orderMarkPaid",
        Point::OrderMarkPaid,
        "order_mark_paid",
        Op::Action,
    ),
];

/// The participant routes.
pub fn router(state: Participants) -> Router {
    let mut router = Router::new();
    for (path, point, branch, op) in ENDPOINTS {
        router = router.route(
            path,
            post(
                move |State(p): State<Participants>, headers: SagaHeaders, body: Bytes| async move {
                    handle(p, point, branch, op, headers, body).await
                },
            ),
        );
    }
    router.with_state(state)
}

async fn handle(
    p: Participants,
    point: Point,
    branch: &'static str,
    op: Op,
    headers: SagaHeaders,
    body: Bytes,
) -> Result<Response, ApiError> {
    if headers.branch != branch {
        return Err(ApiError::bad_request(format!(
            "Saga-Branch `{}` does not belong to this endpoint; expected `{branch}`",
            headers.branch
        )));
    }
    if headers.op != op {
        return Err(ApiError::bad_request(format!(
            "Saga-Op `{}` does not belong to this endpoint; expected `{op}`",
            headers.op
        )));
    }
    let body = match point {
        Point::PaymentCapture | Point::OrderMarkPaid => Body::Pay(parse_body::<PayRequest>(&body)?),
        _ => Body::Order(parse_body::<OrderRequest>(&body)?),
    };
    match p.faults.before(point).await {
        Before::Proceed => {}
        Before::Error => return Err(ApiError::internal("injected error")),
        Before::Fail(reason) => return Err(ApiError::conflict(reason)),
    }
    let mut barrier = Barrier::new(headers.gid.clone(), branch, op)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let db = match point {
        Point::OrderCreate | Point::OrderCreateRevert | Point::OrderMarkPaid => &p.services.order,
        Point::StockDeduct | Point::StockDeductRevert => &p.services.stock,
        Point::CouponUse | Point::CouponUseRevert => &p.services.coupon,
        _ => &p.services.payment,
    };
    let span = tracing::info_span!("participant", gid = %headers.gid, point = point.name(), order_id = body.order_id());
    async move {
        let outcome = run(db, &mut barrier, point, &body, &p.faults).await?;
        p.faults.crash_after_commit(point);
        let result = match outcome {
            BarrierOutcome::Ran(()) => "ran",
            BarrierOutcome::Duplicate => "duplicate",
            BarrierOutcome::NullCompensation => "null_compensation",
            BarrierOutcome::Cancelled => {
                return Err(ApiError::conflict(
                    "compensated before the action ran".to_string(),
                ));
            }
        };
        tracing::debug!(result, "participant call done");
        Ok(axum::Json(serde_json::json!({ "result": result })).into_response())
    }
    .instrument(span)
    .await
}

fn barrier_error(e: BarrierError<Refusal>) -> ApiError {
    match e {
        BarrierError::Business(Refusal::Failure(reason)) => ApiError::conflict(reason),
        BarrierError::Business(Refusal::Db(e)) => {
            ApiError::unavailable(format!("database error: {e}"))
        }
        other => ApiError::unavailable(other.to_string()),
    }
}

/// Runs the barrier and the business code of `point` in one local transaction (the barrier's
/// own); fires the crash-before-commit fault after the barrier and the work, before the commit,
/// whether the business code ran or the barrier absorbed the call.
async fn run(
    db: &Db,
    barrier: &mut Barrier,
    point: Point,
    body: &Body,
    faults: &Faults,
) -> Result<BarrierOutcome<()>, ApiError> {
    let body = body.clone();
    let outcome = match db {
        Db::Sqlite(pool) => {
            barrier
                .call_with_hook::<sqlx::Sqlite, _, _, _, _>(
                    pool,
                    move |conn| Box::pin(async move { business!(conn, point, &body) }),
                    |_| faults.crash_before_commit(point),
                )
                .await
        }
        Db::Postgres(pool) => {
            barrier
                .call_with_hook::<sqlx::Postgres, _, _, _, _>(
                    pool,
                    move |conn| Box::pin(async move { business!(conn, point, &body) }),
                    |_| faults.crash_before_commit(point),
                )
                .await
        }
    };
    outcome.map_err(barrier_error)
}
