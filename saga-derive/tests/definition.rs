//! The generated step table, dispatch and fingerprint of derived sagas.

use std::sync::Mutex;

use futures::executor::block_on;
use saga_core::{
    Op, Retry, RetryOverride, Saga, SagaSteps, StepContext, StepDefinition, StepError, StepKind,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderRequest {
    order_id: String,
    amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderId(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PaymentId {
    id: String,
}

/// The article's order saga: four compensatable steps.
#[derive(Saga)]
#[saga(input = OrderRequest)]
enum SubmitOrder {
    #[compensate(order_create_revert)]
    OrderCreate(OrderId),
    #[compensate(stock_deduct_revert)]
    #[step(
        timeout_ms = 2000,
        retry(max_attempts = 5, initial_ms = 50, max_ms = 1000)
    )]
    StockDeduct,
    #[compensate(coupon_use_revert)]
    #[step(after(OrderCreate))]
    CouponUse,
    #[compensate(pay_create_revert)]
    #[step(after(StockDeduct, CouponUse), reads(OrderCreate))]
    PayCreate(PaymentId),
}

/// A pay saga: a pivot and a retriable step.
#[derive(Saga)]
#[saga(input = String, version = 3, name = "pay_order")]
enum PayOrder {
    #[pivot]
    #[step(name = "payment_capture")]
    Capture(u64),
    #[retriable]
    #[step(reads(Capture))]
    OrderMarkPaid,
}

fn ctx(step: &'static str, op: Op) -> StepContext {
    StepContext {
        gid: "order-1".into(),
        step,
        op,
        attempt: 1,
        traceparent: None,
    }
}

fn request() -> OrderRequest {
    OrderRequest {
        order_id: "1".into(),
        amount_cents: 500,
    }
}

#[test]
fn order_saga_table_lists_steps_in_declaration_order_with_persisted_names() {
    let def = SubmitOrder::definition();
    assert_eq!(def.name, "submit_order");
    assert_eq!(def.version, 1);
    let names: Vec<_> = def.steps.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["order_create", "stock_deduct", "coupon_use", "pay_create"]
    );
}

#[test]
fn order_saga_table_has_kinds_dependencies_compensations_and_policies() {
    let steps = SubmitOrder::definition().steps;
    assert_eq!(
        steps[0],
        StepDefinition {
            name: "order_create",
            kind: StepKind::Compensatable,
            after: &[],
            compensation: Some("order_create_revert"),
            output: "OrderId",
            reads: &[],
            timeout_ms: None,
            retry: RetryOverride::default(),
        }
    );
    assert_eq!(
        steps[1],
        StepDefinition {
            name: "stock_deduct",
            kind: StepKind::Compensatable,
            after: &[0],
            compensation: Some("stock_deduct_revert"),
            output: "()",
            reads: &[],
            timeout_ms: Some(2000),
            retry: RetryOverride {
                max_attempts: Some(5),
                initial_ms: Some(50),
                max_ms: Some(1000),
            },
        }
    );
    assert_eq!(steps[2].after, &[0]);
    assert_eq!(steps[2].compensation, Some("coupon_use_revert"));
    assert_eq!(steps[3].after, &[1, 2]);
    assert_eq!(steps[3].compensation, Some("pay_create_revert"));
}

#[test]
fn derived_definitions_pass_runtime_validation() {
    assert_eq!(SubmitOrder::definition().validate(), Ok(()));
    assert_eq!(PayOrder::definition().validate(), Ok(()));
}

#[test]
fn saga_attribute_sets_name_version_and_step_names() {
    let def = PayOrder::definition();
    assert_eq!(def.name, "pay_order");
    assert_eq!(def.version, 3);
    assert_eq!(def.steps[0].name, "payment_capture");
    assert_eq!(def.steps[0].kind, StepKind::Pivot);
    assert_eq!(def.steps[0].compensation, None);
    assert_eq!(def.steps[1].name, "order_mark_paid");
    assert_eq!(def.steps[1].kind, StepKind::Retriable);
    assert_eq!(def.steps[1].after, &[0]);
}

#[test]
fn diagram_constant_matches_the_runtime_mermaid_text() {
    assert_eq!(SubmitOrder::DIAGRAM, SubmitOrder::definition().mermaid());
    assert_eq!(PayOrder::DIAGRAM, PayOrder::definition().mermaid());
    assert!(SubmitOrder::DIAGRAM.contains("s1 --> s3"));
}

/// Records every call and answers with fixed outputs.
#[derive(Default)]
struct Orders {
    calls: Mutex<Vec<String>>,
    compensated_outputs: Mutex<Vec<String>>,
}

