use saga_core::Saga;

#[derive(Saga)]
#[saga(input = ())]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    #[step(after(CouponUse))]
    OrderCreate,
    #[compensate(stock_deduct_revert)]
    StockDeduct,
    #[compensate(coupon_use_revert)]
    CouponUse,
}

fn main() {}
