//! Procedural macros of `deriv`: `#[derive(Module)]` and `network!`, which
//! write a model's parameter plumbing and its backward pass at compile time.
//!
//! Use them through the facade: `deriv::network!` and `deriv::nn::Module`
//! (the derive shares the trait's name). The generated code refers to
//! `::deriv::...`, so a crate using them depends on `deriv`.
//! docs/network-dsl.md describes the language, the rule table and the checks.

mod chain;
mod errors;
mod module;
mod network;

use proc_macro::TokenStream;

/// Derives `deriv::nn::Module` for a struct with named fields.
///
/// Each field is a sub-module (its parameters are visited under the field's
/// name, `encoder.fc1.weight`), a parameter when its type is `Tensor` (or
/// `Option<Tensor>`), or plain data marked `#[module(skip)]`. `train()` /
/// `eval()` reach every sub-module.
///
/// With `#[module(sequential)]` on the struct, the fields are layers applied
/// in declaration order: it also derives `Forward` and `Differentiable`
/// (`Saved` is the tuple of the fields' `Saved`, and `backward` runs through
/// them in reverse).
///
/// The example is on the facade's re-export, `deriv::nn::Module`, where it
/// runs as a doctest (here it would need `deriv` built a second time, for the
/// host, in every `cargo test`).
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    module::derive(&input).into()
}

/// Declares a model whose backward pass is derived at compile time.
///
/// The sequential form chains layers (`Name(args)` is built as
/// `Name::new(args, device)`, a bare `Name` as `Name::new(device)`); the
/// fields are numbered as in PyTorch's `nn.Sequential`.
///
/// The class form names its layers and says how they compute the output; the
/// macro generates `forward` (on the tape), `forward_train` (saving only what
/// backward needs, in a generated `NetSaved`) and `backward`. Examples of
/// both forms are on the facade's re-export, `deriv::network!`, where they
/// run as doctests.
///
/// Sizes that do not chain (`Linear(784, 256) -> ReLU -> Linear(128, 10)`),
/// unknown functions, methods and names, and constructs outside the language
/// (loops, `if`, closures, ...) are compile errors at the user's tokens.
#[proc_macro]
pub fn network(input: TokenStream) -> TokenStream {
    network::expand(input.into()).into()
}
