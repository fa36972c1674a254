//! The console's pages as HTML, rendered on the server with maud, which escapes every value it
//! inserts: gids, reasons, errors, inputs and outputs show as text, whatever they hold.

use std::time::{Duration, UNIX_EPOCH};

use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use super::auth::Session;
use super::diagram::{self, Tone};
use crate::definition::SagaDefinition;
use crate::engine::{SagaView, UnknownDefinition};
use crate::machine::SagaStatus;
use crate::store::{AttemptRecord, InstanceRecord, SagaSummary};

/// How often a page that shows sagas in motion fetches itself again, in milliseconds.
const REFRESH_MS: u32 = 2000;

/// What may stay as it is in a path segment: the gid characters the engine accepts.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b':');

/// Where the console is mounted and who is looking: what every page needs.
pub(crate) struct Frame<'a> {
    /// The path the console is mounted at, without a trailing slash (`""` at the root).
    pub base: &'a str,
    /// The signed-in operator's session, if any.
    pub session: Option<&'a Session>,
}

impl Frame<'_> {
    /// The console's first page.
    pub(crate) fn home(&self) -> String {
        if self.base.is_empty() {
            "/".to_string()
        } else {
            self.base.to_string()
        }
    }

    /// The page of the saga `gid`.
    pub(crate) fn saga_href(&self, gid: &str) -> String {
        format!("{}/sagas/{}", self.base, utf8_percent_encode(gid, SEGMENT))
    }

    /// The page confirming `action` on the saga `gid`.
    pub(crate) fn action_href(&self, gid: &str, action: Action) -> String {
        format!("{}/{}", self.saga_href(gid), action.as_str())
    }

    /// The listing with these filters.
    pub(crate) fn list_href(&self, filter: &ListFilter) -> String {
        match serde_urlencoded::to_string(filter) {
            Ok(query) if !query.is_empty() => format!("{}?{query}", self.home()),
            _ => self.home(),
        }
    }

    fn href(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Which part of the console a page belongs to, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Sagas,
    Definitions,
    Other,
}

/// An operator action the console offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// [`Engine::retry`](crate::Engine::retry).
    Retry,
    /// [`Engine::compensate`](crate::Engine::compensate).
    Compensate,
}

impl Action {
    /// The action's name in paths.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Compensate => "compensate",
        }
    }

    /// The action named `s` in a path.
    pub(crate) fn parse(s: &str) -> Option<Action> {
        match s {
            "retry" => Some(Action::Retry),
            "compensate" => Some(Action::Compensate),
            _ => None,
        }
    }
}

/// What an operator action came to, shown on the saga's page after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The engine took the retry.
    Retried,
    /// The engine turned the saga to compensation.
    Compensating,
    /// Refused: the saga has finished.
    Finished,
    /// Refused: the saga has passed its point of no return.
    PastPivot,
    /// Refused: the engine does not know the saga's definition.
    UnknownDefinition,
}

impl Outcome {
    /// The outcome's name in the saga page's query.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Retried => "retried",
            Outcome::Compensating => "compensating",
            Outcome::Finished => "finished",
            Outcome::PastPivot => "past-pivot",
            Outcome::UnknownDefinition => "unknown-definition",
        }
    }

    /// The outcome named `s`; anything else shows nothing.
    pub(crate) fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Retried,
            Outcome::Compensating,
            Outcome::Finished,
            Outcome::PastPivot,
            Outcome::UnknownDefinition,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    fn accepted(self) -> bool {
        matches!(self, Outcome::Retried | Outcome::Compensating)
    }

    fn message(self) -> &'static str {
        match self {
            Outcome::Retried => "Retry accepted: the engine drives the saga again now.",
            Outcome::Compensating => {
                "Compensation accepted: the engine compensates every step that may have started."
            }
            Outcome::Finished => "Refused: the saga has finished.",
            Outcome::PastPivot => "Refused: the saga has passed its point of no return.",
            Outcome::UnknownDefinition => {
                "Refused: this engine does not know the saga's definition."
            }
        }
    }
}

/// The listing's filters as the query string carries them; empty means any.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(default)]
pub(crate) struct ListFilter {
    /// A saga status.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// A saga name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub saga: String,
    /// A gid prefix.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gid: String,
    /// Where the page starts: `{created_at}.{gid}` of the row before it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub after: String,
}

/// Whether an operator action is offered, or why not.
pub(crate) struct Offer {
    /// `Ok` when the engine allows it now, else the reason it does not.
    pub retry: Result<(), String>,
    /// The same for compensate.
    pub compensate: Result<(), String>,
}

