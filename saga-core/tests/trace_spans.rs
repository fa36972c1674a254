//! The spans of one saga in OpenTelemetry (feature `opentelemetry`, docs in `saga_core::trace`),
//! recorded in memory: the submit continues the caller's trace, the driver continues the
//! submit, each step call (a retry included) is a child of the driver and is what the call's
//! `StepContext::traceparent` names, and the barrier's decision inside an in-process step is a
//! child of its call. A submit without a trace context, inside a recorded span, continues that
//! span's trace.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanId, TraceId, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use saga_core::barrier::{self, Barrier};
use saga_core::{
    Engine, EngineConfig, Retry, Saga, SagaStatus, StepContext, StepError, Store, SubmitOptions,
    TraceParent,
};
use sqlx::SqlitePool;
use tracing_subscriber::layer::SubscriberExt;

/// Two in-process steps, each inside its barrier; the first answers "retry" to its first call.
#[derive(Saga)]
#[saga(input = u32)]
enum InProcess {
    #[compensate(first_revert)]
    First,
    #[compensate(second_revert)]
    Second,
}

/// One call as its step saw it: step, attempt and the call's trace context.
type Seen = (&'static str, u32, Option<TraceParent>);

#[derive(Clone)]
struct Steps {
    pool: SqlitePool,
    /// Every call.
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Steps {
    async fn apply(&self, ctx: &StepContext) -> Result<(), StepError> {
        self.seen
            .lock()
            .unwrap()
            .push((ctx.step, ctx.attempt, ctx.traceparent));
        if ctx.step == "first" && ctx.attempt == 1 {
            return Err(StepError::retry("not yet"));
        }
        Barrier::for_step(ctx)
            .action(&self.pool, |_| Box::pin(async { Ok::<_, StepError>(()) }))
            .await?
            .into()
    }
}

impl InProcessSteps for Steps {
    async fn first(&self, ctx: &StepContext, _: &u32) -> Result<(), StepError> {
        self.apply(ctx).await
    }
    async fn first_revert(&self, _: &StepContext, _: &u32, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn second(&self, ctx: &StepContext, _: &u32) -> Result<(), StepError> {
        self.apply(ctx).await
    }
    async fn second_revert(&self, _: &StepContext, _: &u32, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn of_gid<'a>(spans: &'a [SpanData], gid: &str) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| attr(s, "gid").as_deref() == Some(gid))
        .collect()
}

fn named<'a>(spans: &[&'a SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().copied().filter(|s| s.name == name).collect()
}

/// Waits until the driver's span of `gid` has ended: it ends just after the saga finishes.
async fn spans_once_driven(exporter: &InMemorySpanExporter, gid: &str) -> Vec<SpanData> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = exporter.get_finished_spans().unwrap();
        if !named(&of_gid(&spans, gid), "saga").is_empty() || Instant::now() > until {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn the_spans_of_a_saga_form_one_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // The process's subscriber (this file's only test): spans also close on the database's
    // own threads, which see the global one.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let pool = saga_core::store::sqlite::open_pool(&dir.path().join("p.db"), true, 1)
            .await
            .unwrap();
        barrier::migrate(&pool).await.unwrap();
        let steps = Steps {
            pool,
            seen: Arc::default(),
        };
        let store = Store::sqlite(dir.path().join("saga.db"), Default::default())
            .await
            .unwrap();
        let config = EngineConfig {
            engine_id: Some("spans".into()),
            retry_initial: Duration::from_millis(5),
            retry_max: Duration::from_millis(10),
            ..EngineConfig::default()
        };
        let engine = Engine::builder(store)
            .config(config)
            .register::<InProcess, _>(steps.clone())
            .build()
            .await
            .unwrap();

        let caller: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap();
        let options = SubmitOptions::new().traceparent(caller);
        engine
            .submit_with::<InProcess>("spans", &1, options)
            .await
            .unwrap();
        let view = engine.wait("spans", Duration::from_secs(10)).await.unwrap();
        assert_eq!(view.view().status, SagaStatus::Succeeded);
        let spans = spans_once_driven(&exporter, "spans").await;
        let saga = of_gid(&spans, "spans");
        let trace = TraceId::from_bytes(caller.trace_id());
        assert!(
            saga.iter().all(|s| s.span_context.trace_id() == trace),
            "{saga:#?}"
        );

        let submit = named(&saga, "saga.submit");
        assert_eq!(submit.len(), 1, "{saga:#?}");
        let submit = submit[0];
        assert_eq!(
            submit.parent_span_id,
            SpanId::from_bytes(caller.parent_id())
        );
        assert_eq!(attr(submit, "created").as_deref(), Some("true"));
        // What is persisted is the submit's span.
        let persisted = engine.store().load("spans").await.unwrap().unwrap();
        assert_eq!(
            persisted.traceparent.map(|t| t.parent_id()),
            Some(submit.span_context.span_id().to_bytes())
        );

        let driver = named(&saga, "saga");
        assert_eq!(driver.len(), 1, "{saga:#?}");
        let driver = driver[0];
        assert_eq!(driver.parent_span_id, submit.span_context.span_id());
        assert_eq!(attr(driver, "engine").as_deref(), Some("spans"));

        let calls = named(&saga, "saga.step");
        let described: Vec<_> = calls
            .iter()
            .map(|s| {
                let (step, attempt) = (attr(s, "step").unwrap(), attr(s, "attempt").unwrap());
                (step, attempt, attr(s, "outcome").unwrap())
            })
            .collect();
        for expected in [
            ("first", "1", "in_doubt"),
            ("first", "2", "succeeded"),
            ("second", "1", "succeeded"),
        ] {
            let expected = (expected.0.into(), expected.1.into(), expected.2.into());
            assert!(described.contains(&expected), "{described:?}");
        }
        assert_eq!(calls.len(), 3, "{described:?}");
        let seen = steps.seen.lock().unwrap().clone();
        for call in &calls {
            assert_eq!(call.parent_span_id, driver.span_context.span_id());
            // The call's traceparent names its own span.
            let attempt: u32 = attr(call, "attempt").unwrap().parse().unwrap();
            let step = attr(call, "step").unwrap();
            let sent = seen
                .iter()
                .find(|(s, a, _)| *s == step && *a == attempt)
                .and_then(|(_, _, t)| *t)
                .expect("the call saw a traceparent");
            assert_eq!(sent.trace_id(), caller.trace_id());
            assert_eq!(sent.parent_id(), call.span_context.span_id().to_bytes());
            // A barrier decision under every call that reached the barrier.
            let barriers: Vec<_> = named(&saga, "saga.barrier")
                .into_iter()
                .filter(|b| b.parent_span_id == call.span_context.span_id())
                .collect();
            let reached = attr(call, "outcome").as_deref() == Some("succeeded");
            assert_eq!(barriers.len(), usize::from(reached), "{saga:#?}");
            if let Some(b) = barriers.first() {
                assert_eq!(attr(b, "outcome").as_deref(), Some("ran"));
                assert_eq!(attr(b, "step"), Some(step));
            }
        }

        // Without a trace context, a submit inside a recorded span continues its trace.
        let request = tracing::info_span!("request");
        let request_trace = {
            use opentelemetry::trace::TraceContextExt;
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            request.context().span().span_context().trace_id()
        };
        tracing::Instrument::instrument(engine.submit::<InProcess>("inner", &2), request.clone())
            .await
            .unwrap();
        drop(request);
        let _ = engine.wait("inner", Duration::from_secs(10)).await.unwrap();
        let spans = spans_once_driven(&exporter, "inner").await;
        let inner = of_gid(&spans, "inner");
        assert!(!inner.is_empty());
        assert!(
            inner
                .iter()
                .all(|s| s.span_context.trace_id() == request_trace),
            "{inner:#?}"
        );
        engine.shutdown().await;
    });
}
