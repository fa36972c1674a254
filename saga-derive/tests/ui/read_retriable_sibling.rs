//! Two retriable steps after the pivot run concurrently; one reads the other.

use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum PayOrder {
    #[pivot]
    PaymentCapture(String),
    #[retriable]
    OrderMarkPaid(u64),
    #[retriable]
    #[step(after(PaymentCapture), reads(PaymentCapture, OrderMarkPaid))]
    Notify,
}

fn main() {}
