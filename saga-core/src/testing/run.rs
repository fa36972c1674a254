//! One schedule, run: a fresh world and store in a directory of their own, on a paused
//! runtime whose time moves only when every task waits on it; an engine that crashes where the
//! schedule says, and a new one that recovers from the store, until the saga has finished.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::intercept::Intercepted;
use super::journal::{Entry, Journal};
use super::schedule::Schedule;
use super::{Settings, World};
use crate::clock::Clock;
use crate::engine::{Engine, SagaView};
use crate::step::SagaSteps;
use crate::store::Store;
use crate::store::sqlite::SqliteOptions;

/// The virtual epoch every run starts at: 2026-01-01, the same for every run, so that a run
/// replays exactly.
const EPOCH_MS: i64 = 1_767_225_600_000;

/// The gid of the saga instance of every run.
pub(crate) const GID: &str = "saga-under-test";

/// Most engines one run starts: one per crash, and the first.
const MAX_ENGINES: u32 = 16;

/// The engine id of every engine of a run: each new one takes the crashed one's leases back.
const ENGINE_ID: &str = "engine-under-test";

/// The engine that saw the saga finish, with its intercepted steps.
type Last<S, W> = (Engine, Arc<Intercepted<S, <W as World>::Steps>>);

/// What one run left behind.
pub(crate) struct Ran<W: World> {
    pub view: Option<SagaView>,
    pub entries: Vec<Entry>,
    pub snapshot: Result<W::Snapshot, String>,
    /// Calls that reached each step's action and compensation, by step index.
    pub calls: Vec<(u32, u32)>,
    pub transitions: usize,
    /// Why the run itself could not be made (the world or the store did not open).
    pub error: Option<String>,
}

/// Runs `schedule` in `dir` on the current (paused) runtime.
pub(crate) async fn run<S, W>(
    settings: &Settings,
    input: &S::Input,
    schedule: Schedule,
    dir: &Path,
) -> Ran<W>
where
    S: SagaSteps<W::Steps>,
    W: World,
{
    let def = S::definition();
    let seed = schedule.seed.unwrap_or(0);
    let clock = Clock::tokio(EPOCH_MS, seed);
    let journal = Arc::new(Journal::new(def, schedule, clock.clone()));
    let failed = |error: String, journal: &Journal| Ran::<W> {
        view: None,
        entries: journal.entries(),
        snapshot: Err(error.clone()),
        calls: Vec::new(),
        transitions: 0,
        error: Some(error),
    };
    let world = match clock.io(W::create(dir)).await {
        Ok(w) => w,
        Err(e) => return failed(format!("the world could not be created: {e}"), &journal),
    };
    let options = SqliteOptions {
        durable: false,
        readers: 1,
    };
    let store = match clock.io(Store::sqlite(dir.join("saga.db"), options)).await {
        Ok(s) => s,
        Err(e) => return failed(format!("the store could not be opened: {e}"), &journal),
    };
    let mut engines = 0;
    let mut last: Option<Last<S, W>> = None;
    let limit = tokio::time::Instant::now() + settings.patience;
    while engines < MAX_ENGINES {
        engines += 1;
        if engines > 1 {
            journal.recovered(engines - 1);
        }
        let steps = Arc::new(Intercepted::<S, W::Steps>::new(
            world.steps(),
            journal.clone(),
        ));
        let built = Engine::builder(store.clone())
            .config(settings.config.clone())
            .engine_id(ENGINE_ID)
            .clock(clock.clone())
            .probe(journal.clone())
            .register_erased(steps.clone())
            .build()
            .await;
        let engine = match built {
            Ok(e) => e,
            Err(e) => return failed(format!("the engine could not start: {e}"), &journal),
        };
        if engines == 1
            && let Err(e) = engine.submit::<S>(GID, input).await
        {
            return failed(format!("the submit failed: {e}"), &journal);
        }
        while !journal.finished() && !journal.crashed() {
            let woken = tokio::time::timeout_at(limit, journal.wake.notified()).await;
            if woken.is_err() {
                break;
            }
        }
        let crashed = journal.crashed() && !journal.finished();
        if crashed {
            engine.kill();
            // Let the dead engine's drivers see the stop before the next one starts.
            tokio::task::yield_now().await;
            continue;
        }
        last = Some((engine, steps));
        break;
    }
    let Some((engine, steps)) = last else {
        return failed("the engine crashed more often than it may".into(), &journal);
    };
    let view = engine.status(GID).await.ok().flatten();
    engine.kill();
    steps.deliver_held().await;
    let snapshot = clock.io(world.snapshot()).await;
    let calls = (0..def.steps.len())
        .map(|i| {
            (
                journal.calls(i, crate::step::Op::Action),
                journal.calls(i, crate::step::Op::Compensate),
            )
        })
        .collect();
    // Let the blocking holds and the pools wind down before the runtime goes.
    tokio::time::sleep(Duration::ZERO).await;
    Ran {
        view,
        entries: journal.entries(),
        snapshot,
        calls,
        transitions: journal.persisted(),
        error: None,
    }
}
