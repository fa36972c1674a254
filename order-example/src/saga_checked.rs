//! `SubmitOrder` checked by `saga_core::testing` against the real participant code: every step
//! and compensation runs the services' own business SQL inside the barrier, in process, on the
//! four services' SQLite files, through the single-fault matrix and random schedules; after each
//! run the contract's invariants hold for the order (docs/contract.md, the invariants of
//! `tests/src/invariants.rs` for one order).

use std::path::Path;

use saga_core::testing::{Harness, Outcome, World};
use saga_core::{Barrier, Retry, SagaStatus, StepContext, StepError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::SqlitePool;

use crate::db::{Db, Location, Tx, Work};
use crate::model::{OrderId, OrderRequest, Payment, PaymentCancel};
use crate::saga::{SubmitOrder, SubmitOrderSteps};
use crate::services::{self, Services, coupon, order, payment, stock};

/// The four services' SQLite pools, for steps called in process.
#[derive(Clone)]
struct InProcess {
    order: SqlitePool,
    stock: SqlitePool,
    coupon: SqlitePool,
    payment: SqlitePool,
}

fn pool(db: &Db) -> Result<SqlitePool, String> {
    match db {
        Db::Sqlite(pool) => Ok(pool.clone()),
        Db::Postgres(_) => Err("the check runs on SQLite".into()),
    }
}

/// A compensation's business failure (none of the order example's has one) is in doubt.
fn retry(e: StepError) -> Retry {
    match e {
        StepError::Failure(r) | StepError::Retry(r) => Retry(r),
    }
}

/// An action in the barrier on `pool`, its business code given the transaction as the services'
/// endpoints give it.
async fn action<T, F>(pool: &SqlitePool, ctx: &StepContext, work: F) -> Result<T, StepError>
where
    T: Serialize + DeserializeOwned,
    F: for<'c> FnOnce(Tx<'c>) -> Work<'c, T, StepError> + Send,
{
    Barrier::for_step(ctx)
        .action(pool, move |c| work(Tx::Sqlite(c)))
        .await?
        .into()
}

/// A compensation in the barrier on `pool`, as [`action`] runs an action.
async fn compensation<F>(pool: &SqlitePool, ctx: &StepContext, work: F) -> Result<(), Retry>
where
    F: for<'c> FnOnce(Tx<'c>) -> Work<'c, (), StepError> + Send,
{
    let done = Barrier::for_step(ctx)
        .compensate(pool, move |c| work(Tx::Sqlite(c)))
        .await;
    done.map_err(|e| retry(e.into()))?.into()
}

impl SubmitOrderSteps for InProcess {
    async fn order_create(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
    ) -> Result<OrderId, StepError> {
        let input = input.clone();
        action(&self.order, ctx, move |tx| {
            Box::pin(order::create(tx, input))
        })
        .await
    }

    async fn order_create_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _: Option<OrderId>,
    ) -> Result<(), Retry> {
        let input = input.clone();
        compensation(&self.order, ctx, move |tx| {
            Box::pin(order::cancel(tx, input))
        })
        .await
    }

    async fn stock_deduct(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        let input = input.clone();
        action(&self.stock, ctx, move |tx| {
            Box::pin(stock::deduct(tx, input))
        })
        .await
    }

    async fn stock_deduct_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _: Option<()>,
    ) -> Result<(), Retry> {
        let input = input.clone();
        compensation(&self.stock, ctx, move |tx| {
            Box::pin(stock::add_back(tx, input))
        })
        .await
    }

    async fn coupon_use(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        let input = input.clone();
        action(&self.coupon, ctx, move |tx| {
            Box::pin(coupon::mark_used(tx, input))
        })
        .await
    }

    async fn coupon_use_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _: Option<()>,
    ) -> Result<(), Retry> {
        let input = input.clone();
        compensation(&self.coupon, ctx, move |tx| {
            Box::pin(coupon::mark_unused(tx, input))
        })
        .await
    }

    async fn pay_create(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        created: OrderId,
    ) -> Result<Payment, StepError> {
        let body = input.for_order(created);
        action(&self.payment, ctx, move |tx| {
            Box::pin(payment::create(tx, body))
        })
        .await
    }

    async fn pay_create_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        made: Option<Payment>,
        created: OrderId,
    ) -> Result<(), Retry> {
        let call = PaymentCancel::of(input, created, made);
        compensation(&self.payment, ctx, move |tx| {
            Box::pin(payment::cancel(tx, call))
        })
        .await
    }
}

