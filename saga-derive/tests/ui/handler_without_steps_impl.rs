use saga_core::{Saga, SagaSteps};

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate,
}

struct Orders;

fn register<S: SagaSteps<H>, H>(_: H) {}

fn main() {
    register::<SubmitOrder, _>(Orders);
}
