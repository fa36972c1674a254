use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
union SubmitOrder {
    order_create: u64,
}

fn main() {}
