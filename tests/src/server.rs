//! Running `order-example serve` processes: storage, flags, start, SIGKILL and restart.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::api::Api;
use crate::binary::{order_example_binary, target_dir};

/// How long a start may take until `GET /healthz` answers 200.
const START_TIMEOUT: Duration = Duration::from_secs(30);

static SERVER_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The two storage backends of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file per service under `--data-dir`.
    Sqlite,
    /// Every part in one PostgreSQL database (`--database-url`).
    Postgres,
}

impl Backend {
    /// `"sqlite"` or `"postgres"`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where a server keeps its data: a temporary SQLite data directory (removed when the last
/// clone is dropped) or a fresh database of the test process's throwaway PostgreSQL cluster.
/// Clones share the same data, so several servers (or one server across restarts) can use it.
#[derive(Debug, Clone)]
pub struct Storage {
    kind: StorageKind,
}

#[derive(Debug, Clone)]
enum StorageKind {
    DataDir(Arc<tempfile::TempDir>),
    Database(String),
}

impl Storage {
    /// A fresh, empty storage of `backend`.
    pub fn new(backend: Backend) -> Storage {
        match backend {
            Backend::Sqlite => Storage::sqlite(),
            Backend::Postgres => Storage::postgres(),
        }
    }

    /// A fresh temporary `--data-dir`.
    pub fn sqlite() -> Storage {
        Storage {
            kind: StorageKind::DataDir(Arc::new(saga_testkit::temp_dir())),
        }
    }

    /// A fresh temporary `--data-dir` inside `parent` (a file system of the test's choosing).
    pub fn sqlite_in(parent: &Path) -> Storage {
        let dir = tempfile::Builder::new()
            .prefix("saga-test-")
            .tempdir_in(parent)
            .unwrap_or_else(|e| panic!("cannot create a directory in {}: {e}", parent.display()));
        Storage {
            kind: StorageKind::DataDir(Arc::new(dir)),
        }
    }

    /// A fresh `--database-url` on the throwaway PostgreSQL cluster.
    pub fn postgres() -> Storage {
        Storage {
            kind: StorageKind::Database(saga_testkit::postgres().fresh_database()),
        }
    }

    /// The backend this storage belongs to.
    pub fn backend(&self) -> Backend {
        match self.kind {
            StorageKind::DataDir(_) => Backend::Sqlite,
            StorageKind::Database(_) => Backend::Postgres,
        }
    }

    /// The PostgreSQL URL, for PostgreSQL storage.
    pub fn database_url(&self) -> Option<&str> {
        match &self.kind {
            StorageKind::Database(url) => Some(url),
            StorageKind::DataDir(_) => None,
        }
    }

    /// The SQLite data directory, for SQLite storage.
    pub fn data_dir(&self) -> Option<&Path> {
        match &self.kind {
            StorageKind::DataDir(dir) => Some(dir.path()),
            StorageKind::Database(_) => None,
        }
    }

    /// The command-line arguments selecting this storage (`--data-dir D` or
    /// `--database-url U`).
    pub fn args(&self) -> Vec<String> {
        match &self.kind {
            StorageKind::DataDir(dir) => {
                vec!["--data-dir".into(), dir.path().display().to_string()]
            }
            StorageKind::Database(url) => vec!["--database-url".into(), url.clone()],
        }
    }

