use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {}

fn main() {}
