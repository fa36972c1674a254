use saga_core::Saga;

#[derive(Saga)]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate,
}

fn main() {}
