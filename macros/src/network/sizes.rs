//! Compile-time size checks: the chain of sizes through a network,
//! evaluated by rustc's const evaluation from each layer's and op's declared
//! rule (`Differentiable::SIZE`, `Op::SIZE`; see `deriv::size`). The macro
//! knows no layer by name: it only writes the chain and the messages, each
//! check spanned at the user's tokens so a mismatch is reported there.
//!
//! A network without generics gets a `const _: () = { .. };` (checked
//! whenever the crate compiles); one with const generics an associated
//! const that `new` reads, checked for each set of generic values used.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::ir::{Graph, Op, ValueId};
use super::parse::{FieldDef, Layer, NetworkDef};

/// A layer argument as the size rules read it: an integer literal or a const
/// generic parameter is `Some`, anything else `None`.
fn arg(e: &syn::Expr, def: &NetworkDef) -> TokenStream {
    match e {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) => match i.base10_parse::<u128>() {
            Ok(v) => quote!(::core::option::Option::Some(#v)),
            Err(_) => quote!(::core::option::Option::None),
        },
        syn::Expr::Path(p) if p.qself.is_none() => match p.path.get_ident() {
            Some(id) if def.generics.const_params().any(|c| c.ident == *id) => {
                quote!(::core::option::Option::Some(#id as u128))
            }
            _ => quote!(::core::option::Option::None),
        },
        syn::Expr::Paren(p) => arg(&p.expr, def),
        _ => quote!(::core::option::Option::None),
    }
}

fn args(layer: &Layer, def: &NetworkDef) -> TokenStream {
    let a = layer.args().into_iter().map(|e| arg(e, def));
    quote!(&[#(#a),*])
}

fn layer_rule(layer: &Layer) -> TokenStream {
    let ty = &layer.path;
    quote_spanned!(layer.path.span()=> <#ty as ::deriv::nn::Differentiable>::SIZE)
}

/// The checks of the sequential form.
pub fn sequential(def: &NetworkDef, layers: &[Layer]) -> (TokenStream, TokenStream) {
    let mut body = quote!(let __size = ::deriv::size::Size::UNKNOWN;);
    for layer in layers {
        let shown = layer.shown();
        let rule = layer_rule(layer);
        let a = args(layer, def);
        let msg = format!(
            "size mismatch: `{shown}` expects {{expected}} input {{unit}}, but it receives \
             {{got}} (the output size of {{origin}})"
        );
        let origin = format!("`{shown}`");
        let span = layer_span(layer);
        body.extend(quote_spanned! {span=>
            ::deriv::size::check(#rule, #a, __size, #msg);
        });
        body.extend(quote! {
            let __size = ::deriv::size::after(#rule, #a, __size, #origin);
        });
    }
    wrap(def, body)
}

/// The whole of a layer as the user wrote it (`Linear(128, 10)`), for spans.
fn layer_span(layer: &Layer) -> Span {
    let first = layer.path.span();
    match &layer.args {
        Some(a) => first.join(a.span()).unwrap_or(first),
        None => first,
    }
}

/// The checks of the class form.
pub fn class(def: &NetworkDef, fields: &[FieldDef], g: &Graph) -> (TokenStream, TokenStream) {
    let var = |v: ValueId| format_ident!("__size_{}", v);
    let mut body = TokenStream::new();
    for (id, node) in g.nodes.iter().enumerate() {
        if !g.live[id] {
            continue;
        }
        let v = var(id);
        let arg_var = |i: usize| var(node.args[i]);
        match &node.op {
            Op::Input => body.extend(quote!(let #v = ::deriv::size::Size::UNKNOWN;)),
            Op::Module(field) => {
                let Some(fd) = fields.iter().find(|f| f.name == *field) else {
                    continue;
                };
                let shown = fd.layer.shown();
                let rule = layer_rule(&fd.layer);
                let a = args(&fd.layer, def);
                let x = arg_var(0);
                let msg = format!(
                    "size mismatch: `{field}` is `{shown}`, which expects {{expected}} input \
                     features, but it receives {{got}} here (the output size of {{origin}})"
                );
                let origin = format!("`{field}` = `{shown}`");
                let span = node.span;
                body.extend(quote_spanned! {span=>
                    ::deriv::size::check(#rule, #a, #x, #msg);
                });
                body.extend(quote! {
                    let #v = ::deriv::size::after(#rule, #a, #x, #origin);
                });
            }
            Op::Call { ty, shown, .. } => {
                // The broadcasting built-ins, by type (a `let` may rename the node).
                let ty_path = ty.to_string().replace(' ', "");
                let arithmetic = ["Add", "Sub", "Mul", "Div", "Pow", "Maximum", "Minimum"]
                    .iter()
                    .any(|op| ty_path == format!("::deriv::ops::{op}"))
                    && node.args.len() == 2;
                if arithmetic {
                    let (a, b) = (arg_var(0), arg_var(1));
                    let msg = "size mismatch: the operands have {a} and {b} features (the \
                               output sizes of {origin_a} and {origin_b}), which do not broadcast";
                    let span = node.span;
                    body.extend(quote_spanned! {span=>
                        let #v = ::deriv::size::broadcast(#a, #b, #msg);
                    });
                } else {
                    let x = arg_var(0);
                    let origin = format!("`{shown}`");
                    body.extend(quote! {
                        let #v = ::deriv::size::after(
                            <#ty as ::deriv::ops::Op>::SIZE, &[], #x, #origin,
                        );
                    });
                }
            }
        }
    }
    wrap(def, body)
}

/// The checks as an item, and a statement for `new` (for generic networks).
fn wrap(def: &NetworkDef, body: TokenStream) -> (TokenStream, TokenStream) {
    let body = quote!({ #body });
    if def.generics.params.is_empty() {
        return (
            quote!(#[allow(unused_variables)] const _: () = #body;),
            TokenStream::new(),
        );
    }
    let name = &def.name;
    let (impl_g, ty_g, where_g) = def.generics.split_for_impl();
    (
        quote! {
            impl #impl_g #name #ty_g #where_g {
                #[doc(hidden)]
                #[allow(unused_variables)]
                const __DERIV_SIZES: () = #body;
            }
        },
        quote!(let () = Self::__DERIV_SIZES;),
    )
}
