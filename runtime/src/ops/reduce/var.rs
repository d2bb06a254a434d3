//! `var` and `std` over chosen dims with a `correction` (1, Bessel's, by
//! default, as PyTorch), composed of ops that run on every device.

use super::{final_shape, keepdim_shape, try_resolve_dims, Dims};
use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// `x.var_dim(dims, correction, keepdim)`, or the standard deviation with
/// `std` (`torch.var` / `torch.std`).
#[derive(Clone, Debug)]
pub struct Var {
    /// The dims reduced, as given; empty: all.
    pub dims: Vec<isize>,
    /// Subtracted from the element count in the divisor (1: unbiased).
    pub correction: usize,
    /// Whether reduced dims stay as size 1.
    pub keepdim: bool,
    /// The square root of the variance instead.
    pub std: bool,
}

impl Var {
    /// The variance over `dims`.
    pub fn new(dims: impl Dims, correction: usize, keepdim: bool) -> Self {
        Var {
            dims: dims.to_dims(),
            correction,
            keepdim,
            std: false,
        }
    }

    /// The standard deviation over `dims`.
    pub fn std(dims: impl Dims, correction: usize, keepdim: bool) -> Self {
        Var {
            std: true,
            ..Var::new(dims, correction, keepdim)
        }
    }

    fn op(&self) -> &'static str {
        if self.std {
            "std"
        } else {
            "var"
        }
    }

    /// The resolved dims and the divisor `n - correction`.
    fn dims_and_denom(&self, x: &Tensor) -> Result<(Vec<usize>, f64)> {
        let dims = try_resolve_dims(self.op(), &self.dims, x.ndim())?;
        let n: usize = dims.iter().map(|&d| x.shape()[d]).product();
        Ok((dims, n as f64 - self.correction as f64))
    }
}

impl Op for Var {
    const NAME: &'static str = "VarBackward";
    const OP: &'static str = "var";
    /// The input, and for std the output (its dims kept as 1).
    type Saved = (Tensor, Option<Tensor>);

    fn name(&self, _: &[&Tensor]) -> &'static str {
        if self.std {
            "StdBackward"
        } else {
            Self::NAME
        }
    }

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        if !x.dtype().is_float() {
            return Err(Error::dtype(
                self.op(),
                format!(
                    "input dtype must be floating point, got {}; convert with \
                     .to_dtype(DType::F32)",
                    x.dtype()
                ),
            ));
        }
        let (dims, _) = self.dims_and_denom(x)?;
        Ok(Spec {
            shape: final_shape(x.shape(), &dims, self.keepdim).into(),
            dtype: x.dtype(),
            device: x.device(),
        })
    }

    /// `Σ (x - mean)² / max(0, n - correction)`: n <= correction gives inf,
    /// or NaN where the sum of squares is 0 (an empty input), as in PyTorch.
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let x = x[0];
        let (dims, denom) = self.dims_and_denom(x).expect("checked by spec");
        let centered = x - &x.mean_dim(dims.clone(), true);
        let v = centered.square().sum_dim(dims, self.keepdim) * (1.0 / denom.max(0.0));
        out.set(if self.std { v.sqrt() } else { v })
    }

    fn save(&self, x: &[&Tensor], y: &Tensor, _: &[bool]) -> Self::Saved {
        let (dims, _) = self.dims_and_denom(x[0]).expect("checked by spec");
        let keep = keepdim_shape(x[0].shape(), &dims);
        (x[0].clone(), self.std.then(|| y.reshape(keep)))
    }

    /// var: `g · 2(x - mean) / (n - correction)`; std: that over `2·std`,
    /// and 0 where std is 0 (PyTorch masks the 0/0 too).
    fn backward(&self, (x, std): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let (dims, denom) = self.dims_and_denom(x).expect("checked by spec");
        let keep = keepdim_shape(x.shape(), &dims);
        let centered = x - &x.mean_dim(dims, true);
        let g = g.reshape(keep);
        let scale = match std {
            None => &g * (2.0 / denom),
            Some(s) => {
                let scale = &g / &(s * denom);
                Tensor::where_cond(&s.eq_scalar(0.0), &scale.zeros_like(), &scale)
            }
        };
        grads[0].add(&centered * &scale)
    }
}
