//! `#[derive(Saga)]` for [saga-core](https://docs.rs/saga-core): turns an enum of steps into a
//! compile-time-checked saga definition. Use it through `saga_core::Saga`.
//!
//! The derive is a small pipeline, one file a stage:
//! - `ast.rs`: a typed view of the enum and its variants;
//! - `attr.rs`: parsing of `#[saga(...)]`, `#[compensate(...)]`, `#[pivot]`, `#[retriable]`
//!   and `#[step(...)]`;
//! - `valid.rs`: the rules of a saga definition;
//! - `expand.rs`: the generated code;
//! - `ctxt.rs`: collects every error, so that all of them are reported at once.
#![warn(missing_docs)]

mod ast;
mod attr;
mod case;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Derives `saga_core::Saga` for an enum with one variant per step, in order.
///
/// ```
/// use saga_core::{Retry, Saga, StepContext, StepError};
/// # #[derive(serde::Serialize, serde::Deserialize)] pub struct OrderRequest;
/// # #[derive(serde::Serialize, serde::Deserialize)] pub struct OrderId(u64);
/// # #[derive(serde::Serialize, serde::Deserialize)] pub struct PaymentId(u64);
///
/// #[derive(Saga)]
/// #[saga(input = OrderRequest)]           // also `version = N`, `name = "..."`
/// enum SubmitOrder {
///     #[compensate(order_create_revert)]  // compensatable, with its undo
///     OrderCreate(OrderId),               // the single field is the step's output
///     #[compensate(stock_deduct_revert)]
///     #[step(timeout_ms = 2000, retry(max_attempts = 5, initial_ms = 50, max_ms = 1000))]
///     StockDeduct,
///     #[pivot]                            // the go/no-go step, never undone
///     #[step(name = "payment", after(OrderCreate, StockDeduct), reads(OrderCreate))]
///     Pay(PaymentId),                     // receives `OrderCreate`'s output, typed
///     #[retriable]                        // after the pivot; can only be retried
///     Notify,
/// }
///
/// struct Services;
///
/// impl SubmitOrderSteps for Services {
///     async fn order_create(&self, _: &StepContext, _: &OrderRequest) -> Result<OrderId, StepError> {
///         Ok(OrderId(1))
///     }
///     async fn order_create_revert(
///         &self, _: &StepContext, _: &OrderRequest, _: Option<OrderId>,
///     ) -> Result<(), Retry> {
///         Ok(())
///     }
///     async fn stock_deduct(&self, _: &StepContext, _: &OrderRequest) -> Result<(), StepError> {
///         Err(StepError::failure("out of stock"))
///     }
///     async fn stock_deduct_revert(
///         &self, _: &StepContext, _: &OrderRequest, _: Option<()>,
///     ) -> Result<(), Retry> {
///         Ok(())
///     }
///     async fn pay(
///         &self, _: &StepContext, _: &OrderRequest, order: OrderId,
///     ) -> Result<PaymentId, StepError> {
///         Ok(PaymentId(order.0 + 6))
///     }
///     async fn notify(&self, _: &StepContext, _: &OrderRequest) -> Result<(), Retry> {
///         Ok(())
///     }
/// }
///
/// let def = SubmitOrder::definition();
/// assert_eq!(def.steps[2].name, "payment");
/// assert_eq!(def.steps[2].after, &[0, 1]);
/// assert_eq!(def.steps[2].reads, &[0]);
/// assert_eq!(SubmitOrder::PAY, "payment");
/// assert_eq!(SubmitOrder::DIAGRAM, def.mermaid());
/// ```
///
/// Generates:
/// - the `Saga` impl, with the step table (names, kinds, dependencies, compensations, output
///   types, reads, timeouts, retry overrides);
/// - a trait `SubmitOrderSteps` with one async method per action (named after the variant) and
///   per compensation. Compensatable and pivot actions return `Result<Output, StepError>`;
///   retriable actions and compensations return `Result<_, Retry>`, so a business failure where
///   the saga cannot take one is a type error. A step with `reads(A, ..)` gets the outputs of
///   those steps as typed arguments after the input, in its action and in its compensation;
///   reading a step that is not guaranteed to have succeeded before it starts is a compile error;
/// - `SagaSteps<H>` for every `H: SubmitOrderSteps`, the dispatch the engine calls;
/// - `SubmitOrder::DIAGRAM`, a Mermaid flowchart of the saga, also shown in the trait's docs;
/// - one constant per step with its persisted name (`SubmitOrder::STOCK_DEDUCT`), for the
///   participant side;
/// - `SubmitOrderOutputs` and `SagaOutputs`, so that `view.outputs::<SubmitOrder>()` decodes a
///   saga view's outputs.
///
/// `#[compensate = "name"]` is accepted as well: rustc rejects `#[compensate = name]` (attribute
/// values must be literals). Every rule of a saga definition is checked at compile time, and
/// every broken rule is reported at once, on the attribute or variant at fault.
#[proc_macro_derive(Saga, attributes(saga, compensate, pivot, retriable, step))]
pub fn derive_saga(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}
