//! The operator console: server-rendered pages over an [`Engine`], for the people who run it.
//!
//! [`router`] is an axum router a service mounts where it likes:
//!
//! ```no_run
//! # async fn demo(engine: saga_core::Engine) {
//! use saga_core::console::{self, OperatorAuth};
//!
//! let auth = OperatorAuth::new(std::env::var("SAGA_ADMIN_TOKEN").ok());
//! let app = axum::Router::new().nest("/console", console::router(engine, auth));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await.unwrap();
//! // With the peer address, failed sign-ins are limited per client.
//! let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! Its pages:
//!
//! - **Sagas** (the mount point): counts by status, a listing filtered by status, saga name and
//!   gid prefix, newest first, a page at a time; stuck sagas stand out.
//! - **One saga** (`/sagas/{gid}`): input, status and reason, every step with its status,
//!   attempts, compensation attempts, last error and call times, the attempt log, and the
//!   diagram drawn as SVG with each step coloured by its state; the operator actions retry and
//!   compensate, each behind a confirmation page and offered only where the engine allows them
//!   (compensate is shown disabled past the point of no return, with the reason).
//! - **Definitions** (`/definitions`): every registered saga with its steps, kinds, fingerprint
//!   and diagram.
//!
//! The sagas and the saga page fetch themselves again every two seconds while they show sagas
//! that are not finished (a few lines of the console's own script; no third-party code).
//!
//! Access: [`OperatorAuth`]. Without an operator token every path answers 403. A sign-in form
//! takes the token and sets a session cookie (`HttpOnly`, `SameSite=Strict`, limited to the
//! mount point, expiring); failed sign-ins are limited per client and logged without the token.
//! Every state change (sign-in, sign-out, retry, compensate) is a `POST` that needs an `Origin`
//! header of the console's own origin, and all but the sign-in the session and its CSRF token.
//! Errors answer with an HTML page when the request accepts `text/html`, else with
//! `{"error": "..."}`.

mod auth;
mod diagram;
mod pages;

use std::convert::Infallible;
use std::net::IpAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{
    DefaultBodyLimit, Form, FromRequestParts, NestedPath, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use cookie::{Cookie, SameSite};
use serde::Deserialize;

pub use auth::{
    DEFAULT_SESSION_TTL, DEFAULT_SIGN_IN_FAILURES, DEFAULT_SIGN_IN_WINDOW, OperatorAuth,
};
use auth::{Session, SignInRefused};
use pages::{Action, Frame, ListFilter, Listing, Offer, Outcome, Registered, SagaPage};

use crate::definition::{SagaDefinition, StepKind};
use crate::engine::{Engine, EngineError, MAX_GID_LEN, validate_gid};
use crate::machine::{self, SagaStatus};
use crate::store::{InstanceRecord, ListCursor, ListQuery, StoreError};

/// The session cookie's name.
const COOKIE: &str = "saga_console_session";

/// Rows on one page of the listing.
const PAGE_SIZE: u32 = 50;

/// Largest form the console reads.
const FORM_LIMIT: usize = 16 * 1024;

/// Longest saga name a filter may hold.
const MAX_SAGA_NAME: usize = 128;

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// What the pages allow: the console's own stylesheet and script, nothing inline, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's state: the engine it shows and who may use it.
#[derive(Clone)]
struct Console {
    engine: Engine,
    auth: OperatorAuth,
}

/// The console's routes over `engine`, guarded by `auth`. Mount it with
/// [`Router::nest`](axum::Router::nest) (its links follow the mount point) or serve it as it
/// is. Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so that failed
/// sign-ins are limited per client rather than for all clients at once.
pub fn router(engine: Engine, auth: OperatorAuth) -> Router {
    let console = Console { engine, auth };
    Router::new()
        .route("/", get(sagas))
        .route("/sign-in", post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/definitions", get(definitions))
        .route("/sagas/{gid}", get(saga))
        .route("/sagas/{gid}/{action}", get(confirm).post(act))
        .route(
            "/assets/console.css",
            get(|| asset("text/css; charset=utf-8", CSS)),
        )
        .route(
            "/assets/console.js",
            get(|| asset("text/javascript; charset=utf-8", JS)),
        )
        .fallback(|| async { Failure::new(StatusCode::NOT_FOUND, "There is no such page.") })
        .method_not_allowed_fallback(|| async {
            Failure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "This method is not allowed on this page.",
            )
        })
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .with_state(console)
}

/// A refusal or an error, rendered by [`guard`] as a page or as JSON.
#[derive(Debug, Clone)]
struct Failure {
    status: StatusCode,
    message: String,
    /// Show the sign-in form with the message, rather than an error page.
    sign_in: bool,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
            sign_in: false,
        }
    }

    fn sign_in(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            sign_in: true,
            ..Failure::new(status, message)
        }
    }

    fn no_saga(gid: &str) -> Self {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!("There is no saga with gid {gid}."),
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "the console could not read the store");
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The saga store cannot be read: {e}"),
        )
    }
}

