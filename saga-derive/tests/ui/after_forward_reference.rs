use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate,
    #[compensate(stock_deduct_revert)]
    #[step(after(PayCreate))]
    StockDeduct,
    #[compensate(pay_create_revert)]
    #[step(after(OrderCreate))]
    PayCreate,
}

fn main() {}
