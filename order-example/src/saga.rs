//! The two sagas of the order system, declared with `#[derive(Saga)]`, and their steps: each
//! step calls its participant over HTTP with the barrier headers.

use saga_core::http::StepClient;
use saga_core::{Retry, Saga, StepContext, StepError};

use crate::model::{MarkPaid, OrderId, OrderRequest, PayRequest, Payment, PaymentCancel};

/// Placing an order: four compensatable steps, compensated in reverse on a business failure.
/// The payment document is made for the order the first step created, and cancelled by the id
/// `payCreate` gave it.
#[derive(Saga)]
#[saga(input = OrderRequest)]
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
#[saga(input = PayRequest)]
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
        let body = OrderRequest {
            order_id: order.order_id,
            ..input.clone()
        };
        self.client.call("/api/busi/payCreate", ctx, &body).await
    }

    async fn pay_create_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        payment: Option<Payment>,
        order: OrderId,
    ) -> Result<(), Retry> {
        let body = PaymentCancel {
            order: OrderRequest {
                order_id: order.order_id,
                ..input.clone()
            },
            payment_id: payment.map(|p| p.payment_id),
            unknown: Default::default(),
        };
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
