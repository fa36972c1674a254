//! Shared test fixtures for every crate of the workspace.
//!
//! - [`postgres()`]: a throwaway PostgreSQL cluster, started once per test process from the
//!   installed binaries (`initdb`, `pg_ctl`, `psql`) and stopped by a watchdog process when the test
//!   process exits. [`PgCluster::fresh_database`] hands each test its own database.
//! - [`temp_dir()`]: a temporary directory for SQLite files, removed on drop.
//!
//! Everything here is synchronous and spawns no async runtime, so it can be called from plain
//! `#[test]` functions and from inside `#[tokio::test]` alike.
//!
//! ```no_run
//! let url = saga_testkit::postgres().fresh_database();
//! assert!(url.starts_with("postgres://"));
//! ```

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const INSTALL_HINT: &str = "install the postgresql package: apt-get install -y postgresql";

/// The operating-system user that owns the cluster when the tests run as root (PostgreSQL
/// refuses to run as root).
const PG_OS_USER: &str = "postgres";

/// A running throwaway PostgreSQL cluster: trust authentication, superuser `postgres`,
/// listening on `127.0.0.1` on a free port, `max_connections = 300`, default durability
/// settings (fsync on).
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    base: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<String>,
}

/// How [`PgCluster::stop`] and [`PgCluster::restart`] shut the server down (`pg_ctl -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// `smart`: waits for every client to disconnect.
    Smart,
    /// `fast`: rolls back open transactions and disconnects every client.
    Fast,
    /// `immediate`: kills every server process at once, as a crash would; the next start
    /// runs crash recovery.
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
static DATABASE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The PostgreSQL cluster of this test process, started on first use.
///
/// Panics with an actionable message when the PostgreSQL binaries are not installed or the
/// cluster does not start (its server log is included).
pub fn postgres() -> &'static PgCluster {
    CLUSTER.get_or_init(PgCluster::launch)
}

/// A fresh temporary directory, removed when the returned guard is dropped. Use it for SQLite
/// database files.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("saga-test-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

