use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    #[step(timeout_ms = 100, timeout_ms = 200)]
    OrderCreate,
    #[compensate(stock_deduct_revert)]
    #[step(after(OrderCreate, OrderCreate))]
    #[step(after())]
    StockDeduct,
}

fn main() {}
