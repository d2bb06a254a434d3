//! The gradient rules, one function per op: given what the forward saved and
//! dL/d(output), the gradient of each input.
//!
//! The tape's nodes and the code `network!` generates at compile time call
//! these same functions, so the two ways to differentiate agree by
//! construction. `need` flags skip the work for inputs that need no gradient.

use crate::error::OrPanic;
use crate::tensor::Tensor;

pub use crate::ops::binary::pow_scalar_backward as pow_scalar;
pub use crate::ops::elementwise::{
    div_backward as div, exp_backward as exp, log_backward as log, mul_backward as mul,
    sqrt_backward as sqrt,
};
pub use crate::ops::matmul::matmul_backward as matmul;

pub use crate::ops::activation::{
    relu_backward as relu, sigmoid_backward as sigmoid, tanh_backward as tanh,
};
pub use crate::ops::softmax::{log_softmax_backward as log_softmax, softmax_backward as softmax};

/// Sums `g` down to `shape`, which it was broadcast from: the rule shared by
/// every broadcasting op.
pub fn sum_to(g: &Tensor, shape: &[usize]) -> Tensor {
    crate::ops::reduce::sum_to(g, shape)
}

/// `a + b` with broadcasting: each side gets `g` summed to its shape.
pub fn add(g: &Tensor, a_shape: &[usize], b_shape: &[usize]) -> (Tensor, Tensor) {
    (sum_to(g, a_shape), sum_to(g, b_shape))
}

/// `a - b` with broadcasting.
pub fn sub(g: &Tensor, a_shape: &[usize], b_shape: &[usize]) -> (Tensor, Tensor) {
    (sum_to(g, a_shape), -&sum_to(g, b_shape))
}

/// `-x`.
pub fn neg(g: &Tensor) -> Tensor {
    -g
}

/// Any reshape (`reshape`, `view`, `flatten`, `squeeze`, `unsqueeze`): back to the input shape.
pub fn reshape(g: &Tensor, input_shape: &[usize]) -> Tensor {
    g.reshape(input_shape)
}

/// `transpose(d0, d1)`: the same swap.
pub fn transpose(g: &Tensor, d0: isize, d1: isize) -> Tensor {
    g.transpose(d0, d1)
}

/// A sum over `dims` (empty: all) of an input of `input_shape`: `g` broadcast
/// back (`keepdim` does not change the rule: the kept shape is rebuilt from `dims`).
pub fn sum(g: &Tensor, input_shape: &[usize], dims: &[isize], keepdim: bool) -> Tensor {
    let _ = keepdim;
    let keep = crate::ops::reduce::reduced_keep_shape(input_shape, dims);
    crate::ops::reduce::sum_backward(g, input_shape, &keep, 1.0)
}

/// A mean over `dims` (empty: all): the sum's rule scaled by 1/count.
pub fn mean(g: &Tensor, input_shape: &[usize], dims: &[isize], keepdim: bool) -> Tensor {
    let _ = keepdim;
    let keep = crate::ops::reduce::reduced_keep_shape(input_shape, dims);
    let n = crate::tensor::checked_numel("mean", input_shape).or_panic();
    // `keep` divides the input's dims, so its count fits too.
    let count = n / keep.iter().product::<usize>().max(1);
    crate::ops::reduce::sum_backward(g, input_shape, &keep, 1.0 / count as f64)
}

/// `y = x·Wᵀ + b` (a Linear layer): returns (dx if needed, dW, db), by the
/// Linear op's own rule.
pub fn linear(
    g: &Tensor,
    x: &Tensor,
    w: &Tensor,
    need_x: bool,
) -> (Option<Tensor>, Tensor, Tensor) {
    use crate::autograd::{GradSlot, Op};
    let saved = (Some(x.clone()), Some(w.clone()));
    let (mut dx, mut dw, mut db) = (None, None, None);
    crate::ops::Linear.backward(
        &saved,
        g,
        &mut [
            GradSlot::new(&mut dx, need_x),
            GradSlot::new(&mut dw, true),
            GradSlot::new(&mut db, true),
        ],
    );
    (dx, dw.expect("computed"), db.expect("computed"))
}

/// Dropout with the kept-and-scaled mask it applied: `g·mask`.
pub fn dropout(mask: &Tensor, g: &Tensor) -> Tensor {
    g * mask
}

// ---------------------------------------------------------------- losses
//
// `grad_out` has the loss's shape (0-d for the mean and the sum). The tape's
// loss nodes and `nn::Loss::backward` call these same kernels.

pub use crate::ops::loss::{
    binary_cross_entropy_backward as binary_cross_entropy,
    binary_cross_entropy_target_backward as binary_cross_entropy_target,
    binary_cross_entropy_with_logits_backward as binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_target_backward as binary_cross_entropy_with_logits_target,
    cross_entropy_backward as cross_entropy,
    cross_entropy_log_probs_backward as cross_entropy_log_probs,
    cross_entropy_target_backward as cross_entropy_target, huber_loss_backward as huber_loss,
    kl_div_backward as kl_div, l1_loss_backward as l1_loss, mse_loss_backward as mse_loss,
    nll_loss_backward as nll_loss, smooth_l1_loss_backward as smooth_l1_loss,
};

// ----- allocation-free loss rules (value and gradient into buffers)

pub use crate::ops::loss::{bce_with_logits_into, cross_entropy_into};