impl Orders {
    fn called(&self, what: &str) {
        self.calls.lock().unwrap().push(what.to_string());
    }
}

impl SubmitOrderSteps for Orders {
    async fn order_create(
        &self,
        ctx: &StepContext,
        input: &OrderRequest,
    ) -> Result<OrderId, StepError> {
        assert_eq!(ctx.step, "order_create");
        assert_eq!(input.order_id, "1");
        self.called("order_create");
        Ok(OrderId(42))
    }

    async fn order_create_revert(
        &self,
        _: &StepContext,
        _: &OrderRequest,
        output: Option<OrderId>,
    ) -> Result<(), Retry> {
        self.called("order_create_revert");
        self.compensated_outputs
            .lock()
            .unwrap()
            .push(format!("{output:?}"));
        Ok(())
    }

    async fn stock_deduct(&self, _: &StepContext, _: &OrderRequest) -> Result<(), StepError> {
        self.called("stock_deduct");
        Err(StepError::failure("out of stock"))
    }

    async fn stock_deduct_revert(
        &self,
        _: &StepContext,
        _: &OrderRequest,
        _: Option<()>,
    ) -> Result<(), Retry> {
        self.called("stock_deduct_revert");
        Err(Retry::new("stock service down"))
    }

    async fn coupon_use(&self, _: &StepContext, _: &OrderRequest) -> Result<(), StepError> {
        self.called("coupon_use");
        Ok(())
    }

    async fn coupon_use_revert(
        &self,
        _: &StepContext,
        _: &OrderRequest,
        _: Option<()>,
    ) -> Result<(), Retry> {
        self.called("coupon_use_revert");
        Ok(())
    }

    async fn pay_create(
        &self,
        _: &StepContext,
        input: &OrderRequest,
        order: OrderId,
    ) -> Result<PaymentId, StepError> {
        self.called("pay_create");
        Ok(PaymentId {
            id: format!("pay-{}-{}", order.0, input.amount_cents),
        })
    }

    async fn pay_create_revert(
        &self,
        _: &StepContext,
        _: &OrderRequest,
        output: Option<PaymentId>,
        order: OrderId,
    ) -> Result<(), Retry> {
        self.called("pay_create_revert");
        self.compensated_outputs
            .lock()
            .unwrap()
            .push(format!("{output:?} for order {}", order.0));
        Ok(())
    }
}

#[test]
fn dispatch_runs_the_action_of_each_step_index_and_encodes_its_output_as_json() {
    let orders = Orders::default();
    let input = request();
    let run = |i: usize, name: &'static str| {
        let reads = if i == 3 { vec![json!(42)] } else { vec![] };
        block_on(<SubmitOrder as SagaSteps<Orders>>::run_action(
            &orders,
            i,
            &ctx(name, Op::Action),
            &input,
            reads,
        ))
    };
    assert_eq!(run(0, "order_create"), Ok(json!(42)));
    assert_eq!(
        run(1, "stock_deduct"),
        Err(StepError::failure("out of stock"))
    );
    assert_eq!(run(2, "coupon_use"), Ok(json!(null)));
    assert_eq!(run(3, "pay_create"), Ok(json!({"id": "pay-42-500"})));
    assert_eq!(
        *orders.calls.lock().unwrap(),
        ["order_create", "stock_deduct", "coupon_use", "pay_create"]
    );
}

#[test]
fn dispatch_hands_compensations_the_decoded_output_or_none_when_lost() {
    let orders = Orders::default();
    let input = request();
    let output = block_on(<SubmitOrder as SagaSteps<Orders>>::run_action(
        &orders,
        3,
        &ctx("pay_create", Op::Action),
        &input,
        vec![json!(42)],
    ))
    .unwrap();
    let undo = |i: usize, output| {
        let reads = if i == 3 { vec![json!(42)] } else { vec![] };
        block_on(<SubmitOrder as SagaSteps<Orders>>::run_compensation(
            &orders,
            i,
            &ctx("x", Op::Compensate),
            &input,
            output,
            reads,
        ))
    };
    assert_eq!(undo(3, Some(output)), Ok(()));
    assert_eq!(undo(0, None), Ok(()));
    // A stored value that no longer decodes is handed over as lost.
    assert_eq!(undo(0, Some(json!("not a number"))), Ok(()));
    assert_eq!(
        *orders.compensated_outputs.lock().unwrap(),
        [
            r#"Some(PaymentId { id: "pay-42-500" }) for order 42"#,
            "None",
            "None"
        ]
    );
    assert_eq!(
        undo(1, Some(json!(null))),
        Err(Retry::new("stock service down"))
    );
}

