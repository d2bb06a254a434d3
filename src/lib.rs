//! # deriv
//!
//! A Rust neural-network framework with PyTorch's tensors and autograd, and
//! (with the [`network!`] macro and `#[derive(Module)]`) backward passes
//! derived at compile time.
//!
//! This facade re-exports the tensor runtime ([`deriv_runtime`]) and the
//! macros ([`deriv_macros`]); `use deriv::prelude::*;` brings in what a model
//! script needs.
//!
//! ```
//! use deriv::prelude::*;
//!
//! // Example 0 of the PyTorch tutorials: minimise (x1 - 3)² + (x2 + 2)².
//! let x1 = Tensor::scalar(0.0f32).requires_grad_(true);
//! let x2 = Tensor::scalar(0.0f32).requires_grad_(true);
//! for _ in 0..100 {
//!     let f = (&x1 - 3.0).pow(2.0) + (&x2 + 2.0).pow(2.0);
//!     f.backward();
//!     no_grad(|| {
//!         x1.sub_(&(x1.grad().unwrap() * 0.1));
//!         x2.sub_(&(x2.grad().unwrap() * 0.1));
//!     });
//!     x1.grad().unwrap().zero_();
//!     x2.grad().unwrap().zero_();
//! }
//! assert!((x1.item() - 3.0).abs() < 1e-3 && (x2.item() + 2.0).abs() < 1e-3);
//! ```

pub use deriv_runtime::*;

/// Declares a model whose backward pass is derived at compile time (see
/// docs/network-dsl.md).
///
/// The sequential form:
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
/// The class form:
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
pub use deriv_macros::network;

/// Neural-network building blocks (the runtime's `nn`), and
/// `#[derive(Module)]`, which shares the [`Module`](nn::Module) trait's name.
pub mod nn {
    /// Derives [`Module`](trait@Module) (and, with `#[module(sequential)]`, `Forward` and
    /// `Differentiable`) for a struct of layers:
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
    pub use deriv_macros::Module;
    pub use deriv_runtime::nn::*;
}

#[doc(inline)]
pub use deriv_runtime::tensor;

/// Everything a model script needs: `use deriv::prelude::*;`.
///
/// The runtime's prelude (tensors, [`DType`], [`Device`], [`no_grad`], the
/// `Module`/`Forward`/`Differentiable`/`Loss`/`Optimizer` traits, the common
/// layers, losses and optimizers, [`Ellipsis`]) plus the [`network!`]
/// macro and `#[derive(Module)]`.
///
/// ```
/// use deriv::prelude::*;
///
/// network! {
///     pub struct Mlp = Linear(4, 8) -> ReLU -> Linear(8, 3);
/// }
///
/// let model = Mlp::default();
/// let mut optimizer = Adam::new(model.parameters(), 1e-3);
/// let loss = CrossEntropyLoss::new().forward(&model.forward(&Tensor::randn([5, 4])), &tensor![0, 1, 2, 0, 1]);
/// optimizer.zero_grad();
/// loss.backward();
/// optimizer.step();
/// ```
pub mod prelude {
    pub use deriv_macros::{network, Module};
    pub use deriv_runtime::prelude::*;
}

/// The README's code, compiled and run as a doctest so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