impl From<FormRejection> for Failure {
    fn from(e: FormRejection) -> Self {
        Failure::new(e.status(), e.body_text())
    }
}

impl From<PathRejection> for Failure {
    fn from(e: PathRejection) -> Self {
        Failure::new(e.status(), e.body_text())
    }
}

/// What every handler knows of its request: where the console is mounted, the session, the
/// client and the headers.
struct Ctx {
    base: String,
    session: Option<Session>,
    client: IpAddr,
    headers: HeaderMap,
}

impl Ctx {
    fn frame(&self) -> Frame<'_> {
        Frame {
            base: &self.base,
            session: self.session.as_ref(),
        }
    }

    /// The path the session cookie is limited to.
    fn cookie_path(&self) -> String {
        self.frame().home()
    }

    /// The session of a state change, which must come from the console's own origin and carry
    /// the session's CSRF token.
    fn state_change(&self, auth: &OperatorAuth, csrf: &str) -> Result<&Session, Failure> {
        if !auth.origin_present_and_allowed(&self.headers) {
            return Err(foreign_origin());
        }
        let Some(session) = &self.session else {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "Sign in first: this action needs a console session.",
            ));
        };
        if !OperatorAuth::check_csrf(session, csrf) {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "The form's CSRF token was refused: reload the page and try again.",
            ));
        }
        Ok(session)
    }
}

impl FromRequestParts<Console> for Ctx {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Infallible> {
        Ok(Ctx {
            base: base_of(&parts.extensions),
            session: session_of(&console.auth, &parts.headers),
            client: auth::client_of(&parts.extensions),
            headers: parts.headers.clone(),
        })
    }
}

/// The path the console is mounted at, without a trailing slash.
fn base_of(extensions: &axum::http::Extensions) -> String {
    extensions
        .get::<NestedPath>()
        .map(|p| p.as_str().trim_end_matches('/').to_string())
        .unwrap_or_default()
}

/// The session of a request's cookie, if it carries a valid one.
fn session_of(auth: &OperatorAuth, headers: &HeaderMap) -> Option<Session> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == COOKIE)
        .find_map(|c| auth.session(c.value()))
}

fn foreign_origin() -> Failure {
    Failure::new(
        StatusCode::FORBIDDEN,
        "Refused: a state change must come from the console's own pages (the Origin header is missing or foreign).",
    )
}

