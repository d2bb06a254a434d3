//! The optimizers' fused CUDA kernels as functions on tensors (the `cuda`
//! feature): one kernel pass updates an f32 parameter on the GPU and its
//! state in place, by the same rules as the CPU update of
//! [`SGD`](super::SGD), [`Adam`](super::Adam), [`RMSprop`](super::RMSprop)
//! and [`Adagrad`](super::Adagrad), which call them for CUDA parameters.
//! Every tensor must be a contiguous f32 tensor of the parameter's size on
//! the parameter's device.

use crate::backend::cuda;
pub use crate::backend::step::{AdagradParams, AdamParams, RmspropParams, SgdParams};
use crate::tensor::Tensor;

/// One fused SGD step: `momentum_buf` (needed when momentum ≠ 0) is set to
/// the gradient on the first step (`o.first`), as PyTorch does.
#[track_caller]
pub fn sgd_step(param: &Tensor, grad: &Tensor, momentum_buf: Option<&Tensor>, o: &SgdParams) {
    cuda::sgd_step(
        param.array(),
        grad.array(),
        momentum_buf.map(Tensor::array),
        o,
    );
}

/// One fused Adam/AdamW step (`o.step` counts from 1): updates `param`,
/// `exp_avg`, `exp_avg_sq` and, with amsgrad, `max_exp_avg_sq`.
#[track_caller]
pub fn adam_step(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    max_exp_avg_sq: Option<&Tensor>,
    o: &AdamParams,
) {
    cuda::adam_step(
        param.array(),
        grad.array(),
        exp_avg.array(),
        exp_avg_sq.array(),
        max_exp_avg_sq.map(Tensor::array),
        o,
    );
}

/// One fused RMSprop step: updates `param`, `square_avg`, and when used
/// `momentum_buf` and `grad_avg` (centered).
#[track_caller]
pub fn rmsprop_step(
    param: &Tensor,
    grad: &Tensor,
    square_avg: &Tensor,
    momentum_buf: Option<&Tensor>,
    grad_avg: Option<&Tensor>,
    o: &RmspropParams,
) {
    cuda::rmsprop_step(
        param.array(),
        grad.array(),
        square_avg.array(),
        momentum_buf.map(Tensor::array),
        grad_avg.map(Tensor::array),
        o,
    );
}

/// One fused Adagrad step (`o.step` counts from 1): updates `param` and
/// `state_sum`.
#[track_caller]
pub fn adagrad_step(param: &Tensor, grad: &Tensor, state_sum: &Tensor, o: &AdagradParams) {
    cuda::adagrad_step(param.array(), grad.array(), state_sum.array(), o);
}
