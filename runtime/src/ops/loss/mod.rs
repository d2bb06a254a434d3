//! Loss functions: forward kernels, backward rules and tape nodes.
//!
//! The losses are written with tensor ops, so they run on whatever device
//! their inputs live on; the common case of the two classification losses
//! (BCE-with-logits, and cross-entropy over class indices, mean or sum, no
//! weights) has a fused CPU kernel (fused.rs) that every path takes. Each loss has one
//! "core" that computes the loss value, the input gradient, or both from shared
//! intermediates: the tape's forward asks for the value, the tape node and
//! [`crate::vjp`] for the gradient, and [`crate::nn::Loss::forward_backward`]
//! for both in one pass (cross-entropy: one softmax, gradient
//! `(softmax - onehot) / N` written into the softmax's own buffer).
//!
//! One file per family: regression.rs (mse, l1, huber, smooth_l1), kl_div.rs, bce.rs
//! (binary_cross_entropy, with and without logits), class.rs (class-index
//! targets: nll_loss and cross_entropy's index form), cross_entropy.rs
//! (class-probability targets and cross_entropy itself), options.rs (the
//! options types, re-exported by `nn`); the shared plumbing is here.

use crate::autograd::{is_grad_enabled, no_grad};
use crate::error::{Error, OrPanic, Result};
use crate::tensor::{DType, Tensor};

mod bce;
mod class;
mod cross_entropy;
mod fused;
mod kl_div;
mod options;
mod regression;

pub use bce::*;
pub use class::*;
pub use cross_entropy::*;
pub use fused::{bce_with_logits_into, cross_entropy_into};
pub use kl_div::*;
pub use options::*;
pub use regression::*;

// ---------------------------------------------------------------- shared plumbing

/// The incoming gradient of a loss: 1 (`forward_backward`) or a tensor of the
/// loss's shape.
#[derive(Clone, Copy)]
pub(crate) enum Seed<'a> {
    One,
    Times(&'a Tensor),
}

/// The shape of a loss with `reduction` whose unreduced form has `elem_shape`.
pub(super) fn loss_shape(reduction: Reduction, elem_shape: &[usize]) -> Vec<usize> {
    match reduction {
        Reduction::None => elem_shape.to_vec(),
        Reduction::Mean | Reduction::Sum => vec![],
    }
}

/// Fails unless `grad_out` has the loss's shape.
pub(super) fn check_grad_out(
    op: &'static str,
    grad_out: &Tensor,
    reduction: Reduction,
    elem_shape: &[usize],
) -> Result<()> {
    let want = loss_shape(reduction, elem_shape);
    if grad_out.shape() != want.as_slice() {
        return Err(Error::shape(
            op,
            format!(
                "grad_out must have the loss's shape {want:?} (reduction {reduction:?}), got {:?}",
                grad_out.shape()
            ),
        ));
    }
    Ok(())
}

/// Fails unless `t` is a float tensor.
pub(super) fn check_float(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::dtype(
            op,
            format!(
                "expected a float {what}, got {} of shape {:?}; convert with .to_dtype(DType::F32)",
                t.dtype(),
                t.shape()
            ),
        ))
    }
}

/// Fails unless input and target have the same shape (the losses do not broadcast).
pub(super) fn check_same_shape(op: &'static str, input: &Tensor, target: &Tensor) -> Result<()> {
    if input.shape() != target.shape() {
        return Err(Error::shape(
            op,
            format!(
                "target of shape {:?} must have the input's shape {:?}; reshape the target \
                 (e.g. .reshape(..) or .unsqueeze(..)) so the two match",
                target.shape(),
                input.shape()
            ),
        ));
    }
    Ok(())
}

/// Fails when a weight tensor would need a gradient: like PyTorch, the losses
/// are not differentiable with respect to their weights.
pub(super) fn check_weight_no_grad(op: &'static str, name: &str, w: Option<&Tensor>) -> Result<()> {
    if let Some(w) = w
        && w.requires_grad()
        && is_grad_enabled()
    {
        return Err(Error::Autograd(format!(
            "{op}: the loss is not differentiable with respect to `{name}`, which requires \
                 grad; pass `{name}.detach()` (as in PyTorch, this input cannot require grad)"
        )));
    }
    Ok(())
}

/// Fails unless `w` broadcasts to `shape` without growing it; returns it in `dtype`.
pub(super) fn broadcast_weight(
    op: &'static str,
    name: &str,
    w: Option<&Tensor>,
    input: &Tensor,
    dtype: DType,
) -> Result<Option<Tensor>> {
    let Some(w) = w else { return Ok(None) };
    let shape = input.shape();
    let fits = w.ndim() <= shape.len()
        && w.shape()
            .iter()
            .rev()
            .zip(shape.iter().rev())
            .all(|(&a, &b)| a == b || a == 1);
    if !fits {
        return Err(Error::shape(
            op,
            format!(
                "{name} of shape {:?} must broadcast to the input's shape {shape:?}",
                w.shape()
            ),
        ));
    }
    crate::ops::same_device(op, input, w)?;
    Ok(Some(w.detach().to_dtype(dtype)))
}

/// A gradient in its input's dtype (the math may have run in a promoted one).
pub(super) fn in_dtype(g: Tensor, dtype: DType) -> Tensor {
    if g.dtype() == dtype {
        g
    } else {
        g.to_dtype(dtype)
    }
}

/// `d *= seed * scale` in place (`d` is a fresh buffer this module owns).
pub(super) fn apply_seed(d: Tensor, seed: Seed, scale: f64) -> Tensor {
    match seed {
        Seed::One => {
            if scale != 1.0 {
                d.mul_(scale);
            }
        }
        Seed::Times(g) => {
            if scale != 1.0 {
                d.mul_(&(g * scale));
            } else {
                d.mul_(g);
            }
        }
    }
    d
}

/// The mean's `1/n` (1 for the other reductions).
pub(super) fn mean_scale(reduction: Reduction, n: usize) -> f64 {
    match reduction {
        Reduction::Mean => 1.0 / n as f64,
        _ => 1.0,
    }
}

/// Sums or averages an elementwise loss.
pub(super) fn reduce(l: Tensor, reduction: Reduction) -> Tensor {
    match reduction {
        Reduction::None => l,
        Reduction::Sum => l.sum(),
        Reduction::Mean => l.mean(),
    }
}

/// `log(1 + u)`, accurate for tiny `u` as well (Goldberg's trick: with
/// `w = 1 + u` rounded, `log(w)·u/(w - 1)` cancels the rounding; where `w`
/// rounds to 1, `u` itself). Composed from tensor ops so it runs on any device.
pub(super) fn log1p(u: &Tensor) -> Tensor {
    let w = u + 1.0;
    let wm1 = &w - 1.0;
    let r = w.log() * u / &wm1;
    Tensor::where_cond(&wm1.eq_scalar(0.0), u, &r)
}

/// `softplus(-z) = log(1 + e^-z) = -log σ(z)`, stable for any `z`:
/// `max(-z, 0) + log1p(e^-|z|)`.
pub(super) fn softplus_neg(z: &Tensor) -> Tensor {
    let e = (-&z.abs()).exp();
    (-z).relu() + log1p(&e)
}
