//! The participant endpoints over HTTP on a real listener, on SQLite and on PostgreSQL: the
//! business rules, the barrier's absorption of repeats, the endpoint checks, and where faults
//! fire (crash faults end the process, so the acceptance suite covers those).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Services, router};
use crate::db::Location;
use crate::faults::{Fault, Faults};

/// A running set of the four services.
struct Fixture {
    base: String,
    http: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh data set: SQLite files in a temporary directory (removed with the guard), or a fresh
/// PostgreSQL database.
type Fresh = fn() -> (Location, Option<tempfile::TempDir>);

fn sqlite() -> (Location, Option<tempfile::TempDir>) {
    let dir = saga_testkit::temp_dir();
    (Location::Dir(dir.path().to_path_buf()), Some(dir))
}

fn postgres() -> (Location, Option<tempfile::TempDir>) {
    (
        Location::Url(saga_testkit::postgres().fresh_database()),
        None,
    )
}

impl Fixture {
    async fn start(fresh: Fresh, faults: &[&str]) -> Fixture {
        let (location, dir) = fresh();
        let services = Services::open(&location).await.unwrap();
        let faults: Vec<Fault> = faults.iter().map(|f| f.parse().unwrap()).collect();
        let app = router(&services, &Arc::new(Faults::new(faults)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fixture {
            base,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// `POST /api/busi/{endpoint}` with the barrier headers: the status and the body's `error`.
    async fn call(
        &self,
        endpoint: &str,
        headers: &[Header<'_>],
        body: &Value,
    ) -> (StatusCode, Option<String>) {
        self.call_raw(endpoint, headers, body.to_string().into_bytes())
            .await
    }

    async fn call_raw(
        &self,
        endpoint: &str,
        headers: &[Header<'_>],
        body: Vec<u8>,
    ) -> (StatusCode, Option<String>) {
        let mut request = self
            .http
            .post(format!("{}/api/busi/{endpoint}", self.base))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, body["error"].as_str().map(str::to_string))
    }
}

/// A request header: name and value.
type Header<'a> = (&'a str, &'a str);

fn saga<'a>(gid: &'a str, branch: &'a str, op: &'a str) -> [Header<'a>; 3] {
    [("Saga-Gid", gid), ("Saga-Branch", branch), ("Saga-Op", op)]
}

fn order(order_id: &str, product_count: i64, coupon_id: Option<i64>) -> Value {
    json!({
        "order_id": order_id, "user_id": 1, "product_id": 1, "product_count": product_count,
        "amount_cents": 500, "coupon_id": coupon_id,
    })
}

async fn stock_deduct_applies_once_and_its_undo_once(fresh: Fresh) {
    let f = Fixture::start(fresh, &[]).await;
    let body = order("o-1", 30, None);
    for _ in 0..2 {
        let reply = f
            .call("stockDeduct", &saga("g1", "stock_deduct", "action"), &body)
            .await;
        assert_eq!(reply.0, StatusCode::OK);
    }
    let undo = saga("g1", "stock_deduct", "compensate");
    assert_eq!(
        f.call("stockDeductRevert", &undo, &body).await.0,
        StatusCode::OK
    );
    assert_eq!(
        f.call("stockDeductRevert", &undo, &body).await.0,
        StatusCode::OK
    );
    // Deducted once and added back once: 100 left, one fewer than this order wants.
    let greedy = order("o-2", 101, None);
    let (status, error) = f
        .call(
            "stockDeduct",
            &saga("g2", "stock_deduct", "action"),
            &greedy,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        error.as_deref(),
        Some("insufficient stock for product 1: 100 left, 101 wanted")
    );
}

async fn undo_before_its_action_blocks_the_late_action(fresh: Fresh) {
    let f = Fixture::start(fresh, &[]).await;
    let body = order("o-3", 1, Some(101));
    let undo = saga("g3", "coupon_use", "compensate");
    assert_eq!(
        f.call("couponUseRevert", &undo, &body).await.0,
        StatusCode::OK
    );
    let (status, error) = f
        .call("couponUse", &saga("g3", "coupon_use", "action"), &body)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error.as_deref(), Some(saga_core::http::CANCELLED_REASON));
    // The coupon is still free for another order.
    let other = order("o-4", 1, Some(101));
    let reply = f
        .call("couponUse", &saga("g4", "coupon_use", "action"), &other)
        .await;
    assert_eq!(reply.0, StatusCode::OK);
}

async fn business_rules_refuse_with_their_reasons(fresh: Fresh) {
    let f = Fixture::start(fresh, &[]).await;
    let mut unknown = order("o-5", 1, None);
    unknown["product_id"] = json!(9);
    let reply = f
        .call(
            "stockDeduct",
            &saga("g5", "stock_deduct", "action"),
            &unknown,
        )
        .await;
    assert_eq!(
        reply,
        (StatusCode::CONFLICT, Some("unknown product 9".into()))
    );

    let mut foreign = order("o-6", 1, Some(102));
    foreign["user_id"] = json!(2);
    let reply = f
        .call("couponUse", &saga("g6", "coupon_use", "action"), &foreign)
        .await;
    assert_eq!(
        reply,
        (
            StatusCode::CONFLICT,
            Some("coupon 102 does not belong to user 2".into())
        )
    );

    // A payment cancelled by its undo cannot be captured; the capture is the pay saga's pivot.
    let body = order("o-7", 1, None);
    let pay = json!({ "order_id": "o-7" });
    let created = f
        .call("payCreate", &saga("g7", "pay_create", "action"), &body)
        .await;
    assert_eq!(created.0, StatusCode::OK);
    let cancelled = f
        .call(
            "payCreateRevert",
            &saga("g7", "pay_create", "compensate"),
            &body,
        )
        .await;
    assert_eq!(cancelled.0, StatusCode::OK);
    let reply = f
        .call(
            "paymentCapture",
            &saga("p7", "payment_capture", "action"),
            &pay,
        )
        .await;
    assert_eq!(
        reply,
        (
            StatusCode::CONFLICT,
            Some("the payment of order o-7 is cancelled".into())
        )
    );
}

async fn saga_barrier_header_numbers_a_separate_barrier_call(fresh: Fresh) {
    let f = Fixture::start(fresh, &[]).await;
    let body = order("o-8", 60, None);
    let first = saga("g8", "stock_deduct", "action");
    assert_eq!(f.call("stockDeduct", &first, &body).await.0, StatusCode::OK);
    let mut second = first.to_vec();
    second.push(("Saga-Barrier", "2"));
    // Barrier 02 is another call of the handler: it runs, and finds 40 left.
    let (status, error) = f.call("stockDeduct", &second, &body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        error.as_deref(),
        Some("insufficient stock for product 1: 40 left, 60 wanted")
    );
}

macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn sqlite() {
                    super::$scenario(super::sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$scenario(super::postgres).await;
                }
            }
        )+
    };
}

on_both_backends!(
    stock_deduct_applies_once_and_its_undo_once,
    undo_before_its_action_blocks_the_late_action,
    business_rules_refuse_with_their_reasons,
    saga_barrier_header_numbers_a_separate_barrier_call,
);

#[tokio::test]
async fn each_endpoint_serves_only_its_own_step_and_op() {
    let f = Fixture::start(sqlite, &[]).await;
    let body = order("o-9", 1, None);
    let pay = json!({ "order_id": "o-9" });
    let endpoints = [
        ("orderCreate", "order_create", "action", &body),
        ("orderCreateRevert", "order_create", "compensate", &body),
        ("stockDeduct", "stock_deduct", "action", &body),
        ("stockDeductRevert", "stock_deduct", "compensate", &body),
        ("couponUse", "coupon_use", "action", &body),
        ("couponUseRevert", "coupon_use", "compensate", &body),
        ("payCreate", "pay_create", "action", &body),
        ("payCreateRevert", "pay_create", "compensate", &body),
        ("paymentCapture", "payment_capture", "action", &pay),
        ("orderMarkPaid", "order_mark_paid", "action", &pay),
    ];
    for (endpoint, branch, op, body) in endpoints {
        let other_op = if op == "action" {
            "compensate"
        } else {
            "action"
        };
        let (status, error) = f.call(endpoint, &saga("g9", branch, other_op), body).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{endpoint} with {other_op}"
        );
        assert!(error.unwrap().contains("Saga-Op"));
        let (status, error) = f.call(endpoint, &saga("g9", "elsewhere", op), body).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{endpoint} for another step"
        );
        assert!(error.unwrap().contains("Saga-Branch"));
    }
}