/// The four services on fresh SQLite files, seeded with the default data set.
struct Shop {
    steps: InProcess,
}

/// The rows of one order across the services: the order's status, the product's stock, the
/// coupon's `used` and `order_id`, the payment's status.
#[derive(Debug)]
struct Rows {
    order: Option<String>,
    stock: i64,
    coupon: (i64, Option<String>),
    payment: Option<String>,
}

impl World for Shop {
    type Steps = InProcess;
    type Snapshot = Rows;

    async fn create(dir: &Path) -> Result<Self, String> {
        let services = Services::open(&Location::Dir(dir.to_path_buf()))
            .await
            .map_err(|e| e.to_string())?;
        let steps = InProcess {
            order: pool(&services.order)?,
            stock: pool(&services.stock)?,
            coupon: pool(&services.coupon)?,
            payment: pool(&services.payment)?,
        };
        Ok(Shop { steps })
    }

    fn steps(&self) -> InProcess {
        self.steps.clone()
    }

    async fn snapshot(&self) -> Result<Rows, String> {
        let s = &self.steps;
        let e = |e: sqlx::Error| e.to_string();
        let order = sqlx::query_scalar("SELECT status FROM orders WHERE order_id = ?1")
            .bind(ORDER_ID)
            .fetch_optional(&s.order)
            .await
            .map_err(e)?;
        let stock = sqlx::query_scalar("SELECT stock FROM stock WHERE product_id = ?1")
            .bind(PRODUCT)
            .fetch_one(&s.stock)
            .await
            .map_err(e)?;
        let coupon = sqlx::query_as("SELECT used, order_id FROM coupons WHERE coupon_id = ?1")
            .bind(COUPON)
            .fetch_one(&s.coupon)
            .await
            .map_err(e)?;
        let payment = sqlx::query_scalar("SELECT status FROM payments WHERE order_id = ?1")
            .bind(ORDER_ID)
            .fetch_optional(&s.payment)
            .await
            .map_err(e)?;
        Ok(Rows {
            order,
            stock,
            coupon,
            payment,
        })
    }
}

const ORDER_ID: &str = "42";
const PRODUCT: i64 = 1;
const COUNT: i64 = 2;
const COUPON: i64 = 101;

fn request() -> OrderRequest {
    serde_json::from_value(serde_json::json!({
        "order_id": ORDER_ID, "user_id": 1, "product_id": PRODUCT, "product_count": COUNT,
        "amount_cents": 3998, "coupon_id": COUPON,
    }))
    .expect("a valid order")
}

/// The contract's invariants for one order: a succeeded order holds its stock, its coupon and a
/// pending payment exactly once; a compensated one holds nothing (its order cancelled, its
/// stock back, its coupon free, its payment cancelled or never made).
fn invariants(rows: &Rows, outcome: &Outcome) -> Result<(), String> {
    let initial = services::DEFAULT_STOCK
        .iter()
        .find(|(p, _)| *p == PRODUCT)
        .map(|(_, level)| *level)
        .unwrap_or(0);
    let holds = match outcome.status {
        SagaStatus::Succeeded => {
            rows.order.as_deref() == Some("created")
                && rows.stock == initial - COUNT
                && rows.coupon == (1, Some(ORDER_ID.to_string()))
                && rows.payment.as_deref() == Some("pending")
        }
        SagaStatus::Compensated => {
            rows.order.as_deref().is_none_or(|s| s == "cancelled")
                && rows.stock == initial
                && rows.coupon.0 == 0
                && rows.payment.as_deref().is_none_or(|s| s == "cancelled")
        }
        _ => false,
    };
    if holds {
        Ok(())
    } else {
        Err(format!("{} with {rows:?}", outcome.status))
    }
}

/// Random schedules besides the matrix: 100, or `SAGA_ORDER_RANDOM` (to measure a long run,
/// e.g. 10,000 in a release build).
fn random_schedules() -> u64 {
    std::env::var("SAGA_ORDER_RANDOM")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

#[tokio::test]
async fn submit_order_keeps_the_contract_under_every_fault() {
    let report = Harness::<SubmitOrder, Shop>::new(request())
        .invariant(invariants)
        .random(random_schedules())
        .run()
        .await;
    println!("{report}");
    report.assert_ok();
    assert!(report.matrix > 50, "{report}");
}
