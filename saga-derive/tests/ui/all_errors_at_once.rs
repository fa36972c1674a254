use saga_core::Saga;

// Every mistake is reported in one go, each on its own span.
#[derive(Saga)]
#[saga(input = ())]
enum PayOrder {
    Reserve,
    #[retriable]
    OrderMarkPaid,
    #[pivot]
    #[step(after(Reserve, Nope))]
    PaymentCapture,
    #[compensate(refund)]
    Refund,
}

fn main() {}
