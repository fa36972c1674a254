use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    #[step(timeout_ms = 0, retry(max_attempts = 0, initial_ms = 500, max_ms = 100))]
    OrderCreate,
    #[compensate(stock_deduct_revert)]
    #[step(retry(backoff = 2))]
    StockDeduct,
}

fn main() {}
