use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate(u64, String),
    #[compensate(stock_deduct_revert)]
    StockDeduct(),
}

fn main() {}
