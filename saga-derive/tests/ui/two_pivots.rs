use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum PayOrder {
    #[pivot]
    PaymentCapture,
    #[pivot]
    Ship,
}

fn main() {}
