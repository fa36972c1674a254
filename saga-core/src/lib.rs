#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(feature = "runtime")]
pub mod barrier;
pub mod definition;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod engine;
#[cfg(feature = "http")]
pub mod http;
pub mod machine;
pub mod step;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod store;

#[cfg(feature = "runtime")]
pub use barrier::{Barrier, BarrierError, BarrierOutcome};
pub use definition::{DefinitionError, RetryOverride, SagaDefinition, StepDefinition, StepKind};
pub use step::{BoxFuture, Op, Retry, Saga, SagaSteps, StepContext, StepError};

#[cfg(feature = "derive")]
pub use saga_derive::Saga;

#[doc(hidden)]
pub mod __private {
    //! Items used by code that `#[derive(Saga)]` generates. Not a public API.
    pub use crate::step::{decode_output, encode_output};
    pub use serde_json::Value;
    pub use std::boxed::Box;
    pub use std::option::Option;
    pub use std::result::Result;
}
