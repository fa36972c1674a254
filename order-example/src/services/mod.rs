//! The four participant services of the order system, each with its own database: [`order`],
//! [`stock`], [`coupon`] and [`payment`]. Their endpoints are what the sagas' steps call
//! (docs/contract.md, "Participant endpoints"); each handler runs its business code inside the
//! sub-transaction barrier (docs/semantics.md) and answers with saga_core's reply mapping.
//!
//! Every endpoint sits behind [`endpoint`]: before anything else runs, the call must name the
//! step and op the endpoint serves and carry the endpoint's request body, so that a refused call
//! (400, 413, 422) never reaches a fault; then the endpoint's faults fire around the handler.

pub mod coupon;
pub mod order;
pub mod payment;
pub mod stock;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use saga_core::http::SagaHeaders;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::api::{parse_body, read_body};
use crate::db::{Db, Location, sql};
use crate::faults::{self, Faults, Point};
use crate::model::Validate;

#[cfg(test)]
mod tests;

/// The seed of a fresh data set (docs/contract.md, "CLI"): `(product_id, stock)`.
pub const DEFAULT_STOCK: [(i64, i64); 2] = [(1, 100), (2, 200)];
/// The seed of a fresh data set: `(coupon_id, user_id)`, every coupon unused.
pub const DEFAULT_COUPONS: [(i64, i64); 5] = [(101, 1), (102, 1), (103, 1), (104, 1), (105, 1)];

/// The four services' databases.
#[derive(Clone, Debug)]
pub struct Services {
    /// Orders.
    pub order: Db,
    /// Stock.
    pub stock: Db,
    /// Coupons.
    pub coupon: Db,
    /// Payments.
    pub payment: Db,
}

impl Services {
    /// Opens (creating and migrating if needed) the four services' databases at `location`
    /// and seeds a fresh data set.
    pub async fn open(location: &Location) -> anyhow::Result<Services> {
        let services = Services {
            order: location
                .open_service("order.db", "orders", sqlx::migrate!("./migrations/order"))
                .await?,
            stock: location
                .open_service("stock.db", "stock", sqlx::migrate!("./migrations/stock"))
                .await?,
            coupon: location
                .open_service(
                    "coupon.db",
                    "coupons",
                    sqlx::migrate!("./migrations/coupon"),
                )
                .await?,
            payment: location
                .open_service(
                    "payment.db",
                    "payments",
                    sqlx::migrate!("./migrations/payment"),
                )
                .await?,
        };
        seed_if_fresh(&services).await?;
        Ok(services)
    }

    /// The four databases with the names of their services.
    pub fn named(&self) -> [(&'static str, &Db); 4] {
        [
            ("order database", &self.order),
            ("stock database", &self.stock),
            ("coupon database", &self.coupon),
            ("payment database", &self.payment),
        ]
    }
}

/// Seeds the default data set unless it was seeded before. The marker row and the stock
/// commit together, so that processes starting at the same moment seed once.
async fn seed_if_fresh(services: &Services) -> anyhow::Result<()> {
    let fresh = services
        .stock
        .transaction(|mut tx| {
            Box::pin(async move {
                let marked = sql(r"
                    INSERT INTO seed_marker (id) VALUES (1)
                    ON CONFLICT DO NOTHING")
                .execute(&mut tx)
                .await?;
                if marked == 1 {
                    for (product_id, level) in DEFAULT_STOCK {
                        stock::set(&mut tx, product_id, level).await?;
                    }
                }
                Ok::<_, sqlx::Error>(marked == 1)
            })
        })
        .await?;
    if fresh {
        for (coupon_id, user_id) in DEFAULT_COUPONS {
            coupon::set_owner(&services.coupon, coupon_id, user_id).await?;
        }
        tracing::info!("seeded a fresh data set");
    }
    Ok(())
}

/// The routes of the four services, each behind its endpoint's checks and faults.
pub fn router(services: &Services, faults: &Arc<Faults>) -> Router {
    Router::new()
        .merge(order::router(services.order.clone(), faults))
        .merge(stock::router(services.stock.clone(), faults))
        .merge(coupon::router(services.coupon.clone(), faults))
        .merge(payment::router(services.payment.clone(), faults))
}

/// The participant endpoint of `point`, served by `route` and taking a `T`: calls are checked
/// against the endpoint first, then the endpoint's faults fire around `route`.
pub fn endpoint<T>(point: Point, faults: &Arc<Faults>, route: MethodRouter<Db>) -> MethodRouter<Db>
where
    T: DeserializeOwned + Validate + Send + 'static,
{
    route.layer(middleware::from_fn_with_state(
        (point, faults.clone()),
        check::<T>,
    ))
}

/// Refuses a call that is not for this endpoint, with the replies the handler's own extractors
/// would give (400 for the headers or malformed JSON, 413, 422), and hands the others to the
/// endpoint's faults. The body is read here and handed on whole; the handler parses it again,
/// which costs a microsecond and keeps the handler a plain axum handler.
async fn check<T: DeserializeOwned + Validate>(
    State((point, faults)): State<(Point, Arc<Faults>)>,
    saga: SagaHeaders,
    request: Request,
    next: Next,
) -> Response {
    if let Err(rejection) = saga.expect(point.step(), &[point.op()]) {
        return rejection.into_response();
    }
    let (parts, body) = request.into_parts();
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused.into_response(),
    };
    if let Err(refused) = parse_body::<T>(&bytes) {
        return refused.into_response();
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    let span = tracing::info_span!("participant", gid = %saga.gid, point = point.name());
    if let Some(parent) = &saga.traceparent {
        // The step call's span is this one's parent: the saga's trace goes on here.
        parent.set_parent_of(&span);
    }
    faults::inject(faults, point, request, next)
        .instrument(span)
        .await
}
