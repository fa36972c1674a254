//! The engine's background work: taking back its own leases at startup, claiming due sagas,
//! renewing leases (and taking back orphans), and removing finished sagas past retention.

use std::time::Duration;

use super::capacity::Slot;
use super::{Engine, EngineError};
use crate::machine::Event;
use crate::store::TransitionWrite;

/// Most sagas one poll claims: enough to drain a backlog within a few polls, few enough that
/// one claim statement stays short and leaves work for the other engines.
const CLAIM_BATCH: u32 = 64;

/// Lease renewals per lease length: a renewal may be late or fail twice before the lease runs
/// out.
const RENEWALS_PER_LEASE: u32 = 3;

/// How often finished sagas past retention are removed: retention is counted in days, so an
/// hour late is no matter, and the sweep is a large delete.
const RETENTION_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Tries at taking back own leases at startup, while a killed process of the same engine id
/// may still hold row locks on the server.
const STARTUP_CLAIM_TRIES: u32 = 10;

/// The wait before the n-th retry of the startup claim is n times this: about 4.5 s over all
/// tries, which lets the server drop a killed process's connections before the build fails.
const STARTUP_CLAIM_BACKOFF_STEP: Duration = Duration::from_millis(100);

impl Engine {
    /// Takes back the sagas this engine id still leases (a restart after a crash), and drives
    /// them.
    pub(super) async fn take_back_own_leases(&self) -> Result<(), EngineError> {
        let lease_until = self.lease_until();
        // A process of this engine id killed a moment ago may still hold row locks on the
        // server for a little while: transient refusals are tried again.
        let mut tries = 0;
        let own = loop {
            tries += 1;
            let fingerprints = self.fingerprints();
            let claim =
                self.inner
                    .store
                    .claim_own(&self.inner.engine_id, lease_until, &fingerprints);
            match self.inner.clock.io(claim).await {
                Err(e) if e.is_transient() && tries < STARTUP_CLAIM_TRIES => {
                    tracing::warn!(error = %e, "taking back own leases failed; trying again");
                    tokio::time::sleep(STARTUP_CLAIM_BACKOFF_STEP * tries).await;
                }
                other => break other?,
            }
        };
        if !own.is_empty() {
            tracing::info!(count = own.len(), "taking back this engine's own leases");
        }
        let mut left = 0;
        for gid in own {
            match self.inner.capacity.try_take() {
                Some(slot) => self.spawn_from_store(&gid, Event::Start, slot).await,
                None => left += 1,
            }
        }
        if left > 0 {
            // Their leases run out and they are claimed again, here once there is room or by
            // another engine.
            tracing::warn!(
                left,
                "more own sagas than max_in_flight; leaving the rest to be claimed"
            );
        }
        Ok(())
    }

    /// Starts the poller, the lease renewal, the retention task and the scan for sagas of
    /// unknown definitions; each stops at shutdown.
    pub(super) fn start_background_tasks(&self) {
        tokio::spawn(self.clone().poll_loop());
        tokio::spawn(self.clone().renew_loop());
        tokio::spawn(self.clone().retention_loop());
        tokio::spawn(self.clone().unknown_loop());
    }

