use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum PayOrder {
    #[compensate]
    Reserve,
    #[compensate(a, b)]
    Hold,
    #[compensate = "not a name"]
    Lock,
    #[pivot(now)]
    PaymentCapture,
    #[retriable = true]
    OrderMarkPaid,
}

fn main() {}
