//! Fault injection: `--fault <service>.<op>:<kind>[:<count>]`, for tests and the demo
//! (docs/contract.md, "Fault injection").
//!
//! A point is one participant endpoint. Its faults fire on every call that reaches it, whether
//! the barrier then runs the business code or absorbs it, and several specs on one point fire
//! in command-line order. They live beside the business code, never in a handler: [`inject`], a
//! middleware, answers `error` and `fail` and sleeps `delay_ms` before the handler, and dies
//! after it for `crash_after_commit`; `crash_before_commit` is a [`BeforeCommit`] hook that the
//! barrier runs inside the local transaction, after the barrier and the business work.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use saga_core::Op;
use saga_core::http::{BeforeCommit, Committed, error_response};

use crate::saga::{PayOrder, SubmitOrder};

/// A place where a fault can fire: one participant endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// `order.create`
    OrderCreate,
    /// `order.create_revert`
    OrderCreateRevert,
    /// `stock.deduct`
    StockDeduct,
    /// `stock.deduct_revert`
    StockDeductRevert,
    /// `coupon.use`
    CouponUse,
    /// `coupon.use_revert`
    CouponUseRevert,
    /// `payment.create`
    PaymentCreate,
    /// `payment.create_revert`
    PaymentCreateRevert,
    /// `payment.capture`
    PaymentCapture,
    /// `order.mark_paid`
    OrderMarkPaid,
}

impl Point {
    /// Every point with its spec name and the step call its endpoint serves: the step's
    /// persisted name (`Saga-Branch`, named through the saga types) and the op (`Saga-Op`).
    pub const ALL: [(Point, &'static str, &'static str, Op); 10] = [
        (
            Point::OrderCreate,
            "order.create",
            SubmitOrder::ORDER_CREATE,
            Op::Action,
        ),
        (
            Point::OrderCreateRevert,
            "order.create_revert",
            SubmitOrder::ORDER_CREATE,
            Op::Compensate,
        ),
        (
            Point::StockDeduct,
            "stock.deduct",
            SubmitOrder::STOCK_DEDUCT,
            Op::Action,
        ),
        (
            Point::StockDeductRevert,
            "stock.deduct_revert",
            SubmitOrder::STOCK_DEDUCT,
            Op::Compensate,
        ),
        (
            Point::CouponUse,
            "coupon.use",
            SubmitOrder::COUPON_USE,
            Op::Action,
        ),
        (
            Point::CouponUseRevert,
            "coupon.use_revert",
            SubmitOrder::COUPON_USE,
            Op::Compensate,
        ),
        (
            Point::PaymentCreate,
            "payment.create",
            SubmitOrder::PAY_CREATE,
            Op::Action,
        ),
        (
            Point::PaymentCreateRevert,
            "payment.create_revert",
            SubmitOrder::PAY_CREATE,
            Op::Compensate,
        ),
        (
            Point::PaymentCapture,
            "payment.capture",
            PayOrder::PAYMENT_CAPTURE,
            Op::Action,
        ),
        (
            Point::OrderMarkPaid,
            "order.mark_paid",
            PayOrder::ORDER_MARK_PAID,
            Op::Action,
        ),
    ];

    fn entry(self) -> (Point, &'static str, &'static str, Op) {
        Point::ALL[self as usize]
    }

    /// The spec name, `service.op`.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// The persisted name of the step whose endpoint this is (`Saga-Branch`).
    pub fn step(self) -> &'static str {
        self.entry().2
    }

    /// The op the endpoint serves (`Saga-Op`).
    pub fn op(self) -> Op {
        self.entry().3
    }
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HTTP 500 before any work.
    Error,
    /// A business failure: 409 with a reason, before any work.
    Fail,
    /// The process dies inside the local transaction, after the barrier and the business work.
    CrashBeforeCommit,
    /// The process dies after the local commit, before replying.
    CrashAfterCommit,
    /// Sleep this long before handling.
    Delay(Duration),
}

/// One `--fault` spec with its remaining count.
#[derive(Debug)]
pub struct Fault {
    /// Where it fires.
    pub point: Point,
    /// What it does.
    pub kind: Kind,
    remaining: AtomicU32,
}

impl Fault {
    /// Takes one firing if any is left.
    fn take(&self) -> bool {
        self.remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A malformed or unknown `--fault` spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid --fault `{spec}`: {why} \
     (expected <service>.<op>:<kind>[:<count>], e.g. stock.deduct:crash_after_commit:1)"
)]
pub struct FaultSpecError {
    spec: String,
    why: String,
}

impl FromStr for Fault {
    type Err = FaultSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |why: String| FaultSpecError {
            spec: spec.to_string(),
            why,
        };
        let mut parts = spec.split(':');
        let point_name = parts.next().unwrap_or_default();
        let point = Point::ALL
            .iter()
            .find(|(_, name, ..)| *name == point_name)
            .map(|(point, ..)| *point)
            .ok_or_else(|| {
                let names: Vec<_> = Point::ALL.iter().map(|(_, name, ..)| *name).collect();
                err(format!(
                    "unknown point `{point_name}`; one of {}",
                    names.join(", ")
                ))
            })?;
        let kind_text = parts
            .next()
            .ok_or_else(|| err("missing kind".to_string()))?;
        let kind = match kind_text {
            "error" => Kind::Error,
            "fail" => Kind::Fail,
            "crash_before_commit" => Kind::CrashBeforeCommit,
            "crash_after_commit" => Kind::CrashAfterCommit,
            other => match other.strip_prefix("delay_ms=") {
                Some(ms) => Kind::Delay(Duration::from_millis(ms.parse().map_err(|_| {
                    err(format!(
                        "delay `{ms}` is not a whole number of milliseconds"
                    ))
                })?)),
                None => {
                    return Err(err(format!(
                        "unknown kind `{other}`; one of error, fail, crash_before_commit, \
                         crash_after_commit, delay_ms=N"
                    )));
                }
            },
        };
        let count = match parts.next() {
            None => 1,
            Some(c) => c
                .parse::<u32>()
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| err(format!("count `{c}` is not a positive whole number")))?,
        };
        if parts.next().is_some() {
            return Err(err("too many `:`-separated parts".to_string()));
        }
        Ok(Fault {
            point,
            kind,
            remaining: AtomicU32::new(count),
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:?}", self.point.name(), self.kind)
    }
}

