use saga_core::Saga;

#[derive(Saga)]
#[saga(input = (), version = 0)]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate,
}

#[derive(Saga)]
#[saga(input = (), version = "2")]
enum PayOrder {
    #[pivot]
    Capture,
}

fn main() {}
