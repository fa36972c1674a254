//! Compensatable steps, then the pivot, then retriable steps.

use futures::executor::block_on;
use saga_core::{Op, Retry, Saga, SagaSteps, StepContext, StepError, StepKind};

#[derive(Saga)]
#[saga(input = u64)]
enum PayOrder {
    #[compensate(reserve_revert)]
    Reserve,
    #[pivot]
    PaymentCapture(String),
    #[retriable]
    OrderMarkPaid,
    #[retriable]
    #[step(retry(max_attempts = 20), reads(PaymentCapture))]
    Notify(bool),
}

struct Handler;

impl PayOrderSteps for Handler {
    async fn reserve(&self, _: &StepContext, _: &u64) -> Result<(), StepError> {
        Ok(())
    }
    async fn reserve_revert(&self, _: &StepContext, _: &u64, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn payment_capture(&self, _: &StepContext, amount: &u64) -> Result<String, StepError> {
        match amount {
            0 => Err(StepError::failure("nothing to capture")),
            n => Ok(format!("captured {n}")),
        }
    }
    async fn order_mark_paid(&self, _: &StepContext, _: &u64) -> Result<(), Retry> {
        Err(Retry::new("busy"))
    }
    async fn notify(&self, _: &StepContext, _: &u64, capture: String) -> Result<bool, Retry> {
        Ok(capture.starts_with("captured"))
    }
}

fn main() {
    let def = PayOrder::definition();
    def.validate().unwrap();
    assert_eq!(def.pivot(), Some(1));
    assert_eq!(def.steps[2].kind, StepKind::Retriable);
    assert_eq!(def.steps[3].retry.max_attempts, Some(20));
    let ctx = StepContext {
        gid: "pay-1".into(),
        step: "payment_capture",
        op: Op::Action,
        attempt: 1,
        traceparent: None,
    };
    let out = block_on(<PayOrder as SagaSteps<Handler>>::run_action(&Handler, 1, &ctx, &5, vec![]));
    assert_eq!(out, Ok(serde_json::json!("captured 5")));
    let out = block_on(<PayOrder as SagaSteps<Handler>>::run_action(&Handler, 2, &ctx, &5, vec![]));
    assert_eq!(out, Err(StepError::retry("busy")));
    // A retriable step after the pivot reads the pivot's output.
    assert_eq!(def.steps[3].reads, &[1]);
    let reads = vec![serde_json::json!("captured 5")];
    let out = block_on(<PayOrder as SagaSteps<Handler>>::run_action(&Handler, 3, &ctx, &5, reads));
    assert_eq!(out, Ok(serde_json::json!(true)));
}