impl Offer {
    pub(crate) fn get(&self, action: Action) -> &Result<(), String> {
        match action {
            Action::Retry => &self.retry,
            Action::Compensate => &self.compensate,
        }
    }
}

/// The whole page around `body`.
fn page(frame: &Frame, title: &str, section: Section, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · saga console" }
                link rel="stylesheet" href=(frame.href("/assets/console.css"));
                script src=(frame.href("/assets/console.js")) defer {}
            }
            body data-refresh=[refresh.then_some(REFRESH_MS)] {
                header.top {
                    a.brand href=(frame.home()) { "Saga console" }
                    @if let Some(session) = frame.session {
                        nav {
                            a.current[section == Section::Sagas] href=(frame.home()) { "Sagas" }
                            a.current[section == Section::Definitions] href=(frame.href("/definitions")) {
                                "Definitions"
                            }
                        }
                        form.sign-out method="post" action=(frame.href("/sign-out")) {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button.quiet type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in form, with why the last sign-in was refused.
pub(crate) fn sign_in(frame: &Frame, hint: Option<&str>, refused: Option<&str>) -> Markup {
    let body = html! {
        section.sign-in {
            h1 { "Sign in" }
            p { "The console needs the operator token this service was started with." }
            @if let Some(hint) = hint {
                p.hint { "It is " (hint) "." }
            }
            @if let Some(refused) = refused {
                p.message.refused #sign-in-refused role="alert" { (refused) }
            }
            form method="post" action=(frame.href("/sign-in")) {
                label for="token" { "Operator token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button #sign-in type="submit" { "Sign in" }
            }
        }
    };
    page(frame, "Sign in", Section::Other, false, body)
}

/// A page that says what went wrong.
pub(crate) fn failure(frame: &Frame, title: &str, message: &str) -> Markup {
    let body = html! {
        h1 { (title) }
        p.message.refused #failure role="alert" { (message) }
        p { a href=(frame.home()) { "Back to the console" } }
    };
    page(frame, title, Section::Other, false, body)
}

/// What the listing page shows.
pub(crate) struct Listing<'a> {
    /// Sagas by status, over the whole store.
    pub counts: &'a [(SagaStatus, i64)],
    /// The rows of this page.
    pub rows: &'a [SagaSummary],
    /// The filters of this page.
    pub filter: &'a ListFilter,
    /// The registered sagas' names, for the filter.
    pub sagas: &'a [&'static str],
    /// The next page's filter, when there are older rows.
    pub older: Option<ListFilter>,
    /// Why the filters were refused, if they were.
    pub refused: Option<&'a str>,
}

/// The sagas: counts by status, the filters, a page of the listing.
pub(crate) fn listing(frame: &Frame, listing: &Listing) -> Markup {
    let filter = listing.filter;
    let count = |status: SagaStatus| {
        listing
            .counts
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    };
    let only = |status: SagaStatus| ListFilter {
        status: status.as_str().to_string(),
        ..ListFilter::default()
    };
    let paged = !filter.after.is_empty();
    let first = ListFilter {
        after: String::new(),
        ..filter.clone()
    };
    let body = html! {
        h1 { "Sagas" }
        section #counts data-live {
            ul.counts {
                @for status in SagaStatus::ALL {
                    @let n = count(status);
                    @let alert = if status == SagaStatus::Stuck && n > 0 { " alert" } else { "" };
                    li class=(format!("count status-{}{alert}", status.as_str())) {
                        a href=(frame.list_href(&only(status))) data-status=(status.as_str()) {
                            span.number { (n) }
                            span.what { (status.as_str()) }
                        }
                    }
                }
            }
        }
        form.filter method="get" action=(frame.home()) {
            label {
                "Status "
                select name="status" {
                    option value="" selected[filter.status.is_empty()] { "any" }
                    @for status in SagaStatus::ALL {
                        option value=(status.as_str()) selected[filter.status == status.as_str()] { (status.as_str()) }
                    }
                }
            }
            label {
                "Saga "
                select name="saga" {
                    option value="" selected[filter.saga.is_empty()] { "any" }
                    @for name in listing.sagas {
                        option value=(name) selected[filter.saga == *name] { (name) }
                    }
                    @if !filter.saga.is_empty() && !listing.sagas.contains(&filter.saga.as_str()) {
                        option value=(filter.saga) selected { (filter.saga) }
                    }
                }
            }
            label {
                "Gid prefix "
                input type="search" name="gid" value=(filter.gid) maxlength="128" placeholder="order-";
            }
            button type="submit" { "Filter" }
            a.clear href=(frame.home()) { "Clear" }
        }
        section #list data-live {
            @if let Some(refused) = listing.refused {
                p.message.refused role="alert" { (refused) }
            } @else if listing.rows.is_empty() {
                p.empty { "No saga matches." }
            } @else {
                table.sagas {
                    thead {
                        tr {
                            th { "Gid" } th { "Saga" } th { "Status" } th { "Reason" } th { "Created" } th { "Updated" }
                        }
                    }
                    tbody {
                        @for row in listing.rows {
                            tr.stuck[row.status == SagaStatus::Stuck] data-gid=(row.gid) {
                                td { a href=(frame.saga_href(&row.gid)) { code { (row.gid) } } }
                                td { (row.saga) }
                                td { (status_badge(row.status)) }
                                td.reason { @if let Some(r) = &row.reason { (r) } }
                                td.time { (time(row.created_at)) }
                                td.time { (time(row.updated_at)) }
                            }
                        }
                    }
                }
            }
            p.pager {
                @if paged { a #newest href=(frame.list_href(&first)) { "Newest" } }
                @if let Some(older) = &listing.older { a #older href=(frame.list_href(older)) { "Older" } }
            }
        }
    };
    page(frame, "Sagas", Section::Sagas, true, body)
}

/// What the page of one saga shows.
pub(crate) struct SagaPage<'a> {
    /// The saga as the engine shows it.
    pub view: &'a SagaView,
    /// Its stored row: owner, lease, fence, deadline.
    pub record: &'a InstanceRecord,
    /// Its finished calls, oldest first.
    pub attempts: &'a [AttemptRecord],
    /// Its definition, when the engine knows it.
    pub definition: Option<&'static SagaDefinition>,
    /// The operator actions on offer.
    pub offer: &'a Offer,
    /// What the last operator action came to.
    pub outcome: Option<Outcome>,
}

/// One saga: facts, operator actions, diagram, steps, attempt log, input.
pub(crate) fn saga(frame: &Frame, p: &SagaPage) -> Markup {
    let view = p.view;
    let tones: Vec<Tone> = view
        .steps
        .iter()
        .map(|s| Tone::of(s, view.status))
        .collect();
    let finished = view.status.is_finished();
    let body = html! {
        p.crumbs { a href=(frame.home()) { "Sagas" } " / " (view.saga) }
        h1 { code #gid { (view.gid) } }
        @if let Some(outcome) = p.outcome {
            p.message.accepted[outcome.accepted()].refused[!outcome.accepted()] #outcome role="status" {
                (outcome.message())
            }
        }
        section #summary data-live {
            dl.facts {
                dt { "Status" } dd #status data-status=(view.status.as_str()) { (status_badge(view.status)) }
                dt { "Reason" } dd #reason { @if let Some(r) = &view.reason { (r) } @else { "—" } }
                dt { "Saga" } dd { a href=(frame.href("/definitions")) { (view.saga) } }
                dt { "Created" } dd { (time(view.created_at)) }
                dt { "Updated" } dd { (time(view.updated_at)) }
                @if let Some(deadline) = p.record.deadline_at {
                    dt { "Deadline" } dd { (time(deadline)) }
                }
                @if !finished {
                    dt { "Owner" } dd { @if let Some(o) = &p.record.owner { code { (o) } } @else { "none" } }
                    dt { "Next wake" } dd { (time(p.record.next_wake_at)) }
                }
                dt { "Fence" } dd { (p.record.fence) }
            }
            div.actions {
                (action_button(frame, &view.gid, Action::Retry, &p.offer.retry))
                (action_button(frame, &view.gid, Action::Compensate, &p.offer.compensate))
            }
        }
        section #diagram data-live {
            h2 { "Diagram" }
            @if let Some(def) = p.definition {
                div.diagram-frame { (diagram::svg(def, &tones, "saga")) }
                ul.legend {
                    @for tone in Tone::LEGEND { li class=(tone.class()) { span.swatch {} (tone.label()) } }
                }
            } @else {
                p.empty { "This engine does not know the saga's definition (fingerprint "
                    code { (p.record.fingerprint) } ")." }
            }
        }
        section #steps data-live {
            h2 { "Steps" }
            table.steps {
                thead {
                    tr {
                        th { "#" } th { "Step" } th { "Kind" } th { "Status" } th { "Attempts" }
                        th { "Compensation attempts" } th { "Last error" } th { "First call" } th { "Last call ended" }
                        th { "Output" }
                    }
                }
                tbody {
                    @for (i, (step, tone)) in view.steps.iter().zip(&tones).enumerate() {
                        @let calls = p.attempts.iter().filter(|a| a.step == step.name);
                        tr data-step=(step.name) {
                            td { (i) }
                            td { code { (step.name) } }
                            td { @if let Some(s) = p.definition.and_then(|d| d.steps.get(i)) { (s.kind) } }
                            td { span class=(format!("badge {}", tone.class())) { (tone.label()) } }
                            td.number { (step.attempts) }
                            td.number { (step.compensate_attempts) }
                            td.error { @if let Some(e) = &step.last_error { (e) } }
                            td.time { @if let Some(t) = calls.clone().map(|a| a.started_at).min() { (clock(t)) } }
                            td.time { @if let Some(t) = calls.map(|a| a.finished_at).max() { (clock(t)) } }
                            td { @if let Some(o) = &step.output { code.json { (o) } } }
                        }
                    }
                }
            }
        }
        section #attempts data-live {
            h2 { "Attempt log" }
            @if p.attempts.is_empty() {
                p.empty { "No call has finished yet." }
            } @else {
                table.attempts {
                    thead {
                        tr {
                            th { "Started" } th { "Step" } th { "Op" } th { "Attempt" } th { "Owner" }
                            th { "Outcome" } th { "Duration" } th { "Error" }
                        }
                    }
                    tbody {
                        @for a in p.attempts {
                            tr class=(format!("outcome-{}", a.outcome.as_str())) {
                                td.time { (clock(a.started_at)) }
                                td { code { (a.step) } }
                                td { (a.op.as_str()) }
                                td.number { (a.attempt) }
                                td { code { (a.owner) } }
                                td { (a.outcome.as_str()) }
                                td.number { (duration(a.finished_at - a.started_at)) }
                                td.error { @if let Some(e) = &a.error { (e) } }
                            }
                        }
                    }
                }
            }
        }
        section #input {
            h2 { "Input" }
            pre.json { (serde_json::to_string_pretty(&view.input).unwrap_or_default()) }
        }
    };
    page(frame, &view.gid, Section::Sagas, !finished, body)
}

