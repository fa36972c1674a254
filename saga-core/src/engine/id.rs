//! The engine id an engine runs under: the configured one, or one derived from what identifies
//! the deployment, held exclusively for the engine's lifetime (see [`EngineConfig::engine_id`]).
//!
//! [`EngineConfig::engine_id`]: super::EngineConfig::engine_id

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::store::{IdHold, Store, StoreError};

/// Hex digits of the hash in a derived engine id: 48 bits, so that the deployments on one host
/// and store do not meet by chance (and the hold catches it if they do).
const HASH_HEX_DIGITS: usize = 12;

/// Tries at holding the derived id: an engine of this id that stopped a moment ago may still
/// hold it for a little while (its last tasks still ending, or a session the server has not
/// ended yet).
const HOLD_TRIES: u32 = 5;

/// The wait before the n-th retry of the hold is n times this: half a second over all tries.
const HOLD_BACKOFF_STEP: Duration = Duration::from_millis(50);

/// The engine id in use and, for a derived one, its hold.
pub(super) struct EngineId {
    /// The id.
    pub id: String,
    /// The hold on a derived id, kept for the engine's lifetime; `None` for a configured id or
    /// the fallback.
    pub hold: Option<IdHold>,
}

/// The id an engine on `store` runs under: `configured` as it is, else the derived id with its
/// hold, or `{derived}-{process id}` when another live engine holds the derived one (or the
/// hold cannot be taken), with a warning.
pub(super) async fn resolve(
    configured: Option<&str>,
    store: &Store,
) -> Result<EngineId, StoreError> {
    if let Some(id) = configured {
        return Ok(EngineId {
            id: id.to_string(),
            hold: None,
        });
    }
    let derived = derive(
        &hostname(),
        &canonical(std::env::current_exe()),
        &canonical(std::env::current_dir()),
        &store.identity().await?,
    );
    let fallback = format!("{derived}-{}", std::process::id());
    let mut tries = 0;
    loop {
        tries += 1;
        match store.hold_engine_id(&derived).await {
            Ok(Some(hold)) => {
                return Ok(EngineId {
                    id: derived,
                    hold: Some(hold),
                });
            }
            Ok(None) if tries < HOLD_TRIES => tokio::time::sleep(HOLD_BACKOFF_STEP * tries).await,
            Ok(None) => {
                tracing::warn!(
                    engine_id = derived,
                    fallback,
                    "another live engine holds the default engine id; running under the fallback, \
                     which a restart does not keep: set distinct engine ids"
                );
                break;
            }
            Err(e) => {
                tracing::warn!(
                    engine_id = derived,
                    fallback,
                    error = %e,
                    "cannot hold the default engine id; running under the fallback"
                );
                break;
            }
        }
    }
    Ok(EngineId {
        id: fallback,
        hold: None,
    })
}

/// The derived engine id: `{host}-{hash}`, the hash being the first [`HASH_HEX_DIGITS`] hex
/// digits of the SHA-256 of the executable's path, the current directory and the store's
/// identity, each followed by a zero byte.
fn derive(host: &str, exe: &Path, cwd: &Path, store: &str) -> String {
    let mut hash = Sha256::new();
    for part in [
        exe.as_os_str().as_encoded_bytes(),
        cwd.as_os_str().as_encoded_bytes(),
        store.as_bytes(),
    ] {
        hash.update(part);
        hash.update([0]);
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}-{}", &hex[..HASH_HEX_DIGITS])
}

/// A path with symbolic links resolved; empty if it is unknown.
fn canonical(path: std::io::Result<PathBuf>) -> PathBuf {
    path.and_then(std::fs::canonicalize).unwrap_or_default()
}

/// The host's name, `localhost` when it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .or_else(|_| std::env::var("HOSTNAME"))
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(exe: &str, cwd: &str, store: &str) -> String {
        derive("host", Path::new(exe), Path::new(cwd), store)
    }

    #[test]
    fn a_derived_id_is_the_host_and_a_short_hash() {
        let derived = id("/srv/app/bin/app", "/srv/app", "/srv/app/saga.db");
        let (host, hash) = derived.split_once('-').unwrap();
        assert_eq!(host, "host");
        assert_eq!(hash.len(), HASH_HEX_DIGITS);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{derived}");
        assert_eq!(
            derived,
            id("/srv/app/bin/app", "/srv/app", "/srv/app/saga.db")
        );
    }

    #[test]
    fn each_part_of_a_deployment_changes_the_derived_id() {
        let base = id("/bin/app", "/srv", "orders/public");
        assert_ne!(base, id("/bin/other", "/srv", "orders/public"));
        assert_ne!(base, id("/bin/app", "/srv/b", "orders/public"));
        assert_ne!(base, id("/bin/app", "/srv", "orders/billing"));
        assert_ne!(
            base,
            derive(
                "other",
                Path::new("/bin/app"),
                Path::new("/srv"),
                "orders/public"
            )
        );
        // The parts are separated: moving a character from one to the next is another id.
        assert_ne!(id("/bin/ap", "p/srv", "x"), id("/bin/app", "/srv", "x"));
    }
}
