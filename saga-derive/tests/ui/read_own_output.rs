//! A step reads its own output.

use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    #[step(reads(OrderCreate))]
    OrderCreate(u64),
}

fn main() {}
