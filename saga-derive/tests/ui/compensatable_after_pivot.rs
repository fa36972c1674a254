use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum PayOrder {
    #[pivot]
    PaymentCapture,
    #[compensate(invoice_revert)]
    Invoice,
}

fn main() {}
