//! The operator console's router without a browser, through `tower::ServiceExt::oneshot` on a
//! real engine over SQLite: 403 without a token, the sign-in and its cookie, the CSRF token and
//! the `Origin` check on state changes, the limit on failed sign-ins, escaping of what came from
//! outside, the operator actions as the engine allows them, and errors as JSON for clients that
//! do not ask for HTML.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use saga_core::console::{self, OperatorAuth};
use saga_core::store::sqlite::SqliteOptions;
use saga_core::{Engine, Retry, Saga, SagaStatus, StepContext, StepError, Store, Waited};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

const TOKEN: &str = "a-long-operator-token";
const HOST: &str = "127.0.0.1:8081";
const ORIGIN: &str = "http://127.0.0.1:8081";
const SCRIPT: &str = "<script>alert('pwned')</script>";

/// What a [`Note`] saga's steps do.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct NoteInput {
    /// `write` fails for a business reason with this text.
    fail_with: Option<String>,
    /// `write` takes a minute.
    slow: bool,
    /// `notify` answers "call me again" with this text.
    stall_with: Option<String>,
    /// Anything; shown as the input.
    text: String,
}

#[derive(Saga)]
#[saga(input = NoteInput)]
enum Note {
    #[compensate(erase)]
    Write,
    #[pivot]
    Publish,
    #[retriable]
    Notify,
}

struct Notes;

impl NoteSteps for Notes {
    async fn write(&self, _: &StepContext, input: &NoteInput) -> Result<(), StepError> {
        if input.slow {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        match &input.fail_with {
            Some(reason) => Err(StepError::failure(reason.clone())),
            None => Ok(()),
        }
    }

    async fn erase(&self, _: &StepContext, _: &NoteInput, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }

    async fn publish(&self, _: &StepContext, _: &NoteInput) -> Result<(), StepError> {
        Ok(())
    }

    async fn notify(&self, _: &StepContext, input: &NoteInput) -> Result<(), Retry> {
        match &input.stall_with {
            Some(reason) => Err(Retry::new(reason.clone())),
            None => Ok(()),
        }
    }
}

/// An engine on a fresh SQLite store, with what keeps the store alive.
struct Fixture {
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn engine() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::sqlite(dir.path().join("saga.db"), SqliteOptions::default())
        .await
        .unwrap();
    let engine = Engine::builder(store)
        .engine_id("console-test")
        .max_attempts(1)
        .retry(Duration::from_millis(10), Duration::from_millis(50))
        .step_timeout(Duration::from_secs(120))
        .register::<Note, _>(Notes)
        .build()
        .await
        .unwrap();
    Fixture { engine, _dir: dir }
}

/// The console mounted at `/console`, as a service would.
fn app(engine: &Engine, auth: OperatorAuth) -> Router {
    Router::new().nest("/console", console::router(engine.clone(), auth))
}

fn auth() -> OperatorAuth {
    OperatorAuth::new(Some(TOKEN.into()))
}

async fn terminal(engine: &Engine, gid: &str, input: NoteInput) -> SagaStatus {
    match engine
        .submit_and_wait::<Note>(gid, &input, Duration::from_secs(10))
        .await
        .unwrap()
    {
        Waited::Terminal(view) => view.status,
        Waited::TimedOut(view) => panic!("{gid} still {} after 10 s", view.status),
    }
}

/// One reply: status, headers and body text.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A request to the console, built step by step.
struct Call {
    request: axum::http::request::Builder,
    body: String,
}

impl Call {
    fn get(path: &str) -> Call {
        Call {
            request: Request::get(path)
                .header(header::HOST, HOST)
                .header(header::ACCEPT, "text/html"),
            body: String::new(),
        }
    }

