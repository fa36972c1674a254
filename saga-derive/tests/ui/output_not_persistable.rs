use saga_core::Saga;

struct Receipt;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate(Receipt),
}

fn main() {}