/// What the endpoint must do before its work, after the faults that fire first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Before {
    /// Go on.
    Proceed,
    /// Answer HTTP 500.
    Error,
    /// Answer 409 with this reason.
    Fail(String),
}

/// All configured faults.
#[derive(Debug, Default)]
pub struct Faults {
    faults: Vec<Fault>,
}

impl Faults {
    /// The faults in command-line order.
    pub fn new(faults: Vec<Fault>) -> Self {
        Faults { faults }
    }

    /// Fires the faults that act before any work, in command-line order: delays sleep, the
    /// first `error` or `fail` that fires decides the reply.
    async fn before(&self, point: Point) -> Before {
        for fault in self.faults.iter().filter(|f| f.point == point) {
            match fault.kind {
                Kind::Delay(d) if fault.take() => {
                    tracing::warn!(
                        point = point.name(),
                        ms = d.as_millis() as u64,
                        "fault: delay"
                    );
                    tokio::time::sleep(d).await;
                }
                Kind::Error if fault.take() => {
                    tracing::warn!(point = point.name(), "fault: error");
                    return Before::Error;
                }
                Kind::Fail if fault.take() => {
                    tracing::warn!(point = point.name(), "fault: fail");
                    return Before::Fail(format!("injected business failure at {}", point.name()));
                }
                _ => {}
            }
        }
        Before::Proceed
    }

    /// Whether a fault of `kind` was configured for `point`, fired or not.
    fn has(&self, point: Point, kind: Kind) -> bool {
        self.faults
            .iter()
            .any(|f| f.point == point && f.kind == kind)
    }

    /// Dies here if a `crash_before_commit` fault fires for `point`.
    fn crash_before_commit(&self, point: Point) {
        self.crash(point, Kind::CrashBeforeCommit, "crash_before_commit");
    }

    /// Dies here if a `crash_after_commit` fault fires for `point`.
    fn crash_after_commit(&self, point: Point) {
        self.crash(point, Kind::CrashAfterCommit, "crash_after_commit");
    }

    fn crash(&self, point: Point, kind: Kind, name: &str) {
        if self
            .faults
            .iter()
            .any(|f| f.point == point && f.kind == kind && f.take())
        {
            eprintln!("fault: {name} at {}: the process dies now", point.name());
            std::process::exit(86);
        }
    }
}

/// The faults of `point` around the rest of the request (middleware): delays, then `error`
/// (500) or `fail` (409) before the handler; `crash_before_commit` as the request's
/// [`BeforeCommit`] hook; `crash_after_commit` once the reply says the barrier's transaction
/// committed ([`Committed`]), before the reply leaves.
///
/// Run it only for calls the endpoint accepts: a call refused with 400, 413 or 422 never
/// reaches a fault.
pub async fn inject(
    faults: Arc<Faults>,
    point: Point,
    mut request: Request,
    next: Next,
) -> Response {
    match faults.before(point).await {
        Before::Proceed => {}
        Before::Error => {
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "injected error");
        }
        Before::Fail(reason) => return error_response(StatusCode::CONFLICT, reason),
    }
    if faults.has(point, Kind::CrashBeforeCommit) {
        let faults = faults.clone();
        let hook = BeforeCommit::new(move |_| faults.crash_before_commit(point));
        request.extensions_mut().insert(hook);
    }
    let response = next.run(request).await;
    if response.extensions().get::<Committed>().is_some() {
        faults.crash_after_commit(point);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_is_listed_once_in_declaration_order() {
        for (i, (point, ..)) in Point::ALL.iter().enumerate() {
            assert_eq!(*point as usize, i, "{point:?}");
        }
    }

    #[test]
    fn specs_parse_with_and_without_count() {
        let f: Fault = "stock.deduct:crash_after_commit".parse().unwrap();
        assert_eq!(f.point, Point::StockDeduct);
        assert_eq!(f.kind, Kind::CrashAfterCommit);
        let f: Fault = "order.mark_paid:delay_ms=250:3".parse().unwrap();
        assert_eq!(f.kind, Kind::Delay(Duration::from_millis(250)));
        assert_eq!(f.remaining.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn unknown_or_malformed_specs_are_rejected_with_their_text() {
        for bad in [
            "stock.steal:error",
            "stock.deduct",
            "stock.deduct:explode",
            "stock.deduct:error:0",
            "stock.deduct:error:x",
            "stock.deduct:delay_ms=abc",
            "stock.deduct:error:1:2",
            "",
        ] {
            let e = bad.parse::<Fault>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[tokio::test]
    async fn faults_fire_in_order_and_count_down() {
        let faults = Faults::new(vec![
            "coupon.use:delay_ms=1".parse().unwrap(),
            "coupon.use:error:2".parse().unwrap(),
        ]);
        assert_eq!(faults.before(Point::CouponUse).await, Before::Error);
        assert_eq!(faults.before(Point::CouponUse).await, Before::Error);
        assert_eq!(faults.before(Point::CouponUse).await, Before::Proceed);
        assert_eq!(faults.before(Point::StockDeduct).await, Before::Proceed);
    }
}
