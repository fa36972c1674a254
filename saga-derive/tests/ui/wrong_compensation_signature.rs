use saga_core::{Saga, StepContext, StepError};

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate(u64),
}

struct Orders;

impl SubmitOrderSteps for Orders {
    async fn order_create(&self, _: &StepContext, _: &()) -> Result<u64, StepError> {
        Ok(1)
    }
    // An undo gets the output as `Option<u64>` (it may be lost) and can only ask to retry.
    async fn order_create_revert(&self, _: &StepContext, _: &(), _: u64) -> Result<(), StepError> {
        Ok(())
    }
}

fn main() {}