    /// Runs `order-example seed` on this storage with `--stock ID=N` for each of `stock` and
    /// `--coupon ID:USER` for each of `coupons`. Panics with its output when it fails.
    pub fn seed(&self, stock: &[(i64, i64)], coupons: &[(i64, i64)]) {
        let mut cmd = Command::new(order_example_binary());
        cmd.arg("seed").args(self.args());
        for (product, count) in stock {
            cmd.arg("--stock").arg(format!("{product}={count}"));
        }
        for (coupon, user) in coupons {
            cmd.arg("--coupon").arg(format!("{coupon}:{user}"));
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run order-example seed: {e}"));
        assert!(
            out.status.success(),
            "order-example seed failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The flags of one `serve` run besides storage, listen address and instance id. Unset values
/// are left to the binary's defaults.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `--fault SPEC`, in order.
    pub faults: Vec<String>,
    /// `--admin-token`.
    pub admin_token: Option<String>,
    /// `--step-timeout-ms`.
    pub step_timeout_ms: Option<u64>,
    /// `--saga-deadline-ms`.
    pub saga_deadline_ms: Option<u64>,
    /// `--lease-ms`.
    pub lease_ms: Option<u64>,
    /// `--retry-initial-ms`.
    pub retry_initial_ms: Option<u64>,
    /// `--retry-max-ms`.
    pub retry_max_ms: Option<u64>,
    /// `--max-attempts`.
    pub max_attempts: Option<u64>,
    /// `--instance-id`; the harness picks a unique one when unset and keeps it across restarts.
    pub instance_id: Option<String>,
    /// `--otlp-endpoint`.
    pub otlp_endpoint: Option<String>,
    /// More flags, as they are, after all the others.
    pub extra_args: Vec<String>,
    /// Environment variables of the process, besides the test process's own (less the ones in
    /// [`CLEARED_ENV`]).
    pub env: Vec<(String, String)>,
    /// `--max-in-flight`.
    pub max_in_flight: Option<u64>,
}

/// Variables `serve` and `seed` read that a test process may have inherited: cleared for every
/// process the harness starts, so that only what a test sets counts.
pub const CLEARED_ENV: [&str; 2] = ["SAGA_ADMIN_TOKEN", "DATABASE_URL"];

impl ServerOptions {
    /// No faults, binary defaults.
    pub fn new() -> ServerOptions {
        ServerOptions::default()
    }

    /// Adds a `--fault SPEC`.
    pub fn fault(mut self, spec: impl Into<String>) -> ServerOptions {
        self.faults.push(spec.into());
        self
    }

    /// Sets `--admin-token`.
    pub fn admin_token(mut self, token: impl Into<String>) -> ServerOptions {
        self.admin_token = Some(token.into());
        self
    }

    /// Sets `--step-timeout-ms`.
    pub fn step_timeout_ms(mut self, ms: u64) -> ServerOptions {
        self.step_timeout_ms = Some(ms);
        self
    }

    /// Sets `--saga-deadline-ms`.
    pub fn saga_deadline_ms(mut self, ms: u64) -> ServerOptions {
        self.saga_deadline_ms = Some(ms);
        self
    }

    /// Sets `--lease-ms`.
    pub fn lease_ms(mut self, ms: u64) -> ServerOptions {
        self.lease_ms = Some(ms);
        self
    }

    /// Sets `--retry-initial-ms` and `--retry-max-ms`.
    pub fn retry_ms(mut self, initial: u64, max: u64) -> ServerOptions {
        self.retry_initial_ms = Some(initial);
        self.retry_max_ms = Some(max);
        self
    }

    /// Sets `--max-attempts`.
    pub fn max_attempts(mut self, attempts: u64) -> ServerOptions {
        self.max_attempts = Some(attempts);
        self
    }

    /// Sets `--max-in-flight`.
    pub fn max_in_flight(mut self, sagas: u64) -> ServerOptions {
        self.max_in_flight = Some(sagas);
        self
    }

    /// Sets `--instance-id`.
    pub fn instance_id(mut self, id: impl Into<String>) -> ServerOptions {
        self.instance_id = Some(id.into());
        self
    }

    /// Sets `--otlp-endpoint`.
    pub fn otlp_endpoint(mut self, url: impl Into<String>) -> ServerOptions {
        self.otlp_endpoint = Some(url.into());
        self
    }

    /// Adds flags after all the others (`.arg("--admin-token-file").arg(path)`).
    pub fn arg(mut self, arg: impl Into<String>) -> ServerOptions {
        self.extra_args.push(arg.into());
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> ServerOptions {
        self.env.push((name.into(), value.into()));
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for spec in &self.faults {
            args.push("--fault".to_string());
            args.push(spec.clone());
        }
        if let Some(token) = &self.admin_token {
            args.push("--admin-token".into());
            args.push(token.clone());
        }
        if let Some(url) = &self.otlp_endpoint {
            args.push("--otlp-endpoint".into());
            args.push(url.clone());
        }
        let numbers = [
            ("--step-timeout-ms", self.step_timeout_ms),
            ("--saga-deadline-ms", self.saga_deadline_ms),
            ("--lease-ms", self.lease_ms),
            ("--retry-initial-ms", self.retry_initial_ms),
            ("--retry-max-ms", self.retry_max_ms),
            ("--max-attempts", self.max_attempts),
            ("--max-in-flight", self.max_in_flight),
        ];
        for (flag, value) in numbers {
            if let Some(value) = value {
                args.push(flag.into());
                args.push(value.to_string());
            }
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// A running `order-example serve` process on `127.0.0.1:<port>`.
///
/// Its stdout and stderr go to files under `<target>/acceptance-logs/<test>-<n>/`, one pair
/// per run (`run-1.stderr`, `run-2.stderr` after a restart, ...). Dropping the server kills
/// the process.
pub struct Server {
    storage: Storage,
    options: ServerOptions,
    port: u16,
    instance_id: String,
    child: Option<Child>,
    api: Api,
    log_dir: PathBuf,
    run: u32,
}

impl Server {
    /// Starts `serve` on `storage` with `options` on a free port, and waits until it printed
    /// `listening on http://ADDR` and `GET /healthz` answers 200. Panics (with its stderr) when
    /// it exits or is not ready within 30 s.
    pub fn start(storage: &Storage, options: ServerOptions) -> Server {
        let n = SERVER_COUNTER.fetch_add(1, Ordering::Relaxed);
        let label = thread::current()
            .name()
            .unwrap_or("server")
            .replace("::", ".")
            .replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '_',
                "-",
            );
        let log_dir = target_dir()
            .join("acceptance-logs")
            .join(format!("{label}-{}-{n}", std::process::id()));
        fs::create_dir_all(&log_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_dir.display()));
        let port = free_port();
        let instance_id = options
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("acceptance-{}-{n}", std::process::id()));
        let mut server = Server {
            storage: storage.clone(),
            options,
            port,
            instance_id,
            child: None,
            api: Api::new(&format!("http://127.0.0.1:{port}")),
            log_dir,
            run: 0,
        };
        server.launch(true);
        server
    }

    /// The HTTP client for this server (its URL stays the same across restarts).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        self.api.base_url()
    }

    /// The storage this server runs on.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The `--instance-id` it runs with.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The options of the current run.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// Sends SIGKILL and waits for the process to be gone. A no-op when it already exited.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill is SIGKILL on Unix; it fails only when the process was reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of the current run, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The resident set size of the current run in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// How many files (sockets included) the current run has open.
    pub fn open_files(&self) -> Option<usize> {
        fs::read_dir(format!("/proc/{}/fd", self.pid()?))
            .ok()
            .map(|dir| dir.count())
    }

    /// The current run's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.log_path("stderr")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `timeout` for the process to exit by itself (a crash fault); returns its
    /// exit status, or `None` when it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process if it still runs and starts it again on the same port, storage and
    /// instance id, with `options` (faults may differ; the instance id is kept).
    pub fn restart(&mut self, mut options: ServerOptions) {
        self.kill();
        options.instance_id = Some(self.instance_id.clone());
        self.options = options;
        self.launch(false);
    }

    /// [`wait_all_terminal`](crate::wait_all_terminal) on this server that fails at once,
    /// with [`Server::context`], when the process exits while sagas are still pending.
    pub fn wait_all_terminal(
        &mut self,
        gids: &[String],
        timeout: Duration,
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        let api = self.api.clone();
        crate::invariants::wait_all_terminal_while(&api, gids, timeout, || {
            if self.is_running() {
                Ok(())
            } else {
                Err(format!("the process exited\n{}", self.context()))
            }
        })
    }

    /// The Rust panics this server reported on stderr in any of its runs: each `panicked at`
    /// line with the message line after it, prefixed by the run. A panic inside `serve` is a
    /// bug even when the sagas still finish (it kills whatever task it hit).
    pub fn panics(&self) -> Vec<String> {
        let mut found = Vec::new();
        for run in 1..=self.run {
            let path = self.log_dir.join(format!("run-{run}.stderr"));
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.contains("panicked at") {
                    let message = lines.get(i + 1).copied().unwrap_or("");
                    found.push(format!("run {run}: {line} {message}"));
                }
            }
        }
        found
    }

    /// Panics listing the first panics of [`Server::panics`], if there is any.
    pub fn assert_no_panics(&self) {
        let panics = self.panics();
        assert!(
            panics.is_empty(),
            "order-example panicked {} time(s) (logs in {}):\n  {}",
            panics.len(),
            self.log_dir.display(),
            panics
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }

    /// The last `lines` lines of the current run's stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path("stderr")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A description for failure messages: URL, flags, log directory and the tail of stderr.
    pub fn context(&self) -> String {
        let mut text = String::new();
        let state = match &self.child {
            None => "not running",
            Some(child) => match fs::read_to_string(format!("/proc/{}/stat", child.id())) {
                Ok(stat) if stat.split_whitespace().nth(2) == Some("Z") => "exited",
                Ok(_) => "running",
                Err(_) => "exited",
            },
        };
        let _ = write!(
            text,
            "server {} ({state}; {}, instance {}, run {}, flags {:?}); logs in {}",
            self.url(),
            self.storage.backend().name(),
            self.instance_id,
            self.run,
            self.options.args(),
            self.log_dir.display()
        );
        let panics = self.panics();
        if !panics.is_empty() {
            let _ = write!(
                text,
                "\n--- it panicked {} time(s), first: ---\n{}",
                panics.len(),
                panics
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let tail = self.stderr_tail(30);
        if !tail.is_empty() {
            let _ = write!(text, "\n--- stderr tail ---\n{tail}");
        }
        text
    }

    fn log_path(&self, stream: &str) -> PathBuf {
        self.log_dir.join(format!("run-{}.{stream}", self.run))
    }

    fn command_args(&self) -> Vec<String> {
        let mut args = vec![
            "serve".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.port),
        ];
        args.extend(self.storage.args());
        args.push("--instance-id".into());
        args.push(self.instance_id.clone());
        args.extend(self.options.args());
        args
    }

    /// Spawns the process and waits until it is ready. When the port is taken, a first start
    /// moves to another free port; a restart waits for its own port to be released.
    fn launch(&mut self, first: bool) {
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.run += 1;
            let stdout = File::create(self.log_path("stdout"))
                .unwrap_or_else(|e| panic!("cannot create a log file: {e}"));
            let stderr = File::create(self.log_path("stderr"))
                .unwrap_or_else(|e| panic!("cannot create a log file: {e}"));
            let mut command = Command::new(order_example_binary());
            for name in CLEARED_ENV {
                command.env_remove(name);
            }
            command.envs(self.options.env.iter().map(|(k, v)| (k, v)));
            command
                .args(self.command_args())
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr);
            let child =
                spawn_tied(command).unwrap_or_else(|e| panic!("cannot spawn order-example: {e}"));
            self.child = Some(child);
            match self.wait_ready() {
                Ok(()) => return,
                Err(failure) => {
                    let stderr = self.stderr_tail(40);
                    // An armed crash fault may fire while the restarted process recovers,
                    // before it is ready: that is an injected crash like any other, and the
                    // caller sees a process that is not running.
                    let injected_crash = !first
                        && self.options.faults.iter().any(|f| f.contains(":crash_"))
                        && stderr.contains("the process dies now");
                    if injected_crash {
                        self.kill();
                        return;
                    }
                    let port_busy = stderr.contains("in use") || stderr.contains("AddrInUse");
                    if port_busy && attempts < 20 {
                        self.kill();
                        if first {
                            self.port = free_port();
                            self.api = Api::new(&format!("http://127.0.0.1:{}", self.port));
                        } else {
                            thread::sleep(Duration::from_millis(250));
                        }
                        continue;
                    }
                    self.kill();
                    panic!(
                        "order-example serve did not become ready: {failure}\n{}",
                        self.context()
                    );
                }
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut announced = false;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("it exited with {status}"));
            }
            if !announced {
                let stdout = fs::read_to_string(self.log_path("stdout")).unwrap_or_default();
                if let Some(line) = stdout
                    .lines()
                    .find(|line| line.contains("listening on http://"))
                {
                    let expected = format!("listening on http://127.0.0.1:{}", self.port);
                    if !line.contains(&expected) {
                        return Err(format!("it printed `{line}`, expected `{expected}`"));
                    }
                    announced = true;
                }
            }
            if announced && matches!(self.api.healthz(), Ok(200)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(if announced {
                    "GET /healthz did not answer 200 within 30 s".into()
                } else {
                    "it did not print `listening on http://ADDR` on stdout within 30 s".into()
                });
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("url", &self.url())
            .field("instance_id", &self.instance_id)
            .field("run", &self.run)
            .finish()
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` so that it gets SIGKILL when the test process dies, however it dies (a
/// test binary stopped by a signal runs no `Drop`). The parent-death signal fires when the
/// spawning *thread* exits, so every server is spawned from one thread that lives as long as
/// the process. The browser harness spawns chromedriver through it too.
pub(crate) fn spawn_tied(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("order-example-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
                    unsafe {
                        command.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                                return Err(io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the spawner thread");
        Mutex::new(requests)
    });
    let (reply, result) = mpsc::channel();
    spawner
        .lock()
        .expect("the spawner lock is never poisoned")
        .send((command, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free TCP port: {e}"))
}

/// Runs `order-example ARGS` to completion and returns (exit status, stdout, stderr); for
/// command-line checks that do not start a server.
pub fn run_cli(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String, String) {
    run_cli_with_env(args, &[], timeout)
}

/// [`run_cli`] with environment variables `env` set (and those of [`CLEARED_ENV`] cleared).
pub fn run_cli_with_env(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (Option<ExitStatus>, String, String) {
    let dir = saga_testkit::temp_dir();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut command = Command::new(order_example_binary());
    for name in CLEARED_ENV {
        command.env_remove(name);
    }
    let mut child = command
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create a log file"))
        .stderr(File::create(&err_path).expect("create a log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn order-example: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        fs::read_to_string(&out_path).unwrap_or_default(),
        fs::read_to_string(&err_path).unwrap_or_default(),
    )
}
