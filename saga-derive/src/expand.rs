//! Code generation: the `Saga` impl with its step table, the `{Enum}Steps` trait, the
//! `SagaSteps` dispatch and the Mermaid diagram.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Ident};

use crate::ast::{Input, Output, Step};
use crate::attr::Kind;
use crate::ctxt::Ctxt;
use crate::valid;

/// Runs the pipeline: parse, validate, then expand (or, on error, report every error together
/// with placeholder items that keep the user's other code free of knock-on errors).
pub fn derive(node: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let input = Input::from_syn(&cx, node);
    valid::check(&cx, &input);
    match cx.check() {
        Ok(()) => expand(&input),
        Err(err) => {
            let mut tokens = err.to_compile_error();
            tokens.extend(placeholder(&input));
            tokens
        }
    }
}

/// The full expansion of a valid saga.
fn expand(input: &Input<'_>) -> TokenStream {
    let steps = input.steps();
    let table = steps
        .iter()
        .enumerate()
        .map(|(i, step)| step_definition(input, i, step));
    let saga_impl = saga_impl(input, quote!(#(#table),*), variant_uses(input));
    let diagram = mermaid(input);
    let steps_trait = steps_trait(input, &diagram, false);
    let dispatch = dispatch(input);
    let diagram_const = diagram_const(input, &diagram);
    quote! {
        #saga_impl
        #steps_trait
        #dispatch
        #diagram_const
    }
}

/// What an invalid input still gets: the `Saga` impl with an empty table, the steps trait with
/// every method it can make out (each with a body, so that nothing is reported missing), and a
/// dispatch. A generic or non-enum input gets only an empty trait.
fn placeholder(input: &Input<'_>) -> TokenStream {
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        let vis = input.vis;
        let steps_trait = input.steps_trait();
        return quote! {
            #[allow(dead_code)]
            #vis trait #steps_trait {}
        };
    }
    let saga_impl = saga_impl(input, TokenStream::new(), TokenStream::new());
    let steps_trait = steps_trait(input, "flowchart LR\n", true);
    let dispatch = placeholder_dispatch(input);
    let diagram_const = diagram_const(input, "flowchart LR\n");
    quote! {
        #saga_impl
        #steps_trait
        #dispatch
        #diagram_const
    }
}

fn input_type(input: &Input<'_>) -> TokenStream {
    match &input.attrs.input {
        Some(ty) => quote!(#ty),
        None => quote!(()),
    }
}

fn output_type(step: &Step<'_>) -> Option<TokenStream> {
    match step.output {
        Output::Unit => Some(quote!(())),
        Output::Type(ty) => Some(quote!(#ty)),
        Output::Invalid => None,
    }
}

/// The output type as written, with the spaces of its token stream dropped where Rust needs
/// none (`Vec<u8>`, `(u32, String)`): the text that names it in the fingerprint and diagrams.
fn output_text(step: &Step<'_>) -> String {
    match step.output {
        Output::Type(ty) => type_text(ty),
        _ => "()".to_string(),
    }
}

fn type_text(ty: &syn::Type) -> String {
    let raw = quote!(#ty).to_string();
    let mut out = String::with_capacity(raw.len());
    let chars: Vec<char> = raw.chars().collect();
    for (k, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let before = out.chars().last();
            let after = chars.get(k + 1).copied();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            if (word(before) && word(after)) || before == Some(',') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn saga_impl(input: &Input<'_>, table: TokenStream, uses: TokenStream) -> TokenStream {
    let ident = input.ident;
    let input_ty = input_type(input);
    let name = &input.name;
    let version = input.attrs.version.as_ref().map_or(1, |v| v.value);
    quote! {
        #[automatically_derived]
        impl ::saga_core::Saga for #ident {
            type Input = #input_ty;

            fn definition() -> &'static ::saga_core::SagaDefinition {
                #uses
                static DEFINITION: ::saga_core::SagaDefinition = ::saga_core::SagaDefinition {
                    name: #name,
                    version: #version,
                    steps: &[#table],
                };
                &DEFINITION
            }
        }
    }
}

/// A saga's variants name steps and are never built or read as values; building and reading
/// each one here keeps the dead-code lint quiet about them.
fn variant_uses(input: &Input<'_>) -> TokenStream {
    let variants = input.steps().iter().map(|s| s.ident);
    let arms = input.steps().iter().map(|step| {
        let variant = step.ident;
        match step.output {
            Output::Type(_) => quote!(Self::#variant(output) => { let _ = output; }),
            _ => quote!(Self::#variant => {}),
        }
    });
    // Every output may be read back by later steps and by views; compensatable steps' outputs
    // are already decoded by the dispatch. (`Send + Sync + 'static` is checked
    // by `Saga`'s supertraits, since the enum holds every output type.)
    let checks = input.steps().iter().filter_map(|step| match step.output {
        Output::Type(ty) if step.kind() != Some(Kind::Compensatable) => {
            Some(quote_spanned!(ty.span()=> let _ = ::saga_core::__private::decode_output::<#ty>;))
        }
        _ => None,
    });
    quote! {
        let _ = (#(Self::#variants,)*);
        let _ = |step: &Self| match step { #(#arms)* };
        #(#checks)*
    }
}

fn step_definition(input: &Input<'_>, i: usize, step: &Step<'_>) -> TokenStream {
    let name = &step.name;
    let kind = format_ident!("{}", step.kind().map_or("Compensatable", Kind::variant));
    let after = valid::dependencies(input, i);
    let reads = valid::reads(input, i);
    let output = output_text(step);
    let compensation = match step.compensation() {
        Some(method) => {
            let method = method.to_string();
            quote!(::saga_core::__private::Option::Some(#method))
        }
        None => quote!(::saga_core::__private::Option::None),
    };
    let timeout_ms = option(step.attrs.timeout_ms.as_ref().map(|t| t.value));
    let retry = &step.attrs.retry;
    let max_attempts = option(retry.max_attempts.as_ref().map(|v| v.value));
    let initial_ms = option(retry.initial_ms.as_ref().map(|v| v.value));
    let max_ms = option(retry.max_ms.as_ref().map(|v| v.value));
    quote! {
        ::saga_core::StepDefinition {
            name: #name,
            kind: ::saga_core::StepKind::#kind,
            after: &[#(#after),*],
            compensation: #compensation,
            output: #output,
            reads: &[#(#reads),*],
            timeout_ms: #timeout_ms,
            retry: ::saga_core::RetryOverride {
                max_attempts: #max_attempts,
                initial_ms: #initial_ms,
                max_ms: #max_ms,
            },
        }
    }
}

fn option<T: quote::ToTokens>(value: Option<T>) -> TokenStream {
    match value {
        Some(v) => quote!(::saga_core::__private::Option::Some(#v)),
        None => quote!(::saga_core::__private::Option::None),
    }
}

fn action_ident(step: &Step<'_>) -> Ident {
    Ident::new(&step.method, step.ident.span())
}

/// The `{Enum}Steps` trait. With `defaults`, every method gets a body that is never run.
fn steps_trait(input: &Input<'_>, diagram: &str, defaults: bool) -> TokenStream {
    let vis = input.vis;
    let ident = input.ident;
    let trait_ident = input.steps_trait();
    let input_ty = input_type(input);
    let mut methods = Vec::new();
    let mut declared: Vec<String> = Vec::new();
    let body = |span: Span| {
        if defaults {
            quote_spanned!(span=> { async { ::core::unreachable!() } })
        } else {
            quote_spanned!(span=> ;)
        }
    };
    // Default bodies do not use their arguments.
    let (ctx, inp, out) = if defaults {
        (quote!(_ctx), quote!(_input), quote!(_output))
    } else {
        (quote!(ctx), quote!(input), quote!(output))
    };
    for (i, step) in input.steps().iter().enumerate() {
        let (Some(output), Some(kind)) = (output_type(step), step.kind()) else {
            continue;
        };
        let (reads, reads_doc) = read_params(input, i, defaults);
        if syn::parse_str::<Ident>(&step.method).is_err() || declared.contains(&step.method) {
            continue;
        }
        declared.push(step.method.clone());
        let method = action_ident(step);
        let name = &step.name;
        let (error, doc) = match kind {
            Kind::Compensatable => (
                quote!(::saga_core::StepError),
                format!(
                    " Action of step `{name}` (compensatable, undone by [`{}`](Self::{})).\n\n \
                     Return `Err(StepError::Failure(..))` for a business failure: the saga then \
                     compensates the steps that may have run. Return `Err(StepError::Retry(..))` \
                     when the outcome is in doubt: the action is called again.",
                    step.compensation()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    step.compensation()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                ),
            ),
            Kind::Pivot => (
                quote!(::saga_core::StepError),
                format!(
                    " Action of step `{name}`, the saga's pivot (never undone).\n\n \
                     Return `Err(StepError::Failure(..))` for a business failure: the saga then \
                     compensates the steps before it. Once this succeeds the saga only goes forward."
                ),
            ),
            Kind::Retriable => (
                quote!(::saga_core::Retry),
                format!(
                    " Action of step `{name}` (retriable: it runs after the pivot and cannot fail \
                     for a business reason).\n\n Return `Err(Retry)` to be called again later."
                ),
            ),
        };
        let action_body = body(step.ident.span());
        // Spanned on the user's attribute and variant, so that rustc's notes about the trait
        // ("type in trait", "`x` from trait") point at the step, not at the derive.
        let kind_span = step
            .attrs
            .kind
            .as_ref()
            .map_or(step.ident.span(), |k| k.attr.path().span());
        let ret = quote_spanned! {kind_span=>
            impl ::core::future::Future<
                Output = ::saga_core::__private::Result<#output, #error>,
            > + ::core::marker::Send
        };
        let doc = syn::LitStr::new(&format!("{doc}{reads_doc}"), step.ident.span());
        methods.push(quote_spanned! {step.ident.span()=>
            #[doc = #doc]
            fn #method(
                &self,
                #ctx: &::saga_core::StepContext,
                #inp: &#input_ty,
                #(#reads,)*
            ) -> #ret #action_body
        });
        if let Some(compensation) = step.compensation() {
            if declared.contains(&compensation.to_string()) {
                continue;
            }
            declared.push(compensation.to_string());
            let doc = format!(
                " Compensation of step `{name}`: undoes [`{}`](Self::{}).\n\n Receives the step's \
                 output, or `None` when the action's outcome was lost (it may or may not have \
                 run). It is called until it returns `Ok`, so it must be idempotent; return \
                 `Err(Retry)` to be called again later.",
                step.method, step.method
            );
            let compensation_body = body(compensation.span());
            let doc = syn::LitStr::new(&format!("{doc}{reads_doc}"), compensation.span());
            methods.push(quote_spanned! {compensation.span()=>
                #[doc = #doc]
                fn #compensation(
                    &self,
                    #ctx: &::saga_core::StepContext,
                    #inp: &#input_ty,
                    #out: ::saga_core::__private::Option<#output>,
                    #(#reads,)*
                ) -> impl ::core::future::Future<
                    Output = ::saga_core::__private::Result<(), ::saga_core::Retry>,
                > + ::core::marker::Send #compensation_body
            });
        }
    }
    let doc = trait_doc(input, diagram);
    let message = format!("`{{Self}}` does not implement the steps of saga `{ident}`");
    let label = format!("implement `{trait_ident}` for this type");
    let note = format!(
        "`#[derive(Saga)]` on `{ident}` generated the trait `{trait_ident}`, with one async method \
         per action and per compensation"
    );
    quote! {
        #[doc = #doc]
        #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
        // `input: &String` and the like are the user's choice of input type.
        #[allow(clippy::ptr_arg)]
        #vis trait #trait_ident: ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#methods)*
        }
    }
}

/// The parameters that carry the outputs step `i` reads, one per step in its `reads(...)`,
/// named after the step's action, and the sentence that lists them in the method's docs.
fn read_params(input: &Input<'_>, i: usize, defaults: bool) -> (Vec<TokenStream>, String) {
    let mut params = Vec::new();
    let mut listed = Vec::new();
    for r in valid::reads(input, i) {
        let from = &input.steps()[r];
        let Output::Type(ty) = from.output else {
            continue;
        };
        // Named after the step, unless that would clash with the method's other parameters.
        let base = match from.method.as_str() {
            "ctx" | "input" | "output" => format!("{}_output", from.method),
            method => method.to_string(),
        };
        let name = if defaults {
            format_ident!("_{base}")
        } else {
            format_ident!("{base}")
        };
        params.push(quote!(#name: #ty));
        listed.push(format!(
            "`{base}: {}` (the output of step `{}`)",
            type_text(ty),
            from.name
        ));
    }
    let doc = if listed.is_empty() {
        String::new()
    } else {
        format!("\n\n Receives, after the input: {}.", listed.join(", "))
    };
    (params, doc)
}

fn trait_doc(input: &Input<'_>, diagram: &str) -> String {
    let ident = input.ident;
    let version = input.attrs.version.as_ref().map_or(1, |v| v.value);
    let mut doc = format!(
        " The steps of saga [`{ident}`] (persisted as `{}`, version {version}), generated by \
         `#[derive(Saga)]`.\n\n Implement it with one `async fn` per action and per compensation, \
         then register the implementation with the engine.\n\n\
         | # | step | kind | action | compensation |\n\
         |---|------|------|--------|--------------|\n",
        input.name
    );
    for (i, step) in input.steps().iter().enumerate() {
        doc.push_str(&format!(
            "| {i} | `{}` | {} | `{}` | {} |\n",
            step.name,
            step.kind().map_or("?", Kind::as_str),
            step.method,
            step.compensation()
                .map_or("-".to_string(), |c| format!("`{c}`")),
        ));
    }
    doc.push_str(&format!("\n ```mermaid\n{diagram}```\n"));
    doc
}

/// The saga as a Mermaid flowchart, the same text as `SagaDefinition::mermaid()`.
fn mermaid(input: &Input<'_>) -> String {
    let mut out = String::from("flowchart LR\n");
    for (i, step) in input.steps().iter().enumerate() {
        let label = match step.compensation() {
            Some(c) => format!("{}<br/>compensate: {c}", step.name),
            None => format!(
                "{}<br/>{}",
                step.name,
                step.kind().map_or("?", Kind::as_str)
            ),
        };
        out.push_str(&format!("    s{i}[\"{label}\"]\n"));
    }
    for i in 0..input.steps().len() {
        for dep in valid::dependencies(input, i) {
            let output = output_text(&input.steps()[dep]);
            if output == "()" {
                out.push_str(&format!("    s{dep} --> s{i}\n"));
            } else {
                let label = output
                    .replace('<', "#lt;")
                    .replace('>', "#gt;")
                    .replace('"', "#quot;");
                out.push_str(&format!("    s{dep} -->|\"{label}\"| s{i}\n"));
            }
        }
    }
    out
}

fn diagram_const(input: &Input<'_>, diagram: &str) -> TokenStream {
    let ident = input.ident;
    let vis = input.vis;
    let doc = format!(
        " The saga `{}` as a Mermaid flowchart: one node per step (its persisted name, and its \
         undo or kind), one edge per dependency. The same text as \
         `SagaDefinition::mermaid()`.\n\n ```mermaid\n{diagram}```\n\n A derive cannot add to \
         the docs of `{ident}` itself: link here from them with ``[`{ident}::DIAGRAM`]``, or \
         paste the block above into them (a `#[doc = \"...\"]` attribute takes a literal, not \
         this constant).",
        input.name
    );
    // One constant per step with its persisted name (the barrier's branch id), so that a
    // participant names its step through the saga type rather than a string.
    let mut seen: Vec<String> = vec!["DIAGRAM".to_string()];
    let names = input.steps().iter().filter_map(|step| {
        let upper = step.method.to_uppercase();
        let name_ident = syn::parse_str::<Ident>(&upper).ok()?;
        if seen.contains(&upper) {
            return None;
        }
        seen.push(upper);
        let name = &step.name;
        let variant = step.ident;
        let doc = format!(
            " The persisted name of step [`{variant}`](Self::{variant}): `{name}`, the barrier's branch id \
             and the `Saga-Branch` header of its calls."
        );
        Some(quote_spanned! {step.ident.span()=>
            #[doc = #doc]
            #[allow(dead_code)]
            #vis const #name_ident: &'static str = #name;
        })
    });
    quote! {
        #[automatically_derived]
        impl #ident {
            #[doc = #doc]
            #[allow(dead_code)]
            #vis const DIAGRAM: &'static str = #diagram;
            #(#names)*
        }
    }
}

/// `impl<H: {Enum}Steps> SagaSteps<H> for {Enum}`: a step index to a trait method.
fn dispatch(input: &Input<'_>) -> TokenStream {
    let trait_ident = input.steps_trait();
    let mut actions = Vec::new();
    let mut compensations = Vec::new();
    for (i, step) in input.steps().iter().enumerate() {
        let Some(output) = output_type(step) else {
            continue;
        };
        let method = action_ident(step);
        let span = match step.output {
            Output::Type(ty) => ty.span(),
            _ => step.ident.span(),
        };
        let encode = quote_spanned!(span=> ::saga_core::__private::encode_output::<#output>);
        let decode = quote_spanned!(span=> ::saga_core::__private::decode_output::<#output>);
        // Decoded before the call; a read that does not decode is an in-doubt outcome.
        let (names, decodes) = decode_reads(input, i);
        let iter = if names.is_empty() {
            quote!(let _ = reads;)
        } else {
            quote!(let mut reads = reads.into_iter();)
        };
        actions.push(quote! {
            #i => {
                #iter
                #(
                    let #names = match #decodes {
                        ::saga_core::__private::Result::Ok(value) => value,
                        ::saga_core::__private::Result::Err(reason) => {
                            return ::saga_core::__private::Box::pin(async move {
                                ::saga_core::__private::Result::Err(::saga_core::StepError::Retry(reason))
                            });
                        }
                    };
                )*
                ::saga_core::__private::Box::pin(async move {
                    match <H as #trait_ident>::#method(handler, ctx, input, #(#names),*).await {
                        ::saga_core::__private::Result::Ok(output) => #encode(&output),
                        ::saga_core::__private::Result::Err(error) => {
                            ::saga_core::__private::Result::Err(
                                <::saga_core::StepError as ::core::convert::From<_>>::from(error),
                            )
                        }
                    }
                })
            }
        });
        if let Some(compensation) = step.compensation() {
            compensations.push(quote! {
                #i => {
                    #iter
                    #(
                        let #names = match #decodes {
                            ::saga_core::__private::Result::Ok(value) => value,
                            ::saga_core::__private::Result::Err(reason) => {
                                return ::saga_core::__private::Box::pin(async move {
                                    ::saga_core::__private::Result::Err(::saga_core::Retry(reason))
                                });
                            }
                        };
                    )*
                    ::saga_core::__private::Box::pin(
                        <H as #trait_ident>::#compensation(handler, ctx, input, #decode(output), #(#names),*),
                    )
                }
            });
        }
    }
    dispatch_impl(input, quote!(#(#actions)*), quote!(#(#compensations)*))
}

/// For each output step `i` reads: a local name and the expression that decodes it from the
/// next persisted value of `reads`.
fn decode_reads(input: &Input<'_>, i: usize) -> (Vec<Ident>, Vec<TokenStream>) {
    let mut names = Vec::new();
    let mut decodes = Vec::new();
    for r in valid::reads(input, i) {
        let from = &input.steps()[r];
        let Output::Type(ty) = from.output else {
            continue;
        };
        let name = &from.name;
        names.push(format_ident!("read_{}", from.method));
        decodes.push(quote_spanned! {ty.span()=>
            ::saga_core::__private::decode_read::<#ty>(reads.next(), #name)
        });
    }
    (names, decodes)
}

fn placeholder_dispatch(input: &Input<'_>) -> TokenStream {
    dispatch_impl(input, TokenStream::new(), TokenStream::new())
}

fn dispatch_impl(
    input: &Input<'_>,
    actions: TokenStream,
    compensations: TokenStream,
) -> TokenStream {
    let ident = input.ident;
    let trait_ident = input.steps_trait();
    quote! {
        #[automatically_derived]
        impl<H: #trait_ident> ::saga_core::SagaSteps<H> for #ident {
            fn run_action<'a>(
                handler: &'a H,
                step: usize,
                ctx: &'a ::saga_core::StepContext,
                input: &'a <Self as ::saga_core::Saga>::Input,
                reads: ::saga_core::__private::Vec<::saga_core::__private::Value>,
            ) -> ::saga_core::BoxFuture<
                'a,
                ::saga_core::__private::Result<::saga_core::__private::Value, ::saga_core::StepError>,
            > {
                match step {
                    #actions
                    _ => {
                        let _ = (handler, ctx, input, reads);
                        ::saga_core::__private::Box::pin(async {
                            ::saga_core::__private::Result::Err(::saga_core::StepError::retry("unknown step"))
                        })
                    }
                }
            }

            fn run_compensation<'a>(
                handler: &'a H,
                step: usize,
                ctx: &'a ::saga_core::StepContext,
                input: &'a <Self as ::saga_core::Saga>::Input,
                output: ::saga_core::__private::Option<::saga_core::__private::Value>,
                reads: ::saga_core::__private::Vec<::saga_core::__private::Value>,
            ) -> ::saga_core::BoxFuture<'a, ::saga_core::__private::Result<(), ::saga_core::Retry>> {
                match step {
                    #compensations
                    // Pivot and retriable steps have nothing to undo.
                    _ => {
                        let _ = (handler, ctx, input, output, reads);
                        ::saga_core::__private::Box::pin(async { ::saga_core::__private::Result::Ok(()) })
                    }
                }
            }
        }
    }
}
