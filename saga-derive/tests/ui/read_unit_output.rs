//! A step reads a step that has no output, and one that does not exist.

use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(stock_deduct_revert)]
    StockDeduct,
    #[compensate(pay_create_revert)]
    #[step(reads(StockDeduct, OrderCreate))]
    PayCreate(String),
}

fn main() {}