    /// A form POST from the console's own origin, as a browser sends it.
    fn post(path: &str, form: &[(&str, &str)]) -> Call {
        Call {
            request: Request::post(path)
                .header(header::HOST, HOST)
                .header(header::ACCEPT, "text/html")
                .header(header::ORIGIN, ORIGIN)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
            body: serde_urlencoded::to_string(form).unwrap(),
        }
    }

    /// A form POST without an `Origin` header.
    fn post_without_origin(path: &str, form: &[(&str, &str)]) -> Call {
        Call {
            request: Request::post(path)
                .header(header::HOST, HOST)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
            body: serde_urlencoded::to_string(form).unwrap(),
        }
    }

    /// Sets a header, replacing one of the same name.
    fn header(mut self, name: header::HeaderName, value: &str) -> Call {
        if let Some(headers) = self.request.headers_mut() {
            headers.insert(name, value.parse().unwrap());
        }
        self
    }

    fn cookie(self, cookie: &str) -> Call {
        self.header(header::COOKIE, cookie)
    }

    async fn send(self, app: &Router) -> Reply {
        self.send_from(app, "10.1.1.1:5000").await
    }

    async fn send_from(self, app: &Router, client: &str) -> Reply {
        let mut request = self.request.body(Body::from(self.body)).unwrap();
        let peer: SocketAddr = client.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// Signs in and returns the session cookie (`name=value`).
async fn sign_in(app: &Router) -> String {
    let reply = Call::post("/console/sign-in", &[("token", TOKEN)])
        .send(app)
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let set = reply.header(header::SET_COOKIE);
    set.split(';').next().unwrap().to_string()
}

/// The CSRF token of the forms on a page.
fn csrf_of(page: &str) -> String {
    let field = "name=\"csrf\" value=\"";
    let at = page
        .find(field)
        .unwrap_or_else(|| panic!("no CSRF field in {page}"));
    let rest = &page[at + field.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// How many rows of sagas a listing page shows.
fn rows(page: &str) -> usize {
    page.matches(" data-gid=").count()
}

#[tokio::test]
async fn without_a_token_every_path_answers_403() {
    let f = engine().await;
    for auth in [
        OperatorAuth::new(None),
        OperatorAuth::new(Some(String::new())),
    ] {
        let app = app(&f.engine, auth);
        for path in [
            "/console",
            "/console/definitions",
            "/console/sagas/x",
            "/console/assets/console.js",
        ] {
            let reply = Call::get(path).send(&app).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
            assert!(reply.body.contains("disabled"), "{path}: {}", reply.body);
        }
        let reply = Call::post("/console/sign-in", &[("token", "")])
            .send(&app)
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        // A client that does not ask for HTML gets the error as JSON.
        let reply = Call::get("/console")
            .header(header::ACCEPT, "*/*")
            .send(&app)
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert!(json["error"].as_str().unwrap().contains("disabled"));
    }
}

#[tokio::test]
async fn sign_in_sets_an_http_only_strict_expiring_cookie_for_the_console_only() {
    let f = engine().await;
    let app = app(&f.engine, auth());
    let form = Call::get("/console").send(&app).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("type=\"password\"") && form.body.contains("name=\"token\""));
    let policy = form.header(header::CONTENT_SECURITY_POLICY);
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert_eq!(form.header(header::X_FRAME_OPTIONS), "DENY");

    let reply = Call::post("/console/sign-in", &[("token", TOKEN)])
        .send(&app)
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header(header::LOCATION), "/console");
    let cookie = reply.header(header::SET_COOKIE);
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(cookie.contains(flag), "{flag} missing in {cookie}");
    }
    assert!(
        !cookie.contains(TOKEN),
        "the cookie does not carry the token: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let page = Call::get("/console").cookie(&session).send(&app).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"counts\""), "{}", page.body);

    // A forged or altered session is no session.
    let forged = format!("{session}0");
    let page = Call::get("/console").cookie(&forged).send(&app).await;
    assert!(
        page.body.contains("name=\"token\""),
        "back to the sign-in form"
    );
    let page = Call::get("/console/definitions")
        .cookie(&forged)
        .send(&app)
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);

