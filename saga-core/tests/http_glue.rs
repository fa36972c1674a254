//! The HTTP glue against a real axum server on 127.0.0.1: the `SagaHeaders` extractor's
//! rejections, `StepClient`'s reply mapping for every status class and transport failure, and a
//! participant endpoint that is a single barrier call.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use saga_core::barrier::{BarrierError, BarrierOutcome};
use saga_core::http::{SagaHeaders, StepClient};
use saga_core::{Op, Retry, StepContext, StepError};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::SqlitePool;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn ctx(gid: &str, step: &'static str, op: Op) -> StepContext {
    StepContext {
        gid: gid.to_string(),
        step,
        op,
        attempt: 1,
        outputs: BTreeMap::new(),
    }
}

async fn echo(headers: SagaHeaders) -> Json<Value> {
    Json(json!({
        "gid": headers.gid,
        "branch": headers.branch,
        "op": headers.op.as_str(),
        "barrier": headers.barrier().next_barrier_id(),
    }))
}

fn replies() -> Router {
    Router::new()
        .route("/echo", post(echo))
        .route(
            "/ok-body",
            post(|| async { Json(json!({"order_id": 7, "headers_seen": true})) }),
        )
        .route("/ok-empty", post(|| async { StatusCode::OK }))
        .route(
            "/conflict-error",
            post(|| async {
                (
                    StatusCode::CONFLICT,
                    Json(json!({"error": "not enough stock"})),
                )
            }),
        )
        .route(
            "/conflict-reason",
            post(|| async { (StatusCode::CONFLICT, Json(json!({"reason": "coupon used"}))) }),
        )
        .route(
            "/conflict-text",
            post(|| async { (StatusCode::CONFLICT, "order cancelled") }),
        )
        .route("/too-early", post(|| async { StatusCode::TOO_EARLY }))
        .route(
            "/unavailable",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "busy"})),
                )
            }),
        )
        .route(
            "/boom",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK
            }),
        )
}

async fn post_raw(url: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    post_raw_with(url, headers, &json!({})).await
}

async fn post_raw_with(url: &str, headers: &[(&str, &str)], body: &Value) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

const GOOD: [(&str, &str); 3] = [
    ("Saga-Gid", "order-1"),
    ("Saga-Branch", "stock_deduct"),
    ("Saga-Op", "action"),
];

fn without(header: &str) -> Vec<(&'static str, &'static str)> {
    GOOD.iter()
        .copied()
        .filter(|(name, _)| *name != header)
        .collect()
}

fn with(header: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut headers = without(header);
    headers.push((header, value));
    headers
}

#[tokio::test]
async fn extractor_reads_the_barrier_headers() {
    let base = serve(replies()).await;
    let (status, body) = post_raw(&format!("{base}/echo"), &GOOD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"gid": "order-1", "branch": "stock_deduct", "op": "action", "barrier": "01"})
    );
    let (status, body) = post_raw(&format!("{base}/echo"), &with("Saga-Barrier", "3")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["barrier"], "03");
}