    /// Loads a saga this engine has just claimed and drives it in `slot`. A saga of an unknown
    /// definition is released again and left alone for a lease, so that an engine that knows
    /// it (or a later deployment) can take it.
    async fn spawn_from_store(&self, gid: &str, event: Event, slot: Slot) {
        let record = match self.inner.clock.io(self.inner.store.load(gid)).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(gid, error = %e, "could not load a claimed saga");
                return;
            }
        };
        match self.saga_for(&record) {
            Ok(saga) => {
                let fence = record.fence;
                self.spawn_record(saga, record, fence, event, slot);
            }
            Err(e) => {
                tracing::error!(gid, error = %e, "refusing to drive a saga of an unknown definition");
                // Store write: release the claim unchanged, with the next wake-up a lease away.
                let now = self.inner.clock.now_ms();
                let release = self.inner.store.write(TransitionWrite {
                    gid: record.gid.clone(),
                    fence: record.fence,
                    status: record.state.status,
                    phase: record.state.phase,
                    reason: record.state.reason.clone(),
                    cause: record.state.cause.clone(),
                    next_wake_at: now + self.inner.config.lease.as_millis() as i64,
                    lease_until: 0,
                    release: true,
                    steps: Vec::new(),
                    attempts: Vec::new(),
                    now,
                });
                let _ = self.inner.clock.io(release).await;
            }
        }
    }

    /// Claims due sagas (free, or leased by a crashed engine, with a wake-up time passed) every
    /// poll interval, as many as there is room for, and drives them.
    async fn poll_loop(self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.poll_interval) => {}
                _ = shutdown.changed() => return,
            }
            if self.is_shutting_down() {
                return;
            }
            if self.is_stalled() {
                continue;
            }
            let mut slots = self.inner.capacity.take_up_to(CLAIM_BATCH as usize);
            if slots.is_empty() {
                continue;
            }
            let now = self.inner.clock.now_ms();
            let fingerprints = self.fingerprints();
            let claim = self.inner.store.claim_due(
                &self.inner.engine_id,
                self.lease_until(),
                now,
                slots.len() as u32,
                &fingerprints,
            );
            let claimed = self.inner.clock.io(claim).await;
            match claimed {
                Ok(gids) => {
                    for gid in gids {
                        let Some(slot) = slots.pop() else { break };
                        tracing::info!(gid, "claimed a due saga");
                        self.spawn_from_store(&gid, Event::Start, slot).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming due sagas failed"),
            }
        }
    }

    /// Renews this engine's leases on the sagas it drives, in one statement every third of the
    /// lease, and takes back its own sagas that have no driver here any more.
    async fn renew_loop(self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let every = self.inner.config.lease / RENEWALS_PER_LEASE;
        let owner = self.inner.engine_id.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            if self.is_stalled() {
                continue;
            }
            let driving: Vec<String> = self
                .inner
                .drivers
                .lock()
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            if !driving.is_empty()
                && let Err(e) = self
                    .inner
                    .clock
                    .io(self
                        .inner
                        .store
                        .renew_leases(&owner, self.lease_until(), &driving))
                    .await
            {
                tracing::warn!(error = %e, "renewing leases failed");
            }
            let expired = self
                .inner
                .store
                .own_expired(&owner, self.inner.clock.now_ms());
            let orphans = match self.inner.clock.io(expired).await {
                Ok(gids) => gids,
                Err(e) => {
                    tracing::warn!(error = %e, "looking for orphaned sagas failed");
                    continue;
                }
            };
            for gid in orphans {
                let live = self
                    .inner
                    .drivers
                    .lock()
                    .map(|d| d.get(&gid).is_some_and(|tx| !tx.is_closed()))
                    .unwrap_or(true);
                if live {
                    continue;
                }
                let Some(slot) = self.inner.capacity.try_take() else {
                    break;
                };
                let claim = self.inner.store.claim_one(&gid, &owner, self.lease_until());
                match self.inner.clock.io(claim).await {
                    Ok(Some(_)) => {
                        tracing::info!(gid, "taking back an orphaned saga");
                        self.spawn_from_store(&gid, Event::Start, slot).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(gid, error = %e, "taking back an orphaned saga failed")
                    }
                }
            }
        }
    }

    /// Removes finished sagas older than the retention, at startup and then every hour.
    async fn retention_loop(self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            // Retention is counted on the engine's clock, as every other timestamp it writes.
            let retention =
                i64::try_from(self.inner.config.retention.as_millis()).unwrap_or(i64::MAX);
            let before = self.inner.clock.now_ms().saturating_sub(retention);
            let cleanup = self.inner.store.cleanup_finished(before);
            match self.inner.clock.io(cleanup).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "removed finished sagas past retention"),
                Err(e) => tracing::warn!(error = %e, "retention cleanup failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETENTION_SWEEP_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