#[tokio::test]
async fn refused_calls_never_reach_a_fault() {
    let f = Fixture::start(sqlite, &["stock.deduct:error:1"]).await;
    let action = saga("g10", "stock_deduct", "action");
    let good = order("o-10", 1, None);
    let refused: [(&[Header], Vec<u8>, StatusCode); 5] = [
        (
            &action[..2],
            good.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (&action, b"{not json".to_vec(), StatusCode::BAD_REQUEST),
        (
            &action,
            order("o-10", 0, None).to_string().into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &action,
            vec![b' '; 65 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            &saga("g10", "stock_deduct", "compensate"),
            good.to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (headers, body, expected) in refused {
        assert_eq!(f.call_raw("stockDeduct", headers, body).await.0, expected);
    }
    let (status, error) = f.call("stockDeduct", &action, &good).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error.as_deref(), Some("injected error"));
    assert_eq!(
        f.call("stockDeduct", &action, &good).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn faults_fire_in_command_line_order_on_calls_the_barrier_absorbs() {
    let f = Fixture::start(sqlite, &["coupon.use:delay_ms=300", "coupon.use:fail:1"]).await;
    let action = saga("g11", "coupon_use", "action");
    let body = order("o-11", 1, Some(103));
    let started = Instant::now();
    let (status, error) = f.call("couponUse", &action, &body).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        error.as_deref(),
        Some("injected business failure at coupon.use")
    );
    assert_eq!(f.call("couponUse", &action, &body).await.0, StatusCode::OK);

    // A duplicate reaches the endpoint too: its fault fires although the barrier absorbs it.
    let f = Fixture::start(sqlite, &["stock.deduct:delay_ms=300:2"]).await;
    let action = saga("g12", "stock_deduct", "action");
    let body = order("o-12", 1, None);
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(
            f.call("stockDeduct", &action, &body).await.0,
            StatusCode::OK
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