#[tokio::test]
async fn extractor_rejects_each_missing_header_with_400_naming_it() {
    let base = serve(replies()).await;
    for header in ["Saga-Gid", "Saga-Branch", "Saga-Op"] {
        let (status, body) = post_raw(&format!("{base}/echo"), &without(header)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{header}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(header) && error.contains("missing"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn extractor_rejects_invalid_headers_with_400_naming_them() {
    let base = serve(replies()).await;
    let long_gid: &'static str = "g".repeat(129).leak();
    for (header, value) in [
        ("Saga-Gid", "order 1"),
        ("Saga-Gid", long_gid),
        ("Saga-Gid", ""),
        ("Saga-Op", "undo"),
        ("Saga-Barrier", "0"),
        ("Saga-Barrier", "x"),
    ] {
        let (status, body) = post_raw(&format!("{base}/echo"), &with(header, value)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{header}: {value}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(header), "{error}");
    }
}

#[derive(Debug, Deserialize, PartialEq)]
struct Created {
    order_id: u64,
}

#[tokio::test]
async fn success_with_a_body_is_the_decoded_output() {
    let client = StepClient::new(serve(replies()).await);
    let created: Created = client
        .call(
            "/ok-body",
            &ctx("order-1", "order_create", Op::Action),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(created, Created { order_id: 7 });
}

#[tokio::test]
async fn success_with_an_empty_body_decodes_as_null() {
    let client = StepClient::new(serve(replies()).await);
    let step = ctx("order-1", "stock_deduct", Op::Action);
    let () = client.call("/ok-empty", &step, &json!({})).await.unwrap();
    let none: Option<Created> = client.call("ok-empty", &step, &json!({})).await.unwrap();
    assert_eq!(none, None);
}

#[tokio::test]
async fn success_whose_body_is_not_the_output_is_in_doubt() {
    let client = StepClient::new(serve(replies()).await);
    let err = client
        .call::<Created>(
            "/ok-empty",
            &ctx("order-1", "order_create", Op::Action),
            &json!({}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StepError::Retry(ref m) if m.contains("in doubt")),
        "{err:?}"
    );
}

#[tokio::test]
async fn conflict_is_a_business_failure_with_the_participants_reason() {
    let client = StepClient::new(serve(replies()).await);
    let step = ctx("order-1", "stock_deduct", Op::Action);
    for (path, reason) in [
        ("/conflict-error", "not enough stock"),
        ("/conflict-reason", "coupon used"),
        ("/conflict-text", "order cancelled"),
    ] {
        let err = client
            .call::<()>(path, &step, &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err, StepError::Failure(reason.to_string()), "{path}");
    }
}

#[tokio::test]
async fn too_early_and_unavailable_are_retries() {
    let client = StepClient::new(serve(replies()).await);
    let step = ctx("order-1", "stock_deduct", Op::Action);
    for (path, status) in [("/too-early", "425"), ("/unavailable", "503")] {
        let err = client
            .call::<()>(path, &step, &json!({}))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StepError::Retry(ref m) if m.contains("retry later") && m.contains(status)),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn server_error_is_in_doubt() {
    let client = StepClient::new(serve(replies()).await);
    let err = client
        .call::<()>(
            "/boom",
            &ctx("order-1", "stock_deduct", Op::Action),
            &json!({}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StepError::Retry(ref m) if m.contains("in doubt") && m.contains("500") && m.contains("boom")),
        "{err:?}"
    );
}

#[tokio::test]
async fn refused_connection_is_in_doubt() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    let err = StepClient::new(base)
        .call::<()>(
            "/x",
            &ctx("order-1", "stock_deduct", Op::Action),
            &json!({}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StepError::Retry(ref m) if m.contains("cannot connect")),
        "{err:?}"
    );
}

#[tokio::test]
async fn timeout_is_in_doubt() {
    let client = StepClient::new(serve(replies()).await).timeout(Duration::from_millis(200));
    let err = client
        .call::<()>(
            "/slow",
            &ctx("order-1", "stock_deduct", Op::Action),
            &json!({}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StepError::Retry(ref m) if m.contains("timed out")),
        "{err:?}"
    );
}

#[tokio::test]
async fn refused_undo_is_a_retry_not_a_failure() {
    let client = StepClient::new(serve(replies()).await);
    let step = ctx("order-1", "stock_deduct", Op::Compensate);
    assert_eq!(
        client.compensate("/ok-empty", &step, &json!({})).await,
        Ok(())
    );
    let Retry(reason) = client
        .compensate("/conflict-error", &step, &json!({}))
        .await
        .unwrap_err();
    assert!(
        reason.contains("409") && reason.contains("not enough stock"),
        "{reason}"
    );
    assert!(client.compensate("/boom", &step, &json!({})).await.is_err());
}

/// A participant whose endpoints are one barrier call each.
async fn stock_participant() -> (String, SqlitePool, tempfile::TempDir) {
    let dir = saga_testkit::temp_dir();
    let options = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://stock.db")
        .unwrap()
        .filename(dir.path().join("stock.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePool::connect_with(options).await.unwrap();
    saga_core::barrier::migrate_sqlite(&pool).await.unwrap();
    sqlx::query("CREATE TABLE stock (product_id INTEGER PRIMARY KEY, stock INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO stock VALUES (1, 10)")
        .execute(&pool)
        .await
        .unwrap();

    async fn deduct(
        headers: SagaHeaders,
        State(pool): State<SqlitePool>,
        Json(count): Json<i64>,
    ) -> axum::response::Response {
        if let Err(rejection) = headers.expect("stock_deduct", &[Op::Action]) {
            return rejection.into_response();
        }
        let result: Result<BarrierOutcome<()>, BarrierError<StepError>> = headers
            .barrier()
            .call(&pool, move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE stock SET stock = stock - ? WHERE product_id = 1 AND stock >= ?",
                    )
                    .bind(count)
                    .bind(count)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| StepError::retry(e.to_string()))?;
                    if done.rows_affected() == 0 {
                        return Err(StepError::failure("not enough stock"));
                    }
                    Ok(())
                })
            })
            .await;
        result.into_response()
    }

    async fn deduct_revert(
        headers: SagaHeaders,
        State(pool): State<SqlitePool>,
        Json(count): Json<i64>,
    ) -> Result<BarrierOutcome<()>, BarrierError<StepError>> {
        headers
            .barrier()
            .call(&pool, move |conn| {
                Box::pin(async move {
                    sqlx::query("UPDATE stock SET stock = stock + ? WHERE product_id = 1")
                        .bind(count)
                        .execute(&mut *conn)
                        .await
                        .map(|_| ())
                        .map_err(|e| StepError::retry(e.to_string()))
                })
            })
            .await
    }

    let app = Router::new()
        .route("/stockDeduct", post(deduct))
        .route("/stockDeductRevert", post(deduct_revert))
        .with_state(pool.clone());
    (serve(app).await, pool, dir)
}

async fn stock(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT stock FROM stock WHERE product_id = 1")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn participant_endpoint_applies_a_repeated_action_once_and_undoes_it_once() {
    let (base, pool, _dir) = stock_participant().await;
    let client = StepClient::new(base);
    let action = ctx("order-1", "stock_deduct", Op::Action);
    let undo = ctx("order-1", "stock_deduct", Op::Compensate);
    let () = client.call("/stockDeduct", &action, &3).await.unwrap();
    let () = client.call("/stockDeduct", &action, &3).await.unwrap();
    assert_eq!(stock(&pool).await, 7);
    client
        .compensate("/stockDeductRevert", &undo, &3)
        .await
        .unwrap();
    client
        .compensate("/stockDeductRevert", &undo, &3)
        .await
        .unwrap();
    assert_eq!(stock(&pool).await, 10);
}

#[tokio::test]
async fn participant_endpoint_answers_a_late_action_with_409() {
    let (base, pool, _dir) = stock_participant().await;
    let client = StepClient::new(base);
    let undo = ctx("order-2", "stock_deduct", Op::Compensate);
    client
        .compensate("/stockDeductRevert", &undo, &3)
        .await
        .unwrap();
    let err = client
        .call::<()>(
            "/stockDeduct",
            &ctx("order-2", "stock_deduct", Op::Action),
            &3,
        )
        .await
        .unwrap_err();
    assert_eq!(err, StepError::failure("compensated before the action ran"));
    assert_eq!(stock(&pool).await, 10);
}

#[tokio::test]
async fn participant_endpoint_reports_a_business_failure_with_409() {
    let (base, pool, _dir) = stock_participant().await;
    let client = StepClient::new(base.clone());
    let err = client
        .call::<()>(
            "/stockDeduct",
            &ctx("order-3", "stock_deduct", Op::Action),
            &11,
        )
        .await
        .unwrap_err();
    assert_eq!(err, StepError::failure("not enough stock"));
    assert_eq!(stock(&pool).await, 10);
    // A call for another step on this endpoint is refused before any work.
    let (status, body) = post_raw_with(
        &format!("{base}/stockDeduct"),
        &[
            ("Saga-Gid", "order-3"),
            ("Saga-Branch", "coupon_use"),
            ("Saga-Op", "action"),
        ],
        &json!(3),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("Saga-Branch"));
}