#[test]
fn dispatch_of_an_unknown_step_index_asks_to_retry() {
    let orders = Orders::default();
    let result = block_on(<SubmitOrder as SagaSteps<Orders>>::run_action(
        &orders,
        4,
        &ctx("x", Op::Action),
        &request(),
        vec![],
    ));
    assert_eq!(result, Err(StepError::retry("unknown step")));
    let undo = block_on(<SubmitOrder as SagaSteps<Orders>>::run_compensation(
        &orders,
        4,
        &ctx("x", Op::Compensate),
        &request(),
        None,
        vec![],
    ));
    assert_eq!(undo, Ok(()));
    assert!(orders.calls.lock().unwrap().is_empty());
}

#[test]
fn a_read_output_that_does_not_decode_is_in_doubt_and_the_step_is_not_called() {
    let orders = Orders::default();
    let result = block_on(<SubmitOrder as SagaSteps<Orders>>::run_action(
        &orders,
        3,
        &ctx("pay_create", Op::Action),
        &request(),
        vec![json!("forty-two")],
    ));
    let Err(StepError::Retry(reason)) = result else {
        panic!("expected a retry, got {result:?}");
    };
    assert!(
        reason.contains("the output of step `order_create` does not decode as"),
        "{reason}"
    );
    let undo = block_on(<SubmitOrder as SagaSteps<Orders>>::run_compensation(
        &orders,
        3,
        &ctx("pay_create", Op::Compensate),
        &request(),
        None,
        vec![],
    ));
    let Err(Retry(reason)) = undo else {
        panic!("expected a retry, got {undo:?}");
    };
    assert!(
        reason.contains("the output of step `order_create`"),
        "{reason}"
    );
    assert!(orders.calls.lock().unwrap().is_empty());
}

#[test]
fn the_table_records_output_types_and_reads() {
    let steps = SubmitOrder::definition().steps;
    assert_eq!(steps[0].output, "OrderId");
    assert_eq!(steps[1].output, "()");
    assert_eq!(steps[3].output, "PaymentId");
    assert_eq!(steps[3].reads, &[0]);
    assert_eq!(PayOrder::definition().steps[1].reads, &[0]);
    assert_eq!(
        (SubmitOrder::ORDER_CREATE, SubmitOrder::PAY_CREATE),
        ("order_create", "pay_create")
    );
    assert_eq!(PayOrder::CAPTURE, "payment_capture");
}

#[test]
fn diagram_edges_carry_the_output_type_they_leave_with() {
    assert!(
        SubmitOrder::DIAGRAM.contains("s0 -->|\"OrderId\"| s1"),
        "{}",
        SubmitOrder::DIAGRAM
    );
    assert!(SubmitOrder::DIAGRAM.contains("s1 --> s3"));
    assert!(PayOrder::DIAGRAM.contains("s0 -->|\"u64\"| s1"));
}

struct Payments;

impl PayOrderSteps for Payments {
    async fn capture(&self, _: &StepContext, input: &String) -> Result<u64, StepError> {
        if input == "cancelled" {
            Err(StepError::failure("payment cancelled"))
        } else {
            Ok(7)
        }
    }

    async fn order_mark_paid(
        &self,
        _: &StepContext,
        _: &String,
        capture: u64,
    ) -> Result<(), Retry> {
        Err(Retry::new(format!(
            "order service busy (payment {capture})"
        )))
    }
}

#[test]
fn a_retriable_step_s_retry_becomes_an_in_doubt_step_error() {
    let result = block_on(<PayOrder as SagaSteps<Payments>>::run_action(
        &Payments,
        1,
        &ctx("order_mark_paid", Op::Action),
        &"pay-1".to_string(),
        vec![json!(7)],
    ));
    assert_eq!(
        result,
        Err(StepError::retry("order service busy (payment 7)"))
    );
}

#[test]
fn pivot_and_retriable_steps_have_nothing_to_compensate() {
    for step in 0..2 {
        let undo = block_on(<PayOrder as SagaSteps<Payments>>::run_compensation(
            &Payments,
            step,
            &ctx("x", Op::Compensate),
            &"pay-1".to_string(),
            Some(json!(7)),
            vec![],
        ));
        assert_eq!(undo, Ok(()));
    }
}

#[test]
fn a_pivot_may_return_a_business_failure() {
    let result = block_on(<PayOrder as SagaSteps<Payments>>::run_action(
        &Payments,
        0,
        &ctx("payment_capture", Op::Action),
        &"cancelled".to_string(),
        vec![],
    ));
    assert_eq!(result, Err(StepError::failure("payment cancelled")));
}

mod fingerprint {
    //! Pairs of sagas that differ in one aspect, all persisted as `checkout`.

    use super::*;

