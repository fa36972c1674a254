use saga_core::Saga;

#[derive(Saga)]
#[saga(input = u32, version = 2)]
#[saga(input = u64)]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate,
}

fn main() {}
