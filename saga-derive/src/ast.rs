//! A typed view of the derive input: the saga enum and its steps, with their attributes parsed.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Fields, Generics, Ident, Type, Variant, Visibility};

use crate::attr::{self, Kind, SagaAttrs, StepAttrs};
use crate::case::snake_case;
use crate::ctxt::Ctxt;

/// The saga enum.
pub struct Input<'a> {
    pub ident: &'a Ident,
    pub vis: &'a Visibility,
    pub generics: &'a Generics,
    pub attrs: SagaAttrs,
    /// Persisted saga name and where it came from.
    pub name: String,
    pub name_span: Span,
    /// `None` when the input is not an enum.
    pub steps: Option<Vec<Step<'a>>>,
}

/// What a variant holds: its step's output.
pub enum Output<'a> {
    /// A unit variant: the output is `()`.
    Unit,
    /// `Variant(T)`: the output is `T`.
    Type(&'a Type),
    /// Named or several fields (already reported).
    Invalid,
}

/// One step: one variant of the enum.
pub struct Step<'a> {
    pub ident: &'a Ident,
    pub output: Output<'a>,
    pub attrs: StepAttrs<'a>,
    /// Persisted step name (snake_case of the variant, or `#[step(name = "...")]`).
    pub name: String,
    pub name_span: Span,
    /// Name of the action method in the generated trait (snake_case of the variant).
    pub method: String,
}

impl<'a> Input<'a> {
    /// Parses the input, recording every structural error in `cx`.
    pub fn from_syn(cx: &Ctxt, node: &'a DeriveInput) -> Self {
        let attrs = attr::saga_attrs(cx, &node.attrs);
        let (name, name_span) = match &attrs.name {
            Some(lit) => (lit.value(), lit.span()),
            None => (
                snake_case(&node.ident.unraw().to_string()),
                node.ident.span(),
            ),
        };
        let steps = match &node.data {
            Data::Enum(data) => Some(
                data.variants
                    .iter()
                    .map(|variant| Step::from_syn(cx, variant))
                    .collect(),
            ),
            Data::Struct(data) => {
                cx.error_spanned_by(
                    data.struct_token,
                    "`#[derive(Saga)]` needs an enum with one variant per step, not a struct; \
                     write `enum Name { StepOne, StepTwo(Output), ... }`",
                );
                None
            }
            Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "`#[derive(Saga)]` needs an enum with one variant per step, not a union; \
                     write `enum Name { StepOne, StepTwo(Output), ... }`",
                );
                None
            }
        };
        Input {
            ident: &node.ident,
            vis: &node.vis,
            generics: &node.generics,
            attrs,
            name,
            name_span,
            steps,
        }
    }

    /// The steps (empty when the input is not an enum).
    pub fn steps(&self) -> &[Step<'a>] {
        self.steps.as_deref().unwrap_or(&[])
    }

    /// Name of the generated trait: `{Enum}Steps`.
    pub fn steps_trait(&self) -> Ident {
        Ident::new(&format!("{}Steps", self.ident.unraw()), self.ident.span())
    }

    /// Position of the step declared by variant `ident`.
    pub fn index_of(&self, ident: &Ident) -> Option<usize> {
        self.steps().iter().position(|s| s.ident == ident)
    }
}

impl<'a> Step<'a> {
    fn from_syn(cx: &Ctxt, variant: &'a Variant) -> Self {
        let ident = &variant.ident;
        let output = match &variant.fields {
            Fields::Unit => Output::Unit,
            Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
                Output::Type(&fields.unnamed[0].ty)
            }
            Fields::Unnamed(fields) if fields.unnamed.is_empty() => {
                cx.error_spanned_by(
                    fields,
                    format!("step `{ident}` has empty parentheses; write `{ident}` for a step without output"),
                );
                Output::Invalid
            }
            Fields::Unnamed(fields) => {
                cx.error_spanned_by(
                    fields,
                    format!(
                        "step `{ident}` has {} fields, but a step has at most one: its output type; \
                         wrap them in one type, e.g. a tuple `{ident}((A, B))` or a struct",
                        fields.unnamed.len()
                    ),
                );
                Output::Invalid
            }
            Fields::Named(fields) => {
                cx.error_spanned_by(
                    fields,
                    format!(
                        "step `{ident}` has named fields, but a step holds at most one unnamed \
                         field: its output type; write `{ident}(Output)` with a struct `Output` \
                         holding these fields"
                    ),
                );
                Output::Invalid
            }
        };
        let attrs = attr::step_attrs(cx, ident, &variant.attrs);
        let method = snake_case(&ident.unraw().to_string());
        let (name, name_span) = match &attrs.name {
            Some(lit) => (lit.value(), lit.span()),
            None => (method.clone(), ident.span()),
        };
        Step {
            ident,
            output,
            attrs,
            name,
            name_span,
            method,
        }
    }

    /// The step's kind, if exactly one was given.
    pub fn kind(&self) -> Option<Kind> {
        self.attrs.kind.as_ref().map(|k| k.kind)
    }

    /// The compensation method, for compensatable steps.
    pub fn compensation(&self) -> Option<&Ident> {
        self.attrs.kind.as_ref()?.compensation.as_ref()
    }
}
