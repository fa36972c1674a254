use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate,
    #[compensate(stock_deduct_revert)]
    #[step(after(OrderCreate, StockDeduct))]
    StockDeduct,
}

fn main() {}
