//! A sequential saga whose steps read every earlier output they need, and whose compensations get
//! their own output as `Option` and what they read as plain values.

use futures::executor::block_on;
use saga_core::{Op, Retry, Saga, SagaSteps, StepContext, StepError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct OrderId(i64);
#[derive(Serialize, Deserialize)]
struct PaymentId(String);

#[derive(Saga)]
#[saga(input = i64)]
enum Checkout {
    #[compensate(order_cancel)]
    OrderCreate(OrderId),
    #[compensate(stock_add_back)]
    StockDeduct,
    #[compensate(payment_cancel)]
    #[step(reads(OrderCreate))]
    PayCreate(PaymentId),
    #[pivot]
    #[step(reads(OrderCreate, PayCreate))]
    Capture(Vec<u8>),
}

struct Shop;

impl CheckoutSteps for Shop {
    async fn order_create(&self, _: &StepContext, n: &i64) -> Result<OrderId, StepError> {
        Ok(OrderId(*n))
    }
    async fn order_cancel(&self, _: &StepContext, _: &i64, _: Option<OrderId>) -> Result<(), Retry> {
        Ok(())
    }
    async fn stock_deduct(&self, _: &StepContext, _: &i64) -> Result<(), StepError> {
        Ok(())
    }
    async fn stock_add_back(&self, _: &StepContext, _: &i64, _: Option<()>) -> Result<(), Retry> {
        Ok(())
    }
    async fn pay_create(&self, _: &StepContext, _: &i64, order: OrderId) -> Result<PaymentId, StepError> {
        Ok(PaymentId(format!("pay-{}", order.0)))
    }
    async fn payment_cancel(
        &self,
        _: &StepContext,
        _: &i64,
        payment: Option<PaymentId>,
        order: OrderId,
    ) -> Result<(), Retry> {
        match payment {
            Some(PaymentId(id)) if id == format!("pay-{}", order.0) => Ok(()),
            Some(_) => Err(Retry::new("wrong payment")),
            None => Ok(()),
        }
    }
    async fn capture(
        &self,
        _: &StepContext,
        _: &i64,
        order: OrderId,
        payment: PaymentId,
    ) -> Result<Vec<u8>, StepError> {
        Ok(format!("{}:{}", order.0, payment.0).into_bytes())
    }
}

fn main() {
    let def = Checkout::definition();
    def.validate().unwrap();
    assert_eq!(def.steps[3].reads, &[0, 2]);
    let ctx = StepContext { gid: "g".into(), step: "capture", op: Op::Action, attempt: 1, traceparent: None };
    let reads = vec![serde_json::json!(7), serde_json::json!("pay-7")];
    let out = block_on(<Checkout as SagaSteps<Shop>>::run_action(&Shop, 3, &ctx, &7, reads));
    assert_eq!(out, Ok(serde_json::json!(b"7:pay-7".to_vec())));
    let undo = block_on(<Checkout as SagaSteps<Shop>>::run_compensation(
        &Shop,
        2,
        &ctx,
        &7,
        Some(serde_json::json!("pay-7")),
        vec![serde_json::json!(7)],
    ));
    assert_eq!(undo, Ok(()));
}
