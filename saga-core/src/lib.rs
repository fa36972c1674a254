#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(feature = "runtime")]
pub mod barrier;
#[cfg(feature = "runtime")]
pub mod clock;
#[cfg(all(feature = "console", any(feature = "sqlite", feature = "postgres")))]
pub mod console;
pub mod definition;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod engine;
#[cfg(feature = "http")]
pub mod http;
pub mod machine;
pub mod snapshot;
pub mod step;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod store;
#[cfg(all(feature = "testing", feature = "sqlite"))]
pub mod testing;
pub mod trace;

#[cfg(feature = "runtime")]
pub use barrier::{ActionOutcome, Barrier, BarrierError, CompensationOutcome};
pub use definition::{DefinitionError, RetryOverride, SagaDefinition, StepDefinition, StepKind};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use engine::{
    Engine, EngineBuilder, EngineConfig, EngineError, EngineEvent, MAX_GID_LEN, SagaView, StepView,
    SubmitOptions, Submitted, UnknownDefinition, Waited,
};
pub use machine::{SagaStatus, StepStatus};
pub use step::{
    BoxFuture, Op, OutputsError, Retry, Saga, SagaOutputs, SagaSteps, StepContext, StepError,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use store::{Store, StoreError};
pub use trace::TraceParent;

#[cfg(feature = "derive")]
pub use saga_derive::Saga;

#[doc(hidden)]
pub mod __private {
    //! Items used by code that `#[derive(Saga)]` generates. Not a public API.
    pub use serde_json::Value;
    pub use std::boxed::Box;
    pub use std::option::Option;
    pub use std::result::Result;
    pub use std::vec::Vec;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::step::{RawActionResult, StepError};

    /// Encodes a step output for persistence; an output that cannot be encoded is an in-doubt
    /// outcome.
    pub fn encode_output<T: Serialize>(value: &T) -> RawActionResult {
        serde_json::to_value(value)
            .map_err(|e| StepError::Retry(format!("cannot encode output: {e}")))
    }

    /// Decodes a persisted step output for a compensation; a stored value that no longer
    /// decodes is treated like a lost output.
    pub fn decode_output<T: DeserializeOwned>(value: Option<Value>) -> Option<T> {
        value.and_then(|v| serde_json::from_value(v).ok())
    }

    /// Decodes one field of a generated `{Enum}Outputs`: `None` while the step has no output.
    pub fn decode_field<T: DeserializeOwned>(
        value: Option<Value>,
        step: &'static str,
    ) -> Result<Option<T>, crate::step::OutputsError> {
        value
            .map(serde_json::from_value)
            .transpose()
            .map_err(|source| crate::step::OutputsError::Decode { step, source })
    }

    /// Decodes the persisted output of step `from`, read by the step being called. A missing
    /// or undecodable value is an in-doubt outcome: the call is not made, and the reason says
    /// which output failed.
    pub fn decode_read<T: DeserializeOwned>(value: Option<Value>, from: &str) -> Result<T, String> {
        let value = value.ok_or_else(|| format!("the output of step `{from}` is missing"))?;
        serde_json::from_value(value).map_err(|e| {
            format!(
                "the output of step `{from}` does not decode as `{}`: {e}",
                std::any::type_name::<T>()
            )
        })
    }
}
