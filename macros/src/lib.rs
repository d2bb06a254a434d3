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
/// ```
/// use deriv::nn::{Differentiable, Forward, Linear, Module, ReLU};
/// use deriv::{Device, Tensor};
///
/// #[derive(Module)]
/// #[module(sequential)]
/// struct Mlp {
///     fc1: Linear,
///     act: ReLU,
///     fc2: Linear,
/// }
///
/// let dev = Device::Cpu;
/// let mlp = Mlp { fc1: Linear::new(2, 8, &dev), act: ReLU, fc2: Linear::new(8, 1, &dev) };
/// assert_eq!(mlp.named_parameters()[0].0, "fc1.weight");
/// let x = Tensor::randn([4, 2]);
/// let (y, saved) = mlp.forward_train(&x);
/// let dx = mlp.backward(saved, &Tensor::ones([4, 1]), true);
/// assert_eq!(dx.unwrap().shape(), &[4, 2]);
/// assert!(mlp.fc1.weight.grad().is_some());
/// # let _ = (y, mlp.forward(&x));
/// ```
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    module::derive(&input).into()
}

/// Declares a model whose backward pass is derived at compile time.
///
/// The sequential form chains layers (`Name(args)` is built as
/// `Name::new(args, device)`, a bare `Name` as `Name::new(device)`); the
/// fields are numbered as in PyTorch's `nn.Sequential`:
///
/// ```
/// use deriv::nn::{Linear, Module, ReLU};
/// use deriv::{network, Tensor};
///
/// network! {
///     /// A small MLP.
///     pub struct Mlp<const H: usize = 16> = Linear(2, H) -> ReLU -> Linear(H, 1);
/// }
///
/// let mlp = Mlp::<16>::default();
/// assert_eq!(mlp.named_parameters()[2].0, "2.weight");
/// assert_eq!(mlp.forward(&Tensor::randn([5, 2])).shape(), &[5, 1]);
/// ```
///
/// The class form names its layers and says how they compute the output; the
/// macro generates `forward` (on the tape), `forward_train` (saving only what
/// backward needs, in a generated `NetSaved`) and `backward`:
///
/// ```
/// use deriv::nn::{Linear, Module};
/// use deriv::{network, Tensor};
///
/// network! {
///     pub struct Net {
///         fc1: Linear(4, 8),
///         fc2: Linear(8, 3),
///     }
///     fn forward(x) {
///         let h = relu(fc1(x));
///         log_softmax(fc2(h), 1)
///     }
/// }
///
/// let net = Net::default();
/// let x = Tensor::randn([2, 4]);
/// let (y, saved) = net.forward_train(&x);
/// let dx = net.backward(saved, &Tensor::ones([2, 3]), true);
/// assert_eq!((y.shape(), dx.unwrap().shape()), (&[2usize, 3][..], &[2usize, 4][..]));
/// assert!(net.fc1.weight.grad().is_some());
/// ```
///
/// Sizes that do not chain (`Linear(784, 256) -> ReLU -> Linear(128, 10)`),
/// unknown functions, methods and names, and constructs outside the language
/// (loops, `if`, closures, ...) are compile errors at the user's tokens.
#[proc_macro]
pub fn network(input: TokenStream) -> TokenStream {
    network::expand(input.into()).into()
}
