use std::cell::Cell;

use saga_core::Saga;

#[derive(serde::Deserialize)]
struct Receipt;

#[derive(Saga)]
#[saga(input = ())]
enum PayOrder {
    #[pivot]
    PaymentCapture(Cell<u64>),
    #[retriable]
    OrderMarkPaid(Receipt),
}

fn main() {}