/// An operator action's button, or the action shown disabled with the reason it is not offered.
fn action_button(frame: &Frame, gid: &str, action: Action, offer: &Result<(), String>) -> Markup {
    let label = match action {
        Action::Retry => "Retry",
        Action::Compensate => "Compensate",
    };
    html! {
        div.action {
            @match offer {
                Ok(()) => {
                    a.button id=(action.as_str()) href=(frame.action_href(gid, action)) { (label) "…" }
                }
                Err(why) => {
                    button id=(action.as_str()) type="button" disabled { (label) }
                    span.why id=(format!("{}-why", action.as_str())) { (why) }
                }
            }
        }
    }
}

/// The confirmation of an operator action, or why it is not offered.
pub(crate) fn confirm(
    frame: &Frame,
    gid: &str,
    action: Action,
    offer: &Result<(), String>,
) -> Markup {
    let (title, explain, go) = match action {
        Action::Retry => (
            "Retry this saga?",
            "The engine calls the saga's waiting step now instead of after its backoff. A stuck saga gets a \
             fresh attempt budget and resumes where it stopped.",
            "Retry now",
        ),
        Action::Compensate => (
            "Compensate this saga?",
            "The saga turns to compensation: every step that may have started is compensated, in reverse \
             order, and a call in flight is abandoned as in doubt. This cannot be taken back.",
            "Compensate now",
        ),
    };
    let csrf = frame.session.map_or("", |s| s.csrf.as_str());
    let body = html! {
        p.crumbs { a href=(frame.home()) { "Sagas" } " / " a href=(frame.saga_href(gid)) { code { (gid) } } }
        h1 { (title) }
        p { "Saga " code { (gid) } ". " (explain) }
        @match offer {
            Ok(()) => {
                form.confirm method="post" action=(frame.action_href(gid, action)) {
                    input type="hidden" name="csrf" value=(csrf);
                    button.danger[action == Action::Compensate] #confirm type="submit" { (go) }
                    a.cancel #cancel href=(frame.saga_href(gid)) { "Cancel" }
                }
            }
            Err(why) => {
                p.message.refused #refused role="alert" { "Not offered: " (why) }
                p { a href=(frame.saga_href(gid)) { "Back to the saga" } }
            }
        }
    };
    page(frame, title, Section::Sagas, false, body)
}

