//! `#[derive(Saga)]` for saga-core.
use proc_macro::TokenStream;

/// Derives `saga_core::Saga` for an enum of steps.
#[proc_macro_derive(Saga, attributes(saga, compensate, pivot, retriable, step))]
pub fn derive_saga(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}
