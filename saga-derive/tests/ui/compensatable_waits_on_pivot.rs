use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum PayOrder {
    #[compensate(reserve_revert)]
    Reserve,
    #[pivot]
    PaymentCapture,
    #[compensate(invoice_revert)]
    #[step(after(Reserve, PaymentCapture))]
    Invoice,
}

fn main() {}
