//! A step (and so its compensation) reads a step declared after it, which may never have run.

use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    #[step(reads(PayCreate))]
    OrderCreate(u64),
    #[compensate(pay_create_revert)]
    PayCreate(String),
}

fn main() {}