impl PgCluster {
    /// The URL of the `postgres` database as superuser `postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The TCP port the cluster listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server with `pg_ctl stop -m MODE` and waits until it is down. Every database
    /// of the cluster is unreachable until [`PgCluster::start`]. A cluster shared by the tests
    /// of one process goes down for all of them: keep such a test in a file of its own.
    pub fn stop(&self, mode: StopMode) {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "60", "-m", mode.as_str(), "stop"]);
        let out = run(&mut cmd, "pg_ctl");
        if !out.status.success() {
            panic!(
                "pg_ctl stop -m {} failed: {}",
                mode.as_str(),
                describe(&out)
            );
        }
    }

    /// Starts the server again after [`PgCluster::stop`], on the same port, and waits until it
    /// accepts connections (crash recovery included).
    pub fn start(&self) {
        if let Err(failure) = self.start_server() {
            panic!("PostgreSQL did not start again: {failure}");
        }
    }

    /// Stops the server with `mode` and starts it again (`pg_ctl restart -m MODE`), waiting
    /// until it accepts connections.
    pub fn restart(&self, mode: StopMode) {
        self.stop(mode);
        self.start();
    }

    /// Creates a new, empty database with a unique name (`test_{pid}_{n}`) and returns its URL.
    pub fn fresh_database(&self) -> String {
        let n = DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url_for(&name)
    }

    fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs one SQL command in `database`, panicking with psql's output on failure.
    fn psql(&self, database: &str, sql: &str) {
        let port = self.port.to_string();
        let mut cmd = Command::new(self.tool("psql"));
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(&port)
            .args(["-U", "postgres", "-d", database, "-c", sql]);
        let out = run(&mut cmd, "psql");
        if !out.status.success() {
            panic!("psql failed on `{sql}`: {}", describe(&out));
        }
    }

    fn tool(&self, name: &str) -> PathBuf {
        let in_bin_dir = self.bin_dir.join(name);
        if in_bin_dir.exists() {
            in_bin_dir
        } else {
            find_on_path(name)
                .unwrap_or_else(|| panic!("PostgreSQL tool `{name}` not found; {INSTALL_HINT}"))
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    fn launch() -> PgCluster {
        let initdb = find_initdb();
        let bin_dir = initdb
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let run_as = is_root().then(|| PG_OS_USER.to_string());

        let base = tempfile::Builder::new()
            .prefix("saga-testkit-pg-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for PostgreSQL: {e}"))
            .keep();
        // The cluster runs as another OS user when we are root: it must be able to enter the
        // directory and own it.
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", base.display()));
        fs::create_dir(base.join("sock"))
            .unwrap_or_else(|e| panic!("cannot create the socket directory: {e}"));

        let mut cluster = PgCluster {
            port: 0,
            base,
            bin_dir,
            run_as,
        };
        if let Some(user) = &cluster.run_as {
            chown_recursive(&cluster.base, user);
        }
        // Stop and remove the cluster once this process is gone, however it ends.
        cluster.spawn_watchdog();
        cluster.init();

        // A free port can be taken between probing and binding; try a few.
        let mut last_failure = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            cluster.configure();
            match cluster.start_server() {
                Ok(()) => {
                    cluster.psql("postgres", "SELECT 1");
                    return cluster;
                }
                Err(failure) => last_failure = failure,
            }
        }
        panic!("PostgreSQL did not start: {last_failure}");
    }

    /// A command for a PostgreSQL tool, run as the cluster's OS user when we are root.
    fn pg_command(&self, tool: &str) -> Command {
        let program = self.tool(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        // The tools resolve their working directory; it must be readable by the cluster's user.
        cmd.current_dir(&self.base);
        cmd
    }

    fn init(&self) {
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D").arg(self.data_dir()).args([
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            // Only skips initdb's final flush of the template files; the server itself
            // keeps fsync on.
            "--no-sync",
        ]);
        let out = run(&mut cmd, "initdb");
        if !out.status.success() {
            panic!("initdb failed: {}", describe(&out));
        }
    }

    fn configure(&self) {
        let conf = self.data_dir().join("postgresql.auto.conf");
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nmax_connections = 300\n",
            self.port,
            self.base.join("sock").display()
        );
        fs::write(&conf, settings)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
        if let Some(user) = &self.run_as {
            chown_recursive(&conf, user);
        }
    }

    fn start_server(&self) -> Result<(), String> {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.base.join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        let out = run(&mut cmd, "pg_ctl");
        if out.status.success() {
            Ok(())
        } else {
            let log = fs::read_to_string(self.base.join("server.log")).unwrap_or_default();
            Err(format!("{}\nserver log:\n{log}", describe(&out)))
        }
    }

    fn spawn_watchdog(&self) {
        let pg_ctl = self.tool("pg_ctl");
        let stop = match &self.run_as {
            Some(user) => format!("runuser -u {user} -- '{}'", pg_ctl.display()),
            None => format!("'{}'", pg_ctl.display()),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop} -D '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{base}'",
            pid = std::process::id(),
            data = self.data_dir().display(),
            base = self.base.display(),
        );
        // Detached in a subshell: the outer `sh` returns at once (and is reaped here), the
        // watchdog is adopted by init and outlives this process.
        let detached = format!("({script}) </dev/null >/dev/null 2>&1 &");
        let status = Command::new("sh")
            .args(["-c", &detached])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so a Ctrl-C aimed at the tests does not kill it first.
            .process_group(0)
            .status()
            .unwrap_or_else(|e| panic!("cannot spawn the PostgreSQL watchdog: {e}"));
        assert!(
            status.success(),
            "cannot spawn the PostgreSQL watchdog: {status}"
        );
    }
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; {INSTALL_HINT}"))
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `initdb` from PATH (resolving symlinks, so its siblings are found) or the newest
/// `/usr/lib/postgresql/*/bin`.
fn find_initdb() -> PathBuf {
    if let Some(found) = find_on_path("initdb") {
        return fs::canonicalize(&found).unwrap_or(found);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let initdb = entry.path().join("bin/initdb");
            initdb.is_file().then_some((version, initdb))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, path)| path).unwrap_or_else(|| {
        panic!(
            "PostgreSQL binaries (initdb, pg_ctl) not found on PATH or under \
             /usr/lib/postgresql/*/bin; {INSTALL_HINT}"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free TCP port: {e}"))
}

fn chown_recursive(path: &Path, user: &str) {
    let out = run(Command::new("chown").args(["-R", user]).arg(path), "chown");
    if !out.status.success() {
        panic!(
            "cannot chown {} to {user} (does the `{user}` OS user exist? {INSTALL_HINT}): {}",
            path.display(),
            describe(&out)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_starts_once_and_creates_distinct_databases() {
        let cluster = postgres();
        let first = cluster.fresh_database();
        let second = postgres().fresh_database();
        assert_ne!(first, second);
        assert!(first.starts_with(&format!(
            "postgres://postgres@127.0.0.1:{}/test_",
            cluster.port()
        )));
        assert!(cluster.url().ends_with("/postgres"));
        for url in [&first, &second] {
            let database = url.rsplit('/').next().unwrap();
            cluster.psql(database, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
        }
    }

    #[test]
    fn temp_dir_is_writable_and_removed_on_drop() {
        let dir = temp_dir();
        let path = dir.path().to_path_buf();
        fs::write(path.join("x.db"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
