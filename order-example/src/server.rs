//! `serve`: the order API, the participants and the engine in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use saga_core::console::OperatorAuth;
use saga_core::engine::{Engine, EngineConfig};
use tracing::Level;
use tracing_subscriber::filter::{DynFilterFn, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::api::{self, Api};
use crate::db::Location;
use crate::faults::{Fault, Faults};
use crate::listen;
use crate::saga::{HttpSteps, PayOrder, PayOrderV1, SubmitOrder, SubmitOrderV1};
use crate::services::{self, Services};

/// Arguments of `serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Directory of the SQLite files: order.db, stock.db, coupon.db, payment.db and saga.db
    /// (default ./data).
    #[arg(long, conflicts_with = "database_url")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL instead of SQLite: each service in its own schema and pool. Several
    /// `serve` processes may share one database. Without this flag and without --data-dir, the
    /// URL in the environment variable DATABASE_URL when it is set: keep a URL with a password
    /// there, off the command line, which other users of the machine can read.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Lease owner name; default `{hostname}:{port}`, stable across restarts.
    #[arg(long)]
    pub instance_id: Option<String>,
    /// Operator token: the operator actions need it (`Authorization: Bearer TOKEN`), and so
    /// does signing in to the console at /console; without one both are refused. Also read
    /// from --admin-token-file or, without either flag, from the environment variable
    /// SAGA_ADMIN_TOKEN: prefer those, since other users of the machine can read a command
    /// line.
    #[arg(long, conflicts_with = "admin_token_file")]
    pub admin_token: Option<Secret>,
    /// File holding the operator token (leading and trailing whitespace ignored).
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// Inject a fault: `<service>.<op>:<kind>[:<count>]`, kind one of error, fail,
    /// crash_before_commit, crash_after_commit, delay_ms=N (repeatable).
    #[arg(long = "fault")]
    pub fault: Vec<String>,
    /// Timeout of one step call.
    #[arg(long, default_value_t = 3000)]
    pub step_timeout_ms: u64,
    /// First retry delay.
    #[arg(long, default_value_t = 100)]
    pub retry_initial_ms: u64,
    /// Largest retry delay.
    #[arg(long, default_value_t = 5000)]
    pub retry_max_ms: u64,
    /// Deadline of a saga before its pivot, from submission; then it is compensated.
    #[arg(long, default_value_t = 30000)]
    pub saga_deadline_ms: u64,
    /// Lease length of an engine on a saga.
    #[arg(long, default_value_t = 5000)]
    pub lease_ms: u64,
    /// Calls of an undo or a retriable step before the saga is parked as stuck.
    #[arg(long, default_value_t = 10)]
    pub max_attempts: u32,
    /// Export spans over OTLP/HTTP (protobuf, plain HTTP) to this collector: its base URL
    /// (`http://127.0.0.1:4318`, to which `/v1/traces` is added) or the full traces URL. Off by
    /// default.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Most sagas the engine drives at once; a new submit beyond it answers 503.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Most client connections open at once (the engine's own step calls included); more wait
    /// to be accepted. Capped by the open-files limit.
    #[arg(long, default_value_t = 16_384)]
    pub max_connections: usize,
}

/// The environment variable `serve` reads the operator token from when neither
/// `--admin-token` nor `--admin-token-file` is given.
pub const ADMIN_TOKEN_VAR: &str = "SAGA_ADMIN_TOKEN";

/// A flag's value that is never printed: `Debug` shows `<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl ServeArgs {
    /// The operator token: `--admin-token`, else the content of `--admin-token-file`, else
    /// [`ADMIN_TOKEN_VAR`] (unset or empty: none). An empty flag or file is an error, so is a
    /// file that cannot be read.
    pub fn operator_token(&self) -> anyhow::Result<Option<String>> {
        let (token, from) = if let Some(token) = &self.admin_token {
            (token.expose().to_string(), "--admin-token".to_string())
        } else if let Some(path) = &self.admin_token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the operator token from {}", path.display()))?;
            (text.trim().to_string(), path.display().to_string())
        } else {
            return match std::env::var(ADMIN_TOKEN_VAR) {
                Ok(token) if !token.is_empty() => Ok(Some(token)),
                Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    anyhow::bail!("{ADMIN_TOKEN_VAR} is not valid UTF-8")
                }
            };
        };
        if token.is_empty() {
            anyhow::bail!("the operator token from {from} is empty");
        }
        Ok(Some(token))
    }
}

