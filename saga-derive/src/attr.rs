//! Parsing of the derive's attributes: `#[saga(...)]` on the enum; `#[compensate(...)]`,
//! `#[pivot]`, `#[retriable]` and `#[step(...)]` on its variants.
//!
//! Parsing checks shape only (known keys, no duplicates, well-formed values); the rules that
//! relate steps to one another live in `valid.rs`.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Ident, Lit, LitInt, LitStr, Meta, Token, Type};

use crate::ctxt::Ctxt;

/// A value together with the span of the literal it came from.
#[derive(Clone)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// `#[saga(input = Type, version = N, name = "...")]`.
#[derive(Default)]
pub struct SagaAttrs {
    pub input: Option<Type>,
    pub version: Option<Spanned<u32>>,
    pub name: Option<LitStr>,
}

/// The three step kinds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Compensatable,
    Pivot,
    Retriable,
}

impl Kind {
    /// The kind as written in the attribute that declares it.
    pub fn attr(self) -> &'static str {
        match self {
            Kind::Compensatable => "#[compensate(...)]",
            Kind::Pivot => "#[pivot]",
            Kind::Retriable => "#[retriable]",
        }
    }

    /// The kind in prose ("the pivot", "the retriable step").
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Compensatable => "compensatable step",
            Kind::Pivot => "pivot",
            Kind::Retriable => "retriable step",
        }
    }

    /// The kind as an adjective ("compensatable", "the pivot").
    pub fn adjective(self) -> &'static str {
        match self {
            Kind::Compensatable => "compensatable",
            Kind::Pivot => "a pivot",
            Kind::Retriable => "retriable",
        }
    }

    /// The variant of `saga_core::StepKind`.
    pub fn variant(self) -> &'static str {
        match self {
            Kind::Compensatable => "Compensatable",
            Kind::Pivot => "Pivot",
            Kind::Retriable => "Retriable",
        }
    }

    /// The lower-case name used by `saga_core::StepKind::as_str`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Compensatable => "compensatable",
            Kind::Pivot => "pivot",
            Kind::Retriable => "retriable",
        }
    }
}

/// The attribute that gave a step its kind.
pub struct KindAttr<'a> {
    pub kind: Kind,
    /// The compensation method (compensatable steps only).
    pub compensation: Option<Ident>,
    /// The attribute itself, for error spans.
    pub attr: &'a Attribute,
}

/// `after(A, B)` inside `#[step(...)]`.
pub struct After {
    pub steps: Vec<Ident>,
}

/// `reads(A, B)` inside `#[step(...)]`: the earlier steps whose outputs the action and its compensation
/// receive, in this order.
pub struct Reads {
    pub steps: Vec<Ident>,
}

/// `retry(max_attempts = N, initial_ms = N, max_ms = N)` inside `#[step(...)]`.
#[derive(Default)]
pub struct RetryAttrs {
    pub max_attempts: Option<Spanned<u32>>,
    pub initial_ms: Option<Spanned<u64>>,
    pub max_ms: Option<Spanned<u64>>,
}

/// Everything written on one variant.
#[derive(Default)]
pub struct StepAttrs<'a> {
    pub kind: Option<KindAttr<'a>>,
    /// A kind attribute was written but could not be parsed (already reported).
    pub malformed_kind: bool,
    pub name: Option<LitStr>,
    pub after: Option<After>,
    pub reads: Option<Reads>,
    pub timeout_ms: Option<Spanned<u64>>,
    pub retry: RetryAttrs,
}

const STEP_ATTRS: [&str; 4] = ["compensate", "pivot", "retriable", "step"];

/// Parses the enum's own attributes.
pub fn saga_attrs(cx: &Ctxt, attrs: &[Attribute]) -> SagaAttrs {
    let mut out = SagaAttrs::default();
    for attr in attrs {
        if attr.path().is_ident("saga") {
            if let Err(err) = parse_saga(cx, attr, &mut out) {
                cx.syn_error(err);
            }
        } else if let Some(name) = STEP_ATTRS.iter().find(|n| attr.path().is_ident(n)) {
            cx.error_spanned_by(
                attr,
                format!(
                    "`#[{name}]` belongs on a step (a variant of the enum), not on the enum itself"
                ),
            );
        }
    }
    out
}