    let wrong = Call::post("/console/sign-in", &[("token", "a guess")])
        .send(&app)
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("not the operator token"),
        "{}",
        wrong.body
    );
    assert!(wrong.body.contains("name=\"token\""), "the form again");
    assert!(wrong.header(header::SET_COOKIE).is_empty());
    let foreign = Call::post("/console/sign-in", &[("token", TOKEN)])
        .header(header::ORIGIN, "http://evil.example")
        .send(&app)
        .await;
    assert_eq!(
        foreign.status,
        StatusCode::FORBIDDEN,
        "a sign-in from elsewhere"
    );

    // A session of another token is refused, and sign-out clears the cookie.
    let other = app_with_token(&f.engine, "another-token");
    let page = Call::get("/console").cookie(&session).send(&other).await;
    assert!(page.body.contains("name=\"token\""));
    let home = Call::get("/console").cookie(&session).send(&app).await;
    let csrf = csrf_of(&home.body);
    let out = Call::post("/console/sign-out", &[("csrf", &csrf)])
        .cookie(&session)
        .send(&app)
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.header(header::SET_COOKIE).contains("Max-Age=0"));
}

fn app_with_token(engine: &Engine, token: &str) -> Router {
    app(engine, OperatorAuth::new(Some(token.into())))
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_the_consoles_own_origin() {
    let f = engine().await;
    let input = NoteInput {
        stall_with: Some("notify is down".into()),
        ..NoteInput::default()
    };
    let status = terminal(&f.engine, "note-stuck", input).await;
    assert_eq!(status, SagaStatus::Stuck);
    let app = app(&f.engine, auth());
    let session = sign_in(&app).await;
    let page = Call::get("/console/sagas/note-stuck")
        .cookie(&session)
        .send(&app)
        .await;
    let csrf = csrf_of(&page.body);
    let retry = "/console/sagas/note-stuck/retry";

    let refused = [
        ("no CSRF token", Call::post(retry, &[]).cookie(&session)),
        (
            "a wrong CSRF token",
            Call::post(retry, &[("csrf", "0123")]).cookie(&session),
        ),
        ("no session", Call::post(retry, &[("csrf", &csrf)])),
        (
            "a foreign Origin",
            Call::post(retry, &[("csrf", &csrf)])
                .cookie(&session)
                .header(header::ORIGIN, "http://evil.example"),
        ),
        (
            "Origin null",
            Call::post(retry, &[("csrf", &csrf)])
                .cookie(&session)
                .header(header::ORIGIN, "null"),
        ),
        (
            "no Origin",
            Call::post_without_origin(retry, &[("csrf", &csrf)]).cookie(&session),
        ),
    ];
    for (what, call) in refused {
        let reply = call.send(&app).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{what}: {}",
            reply.body
        );
    }
    let view = f.engine.status("note-stuck").await.unwrap().unwrap();
    assert_eq!(
        view.status,
        SagaStatus::Stuck,
        "nothing refused changed the saga"
    );

    let reply = Call::post(retry, &[("csrf", &csrf)])
        .cookie(&session)
        .send(&app)
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let to = reply.header(header::LOCATION).to_string();
    assert_eq!(to, "/console/sagas/note-stuck?outcome=retried");
    let page = Call::get(&to).cookie(&session).send(&app).await;
    assert!(page.body.contains("Retry accepted"), "{}", page.body);
}

