//! An engine stopped as if its process had died: no lease released, no call finished, nothing
//! written. What `saga_core::testing` does at a crash point, before it starts a new engine on the
//! same store to recover; and an engine stalled as if its process were paused.

use std::sync::atomic::Ordering;

use super::{Engine, Inner};

impl Engine {
    /// Stops this engine at once as if its process had been killed: its background loops end,
    /// every driver stops where it is and abandons its calls, no lease is released and no new
    /// driver starts. The sagas it drove stay in the store as they were, for this engine id's
    /// next start (or another engine, once the leases run out) to recover.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn kill(&self) {
        self.inner.killed.store(true, Ordering::SeqCst);
        let _ = self.inner.shutdown.send(true);
        self.stop_drivers();
    }

    /// Whether [`Engine::kill`] stopped this engine.
    pub(crate) fn is_killed(&self) -> bool {
        self.inner.is_killed()
    }

    /// Stalls this engine (`true`) as if its process were paused, or lets it go on (`false`):
    /// while stalled it renews no lease and claims nothing, so that another engine takes its
    /// sagas once their leases run out. What its drivers do meanwhile is up to their calls.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn stall(&self, on: bool) {
        self.inner.stalled.store(on, Ordering::SeqCst);
    }

    /// Whether [`Engine::stall`] holds this engine.
    pub(crate) fn is_stalled(&self) -> bool {
        self.inner.stalled.load(Ordering::SeqCst)
    }
}

impl Inner {
    /// Whether [`Engine::kill`] stopped this engine.
    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}
