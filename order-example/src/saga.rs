//! The two sagas of the order system, declared with `#[derive(Saga)]`, and their steps: each
//! step calls its participant over HTTP with the barrier headers.

use saga_core::http::StepClient;
use saga_core::{Retry, Saga, StepContext, StepError};

use crate::model::{MarkPaid, OrderId, OrderRequest, PayRequest, Payment, PaymentCancel};

/// Placing an order: four compensatable steps, compensated in reverse on a business failure.
/// The payment document is made for the order the first step created, and cancelled by the id
/// `payCreate` gave it.
#[derive(Saga)]
#[saga(input = OrderRequest, version = 2)]
pub enum SubmitOrder {
    /// Creates the order row (`created`); compensation: `cancelled`.
    #[compensate(order_create_revert)]
    OrderCreate(OrderId),
    /// Deducts stock if enough remains; compensation: adds it back.
    #[compensate(stock_deduct_revert)]
    StockDeduct,
    /// Marks the coupon used (nothing without a coupon); compensation: unused again.
    #[compensate(coupon_use_revert)]
    CouponUse,
    /// Creates the pending payment document for the created order; compensation: `cancelled`,
    /// by the payment's id when its reply was received, by the order's id when it was lost.
    #[compensate(pay_create_revert)]
    #[step(reads(OrderCreate))]
    PayCreate(Payment),
}

/// Paying an order: capturing the payment is the pivot, marking the order paid is retriable.
#[derive(Saga)]
#[saga(input = PayRequest, version = 2)]
pub enum PayOrder {
    /// Pending payment -> paid; a cancelled payment is a business failure.
    #[pivot]
    PaymentCapture(Payment),
    /// Order -> paid, recording the captured payment. Cannot fail for a business reason once
    /// the payment is captured.
    #[retriable]
    #[step(reads(PaymentCapture))]
    OrderMarkPaid,
}

/// `SubmitOrder` as the release before typed outputs ran it: the same steps, none with an
/// output. Registered next to version 2 so that sagas submitted before an upgrade finish on the
/// definition they started with (README, "Deploying a changed saga"); new sagas start on
/// version 2.
#[derive(Saga)]
#[saga(input = OrderRequest, name = "submit_order", version = 1)]
pub enum SubmitOrderV1 {
    /// As `SubmitOrder::OrderCreate`, its reply ignored.
    #[compensate(order_create_revert)]
    OrderCreate,
    /// As `SubmitOrder::StockDeduct`.
    #[compensate(stock_deduct_revert)]
    StockDeduct,
    /// As `SubmitOrder::CouponUse`.
    #[compensate(coupon_use_revert)]
    CouponUse,
    /// As `SubmitOrder::PayCreate`, its reply ignored: its compensation cancels by order id.
    #[compensate(pay_create_revert)]
    PayCreate,
}

/// `PayOrder` as the release before typed outputs ran it, kept to drain (see `SubmitOrderV1`).
#[derive(Saga)]
#[saga(input = PayRequest, name = "pay_order", version = 1)]
pub enum PayOrderV1 {
    /// As `PayOrder::PaymentCapture`, its reply ignored.
    #[pivot]
    PaymentCapture,
    /// As `PayOrder::OrderMarkPaid`, without the payment id.
    #[retriable]
    OrderMarkPaid,
}

/// The step implementations: HTTP calls to the participant endpoints.
#[derive(Clone)]
pub struct HttpSteps {
    client: StepClient,
}

impl HttpSteps {
    /// Steps that call the participants under `base_url` (`http://127.0.0.1:8081`).
    pub fn new(client: reqwest::Client, base_url: &str) -> Self {
        HttpSteps {
            client: StepClient::with_client(client, base_url),
        }
    }
}

impl HttpSteps {
    /// An action of a version 1 step: its reply is not its output.
    async fn untyped_action(
        &self,
        path: &str,
        ctx: &StepContext,
        body: &impl serde::Serialize,
    ) -> Result<(), StepError> {
        self.client
            .call::<serde::de::IgnoredAny>(path, ctx, body)
            .await
            .map(drop)
    }
}

impl SubmitOrderV1Steps for HttpSteps {
    async fn order_create(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        self.untyped_action("/api/busi/orderCreate", ctx, input)
            .await
    }

