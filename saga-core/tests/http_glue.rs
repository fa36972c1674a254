//! The HTTP glue against a real axum server on 127.0.0.1: the `SagaHeaders` extractor's
//! rejections, `StepClient`'s reply mapping for every status class and transport failure, and a
//! participant endpoint that is a single barrier call (`SagaHeaders::call`), with the hooks a
//! layer can attach around its commit.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use saga_core::barrier::{BarrierError, CompensationOutcome};
use saga_core::http::{BeforeCommit, CANCELLED_REASON, Committed, SagaHeaders, StepClient};
use saga_core::{Op, Retry, StepContext, StepError};
use serde::{Deserialize, Serialize};
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
        traceparent: None,
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
    ) -> Response {
        if let Err(rejection) = headers.expect("stock_deduct", &[Op::Action]) {
            return rejection.into_response();
        }
        headers
            .call(&pool, move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE stock SET stock = stock - ? WHERE product_id = 1 AND stock >= ?",
                    )
                    .bind(count)
                    .bind(count)
                    .execute(&mut *conn)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StepError::failure("not enough stock"));
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Business code whose statement fails in the database.
    async fn broken(headers: SagaHeaders, State(pool): State<SqlitePool>) -> Response {
        headers
            .call(&pool, |conn| {
                Box::pin(async move {
                    sqlx::query("UPDATE no_such_table SET x = 1")
                        .execute(&mut *conn)
                        .await?;
                    Ok::<_, StepError>(())
                })
            })
            .await
    }

    async fn deduct_revert(
        headers: SagaHeaders,
        State(pool): State<SqlitePool>,
        Json(count): Json<i64>,
    ) -> Result<CompensationOutcome<()>, BarrierError<StepError>> {
        headers
            .barrier()
            .compensate(&pool, move |conn| {
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

    /// The deduction answering what is left and a value of its own call, so that a reply
    /// recomputed by a repeat would differ from the first.
    async fn deduct_reporting(
        headers: SagaHeaders,
        State(pool): State<SqlitePool>,
        Json(count): Json<i64>,
    ) -> Response {
        headers
            .call(&pool, move |conn| {
                Box::pin(async move {
                    let left: Option<i64> = sqlx::query_scalar(
                        "UPDATE stock SET stock = stock - ?1 WHERE product_id = 1 AND stock >= ?1 \
                         RETURNING stock",
                    )
                    .bind(count)
                    .fetch_optional(&mut *conn)
                    .await?;
                    let left = left.ok_or_else(|| StepError::failure("not enough stock"))?;
                    let call = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                    Ok::<_, StepError>(Report {
                        left,
                        call_nanos: call.as_nanos() as u64,
                        note: "deducted".to_string(),
                    })
                })
            })
            .await
    }

    let app = Router::new()
        .route("/stockDeduct", post(deduct))
        .route("/stockDeductReporting", post(deduct_reporting))
        .route("/stockDeductRevert", post(deduct_revert))
        .route("/broken", post(broken))
        .layer(axum::middleware::from_fn(hooks))
        .with_state(pool.clone());
    (serve(app).await, pool, dir)
}

/// The output of `/stockDeductReporting`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Report {
    left: i64,
    call_nanos: u64,
    note: String,
}

/// What the layer of [`hooks`] saw: the before-commit hook's outcomes, in call order.
static SEEN_BEFORE_COMMIT: Mutex<Vec<(String, &'static str)>> = Mutex::new(Vec::new());

/// A layer that attaches a before-commit hook recording the outcome per gid, and copies the
/// reply's `Committed` extension into an `x-committed` header.
async fn hooks(mut request: Request, next: Next) -> Response {
    let gid = request
        .headers()
        .get("saga-gid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let hook = BeforeCommit::new(move |outcome| {
        SEEN_BEFORE_COMMIT
            .lock()
            .unwrap()
            .push((gid.clone(), outcome));
    });
    request.extensions_mut().insert(hook);
    let mut response = next.run(request).await;
    if let Some(Committed { outcome }) = response.extensions().get::<Committed>().copied() {
        response
            .headers_mut()
            .insert("x-committed", HeaderValue::from_static(outcome));
    }
    response
}

fn seen_before_commit(gid: &str) -> Vec<&'static str> {
    SEEN_BEFORE_COMMIT
        .lock()
        .unwrap()
        .iter()
        .filter(|(g, _)| g == gid)
        .map(|(_, outcome)| *outcome)
        .collect()
}

/// A `stockDeduct` call with these headers and count: the status, the `x-committed` header and
/// the body's `error`.
async fn deduct_call(
    base: &str,
    headers: &[(&str, &str)],
    count: i64,
) -> (StatusCode, Option<String>, Option<String>) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/stockDeduct"))
        .json(&count);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let committed = response
        .headers()
        .get("x-committed")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        committed,
        body["error"].as_str().map(str::to_string),
    )
}

