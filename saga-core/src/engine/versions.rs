//! Versions side by side: which registered version a new submit uses, and the sagas that wait
//! for an engine that knows their definition (docs/semantics.md, "Deploying a changed saga").

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::{Engine, EngineError};

/// How often the engine looks for sagas of definitions it does not know, to count and report
/// them: a deploy is a matter of minutes, and the scan reads up to [`UNKNOWN_SCAN_LIMIT`] rows.
const UNKNOWN_SCAN_EVERY: Duration = Duration::from_secs(10);

/// Most sagas one scan reads; counts stop there.
const UNKNOWN_SCAN_LIMIT: u32 = 10_000;

/// Unfinished sagas of one definition that no engine holds and this engine does not know:
/// they wait, untouched, for an engine that registers their definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDefinition {
    /// The saga name.
    pub saga: String,
    /// The definition's fingerprint.
    pub fingerprint: String,
    /// How many sagas wait (counted up to 10,000 in all).
    pub instances: usize,
    /// The first of their gids, in gid order (up to 10).
    pub gids: Vec<String>,
}

impl Engine {
    /// Whether a saga of this definition fingerprint is driven by this engine.
    pub fn knows(&self, fingerprint: &str) -> bool {
        self.inner.by_fingerprint.contains_key(fingerprint)
    }

    /// The unfinished sagas that no engine holds and whose definition this engine does not
    /// know, by definition. Also counted in the gauge `saga_unknown_definition_instances{saga,
    /// fingerprint}` and logged once per saga at warn level, every 10 seconds.
    pub async fn unknown_definitions(&self) -> Result<Vec<UnknownDefinition>, EngineError> {
        let fingerprints = self.fingerprints();
        let scan = self
            .inner
            .store
            .unknown_definitions(&fingerprints, UNKNOWN_SCAN_LIMIT);
        let rows = self.inner.clock.io(scan).await?;
        let mut by_definition: BTreeMap<(String, String), UnknownDefinition> = BTreeMap::new();
        for (gid, saga, fingerprint) in rows {
            let entry = by_definition
                .entry((saga.clone(), fingerprint.clone()))
                .or_insert_with(|| UnknownDefinition {
                    saga,
                    fingerprint,
                    instances: 0,
                    gids: Vec::new(),
                });
            entry.instances += 1;
            if entry.gids.len() < 10 {
                entry.gids.push(gid);
            }
        }
        Ok(by_definition.into_values().collect())
    }

    /// Counts and reports the sagas of unknown definitions until shutdown.
    pub(super) async fn unknown_loop(self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut reported: HashSet<String> = HashSet::new();
        let mut counted: HashSet<(String, String)> = HashSet::new();
        loop {
            let fingerprints = self.fingerprints();
            let scan = self
                .inner
                .store
                .unknown_definitions(&fingerprints, UNKNOWN_SCAN_LIMIT);
            match self.inner.clock.io(scan).await {
                Ok(rows) => {
                    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
                    let mut seen = HashSet::new();
                    for (gid, saga, fingerprint) in rows {
                        if !reported.contains(&gid) {
                            tracing::warn!(
                                gid,
                                saga,
                                fingerprint,
                                "saga waits for an engine that knows its definition"
                            );
                        }
                        *counts.entry((saga, fingerprint)).or_default() += 1;
                        seen.insert(gid);
                    }
                    // Forget the sagas that are driven again, so that a later wait is reported.
                    reported = seen;
                    for key in counted.difference(&counts.keys().cloned().collect()) {
                        gauge(key).set(0.0);
                    }
                    for (key, count) in &counts {
                        gauge(key).set(*count as f64);
                    }
                    counted = counts.into_keys().collect();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "looking for sagas of unknown definitions failed")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(UNKNOWN_SCAN_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn gauge((saga, fingerprint): &(String, String)) -> metrics::Gauge {
    metrics::gauge!(
        "saga_unknown_definition_instances",
        "saga" => saga.clone(),
        "fingerprint" => fingerprint.clone()
    )
}
