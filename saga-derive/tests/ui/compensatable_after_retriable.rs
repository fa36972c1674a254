use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum Notify {
    #[retriable]
    Email,
    #[compensate(log_revert)]
    Log,
}

fn main() {}
