//! End-to-end engine behaviour on a real SQLite file with a hand-written saga definition.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use saga_core::engine::Engine;
use saga_core::machine::SagaStatus;
use saga_core::step::{BoxFuture, RawActionResult};
use saga_core::store::Store;
use saga_core::store::sqlite::SqliteOptions;
use saga_core::{
    Retry, RetryOverride, Saga, SagaDefinition, SagaSteps, StepContext, StepDefinition, StepError,
    StepKind,
};

struct Three;

static STEPS: [StepDefinition; 3] = [
    StepDefinition {
        name: "a",
        kind: StepKind::Compensatable,
        after: &[],
        compensation: Some("undo_a"),
        timeout_ms: None,
        retry: RetryOverride {
            max_attempts: None,
            initial_ms: None,
            max_ms: None,
        },
    },
    StepDefinition {
        name: "b",
        kind: StepKind::Compensatable,
        after: &[0],
        compensation: Some("undo_b"),
        timeout_ms: None,
        retry: RetryOverride {
            max_attempts: None,
            initial_ms: None,
            max_ms: None,
        },
    },
    StepDefinition {
        name: "c",
        kind: StepKind::Pivot,
        after: &[1],
        compensation: None,
        timeout_ms: None,
        retry: RetryOverride {
            max_attempts: None,
            initial_ms: None,
            max_ms: None,
        },
    },
];
static DEF: SagaDefinition = SagaDefinition {
    name: "three",
    version: 1,
    steps: &STEPS,
};

impl Saga for Three {
    type Input = String;
    fn definition() -> &'static SagaDefinition {
        &DEF
    }
}

#[derive(Default)]
struct Counters {
    calls: [AtomicU32; 3],
    undos: [AtomicU32; 3],
}

impl SagaSteps<Arc<Counters>> for Three {
    fn run_action<'a>(
        h: &'a Arc<Counters>,
        step: usize,
        _ctx: &'a StepContext,
        input: &'a String,
    ) -> BoxFuture<'a, RawActionResult> {
        Box::pin(async move {
            let n = h.calls[step].fetch_add(1, Ordering::SeqCst) + 1;
            match (input.as_str(), step) {
                ("fail-b", 1) => Err(StepError::failure("no")),
                ("flaky-b", 1) if n < 3 => Err(StepError::retry("later")),
                _ => Ok(serde_json::json!(step)),
            }
        })
    }

    fn run_compensation<'a>(
        h: &'a Arc<Counters>,
        step: usize,
        _ctx: &'a StepContext,
        _input: &'a String,
        _output: Option<serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), Retry>> {
        Box::pin(async move {
            h.undos[step].fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

async fn engine(dir: &tempfile::TempDir, counters: Arc<Counters>) -> Engine {
    let store = Store::sqlite(dir.path().join("saga.db"), SqliteOptions::default())
        .await
        .unwrap();
    Engine::builder(store)
        .retry(Duration::from_millis(10), Duration::from_millis(50))
        .register::<Three, _>(counters)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn normal_business_failure_and_retry_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let counters = Arc::new(Counters::default());
    let engine = engine(&dir, counters.clone()).await;
    let wait = Duration::from_secs(5);

    let ok = engine
        .submit_and_wait::<Three>("g-ok", &"ok".to_string(), wait)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.status, SagaStatus::Succeeded);

    let failed = engine
        .submit_and_wait::<Three>("g-fail", &"fail-b".to_string(), wait)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, SagaStatus::Compensated);
    let statuses: Vec<_> = failed.steps.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(statuses, ["compensated", "compensated", "skipped"]);

    let flaky = engine
        .submit_and_wait::<Three>("g-flaky", &"flaky-b".to_string(), wait)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(flaky.status, SagaStatus::Succeeded);
    assert_eq!(flaky.steps[1].attempts, 3);
    assert_eq!(flaky.steps[1].last_error.as_deref(), Some("later"));

    let again = engine.submit::<Three>("g-ok", &"ok".to_string()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.status, SagaStatus::Succeeded);
    let conflict = engine.submit::<Three>("g-ok", &"other".to_string()).await;
    assert!(conflict.is_err());

    let listed = engine.list(None, 10).await.unwrap();
    assert_eq!(listed.len(), 3);
}
