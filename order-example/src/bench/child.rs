//! The system under load: a fresh data set (a temporary directory of SQLite files, or a fresh
//! PostgreSQL database), seeded through `order-example seed`, served by an `order-example
//! serve` child process of this same binary.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::db::Location;

/// The saga store's file in a SQLite data directory (as `Location::open_store` in `db.rs`
/// names it).
pub const STORE_FILE: &str = "saga.db";

/// The saga store's schema in a PostgreSQL database (as `Location::open_store` in `db.rs`
/// names it).
pub const STORE_SCHEMA: &str = "saga";

/// Where a fresh data set lives.
pub enum DataSet {
    /// SQLite files in a temporary directory, removed on drop.
    Dir(tempfile::TempDir),
    /// A PostgreSQL database created for this run, dropped by [`DataSet::remove`].
    Postgres {
        /// The server URL the database was created through.
        admin_url: String,
        /// The new database.
        name: String,
        /// Its URL.
        url: String,
    },
}

impl DataSet {
    /// A temporary directory for SQLite files.
    pub fn sqlite(label: &str) -> anyhow::Result<DataSet> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("order-bench-{label}-"))
            .tempdir()
            .context("creating a temporary data directory")?;
        Ok(DataSet::Dir(dir))
    }

    /// Creates the database `name` through `admin_url` (a role that may `CREATE DATABASE`).
    pub async fn postgres(admin_url: &str, name: &str) -> anyhow::Result<DataSet> {
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url}"))?;
        let create = format!("CREATE DATABASE \"{name}\"");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
            .with_context(|| {
                format!("creating database {name} (the --database-url role needs CREATEDB)")
            })?;
        let _ = conn.close().await;
        Ok(DataSet::Postgres {
            admin_url: admin_url.to_string(),
            name: name.to_string(),
            url: with_database(admin_url, name)?,
        })
    }

    /// Where the data set lives, for opening its parts or naming it to a child process.
    pub fn location(&self) -> Location {
        match self {
            DataSet::Dir(d) => Location::Dir(d.path().to_path_buf()),
            DataSet::Postgres { url, .. } => Location::Url(url.clone()),
        }
    }

    /// The process id of the PostgreSQL server's postmaster when the server runs on this
    /// machine, found as the parent of the backend of a new connection; `None` on SQLite, or
    /// when no process `postgres` of that id runs here.
    pub async fn postmaster_pid(&self) -> Option<u32> {
        let DataSet::Postgres { url, .. } = self else {
            return None;
        };
        let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
        let backend: Option<i32> = sqlx::query_scalar(BACKEND_PID)
            .fetch_one(&mut conn)
            .await
            .ok();
        // Read while the backend lives: the connection is still open.
        let postmaster = backend
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| is_postgres(*pid))
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .and_then(|stat| super::measure::stat_fields(&stat))
            .map(|f| f.ppid)
            .filter(|pid| is_postgres(*pid));
        let _ = conn.close().await;
        postmaster
    }

    /// Removes the data set now, or keeps it and says where it is.
    pub async fn remove(self, keep: bool) -> anyhow::Result<()> {
        match self {
            DataSet::Dir(d) if keep => {
                eprintln!("kept the data set in {}", d.keep().display());
            }
            DataSet::Dir(d) => d.close()?,
            DataSet::Postgres { name, .. } if keep => {
                eprintln!("kept the database {name}");
            }
            DataSet::Postgres {
                admin_url, name, ..
            } => {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(drop))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("dropping database {name}"))?;
                let _ = conn.close().await;
            }
        }
        Ok(())
    }
}

const BACKEND_PID: &str = include_str!("backend_pid.sql");

/// Whether process `pid` of this machine is named `postgres`.
fn is_postgres(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
}

/// `url` with its database (path) replaced by `database`; query parameters are kept.
pub fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let Some(scheme_end) = base.find("://").map(|i| i + 3) else {
        bail!("`{url}` is not a postgres:// URL");
    };
    let authority = base[scheme_end..].split('/').next().unwrap_or_default();
    let mut out = format!("{}{authority}/{database}", &base[..scheme_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// Runs `order-example seed` on the data set: `stock` of product `product`, and `coupons`
/// (ids owned by user 1, unused), in chunks that keep the command line short.
pub async fn seed(data: &DataSet, product: i64, stock: i64, coupons: &[i64]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut chunks: Vec<&[i64]> = coupons.chunks(1000).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut cmd = Command::new(&exe);
        cmd.arg("seed");
        data.location().pass_to(&mut cmd);
        if i == 0 {
            cmd.arg("--stock").arg(format!("{product}={stock}"));
        }
        for c in chunk {
            cmd.arg("--coupon").arg(format!("{c}:1"));
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .await
            .context("running `order-example seed`")?;
        if !out.status.success() {
            bail!(
                "`order-example seed` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// A running `order-example serve` child.
pub struct Server {
    child: Child,
    /// `http://ADDR` it listens on.
    pub base_url: String,
    /// Its process id.
    pub pid: u32,
    log: PathBuf,
}

impl Server {
    /// Starts `serve --listen 127.0.0.1:0` on the data set and waits for its
    /// `listening on http://ADDR` line. Its log (stderr, `RUST_LOG=warn` unless set) goes to
    /// `log`.
    pub async fn start(data: &DataSet, log: PathBuf) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("creating the server log {}", log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve").args(["--listen", "127.0.0.1:0"]);
        data.location().pass_to(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd.spawn().context("starting `order-example serve`")?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("no stdout of the server")?;
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    return Ok::<_, std::io::Error>(Some(addr.to_string()));
                }
            }
            Ok(None)
        })
        .await;
        let base_url = match found {
            Ok(Ok(Some(url))) => url,
            _ => {
                let _ = child.start_kill();
                bail!(
                    "`order-example serve` did not report its address; its log:\n{}",
                    log_tail(&log)
                );
            }
        };
        // Keep reading stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            child,
            base_url,
            pid,
            log,
        })
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Stops the server with SIGTERM (a graceful shutdown that releases its leases), or kills
    /// it if it takes more than 10 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                status.context("waiting for the server")?;
            }
            Err(_) => {
                self.child.kill().await.context("killing the server")?;
            }
        }
        Ok(())
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        let cases = [
            ("postgres://u@h:5432/postgres", "postgres://u@h:5432/x"),
            ("postgres://u@h:5432", "postgres://u@h:5432/x"),
            (
                "postgres://u@h/db?sslmode=disable",
                "postgres://u@h/x?sslmode=disable",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "x").unwrap(), want);
        }
        assert!(with_database("not a url", "x").is_err());
    }
}
