//! Type erasure between the engine and a user's saga: the engine holds `Arc<dyn ErasedSaga>`,
//! one per registered saga, and calls steps by index with the decoded input.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::Value;

use crate::definition::SagaDefinition;
use crate::step::{BoxFuture, RawActionResult, Retry, SagaSteps, StepContext, StepError};

/// A decoded saga input, shared by every step call of one instance.
pub(crate) type AnyInput = Arc<dyn Any + Send + Sync>;

pub(crate) trait ErasedSaga: Send + Sync {
    fn definition(&self) -> &'static SagaDefinition;
    fn fingerprint(&self) -> &str;
    /// Decodes a persisted input as the saga's input type.
    fn decode_input(&self, input: &Value) -> Result<AnyInput, serde_json::Error>;
    /// Calls the action of `step` with the outputs it reads.
    fn run_action(
        &self,
        step: usize,
        ctx: StepContext,
        input: AnyInput,
        reads: Vec<Value>,
    ) -> BoxFuture<'static, RawActionResult>;
    /// Calls the compensation of `step` with its own output and the outputs it reads.
    fn run_compensation(
        &self,
        step: usize,
        ctx: StepContext,
        input: AnyInput,
        output: Option<Value>,
        reads: Vec<Value>,
    ) -> BoxFuture<'static, Result<(), Retry>>;
}

pub(crate) struct Registered<S, H> {
    handler: Arc<H>,
    fingerprint: String,
    _saga: PhantomData<fn() -> S>,
}

impl<S: SagaSteps<H>, H: Send + Sync + 'static> Registered<S, H> {
    pub(crate) fn new(handler: H) -> Self {
        Registered {
            handler: Arc::new(handler),
            fingerprint: S::definition().fingerprint(),
            _saga: PhantomData,
        }
    }
}

impl<S: SagaSteps<H>, H: Send + Sync + 'static> ErasedSaga for Registered<S, H> {
    fn definition(&self) -> &'static SagaDefinition {
        S::definition()
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn decode_input(&self, input: &Value) -> Result<AnyInput, serde_json::Error> {
        serde_json::from_value::<S::Input>(input.clone()).map(|i| Arc::new(i) as AnyInput)
    }

    fn run_action(
        &self,
        step: usize,
        ctx: StepContext,
        input: AnyInput,
        reads: Vec<Value>,
    ) -> BoxFuture<'static, RawActionResult> {
        let handler = self.handler.clone();
        Box::pin(async move {
            let Some(input) = input.downcast_ref::<S::Input>() else {
                return Err(StepError::Retry("saga input has the wrong type".into()));
            };
            S::run_action(&handler, step, &ctx, input, reads).await
        })
    }

    fn run_compensation(
        &self,
        step: usize,
        ctx: StepContext,
        input: AnyInput,
        output: Option<Value>,
        reads: Vec<Value>,
    ) -> BoxFuture<'static, Result<(), Retry>> {
        let handler = self.handler.clone();
        Box::pin(async move {
            let Some(input) = input.downcast_ref::<S::Input>() else {
                return Err(Retry::new("saga input has the wrong type"));
            };
            S::run_compensation(&handler, step, &ctx, input, output, reads).await
        })
    }
}