/// Logs to stderr; `RUST_LOG` overrides `default`.
pub fn init_tracing(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter(default))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// What is logged: `RUST_LOG`, or else `default`.
fn log_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// The span export of `serve --otlp-endpoint`, if configured.
struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Logs as [`init_tracing`] does and, with an `endpoint`, exports spans there over
    /// OTLP/HTTP in batches: the library's spans (`saga_core`, debug and above: the submit, each
    /// driver, each step call, each barrier call) and this crate's (info and above). Without an
    /// endpoint no exporter runs, and the library's debug spans stay disabled unless `RUST_LOG`
    /// asks for them.
    fn init(default: &str, endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
        let Some(endpoint) = endpoint else {
            init_tracing(default);
            return Ok(Telemetry { provider: None });
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(traces_url(endpoint)?)
            .build()
            .context("building the OTLP exporter")?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(env!("CARGO_PKG_NAME"))
                    .build(),
            )
            .build();
        let spans = Targets::new()
            .with_target("saga_core", Level::DEBUG)
            .with_target(env!("CARGO_CRATE_NAME"), Level::INFO)
            .with_default(Level::WARN);
        // Asked at every span and event rather than cached per callsite: a per-layer filter
        // whose answer is cached can miss a span when another `enabled` call (a `log` record's,
        // through `tracing-log`) came in between, and such a span would leave the trace.
        let spans =
            DynFilterFn::new(move |meta, _| spans.would_enable(meta.target(), meta.level()))
                .with_max_level_hint(LevelFilter::DEBUG);
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
            .with_tracked_inactivity(false)
            .with_filter(spans);
        let log = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(log_filter(default));
        let _ = tracing_subscriber::registry()
            .with(log)
            .with(otel)
            .try_init();
        Ok(Telemetry {
            provider: Some(provider),
        })
    }

    /// Exports the spans still queued and stops the exporter.
    async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The provider's shutdown blocks until its export thread is done.
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

/// The OTLP/HTTP traces URL of `--otlp-endpoint`: a base URL gets `/v1/traces`.
fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(endpoint)
        .with_context(|| format!("--otlp-endpoint `{endpoint}` is not a URL"))?;
    // The exporter's HTTP client is built without TLS: a collector is reached over plain HTTP,
    // as a local agent or sidecar is.
    anyhow::ensure!(
        url.scheme() == "http",
        "--otlp-endpoint `{endpoint}` must be an http:// URL"
    );
    Ok(if url.path() == "/" {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    } else {
        endpoint.to_string()
    })
}

fn install_metrics() -> Option<PrometheusHandle> {
    let buckets = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &buckets)
        .ok()?
        .install_recorder()
        .ok()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Runs `serve` until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let telemetry = Telemetry::init("info", args.otlp_endpoint.as_deref())?;
    let faults: Vec<Fault> = args
        .fault
        .iter()
        .map(|s| s.parse::<Fault>())
        .collect::<Result<_, _>>()?;
    let location = Location::from_flags(args.data_dir.clone(), args.database_url.clone())?;
    let auth = OperatorAuth::new(args.operator_token()?).token_hint(
        "the --admin-token of order-example serve (or its --admin-token-file, or SAGA_ADMIN_TOKEN)",
    );
    let metrics = install_metrics();
    let services = Services::open(&location)
        .await
        .context("opening the service databases")?;
    let store = location
        .open_store()
        .await
        .context("opening the saga store")?;
    let listener =
        listen::bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let engine_id = args
        .instance_id
        .clone()
        .unwrap_or_else(|| format!("{}:{}", hostname(), addr.port()));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        // Shorter than the server's idle timeout, so a call never goes out on a connection the
        // server is closing.
        .pool_idle_timeout(listen::HEADER_TIMEOUT / 2)
        .build()
        .context("building the HTTP client")?;
    let steps = HttpSteps::new(http, &format!("http://{addr}"));
    let config = EngineConfig {
        engine_id: Some(engine_id),
        lease: Duration::from_millis(args.lease_ms.max(100)),
        retry_initial: Duration::from_millis(args.retry_initial_ms.max(1)),
        retry_max: Duration::from_millis(args.retry_max_ms.max(args.retry_initial_ms.max(1))),
        step_timeout: Duration::from_millis(args.step_timeout_ms.max(1)),
        saga_deadline: Some(Duration::from_millis(args.saga_deadline_ms.max(1))),
        max_attempts: args.max_attempts.max(1),
        max_in_flight: args.max_in_flight.max(1),
        ..EngineConfig::default()
    };
    let engine = Engine::builder(store)
        .config(config)
        .register::<SubmitOrder, _>(steps.clone())
        .register::<PayOrder, _>(steps.clone())
        // The previous release's definitions, so that its sagas in flight finish on them.
        .register::<SubmitOrderV1, _>(steps.clone())
        .register::<PayOrderV1, _>(steps)
        .build()
        .await
        .context("starting the saga engine")?;
    let participants = services::router(&services, &Arc::new(Faults::new(faults)))
        .merge(crate::direct::router(services.clone()));
    let app = api::router(
        Api {
            engine: engine.clone(),
            services,
            auth,
            metrics,
        },
        participants,
    );
    println!("listening on http://{addr}");
    tracing::info!(%addr, instance = engine.engine_id(), "serving");
    let (_, room) = listen::raise_open_files_limit();
    // The peer address limits failed console sign-ins per client: `listen` hands it to every
    // request as `ConnectInfo`.
    listen::serve(
        listener,
        app,
        args.max_connections.min(room),
        shutdown_signal(),
    )
    .await;
    engine.shutdown().await;
    telemetry.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn an_otlp_base_url_gets_the_traces_path() {
        let base = "http://127.0.0.1:4318";
        assert_eq!(traces_url(base).unwrap(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(
            traces_url("http://127.0.0.1:4318/").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        let full = "http://collector:4318/custom/traces";
        assert_eq!(traces_url(full).unwrap(), full);
        assert!(traces_url("https://collector:4318").is_err());
        assert!(traces_url("collector:4318").is_err());
        assert!(traces_url("not a url").is_err());
    }
}
