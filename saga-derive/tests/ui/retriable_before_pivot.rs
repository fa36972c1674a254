use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum PayOrder {
    #[retriable]
    OrderMarkPaid,
    #[pivot]
    PaymentCapture,
}

fn main() {}