/// The middleware around every route: 403 while no operator token is configured, failures
/// rendered as a page or as JSON, the security headers.
async fn guard(State(console): State<Console>, request: Request, next: Next) -> Response {
    let html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    let base = base_of(request.extensions());
    let session = session_of(&console.auth, request.headers());
    let mut response = if console.auth.is_enabled() {
        next.run(request).await
    } else {
        Failure::new(
            StatusCode::FORBIDDEN,
            "The console is disabled: the service was started without an operator token.",
        )
        .into_response()
    };
    if let Some(failure) = response.extensions_mut().remove::<Failure>() {
        let frame = Frame {
            base: &base,
            session: session.as_ref(),
        };
        let (body, content_type) = if !html {
            let body = serde_json::json!({ "error": failure.message }).to_string();
            (body, "application/json")
        } else if failure.sign_in {
            let page = pages::sign_in(&frame, console.auth.hint(), Some(&failure.message));
            (page.into_string(), "text/html; charset=utf-8")
        } else {
            let title = failure.status.canonical_reason().unwrap_or("Error");
            let page = pages::failure(&frame, title, &failure.message);
            (page.into_string(), "text/html; charset=utf-8")
        };
        *response.body_mut() = Body::from(body);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let headers = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn html(markup: maud::Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// `GET /`: the sign-in form, or once signed in the sagas.
async fn sagas(
    ctx: Ctx,
    State(console): State<Console>,
    filter: Result<Query<ListFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    if ctx.session.is_none() {
        return Ok(html(pages::sign_in(
            &ctx.frame(),
            console.auth.hint(),
            None,
        )));
    }
    let filter = filter
        .map(|Query(f)| f)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let store = console.engine.store();
    let counts = store.count_by_status().await?;
    let query = list_query(&filter);
    let mut rows = match &query {
        Ok(query) => store.list_page(query).await?,
        Err(_) => Vec::new(),
    };
    let older = if rows.len() > PAGE_SIZE as usize {
        rows.truncate(PAGE_SIZE as usize);
        rows.last().map(|last| ListFilter {
            after: format!("{}.{}", last.created_at, last.gid),
            ..filter.clone()
        })
    } else {
        None
    };
    let mut sagas: Vec<&'static str> = console
        .engine
        .newest_definitions()
        .iter()
        .map(|d| d.name)
        .collect();
    sagas.sort_unstable();
    sagas.dedup();
    let listing = Listing {
        counts: &counts,
        rows: &rows,
        filter: &filter,
        sagas: &sagas,
        older,
        refused: query.as_ref().err().map(String::as_str),
    };
    let status = if query.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, html(pages::listing(&ctx.frame(), &listing))).into_response())
}

/// The store's query for the listing's filters, or why they are refused.
fn list_query(filter: &ListFilter) -> Result<ListQuery, String> {
    let status = match filter.status.as_str() {
        "" => None,
        s => Some(SagaStatus::parse(s).ok_or_else(|| {
            format!(
                "Unknown status `{s}`: one of running, compensating, succeeded, compensated, stuck."
            )
        })?),
    };
    if filter.saga.len() > MAX_SAGA_NAME {
        return Err(format!(
            "A saga name has at most {MAX_SAGA_NAME} characters."
        ));
    }
    let gid_prefix = filter.gid.trim();
    if gid_prefix.len() > MAX_GID_LEN
        || (!gid_prefix.is_empty() && validate_gid(gid_prefix).is_err())
    {
        return Err(format!(
            "A gid prefix has at most {MAX_GID_LEN} characters, each one of A-Z, a-z, 0-9, `_`, `.`, `:` and `-`."
        ));
    }
    let after = match filter.after.as_str() {
        "" => None,
        after => {
            let cursor = after
                .split_once('.')
                .and_then(|(at, gid)| Some((at.parse::<i64>().ok()?, gid)))
                .filter(|(_, gid)| validate_gid(gid).is_ok());
            let Some((created_at, gid)) = cursor else {
                return Err("The page position is not one the console wrote.".to_string());
            };
            Some(ListCursor {
                created_at,
                gid: gid.to_string(),
            })
        }
    };
    Ok(ListQuery {
        status,
        saga: Some(filter.saga.clone()).filter(|s| !s.is_empty()),
        gid_prefix: Some(gid_prefix.to_string()).filter(|s| !s.is_empty()),
        after,
        limit: PAGE_SIZE + 1,
    })
}

/// The sign-in form.
#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

/// A form of a state change; a missing token is refused like a wrong one.
#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /sign-in`: a session for the operator token.
async fn sign_in(
    ctx: Ctx,
    State(console): State<Console>,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Result<Response, Failure> {
    if !console.auth.origin_present_and_allowed(&ctx.headers) {
        return Err(foreign_origin());
    }
    let Form(form) = form?;
    match console.auth.sign_in(ctx.client, &form.token) {
        Ok(()) => {
            let Some((value, _)) = console.auth.new_session() else {
                return Err(Failure::new(
                    StatusCode::FORBIDDEN,
                    "The console is disabled.",
                ));
            };
            tracing::info!(client = %ctx.client, "console sign-in");
            let ttl = i64::try_from(console.auth.ttl().as_secs()).unwrap_or(i64::MAX);
            let cookie = Cookie::build((COOKIE, value))
                .path(ctx.cookie_path())
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(console.auth.cookie_is_secure())
                .max_age(cookie::time::Duration::seconds(ttl));
            Ok(with_cookie(
                Redirect::to(&ctx.frame().home()),
                cookie.build(),
            ))
        }
        Err(SignInRefused::WrongToken) => {
            tracing::warn!(client = %ctx.client, "console sign-in refused: not the operator token");
            Err(Failure::sign_in(
                StatusCode::UNAUTHORIZED,
                "That is not the operator token.",
            ))
        }
        Err(SignInRefused::TooMany(wait)) => {
            let seconds = wait.as_secs().max(1);
            tracing::warn!(client = %ctx.client, retry_after_s = seconds, "console sign-in refused: too many failures");
            let mut response = Failure::sign_in(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many failed sign-ins from this address: try again in {seconds} s."),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            Ok(response)
        }
    }
}

/// `POST /sign-out`: ends the session in this browser.
async fn sign_out(
    ctx: Ctx,
    State(console): State<Console>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, Failure> {
    let Form(form) = form?;
    ctx.state_change(&console.auth, &form.csrf)?;
    let cookie = Cookie::build((COOKIE, ""))
        .path(ctx.cookie_path())
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(console.auth.cookie_is_secure())
        .max_age(cookie::time::Duration::ZERO);
    Ok(with_cookie(
        Redirect::to(&ctx.frame().home()),
        cookie.build(),
    ))
}

fn with_cookie(redirect: Redirect, cookie: Cookie<'_>) -> Response {
    let mut response = redirect.into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SagaParams {
    outcome: String,
}

/// A stored saga by the gid of a path, or 404.
async fn stored(console: &Console, gid: &str) -> Result<InstanceRecord, Failure> {
    if validate_gid(gid).is_err() {
        return Err(Failure::no_saga(gid));
    }
    console
        .engine
        .store()
        .load(gid)
        .await?
        .ok_or_else(|| Failure::no_saga(gid))
}

/// `GET /sagas/{gid}`: one saga.
async fn saga(
    ctx: Ctx,
    State(console): State<Console>,
    gid: Result<Path<String>, PathRejection>,
    params: Result<Query<SagaParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    if ctx.session.is_none() {
        return Ok(Redirect::to(&ctx.frame().home()).into_response());
    }
    let Path(gid) = gid?;
    let record = stored(&console, &gid).await?;
    let attempts = console.engine.store().attempts(&gid).await?;
    let definition = console.engine.definition_of(&record.fingerprint);
    let offer = offer(definition, &record);
    let view = console.engine.view(record.clone());
    let page = SagaPage {
        view: &view,
        record: &record,
        attempts: &attempts,
        definition,
        offer: &offer,
        outcome: params.ok().and_then(|Query(p)| Outcome::parse(&p.outcome)),
    };
    Ok(html(pages::saga(&ctx.frame(), &page)))
}

/// Which operator actions the engine allows on a stored saga now, and why not the others: the
/// rules of [`Engine::retry`] and [`Engine::compensate`].
fn offer(definition: Option<&SagaDefinition>, record: &InstanceRecord) -> Offer {
    let Some(def) = definition else {
        let why = format!(
            "this engine does not know the saga's definition (fingerprint {})",
            record.fingerprint
        );
        return Offer {
            retry: Err(why.clone()),
            compensate: Err(why),
        };
    };
    let state = &record.state;
    let status = state.status;
    let retry = if machine::can_retry(state) {
        Ok(())
    } else {
        Err(format!("the saga has finished ({status})"))
    };
    let compensate = if machine::can_compensate(def, state) {
        Ok(())
    } else if status.is_finished() {
        Err(format!("the saga has finished ({status})"))
    } else {
        let step = machine::point_of_no_return(def).and_then(|i| def.steps.get(i));
        Err(match step {
            Some(step) if step.kind == StepKind::Pivot => format!(
                "the saga has passed its pivot `{}`: it can only go forward now",
                step.name
            ),
            Some(step) => format!(
                "the saga has passed its point of no return `{}`: it can only go forward now",
                step.name
            ),
            None => "the saga has passed its point of no return".to_string(),
        })
    };
    Offer { retry, compensate }
}

/// `GET /sagas/{gid}/{action}`: asks to confirm an operator action.
async fn confirm(
    ctx: Ctx,
    State(console): State<Console>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Failure> {
    if ctx.session.is_none() {
        return Ok(Redirect::to(&ctx.frame().home()).into_response());
    }
    let Path((gid, action)) = path?;
    let action = Action::parse(&action)
        .ok_or_else(|| Failure::new(StatusCode::NOT_FOUND, "There is no such page."))?;
    let record = stored(&console, &gid).await?;
    let offer = offer(console.engine.definition_of(&record.fingerprint), &record);
    Ok(html(pages::confirm(
        &ctx.frame(),
        &gid,
        action,
        offer.get(action),
    )))
}

/// `POST /sagas/{gid}/{action}`: an operator action, then the saga's page with its outcome.
async fn act(
    ctx: Ctx,
    State(console): State<Console>,
    path: Result<Path<(String, String)>, PathRejection>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, Failure> {
    if !console.auth.origin_present_and_allowed(&ctx.headers) {
        return Err(foreign_origin());
    }
    let Path((gid, action)) = path?;
    let Form(form) = form?;
    ctx.state_change(&console.auth, &form.csrf)?;
    let action = Action::parse(&action)
        .ok_or_else(|| Failure::new(StatusCode::NOT_FOUND, "There is no such page."))?;
    if validate_gid(&gid).is_err() {
        return Err(Failure::no_saga(&gid));
    }
    let done = match action {
        Action::Retry => console.engine.retry(&gid).await,
        Action::Compensate => console.engine.compensate(&gid).await,
    };
    let outcome = match done {
        Ok(()) if action == Action::Retry => Outcome::Retried,
        Ok(()) => Outcome::Compensating,
        Err(EngineError::Finished { .. }) => Outcome::Finished,
        Err(EngineError::PastPivot { .. }) => Outcome::PastPivot,
        Err(EngineError::UnknownDefinition { .. }) => Outcome::UnknownDefinition,
        Err(EngineError::NotFound(_)) => return Err(Failure::no_saga(&gid)),
        Err(e @ (EngineError::Store(_) | EngineError::ShuttingDown)) => {
            return Err(Failure::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()));
        }
        Err(e) => {
            return Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ));
        }
    };
    tracing::info!(
        gid,
        action = action.as_str(),
        outcome = outcome.as_str(),
        client = %ctx.client,
        "operator action from the console"
    );
    let to = format!(
        "{}?outcome={}",
        ctx.frame().saga_href(&gid),
        outcome.as_str()
    );
    Ok(Redirect::to(&to).into_response())
}

/// `GET /definitions`: every registered saga, newest version first, and the sagas of
/// definitions this engine does not know.
async fn definitions(ctx: Ctx, State(console): State<Console>) -> Result<Response, Failure> {
    if ctx.session.is_none() {
        return Ok(Redirect::to(&ctx.frame().home()).into_response());
    }
    let newest: Vec<String> = console
        .engine
        .newest_definitions()
        .iter()
        .map(|d| d.fingerprint())
        .collect();
    let mut registered: Vec<Registered> = console
        .engine
        .definitions()
        .into_iter()
        .map(|definition| Registered {
            newest: newest.contains(&definition.fingerprint()),
            definition,
        })
        .collect();
    registered.sort_by_key(|r| (r.definition.name, std::cmp::Reverse(r.definition.version)));
    let unknown = match console.engine.unknown_definitions().await {
        Ok(unknown) => unknown,
        Err(e) => return Err(Failure::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    };
    Ok(html(pages::definitions(
        &ctx.frame(),
        &registered,
        &unknown,
    )))
}
