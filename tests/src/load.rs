//! Concurrent load that survives server restarts, and a parallel map for bulk reads.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::api::{Api, Reply};
use crate::order::Order;

/// How long one order may take to be accepted while servers restart.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Applies `f` to every item on `threads` threads and returns the results in input order.
pub fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    thread::scope(|scope| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = f(item);
                    results
                        .lock()
                        .expect("no worker panicked while holding the lock")[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no worker panicked while holding the lock")
        .into_iter()
        .map(|r| r.expect("every item was mapped"))
        .collect()
}

/// Submits `order` (no wait) until a server accepts it with 200 or 202. Transport errors and
/// 5xx replies are retried every 50 ms for up to `timeout`, rotating through `apis` (so an
/// order sent to a killed server goes to the next one); a repeat is safe because submit is
/// idempotent. Any other reply (a 409 for the same body included) is an `Err`.
///
/// The `timeout` counts from the last time any submitter of the same [`run_load`] got an
/// order accepted (or from this order's first try), so a dead server fails the whole load
/// within about one `timeout` instead of one per order.
///
/// Returns the accepted reply and the number of retries it took.
pub fn submit_until_accepted(
    apis: &[Api],
    first: usize,
    order: &Order,
    timeout: Duration,
) -> Result<(Reply, usize), String> {
    submit_with_control(apis, first, order, timeout, &LoadControl::default())
}

fn submit_with_control(
    apis: &[Api],
    first: usize,
    order: &Order,
    timeout: Duration,
    control: &LoadControl,
) -> Result<(Reply, usize), String> {
    let started = Instant::now();
    let mut attempt = 0;
    let mut last: String;
    loop {
        let api = &apis[(first + attempt) % apis.len()];
        match api.try_submit(order) {
            Ok(reply) if matches!(reply.status, 200 | 202) => {
                control.accepted_now();
                return Ok((reply, attempt));
            }
            Ok(reply) if reply.status >= 500 => last = format!("{}: {reply}", api.base_url()),
            Ok(reply) => {
                return Err(format!(
                    "submit {} to {} answered {reply} (expected 200 or 202)",
                    order.order_id,
                    api.base_url()
                ));
            }
            Err(e) => last = e,
        }
        if control.is_stopped() {
            return Err(format!(
                "submit {} abandoned: the load was stopped",
                order.order_id
            ));
        }
        // Once no submitter got anything accepted for `timeout`, later orders give up after a
        // short grace instead of a full `timeout` each.
        let grace = timeout.min(Duration::from_secs(1));
        if started.elapsed() >= grace && control.since_last_accept() >= timeout {
            return Err(format!(
                "submit {} not accepted within {timeout:?} (and no other order was either); last error: {last}",
                order.order_id
            ));
        }
        attempt += 1;
        thread::sleep(Duration::from_millis(50));
    }
}

/// Shared between a [`run_load`] and the thread that kills servers under it: progress
/// (orders accepted or given up) and a stop flag.
#[derive(Debug)]
pub struct LoadControl {
    done: AtomicUsize,
    stop: AtomicBool,
    epoch: Instant,
    /// Milliseconds from `epoch` to the last accepted submit.
    last_accept_ms: AtomicU64,
}

impl Default for LoadControl {
    fn default() -> LoadControl {
        LoadControl {
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
            last_accept_ms: AtomicU64::new(0),
        }
    }
}

impl LoadControl {
    /// A control with no progress, not stopped.
    pub fn new() -> LoadControl {
        LoadControl::default()
    }

    fn accepted_now(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_accept_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn since_last_accept(&self) -> Duration {
        let last = Duration::from_millis(self.last_accept_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Orders finished so far (accepted or given up).
    pub fn progress(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Asks the submitters to stop: remaining orders are reported as failures.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`LoadControl::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A guard that stops the load when dropped, so a panicking test does not wait for its
    /// submitters to time out.
    pub fn stop_on_drop(&self) -> StopOnDrop<'_> {
        StopOnDrop(self)
    }

    /// Blocks until `progress() >= count`, the load stopped, or `timeout` passed.
    pub fn wait_progress(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.progress() < count && !self.is_stopped() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Stops a [`LoadControl`] when dropped; see [`LoadControl::stop_on_drop`].
#[derive(Debug)]
pub struct StopOnDrop<'a>(&'a LoadControl);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// What a [`run_load`] saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Orders accepted (200 or 202).
    pub accepted: usize,
    /// Submits repeated after a transport error or a 5xx.
    pub retries: usize,
    /// Accepted replies by status code.
    pub statuses: BTreeMap<u16, usize>,
    /// Orders that were refused or never accepted, with the reason.
    pub failures: Vec<String>,
    /// Wall time of the load.
    pub elapsed: Duration,
}

/// Submits every order from `concurrency` threads, order `i` first to `apis[i % apis.len()]`,
/// each as [`submit_until_accepted`] does. `control` counts finished orders, so another
/// thread can time kills against the load, and can stop it.
pub fn run_load(
    orders: &[Order],
    concurrency: usize,
    apis: &[Api],
    control: &LoadControl,
) -> LoadReport {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let report = Mutex::new(LoadReport::default());
    thread::scope(|scope| {
        for _ in 0..concurrency.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(order) = orders.get(i) else { break };
                    let outcome = submit_with_control(apis, i, order, ACCEPT_TIMEOUT, control);
                    let mut report = report
                        .lock()
                        .expect("no submitter panicked holding the lock");
                    match outcome {
                        Ok((reply, retries)) => {
                            report.accepted += 1;
                            report.retries += retries;
                            *report.statuses.entry(reply.status).or_default() += 1;
                        }
                        Err(e) => report.failures.push(e),
                    }
                    drop(report);
                    control.done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let mut report = report
        .into_inner()
        .expect("no submitter panicked holding the lock");
    report.elapsed = started.elapsed();
    report
}
