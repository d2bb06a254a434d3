//! `network!`: a model's forward body in, the model with a forward pass on
//! the tape and a backward pass derived at compile time out.
//!
//! parse (DSL -> AST) -> ir (AST -> SSA; a call is an op type found by name)
//! -> grad (activity, `Saved`, the reverse sweep calling each op's own
//! backward) -> codegen (tokens, and the compile-time size checks).

mod codegen;
mod grad;
mod ir;
mod parse;
mod sizes;

use proc_macro2::TokenStream;
use quote::quote;

use crate::errors::Errors;
use parse::{DefBody, Input, NetworkDef};

/// Expands one `network! { ... }` invocation (one or more definitions).
pub fn expand(tokens: TokenStream) -> TokenStream {
    let input: Input = match syn::parse2(tokens) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    if input.defs.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "`network!` expects a definition, as in `network! { pub struct Mlp = Linear(2, 16) \
             -> ReLU -> Linear(16, 1); }`",
        )
        .to_compile_error();
    }
    input.defs.iter().map(definition).collect()
}

fn definition(def: &NetworkDef) -> TokenStream {
    let mut errs = Errors::default();
    check_generics(&def.generics, &mut errs);
    let code = match &def.body {
        DefBody::Sequential { layers } => codegen::sequential(def, layers),
        DefBody::Class { fields, forward } => {
            let mut seen: Vec<String> = Vec::new();
            for f in fields {
                let n = f.name.to_string();
                if seen.contains(&n) {
                    errs.spanned(&f.name, format!("the field `{n}` is declared twice"));
                }
                seen.push(n);
            }
            match forward {
                None => {
                    errs.spanned(
                        &def.name,
                        format!(
                            "missing `fn forward`: after its fields, `{}` has to say how they \
                             compute the output, as in `fn forward(x) {{ let h = relu(fc1(x)); \
                             fc2(h) }}`",
                            def.name
                        ),
                    );
                    codegen::class_stub(def, fields, None)
                }
                Some(f) => {
                    if f.name != "forward" {
                        errs.spanned(
                            &f.name,
                            format!("this function must be called `forward`, not `{}`", f.name),
                        );
                    }
                    let body = parse::body(&f.block, &mut errs);
                    match ir::lower(fields, &def.generics, f, &body, &mut errs) {
                        Some(graph) => {
                            let plan = grad::plan(&graph);
                            codegen::class(def, fields, &graph, &plan)
                        }
                        None => codegen::class_stub(def, fields, Some(f)),
                    }
                }
            }
        }
    };
    let errors = errs.to_compile_errors();
    quote!(#errors #code)
}

/// Only const generic parameters (hyper-parameters with defaults) are supported.
fn check_generics(generics: &syn::Generics, errs: &mut Errors) {
    for p in &generics.params {
        match p {
            syn::GenericParam::Const(_) => {}
            other => errs.spanned(
                other,
                "only const generic parameters are supported in `network!`, as in \
                 `struct Mlp<const H: usize = 16> = Linear(2, H) -> ReLU -> Linear(H, 1);`",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    /// `DERIV_EXPAND='struct ...' cargo test -p deriv-macros print_expansion -- --nocapture`
    /// prints an expansion (pipe it through rustfmt to read it).
    #[test]
    fn print_expansion() {
        if let Ok(src) = std::env::var("DERIV_EXPAND") {
            let tokens: proc_macro2::TokenStream = src.parse().expect("valid tokens");
            println!("{}", super::expand(tokens));
        }
    }
}