#[tokio::test]
async fn what_came_from_outside_is_escaped() {
    let f = engine().await;
    let input = NoteInput {
        fail_with: Some(format!("no room for {SCRIPT}")),
        text: SCRIPT.into(),
        ..NoteInput::default()
    };
    let status = terminal(&f.engine, "note-script", input).await;
    assert_eq!(status, SagaStatus::Compensated);
    let app = app(&f.engine, auth());
    let session = sign_in(&app).await;
    let escaped = "&lt;script&gt;alert('pwned')&lt;/script&gt;";
    for path in [
        "/console",
        "/console/sagas/note-script",
        "/console?gid=note-",
    ] {
        let page = Call::get(path).cookie(&session).send(&app).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(page.body.contains(escaped), "{path}: {}", page.body);
        assert!(
            !page.body.contains("<script>alert"),
            "{path}: {}",
            page.body
        );
    }
    // The reason, the step's last error and the input, on the saga's page.
    let page = Call::get("/console/sagas/note-script")
        .cookie(&session)
        .send(&app)
        .await;
    assert!(page.body.matches(escaped).count() >= 3, "{}", page.body);
    // A gid prefix that no gid can have is refused with the listing, not run against the store.
    let page = Call::get("/console?gid=%3Cb%3E")
        .cookie(&session)
        .send(&app)
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("value=\"&lt;b&gt;\""), "{}", page.body);
    assert!(!page.body.contains("<b>"));
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_client_and_then_refused_whatever_the_token() {
    let f = engine().await;
    let app = app(&f.engine, auth().sign_in_limit(3, Duration::from_secs(600)));
    for _ in 0..3 {
        let reply = Call::post("/console/sign-in", &[("token", "guess")])
            .send_from(&app, "10.0.0.7:4000")
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = Call::post("/console/sign-in", &[("token", TOKEN)])
        .send_from(&app, "10.0.0.7:4001")
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = reply.header(header::RETRY_AFTER).parse().unwrap();
    assert!((1..=600).contains(&wait), "Retry-After {wait}");
    assert!(
        reply.body.contains("Too many failed sign-ins"),
        "{}",
        reply.body
    );
    assert!(reply.header(header::SET_COOKIE).is_empty());
    let other = Call::post("/console/sign-in", &[("token", TOKEN)])
        .send_from(&app, "10.0.0.8:4000")
        .await;
    assert_eq!(
        other.status,
        StatusCode::SEE_OTHER,
        "another client signs in"
    );
}

#[tokio::test]
async fn actions_are_offered_only_where_the_engine_allows_them() {
    let f = engine().await;
    let stuck = NoteInput {
        stall_with: Some("notify is down".into()),
        ..NoteInput::default()
    };
    let status = terminal(&f.engine, "note-past-pivot", stuck).await;
    assert_eq!(status, SagaStatus::Stuck);
    let slow = NoteInput {
        slow: true,
        ..NoteInput::default()
    };
    f.engine
        .submit::<Note>("note-running", &slow)
        .await
        .unwrap();
    let app = app(&f.engine, auth());
    let session = sign_in(&app).await;

    // Past the pivot: retry offered, compensate shown disabled with the reason.
    let page = Call::get("/console/sagas/note-past-pivot")
        .cookie(&session)
        .send(&app)
        .await;
    let body = &page.body;
    assert!(
        body.contains("href=\"/console/sagas/note-past-pivot/retry\""),
        "{body}"
    );
    assert!(
        body.contains("id=\"compensate\" type=\"button\" disabled"),
        "{body}"
    );
    assert!(body.contains("passed its pivot `publish`"), "{body}");
    assert!(
        body.contains("<svg") && body.contains("tone-stuck"),
        "{body}"
    );
    let confirm = Call::get("/console/sagas/note-past-pivot/compensate")
        .cookie(&session)
        .send(&app)
        .await;
    assert!(confirm.body.contains("Not offered"), "{}", confirm.body);
    assert!(!confirm.body.contains("id=\"confirm\""));
    let csrf = csrf_of(body);
    let reply = Call::post(
        "/console/sagas/note-past-pivot/compensate",
        &[("csrf", &csrf)],
    )
    .cookie(&session)
    .send(&app)
    .await;
    assert_eq!(
        reply.header(header::LOCATION),
        "/console/sagas/note-past-pivot?outcome=past-pivot"
    );

    // Before the pivot: compensate is offered, confirmed, and the saga is compensated.
    let confirm = Call::get("/console/sagas/note-running/compensate")
        .cookie(&session)
        .send(&app)
        .await;
    assert!(confirm.body.contains("id=\"confirm\""), "{}", confirm.body);
    let csrf = csrf_of(&confirm.body);
    let reply = Call::post("/console/sagas/note-running/compensate", &[("csrf", &csrf)])
        .cookie(&session)
        .send(&app)
        .await;
    assert_eq!(
        reply.header(header::LOCATION),
        "/console/sagas/note-running?outcome=compensating"
    );
    match f
        .engine
        .wait("note-running", Duration::from_secs(10))
        .await
        .unwrap()
    {
        Waited::Terminal(view) => assert_eq!(view.status, SagaStatus::Compensated),
        Waited::TimedOut(view) => panic!("still {}", view.status),
    }
    let page = Call::get("/console/sagas/note-running")
        .cookie(&session)
        .send(&app)
        .await;
    let body = &page.body;
    assert!(
        body.contains("id=\"retry\" type=\"button\" disabled"),
        "{body}"
    );
    assert!(
        body.contains("the saga has finished (compensated)"),
        "{body}"
    );

    // Unknown gids and pages: 404, as JSON for a client that does not ask for HTML.
    let reply = Call::get("/console/sagas/nobody")
        .cookie(&session)
        .header(header::ACCEPT, "application/json")
        .send(&app)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
    let reply = Call::get("/console/sagas/note-running/pause")
        .cookie(&session)
        .send(&app)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_listing_filters_and_pages_and_definitions_show_every_saga() {
    let f = engine().await;
    for i in 0..53 {
        let status = terminal(&f.engine, &format!("note-{i:02}"), NoteInput::default()).await;
        assert_eq!(status, SagaStatus::Succeeded);
    }
    let failing = NoteInput {
        fail_with: Some("no".into()),
        ..NoteInput::default()
    };
    let status = terminal(&f.engine, "other-1", failing).await;
    assert_eq!(status, SagaStatus::Compensated);
    let app = app(&f.engine, auth());
    let session = sign_in(&app).await;
    let page = Call::get("/console").cookie(&session).send(&app).await;
    let count = "data-status=\"succeeded\"><span class=\"number\">53</span>";
    assert!(page.body.contains(count), "{}", page.body);
    assert_eq!(rows(&page.body), 50);
    let link = "id=\"older\" href=\"";
    let at = page.body.find(link).expect("a link to older sagas");
    let rest = &page.body[at + link.len()..];
    let older = rest[..rest.find('"').unwrap()].replace("&amp;", "&");
    let page = Call::get(&older).cookie(&session).send(&app).await;
    assert_eq!(rows(&page.body), 4, "{}", page.body);
    assert!(page.body.contains("id=\"newest\""));
    assert!(!page.body.contains("id=\"older\""));

    let page = Call::get("/console?status=compensated")
        .cookie(&session)
        .send(&app)
        .await;
    assert_eq!(rows(&page.body), 1);
    assert!(page.body.contains("data-gid=\"other-1\""));
    let page = Call::get("/console?gid=note-5&saga=note")
        .cookie(&session)
        .send(&app)
        .await;
    assert_eq!(rows(&page.body), 3, "note-50, -51, -52: {}", page.body);
    let page = Call::get("/console?status=lost")
        .cookie(&session)
        .send(&app)
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("Unknown status"));

    let page = Call::get("/console/definitions")
        .cookie(&session)
        .send(&app)
        .await;
    assert!(page.body.contains("data-saga=\"note\""), "{}", page.body);
    assert!(page.body.contains(&Note::definition().fingerprint()));
    assert!(page.body.contains("<svg") && page.body.contains("kind-pivot"));
}
