//! `#[derive(Module)]`: parameter visiting with dotted names, `train`/`eval`
//! propagation and, with `#[module(sequential)]`, `Forward` and
//! `Differentiable` chaining the fields. One codegen function per item shape
//! (burn-derive's split), errors as `syn::Error`s at the user's tokens.

use proc_macro2::{TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Fields, Ident, Token, Type};

use crate::errors::{closest, Errors};

/// What a field is to the module.
enum Role {
    /// A sub-module, visited under the field's name.
    Sub,
    /// A `Tensor` parameter.
    Param,
    /// An `Option<Tensor>` parameter.
    OptionalParam,
    /// `#[module(skip)]`: plain data.
    Skip,
    /// `#[module(buffer)]`: a `Tensor` saved and moved with the model but not
    /// trained (PyTorch's `register_buffer`).
    Buffer,
}

struct FieldInfo<'a> {
    ident: &'a Ident,
    ty: &'a Type,
    role: Role,
}

/// The derive's entry point.
pub fn derive(input: &DeriveInput) -> TokenStream {
    let mut errs = Errors::default();
    let sequential = struct_attrs(&input.attrs, &mut errs);
    let code = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => {
                let fields: Vec<FieldInfo> = named
                    .named
                    .iter()
                    .filter_map(|f| {
                        let ident = f.ident.as_ref()?;
                        let role = match field_attrs(&f.attrs, &mut errs) {
                            Some(role) => role,
                            None if is_tensor(&f.ty) => Role::Param,
                            None if option_of_tensor(&f.ty) => Role::OptionalParam,
                            None => Role::Sub,
                        };
                        Some(FieldInfo {
                            ident,
                            ty: &f.ty,
                            role,
                        })
                    })
                    .collect();
                let mut code = module_impl(input, &fields);
                if sequential {
                    code.extend(sequential_impls(input, &fields, &mut errs));
                }
                code
            }
            Fields::Unit => module_impl(input, &[]),
            Fields::Unnamed(unnamed) => {
                errs.spanned(
                    unnamed,
                    "#[derive(Module)] needs a struct with named fields (their names are the \
                     parameters' paths, `fc1.weight`); for a chain of unnamed layers, use \
                     `network! { struct Mlp = Linear(2, 16) -> ReLU -> Linear(16, 1); }`",
                );
                TokenStream::new()
            }
        },
        Data::Enum(e) => {
            errs.spanned(
                e.enum_token,
                "#[derive(Module)] supports structs with named fields, not enums: a module's \
                 parameters have to be the same on every call",
            );
            TokenStream::new()
        }
        Data::Union(u) => {
            errs.spanned(
                u.union_token,
                "#[derive(Module)] supports structs with named fields, not unions",
            );
            TokenStream::new()
        }
    };
    let errors = errs.to_compile_errors();
    quote!(#errors #code)
}

const ATTR_HELP: &str = "expected `#[module(sequential)]` on the struct, or `#[module(skip)]` \
                         or `#[module(buffer)]` on a field";

/// `#[module(sequential)]` on the struct.
fn struct_attrs(attrs: &[syn::Attribute], errs: &mut Errors) -> bool {
    let mut sequential = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("module")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("sequential") {
                sequential = true;
            } else if meta.path.is_ident("skip") {
                errs.push(meta.error(
                    "`skip` goes on a field (`#[module(skip)] field: T`), not on the struct",
                ));
            } else {
                unknown_arg(&meta, errs)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            errs.push(e);
        }
    }
    sequential
}

/// `#[module(skip)]` on a field.
fn field_attrs(attrs: &[syn::Attribute], errs: &mut Errors) -> Option<Role> {
    let mut role = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("module")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                role = Some(Role::Skip);
            } else if meta.path.is_ident("buffer") {
                role = Some(Role::Buffer);
            } else if meta.path.is_ident("sequential") {
                errs.push(meta.error(
                    "`sequential` goes on the struct (`#[module(sequential)]`), not on a field",
                ));
            } else {
                unknown_arg(&meta, errs)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            errs.push(e);
        }
    }
    role
}

/// Reports an unknown argument and skips its value, so the others are read too.
fn unknown_arg(meta: &syn::meta::ParseNestedMeta, errs: &mut Errors) -> syn::Result<()> {
    let name = meta.path.to_token_stream().to_string().replace(' ', "");
    let hint = closest(&name, ["sequential", "skip", "buffer"].into_iter())
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default();
    errs.push(meta.error(format!(
        "unknown module attribute `{name}`{hint}: {ATTR_HELP}"
    )));
    if meta.input.peek(Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _content;
        syn::parenthesized!(_content in meta.input);
    }
    Ok(())
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}

fn is_tensor(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|s| s.ident == "Tensor" && s.arguments.is_none())
}

