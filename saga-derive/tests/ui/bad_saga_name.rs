use saga_core::Saga;

#[derive(Saga)]
#[saga(input = (), name = "Submit Order")]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate,
}

fn main() {}