    #[derive(Saga)]
    #[saga(input = (), name = "checkout")]
    enum Base {
        #[compensate(a_undo)]
        A,
        #[compensate(b_undo)]
        B(u32),
        #[pivot]
        C,
    }

    /// `Base` again, under another type name, with another input type and other compensation names.
    #[derive(Saga)]
    #[saga(input = String, name = "checkout")]
    enum SameShape {
        #[compensate(undo_a)]
        A,
        #[compensate(undo_b)]
        B(u32),
        #[pivot]
        C,
    }

    /// `Base` with another output type for `B`.
    #[derive(Saga)]
    #[saga(input = (), name = "checkout")]
    enum OtherOutput {
        #[compensate(a_undo)]
        A,
        #[compensate(b_undo)]
        B(u64),
        #[pivot]
        C,
    }

    /// `Base` where `C` reads `B`: reads are not part of the fingerprint (every output is
    /// persisted whatever reads it).
    #[derive(Saga)]
    #[saga(input = (), name = "checkout")]
    enum OtherReads {
        #[compensate(a_undo)]
        A,
        #[compensate(b_undo)]
        B(u32),
        #[pivot]
        #[step(reads(B))]
        C,
    }

    #[derive(Saga)]
    #[saga(input = (), name = "checkout")]
    enum RenamedStep {
        #[compensate(a_undo)]
        A,
        #[compensate(b_undo)]
        #[step(name = "b2")]
        B(u32),
        #[pivot]
        C,
    }

    #[derive(Saga)]
    #[saga(input = (), name = "checkout")]
    enum OtherKind {
        #[compensate(a_undo)]
        A,
        #[pivot]
        B(u32),
        #[retriable]
        C,
    }

    #[derive(Saga)]
    #[saga(input = (), name = "checkout")]
    enum OtherOrder {
        #[compensate(b_undo)]
        B(u32),
        #[compensate(a_undo)]
        A,
        #[pivot]
        C,
    }

    #[derive(Saga)]
    #[saga(input = (), name = "checkout")]
    enum OtherDependency {
        #[compensate(a_undo)]
        A,
        #[compensate(b_undo)]
        #[step(after())]
        B(u32),
        #[pivot]
        C,
    }

    #[derive(Saga)]
    #[saga(input = (), name = "checkout", version = 2)]
    enum OtherVersion {
        #[compensate(a_undo)]
        A,
        #[compensate(b_undo)]
        B(u32),
        #[pivot]
        C,
    }

    #[derive(Saga)]
    #[saga(input = (), name = "checkout")]
    enum OtherPolicies {
        #[compensate(a_undo)]
        #[step(timeout_ms = 10)]
        A,
        #[compensate(b_undo)]
        #[step(retry(max_attempts = 3, initial_ms = 1, max_ms = 2))]
        B(u32),
        #[pivot]
        #[step(timeout_ms = 99, retry(max_attempts = 1))]
        C,
    }

    fn base() -> String {
        Base::definition().fingerprint()
    }

    #[test]
    fn fingerprint_is_stable_for_identical_definitions_in_different_enums() {
        assert_eq!(base(), SameShape::definition().fingerprint());
        assert_eq!(base(), Base::definition().fingerprint());
    }

    #[test]
    fn fingerprint_changes_when_a_step_name_changes() {
        assert_ne!(base(), RenamedStep::definition().fingerprint());
    }

    #[test]
    fn fingerprint_changes_when_a_step_kind_changes() {
        assert_ne!(base(), OtherKind::definition().fingerprint());
    }

    #[test]
    fn fingerprint_changes_when_the_step_order_changes() {
        assert_ne!(base(), OtherOrder::definition().fingerprint());
    }

    #[test]
    fn fingerprint_changes_when_a_dependency_changes() {
        assert_ne!(base(), OtherDependency::definition().fingerprint());
    }

    #[test]
    fn fingerprint_changes_when_an_output_type_changes() {
        assert_ne!(base(), OtherOutput::definition().fingerprint());
        assert_eq!(OtherOutput::definition().steps[1].output, "u64");
    }

    #[test]
    fn fingerprint_does_not_change_when_only_reads_change() {
        assert_eq!(base(), OtherReads::definition().fingerprint());
        assert_eq!(OtherReads::definition().steps[2].reads, &[1]);
    }

    #[test]
    fn fingerprint_changes_when_the_version_changes() {
        assert_ne!(base(), OtherVersion::definition().fingerprint());
    }

    #[test]
    fn fingerprint_does_not_change_when_timeouts_or_retry_policies_change() {
        assert_eq!(base(), OtherPolicies::definition().fingerprint());
        assert_ne!(
            Base::definition().steps,
            OtherPolicies::definition().steps,
            "the policies do differ"
        );
    }
}
