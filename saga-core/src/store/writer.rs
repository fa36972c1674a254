//! The group-commit writer: takes whatever writes are queued, from many sagas, and applies
//! them in one transaction, so that one fsync serves them all. Written once over [`Backend`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc, oneshot};

use super::StoreError;
use super::backend::Backend;
use super::batch::{BatchPlan, WriteOp, WriteOutcome};

/// Where a caller hears what its write did.
pub(crate) type Reply = oneshot::Sender<Result<WriteOutcome, StoreError>>;

/// The writers' queue.
pub(crate) type Queue = mpsc::Sender<(WriteOp, Reply)>;

/// Writes the queue holds before a caller waits to enqueue.
const QUEUE_CAPACITY: usize = 4096;

/// Writes one transaction holds at most: large enough that a busy engine's transitions share
/// a commit, small enough that one batch statement stays quick to plan and run.
pub(crate) const BATCH_LIMIT: usize = 256;

/// How often a batch that failed for a transient reason (deadlock, serialization failure,
/// lock timeout, busy file, an unavailable database) is tried again before its callers hear
/// the error, and the first pause; each pause doubles up to [`TRANSIENT_BACKOFF_MAX`]. No
/// try starts later than [`TRANSIENT_PATIENCE`] after the first failure: while the database is
/// down each try may wait for a connection, and callers retry on their own terms.
const TRANSIENT_RETRIES: u32 = 8;
const TRANSIENT_PATIENCE: Duration = Duration::from_secs(3);
const TRANSIENT_BACKOFF: Duration = Duration::from_millis(10);
const TRANSIENT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Counters of the group-commit writers.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Writes applied.
    pub writes: AtomicU64,
    /// Whether the last batch failed because the database was unavailable: logged once when
    /// it begins and once when it ends, not for every batch.
    pub unavailable: AtomicBool,
}

/// Starts the backend's writers on one shared queue.
pub(crate) fn start(backend: Arc<dyn Backend>, stats: Arc<WriterStats>) -> Queue {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..backend.writers() {
        let (backend, rx, stats) = (backend.clone(), rx.clone(), stats.clone());
        // A writer that panics is restarted: its batch's callers see an error (their
        // transaction was rolled back), every later write is served again.
        tokio::spawn(async move {
            loop {
                let task = tokio::spawn(run(backend.clone(), rx.clone(), stats.clone()));
                match task.await {
                    Err(e) if e.is_panic() => {
                        tracing::error!("the store's writer panicked; restarting it");
                    }
                    _ => break,
                }
            }
        });
    }
    tx
}

async fn run(
    backend: Arc<dyn Backend>,
    rx: Arc<Mutex<mpsc::Receiver<(WriteOp, Reply)>>>,
    stats: Arc<WriterStats>,
) {
    let mut batch: Vec<(WriteOp, Reply)> = Vec::with_capacity(BATCH_LIMIT);
    loop {
        // Two writes of one saga are never queued at once (a driver awaits each write), so
        // writers working side by side cannot reorder a saga's transitions.
        let received = rx.lock().await.recv_many(&mut batch, BATCH_LIMIT).await;
        if received == 0 {
            break;
        }
        let ops: Vec<&WriteOp> = batch.iter().map(|(op, _)| op).collect();
        match apply(backend.as_ref(), &ops, &stats).await {
            Ok(outcomes) => {
                metrics::histogram!("saga_store_batch_size").record(batch.len() as f64);
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some((_, reply)) = batch.pop() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) if e.is_unavailable() => {
                // Tried again already: the database is unavailable for every write alike, so
                // each caller hears the batch's error.
                let shared = Arc::new(e);
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StoreError::Batch(shared.clone())));
                }
            }
            Err(e) => {
                // One bad write must not fail its neighbours: each is tried on its own.
                tracing::debug!(error = %e, writes = batch.len(), "batch failed; writing one by one");
                for (op, reply) in batch.drain(..) {
                    let result = apply(backend.as_ref(), &[&op], &stats).await;
                    let _ = reply.send(result.map(|mut outcomes| outcomes.remove(0)));
                }
            }
        }
    }
}

/// Applies `ops` in one transaction, trying again after transient errors.
async fn apply(
    backend: &dyn Backend,
    ops: &[&WriteOp],
    stats: &WriterStats,
) -> Result<Vec<WriteOutcome>, StoreError> {
    let plan = BatchPlan::new(ops);
    let mut pause = TRANSIENT_BACKOFF;
    let mut retries = 0;
    let mut first_failure: Option<Instant> = None;
    loop {
        let started = Instant::now();
        match backend.write_batch(&plan.params).await {
            Ok(rows) => {
                metrics::histogram!("saga_store_commit_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.writes.fetch_add(ops.len() as u64, Ordering::Relaxed);
                if stats.unavailable.swap(false, Ordering::Relaxed) {
                    tracing::info!("the saga store accepts writes again");
                }
                return Ok(plan.outcomes(rows));
            }
            Err(e) => {
                let e = StoreError::from(e);
                let failing_for = first_failure.get_or_insert_with(Instant::now).elapsed();
                if !e.is_transient()
                    || retries == TRANSIENT_RETRIES
                    || failing_for + pause > TRANSIENT_PATIENCE
                {
                    if e.is_unavailable() && !stats.unavailable.swap(true, Ordering::Relaxed) {
                        tracing::error!(error = %e, "the saga store cannot be written; its writes fail until it can");
                    }
                    return Err(e);
                }
                retries += 1;
                metrics::counter!("saga_store_transient_retries_total").increment(1);
                tracing::debug!(error = %e, retries, "transient store error; trying the batch again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(TRANSIENT_BACKOFF_MAX);
            }
        }
    }
}
