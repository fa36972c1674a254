//! A compensation written without the output its step reads, and one that takes its own output as a
//! plain value instead of `Option`.

use saga_core::{Retry, Saga, StepContext, StepError};

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate(u64),
    #[compensate(pay_create_revert)]
    #[step(reads(OrderCreate))]
    PayCreate(String),
}

struct Steps;

impl SubmitOrderSteps for Steps {
    async fn order_create(&self, _: &StepContext, _: &()) -> Result<u64, StepError> {
        Ok(1)
    }
    async fn order_create_revert(&self, _: &StepContext, _: &(), _: u64) -> Result<(), Retry> {
        Ok(())
    }
    async fn pay_create(&self, _: &StepContext, _: &(), _: u64) -> Result<String, StepError> {
        Ok(String::new())
    }
    async fn pay_create_revert(&self, _: &StepContext, _: &(), _: Option<String>) -> Result<(), Retry> {
        Ok(())
    }
}

fn main() {}