    async fn order_create_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _: Option<()>,
    ) -> Result<(), Retry> {
        SubmitOrderSteps::order_create_revert(self, ctx, input, None).await
    }

    async fn stock_deduct(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        SubmitOrderSteps::stock_deduct(self, ctx, input).await
    }

    async fn stock_deduct_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _: Option<()>,
    ) -> Result<(), Retry> {
        SubmitOrderSteps::stock_deduct_revert(self, ctx, input, None).await
    }

    async fn coupon_use(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        SubmitOrderSteps::coupon_use(self, ctx, input).await
    }

    async fn coupon_use_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _: Option<()>,
    ) -> Result<(), Retry> {
        SubmitOrderSteps::coupon_use_revert(self, ctx, input, None).await
    }

    async fn pay_create(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        self.untyped_action("/api/busi/payCreate", ctx, input).await
    }

    async fn pay_create_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _: Option<()>,
    ) -> Result<(), Retry> {
        self.client
            .compensate("/api/busi/payCreateRevert", ctx, input)
            .await
    }
}

impl PayOrderV1Steps for HttpSteps {
    async fn payment_capture(
        &self,
        ctx: &StepContext,
        input: &PayRequest,
    ) -> Result<(), StepError> {
        self.untyped_action("/api/busi/paymentCapture", ctx, input)
            .await
    }

    async fn order_mark_paid(&self, ctx: &StepContext, input: &PayRequest) -> Result<(), Retry> {
        self.untyped_action("/api/busi/orderMarkPaid", ctx, input)
            .await
            .map_err(retry_only)
    }
}

/// Any reply of a participant's action that is a refusal turns into a retry: for a retriable
/// step the payment is captured, so the step can only be called again.
fn retry_only(error: StepError) -> Retry {
    match error {
        StepError::Failure(reason) | StepError::Retry(reason) => Retry(reason),
    }
}

impl SubmitOrderSteps for HttpSteps {
    async fn order_create(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
    ) -> Result<OrderId, StepError> {
        self.client.call("/api/busi/orderCreate", ctx, input).await
    }

    async fn order_create_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _order: Option<OrderId>,
    ) -> Result<(), Retry> {
        self.client
            .compensate("/api/busi/orderCreateRevert", ctx, input)
            .await
    }

    async fn stock_deduct(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        self.client.call("/api/busi/stockDeduct", ctx, input).await
    }

    async fn stock_deduct_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _output: Option<()>,
    ) -> Result<(), Retry> {
        self.client
            .compensate("/api/busi/stockDeductRevert", ctx, input)
            .await
    }

    async fn coupon_use(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        self.client.call("/api/busi/couponUse", ctx, input).await
    }

    async fn coupon_use_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _output: Option<()>,
    ) -> Result<(), Retry> {
        self.client
            .compensate("/api/busi/couponUseRevert", ctx, input)
            .await
    }

    async fn pay_create(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        order: OrderId,
    ) -> Result<Payment, StepError> {
        let body = input.for_order(order);
        self.client.call("/api/busi/payCreate", ctx, &body).await
    }

    async fn pay_create_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        payment: Option<Payment>,
        order: OrderId,
    ) -> Result<(), Retry> {
        let body = PaymentCancel::of(input, order, payment);
        self.client
            .compensate("/api/busi/payCreateRevert", ctx, &body)
            .await
    }
}

impl PayOrderSteps for HttpSteps {
    async fn payment_capture(
        &self,
        ctx: &StepContext,
        input: &PayRequest,
    ) -> Result<Payment, StepError> {
        self.client
            .call("/api/busi/paymentCapture", ctx, input)
            .await
    }

    async fn order_mark_paid(
        &self,
        ctx: &StepContext,
        input: &PayRequest,
        payment: Payment,
    ) -> Result<(), Retry> {
        let body = MarkPaid {
            pay: input.clone(),
            payment_id: Some(payment.payment_id),
            unknown: Default::default(),
        };
        self.client
            .call("/api/busi/orderMarkPaid", ctx, &body)
            .await
            .map_err(retry_only)
    }
}

#[cfg(test)]
mod tests {
    use saga_core::Saga;

    use super::{PayOrder, PayOrderV1, SubmitOrder, SubmitOrderV1};

    /// A change to either saga's shape without a version bump fails here (README, "Deploying a
    /// changed saga").
    #[test]
    fn the_sagas_match_their_snapshots() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots");
        saga_core::snapshot::check::<SubmitOrder>(format!("{dir}/submit_order.saga")).unwrap();
        saga_core::snapshot::check::<PayOrder>(format!("{dir}/pay_order.saga")).unwrap();
    }

    /// The fingerprints the release before typed outputs stored with its sagas: version 1 must
    /// keep them, or its sagas in flight would be stranded by an upgrade.
    #[test]
    fn version_1_keeps_the_fingerprints_of_the_release_before() {
        assert_eq!(
            SubmitOrderV1::definition().fingerprint(),
            "498d80f7ba4be52e91364d6aeea51300"
        );
        assert_eq!(
            PayOrderV1::definition().fingerprint(),
            "505b0e061d22c0251cd9312f70b050bf"
        );
    }
}
