use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder<T> {
    #[compensate(order_create_revert)]
    OrderCreate(T),
}

fn main() {}
