use saga_core::Saga;

#[derive(Saga)]
#[saga(input = (), deadline_ms = 30000)]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate,
}

fn main() {}
