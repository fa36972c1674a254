//! The two sagas of the order system, declared with `#[derive(Saga)]`, and their steps: each
//! step calls its participant over HTTP with the barrier headers.

use saga_core::http::StepClient;
use saga_core::{Retry, Saga, StepContext, StepError};
use serde_json::Value;

use crate::model::{OrderRequest, PayRequest};

/// Placing an order: four compensatable steps, compensated in reverse on a business failure.
#[derive(Saga)]
#[saga(input = OrderRequest)]
pub enum SubmitOrder {
    /// Creates the order row (`created`); compensation: `cancelled`.
    #[compensate(order_create_revert)]
    OrderCreate,
    /// Deducts stock if enough remains; compensation: adds it back.
    #[compensate(stock_deduct_revert)]
    StockDeduct,
    /// Marks the coupon used (nothing without a coupon); compensation: unused again.
    #[compensate(coupon_use_revert)]
    CouponUse,
    /// Creates the pending payment document; compensation: `cancelled`.
    #[compensate(pay_create_revert)]
    PayCreate,
}

/// Paying an order: capturing the payment is the pivot, marking the order paid is retriable.
#[derive(Saga)]
#[saga(input = PayRequest)]
pub enum PayOrder {
    /// Pending payment -> paid; a cancelled payment is a business failure.
    #[pivot]
    PaymentCapture,
    /// Order -> paid. Cannot fail for a business reason once the payment is captured.
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

    async fn action<B: serde::Serialize + Sync>(
        &self,
        path: &str,
        ctx: &StepContext,
        body: &B,
    ) -> Result<(), StepError> {
        self.client.call::<Value>(path, ctx, body).await.map(drop)
    }

    async fn compensate<B: serde::Serialize + Sync>(
        &self,
        path: &str,
        ctx: &StepContext,
        body: &B,
    ) -> Result<(), Retry> {
        self.client.compensate(path, ctx, body).await
    }
}

impl SubmitOrderSteps for HttpSteps {
    async fn order_create(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        self.action("/api/busi/orderCreate", ctx, input).await
    }

    async fn order_create_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _output: Option<()>,
    ) -> Result<(), Retry> {
        self.compensate("/api/busi/orderCreateRevert", ctx, input)
            .await
    }

    async fn stock_deduct(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        self.action("/api/busi/stockDeduct", ctx, input).await
    }

    async fn stock_deduct_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _output: Option<()>,
    ) -> Result<(), Retry> {
        self.compensate("/api/busi/stockDeductRevert", ctx, input)
            .await
    }

    async fn coupon_use(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        self.action("/api/busi/couponUse", ctx, input).await
    }

    async fn coupon_use_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _output: Option<()>,
    ) -> Result<(), Retry> {
        self.compensate("/api/busi/couponUseRevert", ctx, input)
            .await
    }

    async fn pay_create(&self, ctx: &StepContext, input: &OrderRequest) -> Result<(), StepError> {
        self.action("/api/busi/payCreate", ctx, input).await
    }

    async fn pay_create_revert(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
        _output: Option<()>,
    ) -> Result<(), Retry> {
        self.compensate("/api/busi/payCreateRevert", ctx, input)
            .await
    }
}

impl PayOrderSteps for HttpSteps {
    async fn payment_capture(
        &self,
        ctx: &StepContext,
        input: &PayRequest,
    ) -> Result<(), StepError> {
        self.action("/api/busi/paymentCapture", ctx, input).await
    }

    async fn order_mark_paid(&self, ctx: &StepContext, input: &PayRequest) -> Result<(), Retry> {
        // A refusal here is not a business failure: the payment is captured, so retry.
        self.action("/api/busi/orderMarkPaid", ctx, input)
            .await
            .map_err(|e| match e {
                StepError::Failure(reason) | StepError::Retry(reason) => Retry(reason),
            })
    }
}
