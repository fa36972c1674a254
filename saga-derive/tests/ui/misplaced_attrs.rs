use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
#[pivot]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    #[saga(version = 2)]
    OrderCreate,
}

fn main() {}
