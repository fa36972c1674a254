//! One trace per saga, over HTTP (docs/contract.md, "Additions to the contract": Tracing): every
//! step call carries a `traceparent` header whose trace id is the saga's, the retried call and
//! the calls an engine makes after its runtime was dropped mid-saga included. The submitter's
//! trace context is continued when given, else the saga starts a trace of its own, persisted
//! with the instance.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use saga_core::http::{SagaHeaders, StepClient};
use saga_core::{
    Engine, EngineConfig, Retry, Saga, SagaStatus, StepContext, StepError, Store, SubmitOptions,
    TraceParent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
}

/// Two steps over HTTP: `first` answers 503 to its first call, `second` can be held open.
#[derive(Saga)]
#[saga(input = Order)]
enum Traced {
    #[compensate(first_revert)]
    First,
    #[compensate(second_revert)]
    Second,
}

struct Steps {
    client: StepClient,
}

impl TracedSteps for Steps {
    async fn first(&self, ctx: &StepContext, input: &Order) -> Result<(), StepError> {
        self.client.call("/first", ctx, input).await
    }
    async fn first_revert(
        &self,
        ctx: &StepContext,
        input: &Order,
        _: Option<()>,
    ) -> Result<(), Retry> {
        self.client.compensate("/first", ctx, input).await
    }
    async fn second(&self, ctx: &StepContext, input: &Order) -> Result<(), StepError> {
        self.client.call("/second", ctx, input).await
    }
    async fn second_revert(
        &self,
        ctx: &StepContext,
        input: &Order,
        _: Option<()>,
    ) -> Result<(), Retry> {
        self.client.compensate("/second", ctx, input).await
    }
}

/// One call as the participant saw it.
#[derive(Debug, Clone)]
struct Seen {
    gid: String,
    step: String,
    traceparent: Option<TraceParent>,
}

/// The gid whose `second` call is held open, and where to report that it arrived.
type Hold = (String, mpsc::UnboundedSender<()>);

/// The participant: records every call's headers; `first` refuses its first call of each gid
/// with 503, `second` holds the call of a gid in `hold` open (and reports it) until released.
#[derive(Clone, Default)]
struct Participant {
    seen: Arc<Mutex<Vec<Seen>>>,
    hold: Arc<Mutex<Option<Hold>>>,
}

impl Participant {
    fn record(&self, headers: &SagaHeaders) -> usize {
        let mut seen = self.seen.lock().unwrap();
        seen.push(Seen {
            gid: headers.gid.clone(),
            step: headers.branch.clone(),
            traceparent: headers.traceparent,
        });
        seen.iter()
            .filter(|s| s.gid == headers.gid && s.step == headers.branch)
            .count()
    }

    fn calls(&self, gid: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.gid == gid).cloned().collect()
    }
}

async fn first(State(p): State<Participant>, headers: SagaHeaders) -> Response {
    if p.record(&headers) == 1 {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    }
    StatusCode::OK.into_response()
}

async fn second(State(p): State<Participant>, headers: SagaHeaders) -> Response {
    p.record(&headers);
    let held = p.hold.lock().unwrap().clone();
    if let Some((gid, reached)) = held
        && gid == headers.gid
    {
        let _ = reached.send(());
        std::future::pending::<()>().await;
    }
    StatusCode::OK.into_response()
}

/// Serves the participant on a runtime of its own, so that it outlives the engine's.
fn start_participant(participant: Participant) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new()
                .route("/first", post(first))
                .route("/second", post(second))
                .with_state(participant);
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn engine(store: Store, url: &str) -> Engine {
    let config = EngineConfig {
        engine_id: Some("trace-engine".into()),
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        step_timeout: Duration::from_secs(30),
        ..EngineConfig::default()
    };
    let steps = Steps {
        client: StepClient::new(url),
    };
    Engine::builder(store)
        .config(config)
        .register::<Traced, _>(steps)
        .build()
        .await
        .unwrap()
}

/// The calls of `gid` each carry `expected` (no spans are recorded here, so each names the
/// persisted parent); returns how many there were.
fn assert_calls_carry(participant: &Participant, gid: &str, expected: TraceParent) -> usize {
    let calls = participant.calls(gid);
    for call in &calls {
        assert_eq!(
            call.traceparent,
            Some(expected),
            "{gid}: the call of {} carries the saga's trace",
            call.step
        );
    }
    calls.len()
}

#[test]
fn every_call_carries_the_saga_trace_across_a_retry_and_a_dropped_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("saga.db");
    let participant = Participant::default();
    let url = start_participant(participant.clone());
    let caller: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .unwrap();
    let (reached_tx, mut reached) = mpsc::unbounded_channel();
    *participant.hold.lock().unwrap() = Some(("traced".into(), reached_tx));

    let crashed = runtime();
    crashed.block_on(async {
        let store = Store::sqlite(&path, Default::default()).await.unwrap();
        let engine = engine(store.clone(), &url).await;
        let options = SubmitOptions::new().traceparent(caller);
        engine
            .submit_with::<Traced>("traced", &Order { id: 1 }, options)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), reached.recv())
            .await
            .expect("the second step is called");
        let record = store.load("traced").await.unwrap().unwrap();
        assert_eq!(
            record.traceparent,
            Some(caller),
            "the caller's trace is persisted"
        );
    });
    // The crash: the engine and its call in flight are gone; the participant stays.
    drop(crashed);
    *participant.hold.lock().unwrap() = None;
    assert_eq!(
        assert_calls_carry(&participant, "traced", caller),
        3,
        "first (refused, then retried) and second"
    );

    let recovered = runtime();
    recovered.block_on(async {
        let store = Store::sqlite(&path, Default::default()).await.unwrap();
        let engine = engine(store, &url).await;
        let view = engine
            .wait("traced", Duration::from_secs(20))
            .await
            .unwrap()
            .terminal()
            .expect("the recovered saga finishes");
        assert_eq!(view.status, SagaStatus::Succeeded);

        // Without a caller's trace context the saga starts a trace of its own.
        engine
            .submit::<Traced>("fresh", &Order { id: 2 })
            .await
            .unwrap();
        let view = engine
            .wait("fresh", Duration::from_secs(20))
            .await
            .unwrap()
            .terminal()
            .unwrap();
        assert_eq!(view.status, SagaStatus::Succeeded);
        let own = engine
            .store()
            .load("fresh")
            .await
            .unwrap()
            .unwrap()
            .traceparent
            .expect("a trace of its own is persisted");
        assert_ne!(own.trace_id(), caller.trace_id());
        assert_eq!(assert_calls_carry(&participant, "fresh", own), 3);
    });
    let calls = participant.calls("traced");
    assert_eq!(
        calls.len(),
        4,
        "the second step is called again after the recovery"
    );
    assert_calls_carry(&participant, "traced", caller);
}