async fn barrier_ids(pool: &SqlitePool, gid: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT barrier_id FROM saga_barrier WHERE gid = ? ORDER BY barrier_id")
        .bind(gid)
        .fetch_all(pool)
        .await
        .unwrap()
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

#[tokio::test]
async fn one_call_handler_answers_each_outcome_and_marks_committed_replies() {
    let (base, pool, _dir) = stock_participant().await;
    let action = [
        ("Saga-Gid", "order-4"),
        ("Saga-Branch", "stock_deduct"),
        ("Saga-Op", "action"),
    ];
    let (status, committed, _) = deduct_call(&base, &action, 2).await;
    assert_eq!(
        (status, committed.as_deref()),
        (StatusCode::OK, Some("ran"))
    );
    let (status, committed, _) = deduct_call(&base, &action, 2).await;
    assert_eq!(
        (status, committed.as_deref()),
        (StatusCode::OK, Some("duplicate"))
    );
    assert_eq!(stock(&pool).await, 8);

    // A business failure rolls back: no commit, no mark, its reason in a 409.
    let failing = [
        ("Saga-Gid", "order-5"),
        ("Saga-Branch", "stock_deduct"),
        ("Saga-Op", "action"),
    ];
    let (status, committed, error) = deduct_call(&base, &failing, 100).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(committed, None);
    assert_eq!(error.as_deref(), Some("not enough stock"));
    assert!(seen_before_commit("order-5").is_empty());

    // The late action after its undo is refused, but its barrier transaction commits.
    let client = StepClient::new(base.clone());
    client
        .compensate(
            "/stockDeductRevert",
            &ctx("order-6", "stock_deduct", Op::Compensate),
            &2,
        )
        .await
        .unwrap();
    let late = [
        ("Saga-Gid", "order-6"),
        ("Saga-Branch", "stock_deduct"),
        ("Saga-Op", "action"),
    ];
    let (status, committed, error) = deduct_call(&base, &late, 2).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(committed.as_deref(), Some("cancelled"));
    assert_eq!(error.as_deref(), Some(CANCELLED_REASON));
    assert_eq!(stock(&pool).await, 8);
    // The undo endpoint calls `barrier().compensate` itself, which runs no request hook.
    assert_eq!(seen_before_commit("order-6"), ["cancelled"]);
}

#[tokio::test]
async fn before_commit_hook_of_a_layer_sees_every_committed_outcome() {
    let (base, _pool, _dir) = stock_participant().await;
    let action = [
        ("Saga-Gid", "order-7"),
        ("Saga-Branch", "stock_deduct"),
        ("Saga-Op", "action"),
    ];
    deduct_call(&base, &action, 1).await;
    deduct_call(&base, &action, 1).await;
    assert_eq!(seen_before_commit("order-7"), ["ran", "duplicate"]);
}

#[tokio::test]
async fn one_call_handler_numbers_its_barrier_from_the_saga_barrier_header() {
    let (base, pool, _dir) = stock_participant().await;
    let first = [
        ("Saga-Gid", "order-8"),
        ("Saga-Branch", "stock_deduct"),
        ("Saga-Op", "action"),
    ];
    let (status, committed, _) = deduct_call(&base, &first, 1).await;
    assert_eq!(
        (status, committed.as_deref()),
        (StatusCode::OK, Some("ran"))
    );
    // Another barrier number is another call of the handler: it runs again.
    let mut second = first.to_vec();
    second.push(("Saga-Barrier", "2"));
    let (status, committed, _) = deduct_call(&base, &second, 1).await;
    assert_eq!(
        (status, committed.as_deref()),
        (StatusCode::OK, Some("ran"))
    );
    let (_, committed, _) = deduct_call(&base, &second, 1).await;
    assert_eq!(committed.as_deref(), Some("duplicate"));
    assert_eq!(stock(&pool).await, 8);
    assert_eq!(barrier_ids(&pool, "order-8").await, ["01", "02"]);
}

#[tokio::test]
async fn database_error_in_business_code_is_a_retry() {
    let (base, pool, _dir) = stock_participant().await;
    let step = ctx("order-9", "broken_step", Op::Action);
    let err = StepClient::new(base)
        .call::<()>("/broken", &step, &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StepError::Retry(ref m) if m.contains("503") && m.contains("participant database error")),
        "{err:?}"
    );
    // Rolled back with the business code: the call leaves no barrier row.
    assert!(barrier_ids(&pool, "order-9").await.is_empty());
}

#[tokio::test]
async fn duplicate_post_answers_the_first_calls_body() {
    let (base, pool, _dir) = stock_participant().await;
    let post = |base: String| async move {
        let response = reqwest::Client::new()
            .post(format!("{base}/stockDeductReporting"))
            .header("Saga-Gid", "order-10")
            .header("Saga-Branch", "stock_deduct")
            .header("Saga-Op", "action")
            .json(&2)
            .send()
            .await
            .unwrap();
        let committed = response
            .headers()
            .get("x-committed")
            .map(|v| v.to_str().unwrap().to_string());
        (
            response.status(),
            committed,
            response.bytes().await.unwrap(),
        )
    };
    let (status, committed, first) = post(base.clone()).await;
    assert_eq!(
        (status, committed.as_deref()),
        (StatusCode::OK, Some("ran"))
    );
    let (status, committed, second) = post(base.clone()).await;
    assert_eq!(
        (status, committed.as_deref()),
        (StatusCode::OK, Some("duplicate"))
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&second).unwrap(),
        serde_json::from_slice::<Value>(&first).unwrap()
    );
    assert_eq!(second, first, "the stored reply, byte for byte");
    assert_eq!(stock(&pool).await, 8);
    // The coordinator decodes the duplicate's reply as the step's output.
    let report: Report = StepClient::new(base)
        .call(
            "/stockDeductReporting",
            &ctx("order-10", "stock_deduct", Op::Action),
            &2,
        )
        .await
        .unwrap();
    assert_eq!(report, serde_json::from_slice::<Report>(&first).unwrap());
    assert_eq!(report.left, 8);
    assert_eq!(stock(&pool).await, 8);
}