fn option_of_tensor(ty: &Type) -> bool {
    let Some(seg) = last_segment(ty) else {
        return false;
    };
    if seg.ident != "Option" {
        return false;
    }
    match &seg.arguments {
        syn::PathArguments::AngleBracketed(a) => {
            a.args.len() == 1
                && matches!(a.args.first(), Some(syn::GenericArgument::Type(t)) if is_tensor(t))
        }
        _ => false,
    }
}

/// Whether `tokens` mention one of `params` (a field whose type is generic).
fn mentions(tokens: TokenStream, params: &[Ident]) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => params.contains(&i),
        TokenTree::Group(g) => mentions(g.stream(), params),
        _ => false,
    })
}

/// The impl's where clause: the written one, plus `Ty: bound` for every
/// field type that mentions a type parameter.
fn where_clause<'a>(
    input: &DeriveInput,
    types: impl Iterator<Item = &'a Type>,
    bound: TokenStream,
) -> TokenStream {
    let params: Vec<Ident> = input
        .generics
        .type_params()
        .map(|p| p.ident.clone())
        .collect();
    let extra: Vec<TokenStream> = types
        .filter(|t| mentions(t.to_token_stream(), &params))
        .map(|t| quote!(#t: #bound))
        .collect();
    let written = input
        .generics
        .where_clause
        .as_ref()
        .map(|w| {
            w.predicates
                .iter()
                .map(|p| p.to_token_stream())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if written.is_empty() && extra.is_empty() {
        TokenStream::new()
    } else {
        quote!(where #(#written,)* #(#extra,)*)
    }
}

/// `impl Module`: both visitors and `set_training`.
fn module_impl(input: &DeriveInput, fields: &[FieldInfo]) -> TokenStream {
    let name = &input.ident;
    let (impl_g, ty_g, _) = input.generics.split_for_impl();
    let subs = || fields.iter().filter(|f| matches!(f.role, Role::Sub));
    let where_c = where_clause(input, subs().map(|f| f.ty), quote!(::deriv::nn::Module));
    let mut visit = TokenStream::new();
    let mut visit_mut = TokenStream::new();
    let mut buffers = TokenStream::new();
    let mut buffers_mut = TokenStream::new();
    let mut train = TokenStream::new();
    let mut modes = TokenStream::new();
    for f in fields {
        let ident = f.ident;
        let key = ident.unraw().to_string();
        let path = quote!(&::deriv::nn::join_name(prefix, #key));
        match f.role {
            Role::Sub => {
                visit
                    .extend(quote!(::deriv::nn::Module::visit_parameters(&self.#ident, #path, f);));
                visit_mut.extend(
                    quote!(::deriv::nn::Module::visit_parameters_mut(&mut self.#ident, #path, f);),
                );
                buffers.extend(quote!(::deriv::nn::Module::visit_buffers(&self.#ident, #path, f);));
                buffers_mut.extend(
                    quote!(::deriv::nn::Module::visit_buffers_mut(&mut self.#ident, #path, f);),
                );
                train
                    .extend(quote!(::deriv::nn::Module::set_training(&mut self.#ident, training);));
                modes.extend(quote!(::deriv::nn::Module::visit_training(&self.#ident, f);));
            }
            Role::Buffer => {
                buffers.extend(quote!(f(#path, &self.#ident);));
                buffers_mut.extend(quote!(f(#path, &mut self.#ident);));
            }
            Role::Param => {
                visit.extend(quote!(f(#path, &self.#ident);));
                visit_mut.extend(quote!(f(#path, &mut self.#ident);));
            }
            Role::OptionalParam => {
                visit.extend(quote! {
                    if let ::core::option::Option::Some(t) = &self.#ident { f(#path, t); }
                });
                visit_mut.extend(quote! {
                    if let ::core::option::Option::Some(t) = &mut self.#ident { f(#path, t); }
                });
            }
            Role::Skip => {}
        }
    }
    let (prefix, f) = if visit.is_empty() {
        (quote!(_prefix), quote!(_f))
    } else {
        (quote!(prefix), quote!(f))
    };
    let (buf_prefix, buf_f) = if buffers.is_empty() {
        (quote!(_prefix), quote!(_f))
    } else {
        (quote!(prefix), quote!(f))
    };
    let modes_f = if modes.is_empty() {
        quote!(_f)
    } else {
        quote!(f)
    };
    let training = if train.is_empty() {
        quote!(_training)
    } else {
        quote!(training)
    };
    quote! {

        impl #impl_g ::deriv::nn::Module for #name #ty_g #where_c {
            fn visit_parameters(&self, #prefix: &str, #f: &mut dyn FnMut(&str, &::deriv::Tensor)) {
                #visit
            }
            fn visit_parameters_mut(&mut self, #prefix: &str, #f: &mut dyn FnMut(&str, &mut ::deriv::Tensor)) {
                #visit_mut
            }
            fn visit_buffers(&self, #buf_prefix: &str, #buf_f: &mut dyn FnMut(&str, &::deriv::Tensor)) {
                #buffers
            }
            fn visit_buffers_mut(&mut self, #buf_prefix: &str, #buf_f: &mut dyn FnMut(&str, &mut ::deriv::Tensor)) {
                #buffers_mut
            }
            fn set_training(&mut self, #training: bool) {
                #train
            }
            fn visit_training(&self, #modes_f: &mut dyn FnMut(bool)) {
                #modes
            }
        }
    }
}

/// `#[module(sequential)]`: `Forward` and `Differentiable` chaining the
/// sub-module fields in declaration order.
fn sequential_impls(input: &DeriveInput, fields: &[FieldInfo], errs: &mut Errors) -> TokenStream {
    let mut ok = true;
    for f in fields {
        if matches!(f.role, Role::Param | Role::OptionalParam) {
            errs.spanned(
                f.ident,
                format!(
                    "#[module(sequential)] applies the fields in order as layers, but `{}` is \
                     a parameter tensor; wrap it in a layer type, or mark it #[module(skip)]",
                    f.ident
                ),
            );
            ok = false;
        }
    }
    let layers: Vec<&FieldInfo> = fields
        .iter()
        .filter(|f| matches!(f.role, Role::Sub))
        .collect();
    if layers.is_empty() {
        errs.spanned(
            &input.ident,
            "#[module(sequential)] needs at least one layer field",
        );
        ok = false;
    }
    if !ok {
        return TokenStream::new();
    }
    let name = &input.ident;
    let (impl_g, ty_g, _) = input.generics.split_for_impl();
    let where_c = where_clause(
        input,
        layers.iter().map(|f| f.ty),
        quote!(::deriv::nn::Differentiable),
    );
    let members: Vec<&Ident> = layers.iter().map(|f| f.ident).collect();
    let types: Vec<&Type> = layers.iter().map(|f| f.ty).collect();
    let crate::chain::Chain {
        forward,
        forward_train_lets,
        last,
        saved: ss,
        backward_steps: steps,
        forward_ws,
        backward_ws,
    } = crate::chain::chain(&members);
    // `TrainStep` where every layer has it (the `for<'a>` form is checked
    // where the impl is used, so a layer without it leaves the type without
    // a buffer-reusing step instead of failing to compile).
    let mut ts_preds: Vec<TokenStream> = input
        .generics
        .where_clause
        .as_ref()
        .map(|w| w.predicates.iter().map(|p| p.to_token_stream()).collect())
        .unwrap_or_default();
    let mut seen: Vec<String> = Vec::new();
    for t in &types {
        let key = t.to_token_stream().to_string();
        if !seen.contains(&key) {
            ts_preds.push(quote!(for<'__a> #t: ::deriv::nn::TrainStep));
            seen.push(key);
        }
    }
    quote! {

        impl #impl_g ::deriv::nn::Forward for #name #ty_g #where_c {
            fn forward(&self, x: &::deriv::Tensor) -> ::deriv::Tensor {
                #forward
            }
        }


        impl #impl_g ::deriv::nn::Differentiable for #name #ty_g #where_c {
            type Saved = (#(<#types as ::deriv::nn::Differentiable>::Saved,)*);

            fn forward_train(&self, x: &::deriv::Tensor) -> (::deriv::Tensor, Self::Saved) {
                ::deriv::no_grad(|| {
                    #forward_train_lets
                    (#last, (#(#ss,)*))
                })
            }

            fn backward(
                &self,
                saved: Self::Saved,
                grad_out: &::deriv::Tensor,
                input_grad: bool,
            ) -> ::core::option::Option<::deriv::Tensor> {
                ::deriv::no_grad(|| {
                    let (#(#ss,)*) = saved;
                    #steps
                })
            }
        }

        #[allow(clippy::type_complexity)]
        impl #impl_g ::deriv::nn::TrainStep for #name #ty_g where #(#ts_preds),* {
            type Workspace = (#(<#types as ::deriv::nn::TrainStep>::Workspace,)*);

            fn forward_train_ws<'__w>(
                &self,
                x: &::deriv::Tensor,
                ws: &'__w mut Self::Workspace,
            ) -> &'__w ::deriv::Tensor {
                let _guard = ::deriv::NoGradGuard::new();
                #forward_ws
            }

            fn backward_ws<'__w>(
                &self,
                ws: &'__w mut Self::Workspace,
                grad_out: &::deriv::Tensor,
                input_grad: bool,
            ) -> ::core::option::Option<&'__w ::deriv::Tensor> {
                let _guard = ::deriv::NoGradGuard::new();
                #backward_ws
            }
        }
    }
}
