use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    #[step(deadline = 5)]
    OrderCreate,
    #[compensate(stock_deduct_revert)]
    #[step(timeout_ms = "fast")]
    StockDeduct,
    #[compensate(coupon_use_revert)]
    #[step(after = OrderCreate)]
    CouponUse,
    #[compensate(pay_create_revert)]
    #[step(name = pay)]
    PayCreate,
}

fn main() {}
