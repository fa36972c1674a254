use saga_core::{Retry, Saga, StepContext};

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate(u64),
}

struct Orders;

impl SubmitOrderSteps for Orders {
    async fn order_create_revert(&self, _: &StepContext, _: &(), _: Option<u64>) -> Result<(), Retry> {
        Ok(())
    }
}

fn main() {}
