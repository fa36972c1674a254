use saga_core::{Saga, StepContext, StepError};

#[derive(Saga)]
#[saga(input = ())]
enum PayOrder {
    #[pivot]
    PaymentCapture,
    #[retriable]
    OrderMarkPaid,
}

struct Payments;

impl PayOrderSteps for Payments {
    async fn payment_capture(&self, _: &StepContext, _: &()) -> Result<(), StepError> {
        Ok(())
    }
    async fn order_mark_paid(&self, _: &StepContext, _: &()) -> Result<(), StepError> {
        Err(StepError::failure("order is gone"))
    }
}

fn main() {}
