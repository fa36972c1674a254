use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
struct SubmitOrder {
    order_create: u64,
}

fn main() {}