fn parse_saga(cx: &Ctxt, attr: &Attribute, out: &mut SagaAttrs) -> syn::Result<()> {
    if let Meta::Path(_) = attr.meta {
        return Err(syn::Error::new_spanned(
            attr,
            "expected `#[saga(input = Type)]`, naming the saga's input type",
        ));
    }
    attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("input") {
            let ty: Type = meta.value()?.parse()?;
            if out.input.is_some() {
                cx.error_spanned_by(&meta.path, "duplicate `input` in `#[saga(...)]`; keep one");
            } else {
                out.input = Some(ty);
            }
        } else if meta.path.is_ident("version") {
            let version = int::<u32>(&meta, "version")?;
            if out.version.is_some() {
                cx.error_spanned_by(&meta.path, "duplicate `version` in `#[saga(...)]`; keep one");
            } else {
                out.version = Some(version);
            }
        } else if meta.path.is_ident("name") {
            let name = string(&meta, "name")?;
            if out.name.is_some() {
                cx.error_spanned_by(&meta.path, "duplicate `name` in `#[saga(...)]`; keep one");
            } else {
                out.name = Some(name);
            }
        } else {
            return Err(meta.error(format!(
                "unknown key `{}` in `#[saga(...)]`; expected `input = Type`, `version = N` or `name = \"...\"`",
                path_str(&meta.path)
            )));
        }
        Ok(())
    })
}

/// Parses the attributes of one variant.
pub fn step_attrs<'a>(cx: &Ctxt, variant: &Ident, attrs: &'a [Attribute]) -> StepAttrs<'a> {
    let mut out = StepAttrs::default();
    for attr in attrs {
        let kind = if attr.path().is_ident("compensate") {
            match compensate(attr) {
                Ok(method) => Some((Kind::Compensatable, Some(method))),
                Err(err) => {
                    cx.syn_error(err);
                    out.malformed_kind = true;
                    continue;
                }
            }
        } else if attr.path().is_ident("pivot") {
            Some((Kind::Pivot, None))
        } else if attr.path().is_ident("retriable") {
            Some((Kind::Retriable, None))
        } else if attr.path().is_ident("step") {
            if let Err(err) = parse_step(cx, attr, &mut out) {
                cx.syn_error(err);
            }
            None
        } else if attr.path().is_ident("saga") {
            cx.error_spanned_by(
                attr,
                "`#[saga(...)]` belongs on the enum, not on a step; step options go in `#[step(...)]`",
            );
            None
        } else {
            None
        };
        let Some((kind, compensation)) = kind else {
            continue;
        };
        if kind != Kind::Compensatable
            && let Meta::List(_) | Meta::NameValue(_) = attr.meta
        {
            cx.error_spanned_by(
                attr,
                format!("`{}` takes no arguments; write it alone", kind.attr()),
            );
            out.malformed_kind = true;
            continue;
        }
        match &out.kind {
            Some(prev) if prev.kind == kind => cx.error_spanned_by(
                attr,
                format!("duplicate `{}` on step `{variant}`; keep one", kind.attr()),
            ),
            Some(prev) => cx.error_spanned_by(
                attr,
                format!(
                    "step `{variant}` is already {} (`{}`); a step has exactly one kind: \
                     compensatable, pivot or retriable. Remove one of the two attributes",
                    prev.kind.adjective(),
                    prev.kind.attr(),
                ),
            ),
            None => {
                out.kind = Some(KindAttr {
                    kind,
                    compensation,
                    attr,
                })
            }
        }
    }
    out
}

fn compensate(attr: &Attribute) -> syn::Result<Ident> {
    const HINT: &str = "expected `#[compensate(method_name)]`, naming the compensation method \
                        that the generated `...Steps` trait will declare";
    match &attr.meta {
        Meta::List(list) => {
            let method: Ident = list.parse_args().map_err(|_| {
                syn::Error::new_spanned(
                    &list.tokens,
                    "expected one method name: `#[compensate(order_create_revert)]`",
                )
            })?;
            Ok(method)
        }
        // `#[compensate = name]` is rejected by rustc itself (attribute values must be
        // literals), so the string form is the key-value spelling.
        Meta::NameValue(nv) => match &nv.value {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Str(s), ..
            }) => match syn::parse_str::<Ident>(&s.value()) {
                Ok(ident) => Ok(Ident::new(&ident.to_string(), s.span())),
                Err(_) => Err(syn::Error::new_spanned(
                    s,
                    format!(
                        "`{}` is not a method name; write `#[compensate(order_create_revert)]`",
                        s.value()
                    ),
                )),
            },
            other => Err(syn::Error::new_spanned(other, HINT)),
        },
        Meta::Path(_) => Err(syn::Error::new_spanned(attr, HINT)),
    }
}

