//! The user's steps, registered behind an interceptor that counts every call and injects the
//! schedule's faults: the one place where a fault happens.

use std::sync::Arc;

use serde_json::Value;

use super::journal::{Entry, Journal};
use super::schedule::Fault;
use crate::definition::SagaDefinition;
use crate::engine::registry::{AnyInput, ErasedSaga, Registered};
use crate::step::{BoxFuture, Op, RawActionResult, Retry, SagaSteps, StepContext, StepError};

/// An action call held back by [`Fault::Hang`], delivered once the saga has finished.
pub(crate) struct Held {
    step: usize,
    /// No earlier call of the action ran: the late one must be cancelled, not a duplicate.
    first: bool,
    ctx: StepContext,
    input: AnyInput,
    reads: Vec<Value>,
}

/// Saga `S` with its steps `H`, registered as the engine registers them, every call going
/// through the journal's schedule.
pub(crate) struct Intercepted<S, H> {
    inner: Arc<Registered<S, H>>,
    journal: Arc<Journal>,
}

impl<S: SagaSteps<H>, H: Send + Sync + 'static> Intercepted<S, H> {
    pub(crate) fn new(handler: H, journal: Arc<Journal>) -> Self {
        Intercepted {
            inner: Arc::new(Registered::new(handler)),
            journal,
        }
    }

    /// Delivers the held-back action calls, late, and journals what each answered.
    pub(crate) async fn deliver_held(&self) {
        for held in self.journal.take_held() {
            let step = S::definition().steps[held.step].name;
            let call = self
                .inner
                .run_action(held.step, held.ctx, held.input, held.reads);
            let outcome = self.journal.clock().io(call).await;
            self.journal.push(Entry::Late {
                step,
                first: held.first,
                succeeded: outcome.is_ok(),
                answer: match outcome {
                    Ok(v) => format!("succeeded with {v}"),
                    Err(e) => e.to_string(),
                },
            });
        }
    }
}

/// Why an injected fault made a call in doubt.
fn injected(fault: Fault) -> String {
    format!("injected {fault}")
}

impl<S: SagaSteps<H>, H: Send + Sync + 'static> ErasedSaga for Intercepted<S, H> {
    fn definition(&self) -> &'static SagaDefinition {
        S::definition()
    }

    fn fingerprint(&self) -> &str {
        self.inner.fingerprint()
    }

    fn decode_input(&self, input: &Value) -> Result<AnyInput, serde_json::Error> {
        self.inner.decode_input(input)
    }

    fn run_action(
        &self,
        step: usize,
        ctx: StepContext,
        input: AnyInput,
        reads: Vec<Value>,
    ) -> BoxFuture<'static, RawActionResult> {
        let (inner, journal) = (self.inner.clone(), self.journal.clone());
        Box::pin(async move {
            let fault = journal.fault_for(step, Op::Action);
            let clock = journal.clock().clone();
            let call = || {
                journal.action_runs(step);
                clock.io(inner.run_action(step, ctx.clone(), input.clone(), reads.clone()))
            };
            match fault {
                None => call().await,
                Some(Fault::ErrorBefore) => Err(StepError::Retry(injected(Fault::ErrorBefore))),
                Some(fault @ (Fault::ReplyLost | Fault::LostUntilDeadline)) => {
                    let _ = call().await;
                    Err(StepError::Retry(injected(fault)))
                }
                Some(Fault::Duplicate) => {
                    let _ = call().await;
                    call().await
                }
                Some(Fault::Timeout) => {
                    let _ = call().await;
                    std::future::pending().await
                }
                Some(Fault::BusinessFailure) => {
                    Err(StepError::Failure(injected(Fault::BusinessFailure)))
                }
                Some(Fault::Hang) => {
                    journal.hold(Held {
                        step,
                        first: !journal.action_ran(step),
                        ctx: ctx.clone(),
                        input: input.clone(),
                        reads,
                    });
                    std::future::pending().await
                }
            }
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
        let (inner, journal) = (self.inner.clone(), self.journal.clone());
        Box::pin(async move {
            let fault = journal.fault_for(step, Op::Compensate);
            let clock = journal.clock().clone();
            let call = || {
                let (input, output, reads) = (input.clone(), output.clone(), reads.clone());
                clock.io(inner.run_compensation(step, ctx.clone(), input, output, reads))
            };
            match fault {
                None => call().await,
                Some(Fault::ReplyLost) => {
                    let _ = call().await;
                    Err(Retry(injected(Fault::ReplyLost)))
                }
                Some(Fault::Duplicate) => {
                    let _ = call().await;
                    call().await
                }
                Some(Fault::Timeout) => {
                    let _ = call().await;
                    std::future::pending().await
                }
                Some(fault) => Err(Retry(injected(fault))),
            }
        })
    }
}
