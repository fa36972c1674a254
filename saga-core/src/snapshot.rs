//! Snapshot tests of saga definitions: a change to a saga's shape that is not accompanied by a
//! version bump fails the user's `cargo test` (docs/semantics.md, "Deploying a changed saga").
//!
//! A snapshot file holds a saga's name, version, fingerprint and step table as text. The check
//! compares the compiled definition with it:
//!
//! | compiled definition                          | result                                        |
//! |----------------------------------------------|-----------------------------------------------|
//! | no snapshot yet                              | written ([`Checked::Written`]); in CI an error |
//! | same fingerprint                             | [`Checked::Unchanged`]                        |
//! | another fingerprint, a higher version        | rewritten ([`Checked::Bumped`])               |
//! | another fingerprint, the same or a lower one | [`SnapshotError::ChangedWithoutVersionBump`]  |
//!
//! "In CI" means the environment variable `CI` is set: there a missing snapshot is
//! [`SnapshotError::Missing`], so that a forgotten file does not pass unnoticed.
//!
//! ```no_run
//! # use saga_core::Saga;
//! # #[derive(Saga)] #[saga(input = ())] enum SubmitOrder { #[pivot] Pay }
//! #[test]
//! fn submit_order_is_deployable() {
//!     let path = concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots/submit_order.saga");
//!     saga_core::snapshot::check::<SubmitOrder>(path).unwrap();
//! }
//! ```
//!
//! Commit the snapshot files: the snapshot is what the running version looks like.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::definition::SagaDefinition;
use crate::step::Saga;

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// There was no snapshot; it has been written.
    Written,
    /// The definition has the snapshot's fingerprint.
    Unchanged,
    /// The definition changed with a version bump; the snapshot now holds the new version.
    Bumped {
        /// The snapshot's version.
        from: u32,
        /// The definition's version.
        to: u32,
    },
}

/// A change of a saga's shape that a snapshot caught.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The saga name.
    pub saga: &'static str,
    /// The version, in the snapshot and in the definition.
    pub version: u32,
    /// The snapshot's fingerprint.
    pub old: String,
    /// The definition's fingerprint.
    pub new: String,
    /// The snapshot file.
    pub path: PathBuf,
    /// The snapshot's text.
    pub snapshot: String,
    /// The definition's text.
    pub definition: String,
}

/// Why a snapshot check failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The definition's shape changed (steps, kinds, order, dependencies or output types) but
    /// its version did not go up: running sagas of the old shape would be stranded.
    #[error(
        "saga `{saga}` changed without a version bump: version {version}, fingerprint {old} in \
         {path} but {new} now.\n\
         Keep the old enum registered (renamed, with `#[saga(name = \"{saga}\", version = {version})]`) \
         so that running sagas finish on it, and give the changed one `version = {next}`.\n\
         snapshot:\n{snapshot}\ndefinition:\n{definition}",
        saga = .0.saga,
        version = .0.version,
        old = .0.old,
        new = .0.new,
        path = .0.path.display(),
        next = .0.version + 1,
        snapshot = .0.snapshot,
        definition = .0.definition,
    )]
    ChangedWithoutVersionBump(Box<Change>),
    /// No snapshot exists and the check runs in CI (`CI` is set), where it must not be written.
    #[error("no snapshot of saga `{saga}` at {path}; run the test locally and commit the file")]
    Missing {
        /// The saga name.
        saga: &'static str,
        /// The expected snapshot file.
        path: PathBuf,
    },
    /// The snapshot file is not one this module wrote.
    #[error("{path} is not a saga snapshot: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Reading or writing the file failed.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Checks saga `S` against the snapshot at `path` (see the module docs).
pub fn check<S: Saga>(path: impl AsRef<Path>) -> Result<Checked, SnapshotError> {
    check_definition(S::definition(), path.as_ref())
}

