use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(stock_deduct)]
    OrderCreate,
    #[compensate(stock_deduct_revert)]
    StockDeduct,
}

fn main() {}