/// A registered definition as the definitions page shows it.
pub(crate) struct Registered {
    /// The definition.
    pub definition: &'static SagaDefinition,
    /// Whether new sagas of its name start on it (the newest registered version).
    pub newest: bool,
}

/// Every registered saga with its steps, fingerprint and diagram, then the sagas waiting for an
/// engine that knows their definition.
pub(crate) fn definitions(
    frame: &Frame,
    definitions: &[Registered],
    unknown: &[UnknownDefinition],
) -> Markup {
    let names = |def: &SagaDefinition, steps: &[usize]| -> String {
        steps
            .iter()
            .filter_map(|&i| def.steps.get(i).map(|s| s.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let body = html! {
        h1 { "Definitions" }
        @for (n, registered) in definitions.iter().enumerate() {
            @let def = registered.definition;
            section.definition id=(format!("saga-{}-v{}", def.name, def.version)) data-saga=(def.name)
                data-version=(def.version) {
                h2 { (def.name) " " span.version { "version " (def.version) } }
                p.facts {
                    @if registered.newest {
                        "New sagas start on this version"
                    } @else {
                        "An older version: its sagas drain"
                    }
                    " · fingerprint " code.fingerprint { (def.fingerprint()) } " · "
                    a href=(frame.list_href(&ListFilter { saga: def.name.to_string(), ..ListFilter::default() })) {
                        "the sagas of " (def.name)
                    }
                }
                div.diagram-frame { (diagram::svg(def, &[], &format!("def{n}"))) }
                table.steps {
                    thead {
                        tr {
                            th { "#" } th { "Step" } th { "Kind" } th { "After" } th { "Reads" } th { "Compensation" }
                            th { "Output" } th { "Timeout" } th { "Retry" }
                        }
                    }
                    tbody {
                        @for (i, step) in def.steps.iter().enumerate() {
                            tr {
                                td { (i) }
                                td { code { (step.name) } }
                                td { (step.kind) }
                                td { (names(def, step.after)) }
                                td { (names(def, step.reads)) }
                                td { @if let Some(c) = step.compensation { code { (c) } } }
                                td { code { (step.output) } }
                                td { @if let Some(t) = step.timeout_ms { (t) " ms" } @else { "default" } }
                                td { (retry(step.retry)) }
                            }
                        }
                    }
                }
            }
        }
        @if !unknown.is_empty() {
            section #unknown-definitions {
                h2 { "Sagas of definitions this engine does not know" }
                p.hint {
                    "They wait, untouched, for an engine that registers their definition: an older or newer release."
                }
                table {
                    thead { tr { th { "Saga" } th { "Fingerprint" } th { "Waiting" } th { "First gids" } } }
                    tbody {
                        @for u in unknown {
                            tr {
                                td { (u.saga) }
                                td { code.fingerprint { (u.fingerprint) } }
                                td.number { (u.instances) }
                                td {
                                    @for (i, gid) in u.gids.iter().enumerate() {
                                        @if i > 0 { ", " }
                                        a href=(frame.saga_href(gid)) { code { (gid) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(frame, "Definitions", Section::Definitions, false, body)
}

fn retry(r: crate::definition::RetryOverride) -> String {
    let mut parts = Vec::new();
    if let Some(n) = r.max_attempts {
        parts.push(format!("{n} attempts"));
    }
    if let Some(ms) = r.initial_ms {
        parts.push(format!("from {ms} ms"));
    }
    if let Some(ms) = r.max_ms {
        parts.push(format!("up to {ms} ms"));
    }
    if parts.is_empty() {
        "default".to_string()
    } else {
        parts.join(", ")
    }
}

fn status_badge(status: SagaStatus) -> Markup {
    html! { span class=(format!("badge status-{}", status.as_str())) { (status.as_str()) } }
}

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds.
fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// A point in time, in full.
fn time(ms: i64) -> Markup {
    let full = rfc3339(ms);
    html! { time datetime=(full) { (full) } }
}

/// A point in time as its time of day (UTC), the date in its title: for the tables of one
/// saga, whose times are close together.
fn clock(ms: i64) -> Markup {
    let full = rfc3339(ms);
    let of_day = full.get(11..23).unwrap_or(&full);
    html! { time datetime=(full) title=(full) { (of_day) } }
}

fn duration(ms: i64) -> String {
    if ms < 1000 {
        format!("{} ms", ms.max(0))
    } else {
        format!("{:.2} s", ms as f64 / 1000.0)
    }
}