/// Checks a definition against the snapshot at `path` (see the module docs).
pub fn check_definition(def: &SagaDefinition, path: &Path) -> Result<Checked, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = render(def);
    let old = match std::fs::read_to_string(path) {
        Ok(old) => old,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var_os("CI").is_some() {
                return Err(SnapshotError::Missing {
                    saga: def.name,
                    path: path.to_path_buf(),
                });
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            std::fs::write(path, &text).map_err(io)?;
            return Ok(Checked::Written);
        }
        Err(e) => return Err(io(e)),
    };
    let (version, fingerprint) = parse(&old).map_err(|why| SnapshotError::Malformed {
        path: path.to_path_buf(),
        why,
    })?;
    let new = def.fingerprint();
    if fingerprint == new {
        return Ok(Checked::Unchanged);
    }
    if def.version > version {
        std::fs::write(path, &text).map_err(io)?;
        return Ok(Checked::Bumped {
            from: version,
            to: def.version,
        });
    }
    Err(SnapshotError::ChangedWithoutVersionBump(Box::new(Change {
        saga: def.name,
        version: def.version,
        old: fingerprint,
        new,
        path: path.to_path_buf(),
        snapshot: old,
        definition: text,
    })))
}

/// The snapshot text of a definition: what its fingerprint covers, one line per step.
pub fn render(def: &SagaDefinition) -> String {
    let mut out = format!(
        "saga {}\nversion {}\nfingerprint {}\n",
        def.name,
        def.version,
        def.fingerprint()
    );
    for (i, step) in def.steps.iter().enumerate() {
        let after: Vec<&str> = step.after.iter().map(|&d| def.steps[d].name).collect();
        let _ = writeln!(
            out,
            "step {i} {} {} after({}) output {}",
            step.name,
            step.kind,
            after.join(", "),
            step.output
        );
    }
    out
}

/// The version and fingerprint a snapshot records.
fn parse(text: &str) -> Result<(u32, String), String> {
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
            .ok_or_else(|| format!("no `{key}` line"))
    };
    let version = field("version")?
        .trim()
        .parse::<u32>()
        .map_err(|e| format!("bad version: {e}"))?;
    Ok((version, field("fingerprint")?.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{StepDefinition, StepKind};

    const fn step(name: &'static str, kind: StepKind, after: &'static [usize]) -> StepDefinition {
        let compensation = match kind {
            StepKind::Compensatable => Some("compensate"),
            _ => None,
        };
        StepDefinition::new(name, kind, after, compensation)
    }

    static V1: [StepDefinition; 2] = [
        step("reserve", StepKind::Compensatable, &[]),
        step("pay", StepKind::Pivot, &[0]),
    ];
    static V1_PLUS_STEP: [StepDefinition; 3] = [
        step("reserve", StepKind::Compensatable, &[]),
        step("check", StepKind::Compensatable, &[0]),
        step("pay", StepKind::Pivot, &[1]),
    ];

    fn saga(version: u32, steps: &'static [StepDefinition]) -> SagaDefinition {
        SagaDefinition {
            name: "checkout",
            version,
            steps,
        }
    }

    #[test]
    fn a_step_added_without_a_version_bump_fails_and_passes_after_the_bump() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshots/checkout.saga");
        // In CI a missing snapshot is an error; this test writes its own.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, render(&saga(1, &V1))).unwrap();
        assert_eq!(
            check_definition(&saga(1, &V1), &path).unwrap(),
            Checked::Unchanged
        );

        let err = check_definition(&saga(1, &V1_PLUS_STEP), &path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(&err, SnapshotError::ChangedWithoutVersionBump(c) if c.version == 1));
        assert!(
            message.contains("give the changed one `version = 2`"),
            "{message}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            render(&saga(1, &V1))
        );

        assert_eq!(
            check_definition(&saga(2, &V1_PLUS_STEP), &path).unwrap(),
            Checked::Bumped { from: 1, to: 2 }
        );
        assert_eq!(
            check_definition(&saga(2, &V1_PLUS_STEP), &path).unwrap(),
            Checked::Unchanged
        );
        // Going back to the old shape under the new version is a change too.
        assert!(check_definition(&saga(2, &V1), &path).is_err());
    }

    #[test]
    fn a_malformed_snapshot_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkout.saga");
        std::fs::write(&path, "saga checkout\nversion one\n").unwrap();
        assert!(matches!(
            check_definition(&saga(1, &V1), &path),
            Err(SnapshotError::Malformed { .. })
        ));
    }
}
