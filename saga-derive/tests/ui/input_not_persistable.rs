use saga_core::Saga;

struct OrderRequest;

#[derive(Saga)]
#[saga(input = OrderRequest)]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate,
}

fn main() {}
