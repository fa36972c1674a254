//! What can go wrong in the engine's API, each case with what a caller needs to act on it.

use crate::definition::DefinitionError;
use crate::machine::SagaStatus;
use crate::store::StoreError;

/// Errors of the engine's API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed. [`StoreError::is_transient`] tells whether trying again may help.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A registered saga's definition breaks a rule of
    /// [`SagaDefinition::validate`](crate::SagaDefinition::validate); found when the engine is
    /// built.
    #[error("saga `{saga}` has an invalid definition: {problem}")]
    InvalidDefinition {
        /// The saga's persisted name.
        saga: &'static str,
        /// The rule it breaks.
        #[source]
        problem: DefinitionError,
    },
    /// The gid is empty, longer than [`MAX_GID_LEN`](super::MAX_GID_LEN) bytes or has
    /// characters outside `[A-Za-z0-9_.:-]`; the text says which.
    #[error("invalid gid: {0}")]
    InvalidGid(String),
    /// A saga with this gid exists with a different saga or input; nothing was changed.
    #[error("saga `{gid}` exists already with a different {what}")]
    Conflict {
        /// The gid.
        gid: String,
        /// `input`, `saga` (another saga's instance) or `definition` (another version of it).
        what: &'static str,
    },
    /// The saga type was not registered with this engine.
    #[error("saga `{0}` is not registered with this engine")]
    NotRegistered(String),
    /// The saga type is registered, but a newer version of the saga is too: new sagas start
    /// on the newest version, older ones only drain.
    #[error("saga `{saga}` version {version} is superseded by version {newest}; submit the newest")]
    Superseded {
        /// The saga name.
        saga: String,
        /// The version submitted.
        version: u32,
        /// The newest registered version.
        newest: u32,
    },
    /// The input does not encode as JSON, or its JSON does not decode back as the saga's input
    /// type (its `Serialize` and `Deserialize` disagree).
    #[error("the saga input does not round-trip through JSON: {0}")]
    Input(#[source] serde_json::Error),
    /// No saga has this gid.
    #[error("no saga with gid `{0}`")]
    NotFound(String),
    /// The saga's definition fingerprint is unknown to this engine; it is left untouched.
    /// Register the definition it was submitted with (or let an engine that has it drive it).
    #[error(
        "saga `{gid}` has definition fingerprint {fingerprint}, which this engine does not know"
    )]
    UnknownDefinition {
        /// The gid.
        gid: String,
        /// The stored fingerprint.
        fingerprint: String,
    },
    /// An operator action on a saga that has finished (succeeded or compensated): there is
    /// nothing left to retry or undo.
    #[error("saga `{gid}` has finished ({status})")]
    Finished {
        /// The gid.
        gid: String,
        /// Its final status.
        status: SagaStatus,
    },
    /// Compensation was requested for a saga that may have passed its pivot: it can only go
    /// forward (retry it instead).
    #[error("saga `{gid}` has passed its pivot and can only go forward")]
    PastPivot {
        /// The gid.
        gid: String,
    },
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The engine drives as many sagas as it may at once
    /// ([`EngineConfig::max_in_flight`](super::EngineConfig::max_in_flight)); nothing was
    /// created. Submit again later.
    #[error("the engine drives {limit} sagas already, as many as it may at once; try again later")]
    Overloaded {
        /// The limit.
        limit: usize,
    },
    /// The store did not make the submit durable within
    /// [`EngineConfig::submit_timeout`](super::EngineConfig::submit_timeout). The write may
    /// still land, and the saga then runs: submit again later, which finds it.
    #[error("the saga store did not answer within {} ms; try again later", .waited.as_millis())]
    Unavailable {
        /// How long the submit waited.
        waited: std::time::Duration,
    },
}

impl EngineError {
    /// Whether the same call may succeed later without any change: the engine is overloaded,
    /// shutting down, or its store is unavailable or [transient](StoreError::is_transient)ly
    /// failing. An HTTP front answers these with 503 and `Retry-After`.
    pub fn is_retriable(&self) -> bool {
        match self {
            EngineError::Store(e) => e.is_transient(),
            EngineError::Overloaded { .. }
            | EngineError::Unavailable { .. }
            | EngineError::ShuttingDown => true,
            _ => false,
        }
    }
}
