//! Tools of the outage, full-disk and overload tests: watching `/healthz` over time, plain
//! HTTP/1.1 connections for thousands of clients at once, a tmpfs mounted for a test, and
//! checks of SQLite files and of this process's limits.

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::api::{Api, Reply, parse_complete_reply};

/// How often a [`HealthWatch`] asks.
const HEALTH_EVERY: Duration = Duration::from_millis(50);

/// How long one `/healthz` may take before the watch counts it as no answer.
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// One answer of `/healthz`, or its transport error.
#[derive(Debug, Clone)]
pub struct HealthSample {
    /// When it was asked.
    pub at: Instant,
    /// How long it took.
    pub took: Duration,
    /// The status, or `None` for a transport error.
    pub status: Option<u16>,
    /// Whether a 503 carried a JSON `{"error"}` body.
    pub error_body: bool,
    /// The reply (or the transport error) when it was not a 200.
    pub problem: Option<String>,
}

/// Asks `GET /healthz` of one server every 50 ms on a thread of its own, until stopped.
#[derive(Debug)]
pub struct HealthWatch {
    samples: Arc<Mutex<Vec<HealthSample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl HealthWatch {
    /// Starts watching the server behind `api`.
    pub fn start(api: &Api) -> HealthWatch {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (api, samples, stop) = (api.clone(), samples.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let reply = api.try_request_within(
                        "GET",
                        "/healthz",
                        &[],
                        None,
                        HEALTH_REQUEST_TIMEOUT,
                    );
                    let sample = HealthSample {
                        at,
                        took: at.elapsed(),
                        status: reply.as_ref().ok().map(|r| r.status),
                        error_body: reply.as_ref().is_ok_and(Reply::has_json_error),
                        problem: match &reply {
                            Ok(r) if r.status == 200 => None,
                            Ok(r) => Some(r.to_string()),
                            Err(e) => Some(e.clone()),
                        },
                    };
                    samples.lock().expect("no poisoned lock").push(sample);
                    thread::sleep(HEALTH_EVERY);
                }
            })
        };
        HealthWatch {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// The answers so far.
    pub fn samples(&self) -> Vec<HealthSample> {
        self.samples.lock().expect("no poisoned lock").clone()
    }

    /// The latest answer's status (`None` before the first or for a transport error).
    pub fn last_status(&self) -> Option<u16> {
        self.samples
            .lock()
            .expect("no poisoned lock")
            .last()
            .and_then(|s| s.status)
    }

    /// Waits up to `timeout` for an answer with `status` asked after `since`; returns when it was
    /// asked.
    pub fn wait_for(&self, status: u16, since: Instant, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .samples()
                .iter()
                .find(|s| s.at >= since && s.status == Some(status))
                .map(|s| s.at);
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            thread::sleep(HEALTH_EVERY);
        }
    }

    /// Stops the thread and returns every answer.
    pub fn stop(mut self) -> Vec<HealthSample> {
        self.halt();
        self.samples()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HealthWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One plain HTTP/1.1 connection, for tests that need thousands of clients at once (a thread
/// and a pooled client each would cost more than the server under test).
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
    authority: String,
    buffer: Vec<u8>,
}

impl RawConnection {
    /// Connects to `base_url` (`http://127.0.0.1:PORT`); each read waits at most `timeout`.
    pub fn connect(base_url: &str, timeout: Duration) -> Result<RawConnection, String> {
        let authority = base_url.trim_start_matches("http://").to_string();
        let stream =
            TcpStream::connect(&authority).map_err(|e| format!("connect {authority}: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        Ok(RawConnection {
            stream,
            authority,
            buffer: Vec::new(),
        })
    }

    /// Sends one request (keeping the connection open) without waiting for the reply.
    pub fn send(&mut self, method: &str, path: &str, body: &str) -> Result<(), String> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            self.authority,
            body.len()
        );
        self.write(request.as_bytes())
    }

    /// Writes raw bytes (part of a request, for a slow client).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write to {}: {e}", self.authority))
    }

    /// Reads the next reply.
    pub fn read_reply(&mut self) -> Result<Reply, String> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((reply, used)) = parse_with_length(&self.buffer) {
                self.buffer.drain(..used);
                return Ok(reply);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(format!("{} closed the connection", self.authority)),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read from {}: {e}", self.authority)),
            }
        }
    }

    /// Sends a request and reads its reply.
    pub fn request(&mut self, method: &str, path: &str, body: &str) -> Result<Reply, String> {
        self.send(method, path, body)?;
        self.read_reply()
    }

    /// Whether some bytes of a reply have arrived and wait to be read, without waiting.
    pub fn has_reply_waiting(&mut self) -> bool {
        if !self.buffer.is_empty() {
            return true;
        }
        let mut byte = [0u8; 1];
        let _ = self.stream.set_nonblocking(true);
        let waiting = matches!(self.stream.peek(&mut byte), Ok(n) if n > 0);
        let _ = self.stream.set_nonblocking(false);
        waiting
    }

    /// Whether the server has closed the connection (after a last reply, if it sent one): a
    /// read finds its end within `wait`.
    pub fn is_closed_by_peer(&mut self, wait: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(wait));
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    }
}

/// The first reply in `raw` and how many bytes it took.
fn parse_with_length(raw: &[u8]) -> Option<(Reply, usize)> {
    let reply = parse_complete_reply(raw)?;
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((reply.clone(), head_end + reply.text.len()))
}

/// Raises this process's soft limit of open files to its hard limit; returns the new soft
/// limit.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return raised.rlim_cur;
        }
        limit.rlim_cur
    }
}

/// Whether this process runs as root (and so may mount file systems).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Bytes free for unprivileged writers on the file system holding `path`.
pub fn free_bytes(path: &Path) -> u64 {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("a path without NUL");
    // SAFETY: statvfs writes only into the struct passed to it; the path is NUL-terminated.
    unsafe {
        let mut stats: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stats) != 0 {
            return 0;
        }
        stats.f_bavail.saturating_mul(stats.f_frsize)
    }
}

/// A tmpfs of a fixed size mounted on a fresh directory, unmounted (and the directory removed)
/// when dropped, also when the test fails.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` MiB on a fresh directory under `/tmp`. `Err` with the reason
    /// when mounting is impossible (not root, no `mount`).
    pub fn mount(size_mib: u64) -> Result<Tmpfs, String> {
        if !is_root() {
            return Err("mounting a tmpfs needs root".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("saga-tmpfs-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a mount point: {e}"))?
            .keep();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process holds a file): detach it now, freed once that one closes.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `PRAGMA integrity_check` of the SQLite file at `path`, through the `sqlite3` command-line
/// tool: `"ok"` for a sound file, else the problems it lists (or why it could not run).
pub fn sqlite_integrity_check(path: &Path) -> String {
    match Command::new("sqlite3")
        .arg(path)
        .arg("PRAGMA integrity_check;")
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => format!(
            "sqlite3 failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("cannot run sqlite3 (install the sqlite3 package): {e}"),
    }
}

/// Polls `probe` every 50 ms until it is true; `false` after `timeout`.
pub fn eventually(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}
