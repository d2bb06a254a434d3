//! The tensor runtime of `deriv`: N-dimensional tensors on a [`Device`], CPU
//! kernels (faer for matmul, rayon for large elementwise work), and a dynamic
//! autograd tape with PyTorch's semantics.
//!
//! Most users depend on the `deriv` facade crate, which re-exports all of this.
//!
//! ```
//! use deriv_runtime::prelude::*;
//! let x = tensor![[1., 2.], [3., 4.]].requires_grad_(true);
//! let y = x.matmul(&x).relu().mean();
//! y.backward();
//! assert_eq!(x.grad().unwrap().shape(), &[2, 2]);
//! assert_eq!(y.grad_fn(), Some("MeanBackward"));
//! ```

#![warn(missing_docs)]

pub mod autograd;
pub mod backend;
pub mod data;
mod device;
pub mod distributed;
mod error;
#[cfg(feature = "ndarray")]
mod interop;
pub mod io;
pub mod metrics;
/// The `mpi` crate (rsmpi) this build runs on (the `mpi` feature),
/// re-exported so a program can also use MPI directly, on the same library.
#[cfg(feature = "mpi")]
pub use mpi;
/// The `ndarray` crate this build converts to and from (the `ndarray` feature),
/// re-exported so callers use the matching version.
#[cfg(feature = "ndarray")]
pub use ndarray;
pub mod nn;
pub mod ops;
pub mod optim;
mod random;
pub mod size;
mod tensor;
#[cfg(test)]
mod test_util;
pub mod train;
#[cfg(test)]
mod unsafe_paths;
pub mod vjp;

pub use autograd::{
    gradcheck, gradcheck_opts, is_grad_enabled, no_grad, set_grad_enabled, GradcheckOptions,
    GradcheckReport, NoGradGuard,
};
pub use data::datasets;
pub use device::Device;
pub use error::{Error, Result};
pub use ops::activation::{relu_backward, sigmoid_backward, tanh_backward};
pub use ops::elementwise::Operand;
pub use ops::index::{DimIndex, Ellipsis, SliceRange, TensorIndex, TensorIndexer};
pub use ops::reduce::Dims;
pub use ops::shape::ShapeSpec;
pub use random::{manual_seed, with_global_generator, with_thread_generator, Generator};
pub use tensor::{DType, Element, Float, Math, Tensor, TensorLiteral, TensorOptions};

/// Everything a model script needs: `use deriv::prelude::*;` brings the
/// tensor types, the traits whose methods models use, the common layers,
/// losses and optimizers (as `import torch.nn as nn` would), and
/// [`Ellipsis`] for [`Tensor::i`]. The `deriv` facade's prelude adds the
/// `network!` macro and `#[derive(Module)]`.
pub mod prelude {
    pub use crate::nn::{
        AdaptiveAvgPool2d, AvgPool2d, BCELoss, BCEWithLogitsLoss, BatchNorm1d, BatchNorm2d, Conv1d,
        Conv2d, CrossEntropyLoss, Differentiable, Dropout, Embedding, Flatten, Forward, GroupNorm,
        HuberLoss, Identity, KLDivLoss, L1Loss, LayerNorm, Linear, LogSoftmax, Loss, MSELoss,
        MaxPool2d, Module, NLLLoss, ReLU, Sequential, Sigmoid, SmoothL1Loss, Softmax, Tanh,
    };
    pub use crate::optim::{Adagrad, Adam, AdamW, Optimizer, RMSprop, SGD};
    pub use crate::tensor;
    pub use crate::{
        manual_seed, no_grad, DType, Device, Ellipsis, Generator, NoGradGuard, Tensor,
        TensorOptions,
    };
}
