//! The article's order saga: four compensatable steps, each with its undo.

use saga_core::{Retry, Saga, SagaSteps, StepContext, StepError, StepKind};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct OrderRequest {
    pub order_id: String,
    pub product_id: u64,
    pub product_count: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderId(pub String);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentId(pub u64);

/// Places an order across four services.
#[derive(Saga)]
#[saga(input = OrderRequest)]
pub enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate(OrderId),
    #[compensate(stock_deduct_revert)]
    StockDeduct,
    #[compensate(coupon_use_revert)]
    CouponUse,
    #[compensate(pay_create_revert)]
    PayCreate(PaymentId),
}

struct Services;

impl SubmitOrderSteps for Services {
    async fn order_create(&self, _: &StepContext, input: &OrderRequest) -> Result<OrderId, StepError> {
        Ok(OrderId(input.order_id.clone()))
    }
    async fn order_create_revert(
        &self,
        _: &StepContext,
        _: &OrderRequest,
        _: Option<OrderId>,
    ) -> Result<(), Retry> {
        Ok(())
    }
    async fn stock_deduct(&self, _: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        if input.product_count > 100 {
            return Err(StepError::failure("not enough stock"));
        }
        Ok(())
    }
    async fn stock_deduct_revert(&self, _: &StepContext, _: &OrderRequest, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn coupon_use(&self, _: &StepContext, _: &OrderRequest) -> Result<(), StepError> {
        Ok(())
    }
    async fn coupon_use_revert(&self, _: &StepContext, _: &OrderRequest, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn pay_create(&self, _: &StepContext, _: &OrderRequest) -> Result<PaymentId, StepError> {
        Ok(PaymentId(7))
    }
    async fn pay_create_revert(
        &self,
        _: &StepContext,
        _: &OrderRequest,
        _: Option<PaymentId>,
    ) -> Result<(), Retry> {
        Ok(())
    }
}

fn registered<S: SagaSteps<H>, H>() {}

fn main() {
    registered::<SubmitOrder, Services>();
    let def = SubmitOrder::definition();
    def.validate().unwrap();
    assert_eq!(def.name, "submit_order");
    assert!(def.steps.iter().all(|s| s.kind == StepKind::Compensatable));
    assert_eq!(def.steps[3].compensation, Some("pay_create_revert"));
    assert!(SubmitOrder::DIAGRAM.contains("pay_create<br/>compensate: pay_create_revert"));
}
