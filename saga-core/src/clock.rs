//! The engine's time source: wall-clock milliseconds for leases, due times and deadlines, read
//! through one seam so that a test can run the engine on virtual time.
//!
//! [`Clock::system`] (the default) reads the system clock. [`Clock::tokio`] follows Tokio's
//! clock from a fixed epoch: on a runtime whose time is paused (`start_paused`), every sleep,
//! timeout, backoff, lease and deadline of the engine then moves together, and only when the
//! runtime has nothing else to do. A paused runtime would also move time while a database
//! statement runs on sqlx's worker threads, since it cannot see them; the engine therefore
//! wraps each store call in [`Clock::io`], which holds time still until the call returns (a
//! no-op on the system clock). `saga_core::testing` (feature `testing`) runs every schedule
//! this way.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Where the engine reads the time. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    kind: Kind,
}

#[derive(Debug, Clone, Default)]
enum Kind {
    #[default]
    System,
    Tokio {
        epoch_ms: i64,
        start: tokio::time::Instant,
        /// The jitter of backoff waits, seeded, so that a run replays exactly.
        rng: Arc<Mutex<StdRng>>,
    },
}

impl Clock {
    /// The system clock (the default).
    pub fn system() -> Clock {
        Clock { kind: Kind::System }
    }

    /// A clock that reads `epoch_ms` now and then follows Tokio's clock (`tokio::time::Instant`),
    /// so that on a paused runtime it moves only when the runtime's time does, with the jitter
    /// of backoff waits drawn from `seed`. Call it on the runtime it is meant for.
    pub fn tokio(epoch_ms: i64, seed: u64) -> Clock {
        Clock {
            kind: Kind::Tokio {
                epoch_ms,
                start: tokio::time::Instant::now(),
                rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            },
        }
    }

    /// Whether this clock follows Tokio's clock rather than the system's.
    pub fn is_tokio(&self) -> bool {
        matches!(self.kind, Kind::Tokio { .. })
    }

    /// Milliseconds since the Unix epoch: the unit of every timestamp in the store.
    pub fn now_ms(&self) -> i64 {
        match &self.kind {
            Kind::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            Kind::Tokio {
                epoch_ms, start, ..
            } => epoch_ms + start.elapsed().as_millis() as i64,
        }
    }

    /// A random wait of up to `max` ms, to spread retries: from the thread's generator on the
    /// system clock, from the seeded one on a clock that follows Tokio's.
    pub fn jitter(&self, max: u64) -> u64 {
        match &self.kind {
            Kind::System => rand::rng().random_range(0..=max),
            Kind::Tokio { rng, .. } => match rng.lock() {
                Ok(mut rng) => rng.random_range(0..=max),
                Err(_) => max / 2,
            },
        }
    }

    /// Runs `work` (a database call, or any I/O the runtime cannot see) with time held still
    /// until it returns, on a clock that follows Tokio's; on the system clock, just `work`.
    pub async fn io<F: Future>(&self, work: F) -> F::Output {
        let _still = self.hold();
        work.await
    }

    /// Holds time still until the returned value is dropped, on a clock that follows Tokio's
    /// (a paused runtime does not advance while a blocking task runs, and the hold is one, parked
    /// until it is dropped); `None` on the system clock.
    pub fn hold(&self) -> Option<Hold> {
        if !self.is_tokio() {
            return None;
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            // Returns when the sender is dropped.
            let _ = rx.recv();
        });
        Some(Hold { _release: tx })
    }
}

/// Time held still on a clock that follows Tokio's, until this is dropped ([`Clock::hold`]).
#[derive(Debug)]
pub struct Hold {
    _release: std::sync::mpsc::Sender<()>,
}
