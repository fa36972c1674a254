use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    #[step(name = "Order-Create")]
    OrderCreate,
    #[compensate(stock_deduct_revert)]
    #[step(name = "")]
    StockDeduct,
}

fn main() {}
