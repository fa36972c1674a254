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
}

fn main() {}
