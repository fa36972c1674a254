//! A small OTLP/HTTP trace receiver on 127.0.0.1: what `serve --otlp-endpoint` exports.
//!
//! It accepts `POST /v1/traces` with an `ExportTraceServiceRequest` in protobuf, as the OTLP/HTTP
//! exporter sends it, and keeps every span in a flat list of [`ReceivedSpan`]s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One span as it was received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The span's name (`saga.step`, ...).
    pub name: String,
    /// The trace id in lowercase hex.
    pub trace_id: String,
    /// The span id in lowercase hex.
    pub span_id: String,
    /// The parent span's id in lowercase hex; empty for a root span.
    pub parent_span_id: String,
    /// The attributes, each value as text (strings as they are, numbers and booleans shown).
    pub attributes: BTreeMap<String, String>,
    /// The exporting resource's `service.name`.
    pub service: String,
}

impl ReceivedSpan {
    /// An attribute's text, if the span has it.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The receiver: a server on its own thread and runtime, stopped when dropped.
pub struct OtlpReceiver {
    url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl OtlpReceiver {
    /// Starts a receiver on a free port of 127.0.0.1.
    pub fn start() -> OtlpReceiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, addr) = std::sync::mpsc::channel();
        let state = spans.clone();
        thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the OTLP receiver");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("a port for the OTLP receiver");
                    let _ = ready.send(listener.local_addr().expect("its address"));
                    let app = Router::new()
                        .route("/v1/traces", post(receive))
                        .with_state(state);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .expect("cannot start the OTLP receiver's thread");
        let addr = addr
            .recv_timeout(Duration::from_secs(10))
            .expect("the OTLP receiver did not start");
        OtlpReceiver {
            url: format!("http://{addr}"),
            spans,
            stop: Some(stop),
        }
    }

    /// The base URL to hand to `serve --otlp-endpoint` (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("never poisoned").clone()
    }

    /// Waits up to `timeout` until `done` holds for the spans received; returns them. Panics
    /// with `what` and a listing of the spans when the time runs out.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {what} within {timeout:?}; received:\n{}",
                    describe(&spans)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One line per span: name, ids and attributes.
pub fn describe(spans: &[ReceivedSpan]) -> String {
    let mut text = String::new();
    for s in spans {
        let _ = writeln!(
            text,
            "  {} trace={} span={} parent={} {:?}",
            s.name, s.trace_id, s.span_id, s.parent_span_id, s.attributes
        );
    }
    text
}

async fn receive(State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>, body: Bytes) -> Response {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut received = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(text)
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                kv.value.as_ref().map(text).unwrap_or_default(),
                            )
                        })
                        .collect(),
                    service: service.clone(),
                });
            }
        }
    }
    spans.lock().expect("never poisoned").extend(received);
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    ([(header::CONTENT_TYPE, "application/x-protobuf")], reply).into_response()
}

fn text(value: &opentelemetry_proto::tonic::common::v1::AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
