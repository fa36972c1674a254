use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum PayOrder {
    #[compensate(capture_revert)]
    #[pivot]
    PaymentCapture,
    #[retriable]
    #[retriable]
    OrderMarkPaid,
}

fn main() {}
