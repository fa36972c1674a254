use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate,
    #[compensate(stock_deduct_revert)]
    #[step(name = "order_create")]
    StockDeduct,
}

fn main() {}