fn parse_step(cx: &Ctxt, attr: &Attribute, out: &mut StepAttrs<'_>) -> syn::Result<()> {
    if let Meta::Path(_) = attr.meta {
        return Err(syn::Error::new_spanned(
            attr,
            "expected `#[step(...)]` with `name = \"...\"`, `after(A, B)`, `reads(A, B)`, \
             `timeout_ms = N` or `retry(...)`",
        ));
    }
    attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("name") {
            let name = string(&meta, "name")?;
            if out.name.is_some() {
                cx.error_spanned_by(&meta.path, "duplicate `name` in `#[step(...)]`; keep one");
            } else {
                out.name = Some(name);
            }
        } else if meta.path.is_ident("after") {
            if meta.input.peek(Token![=]) {
                return Err(
                    meta.error("expected `after(A, B)`, listing the variants this step waits on")
                );
            }
            let content;
            syn::parenthesized!(content in meta.input);
            let steps = Punctuated::<Ident, Token![,]>::parse_terminated(&content)?;
            if out.after.is_some() {
                cx.error_spanned_by(
                    &meta.path,
                    "duplicate `after(...)` in `#[step(...)]`; list every dependency in one \
                     `after(...)`",
                );
            } else {
                out.after = Some(After {
                    steps: steps.into_iter().collect(),
                });
            }
        } else if meta.path.is_ident("reads") {
            if meta.input.peek(Token![=]) {
                return Err(meta.error(
                    "expected `reads(A, B)`, listing the earlier steps whose outputs this step receives",
                ));
            }
            let content;
            syn::parenthesized!(content in meta.input);
            let steps = Punctuated::<Ident, Token![,]>::parse_terminated(&content)?;
            if out.reads.is_some() {
                cx.error_spanned_by(
                    &meta.path,
                    "duplicate `reads(...)` in `#[step(...)]`; list every output in one `reads(...)`",
                );
            } else {
                out.reads = Some(Reads {
                    steps: steps.into_iter().collect(),
                });
            }
        } else if meta.path.is_ident("timeout_ms") {
            let value = int::<u64>(&meta, "timeout_ms")?;
            if out.timeout_ms.is_some() {
                cx.error_spanned_by(
                    &meta.path,
                    "duplicate `timeout_ms` in `#[step(...)]`; keep one",
                );
            } else {
                out.timeout_ms = Some(value);
            }
        } else if meta.path.is_ident("retry") {
            if !meta.input.peek(syn::token::Paren) {
                return Err(
                    meta.error("expected `retry(max_attempts = N, initial_ms = N, max_ms = N)`")
                );
            }
            meta.parse_nested_meta(|inner| parse_retry(cx, &inner, &mut out.retry))?;
        } else {
            return Err(meta.error(format!(
                "unknown key `{}` in `#[step(...)]`; expected `name = \"...\"`, `after(A, B)`, \
                 `reads(A, B)`, `timeout_ms = N` or `retry(...)`",
                path_str(&meta.path)
            )));
        }
        Ok(())
    })
}

fn parse_retry(cx: &Ctxt, meta: &ParseNestedMeta<'_>, out: &mut RetryAttrs) -> syn::Result<()> {
    let key = path_str(&meta.path);
    let duplicate = match key.as_str() {
        "max_attempts" => {
            let v = int::<u32>(meta, "max_attempts")?;
            out.max_attempts.replace(v).is_some()
        }
        "initial_ms" => {
            let v = int::<u64>(meta, "initial_ms")?;
            out.initial_ms.replace(v).is_some()
        }
        "max_ms" => {
            let v = int::<u64>(meta, "max_ms")?;
            out.max_ms.replace(v).is_some()
        }
        _ => {
            return Err(meta.error(format!(
                "unknown key `{key}` in `retry(...)`; expected `max_attempts = N`, `initial_ms = N` or `max_ms = N`"
            )));
        }
    };
    if duplicate {
        cx.error_spanned_by(
            &meta.path,
            format!("duplicate `{key}` in `retry(...)`; keep one"),
        );
    }
    Ok(())
}

fn string(meta: &ParseNestedMeta<'_>, key: &str) -> syn::Result<LitStr> {
    let value = meta.value()?;
    if value.peek(LitStr) {
        value.parse()
    } else {
        Err(value.error(format!("expected a string: `{key} = \"...\"`")))
    }
}

fn int<T>(meta: &ParseNestedMeta<'_>, key: &str) -> syn::Result<Spanned<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let value = meta.value()?;
    if !value.peek(LitInt) {
        return Err(value.error(format!("expected an integer: `{key} = 100`")));
    }
    let lit: LitInt = value.parse()?;
    match lit.base10_parse::<T>() {
        Ok(value) => Ok(Spanned {
            value,
            span: lit.span(),
        }),
        Err(_) => Err(syn::Error::new(
            lit.span(),
            format!(
                "`{key}` must be a non-negative integer that fits in {}",
                std::any::type_name::<T>()
            ),
        )),
    }
}

fn path_str(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}
