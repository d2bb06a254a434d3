//! `logsumexp(x, dims, keepdim) = log Σ_dims exp(x)`, computed stably as
//! PyTorch does: shifted by the maximum over `dims` (taken as 0 where it is
//! infinite, so rows of -inf give -inf and an inf gives inf, not NaN).
//! Composed of ops that run on every device.

use super::{final_shape, keepdim_shape, try_resolve_dims, Dims};
use crate::autograd::{apply, GradSlot, Op, Out, Spec};
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// `x.logsumexp(dims, keepdim)` (`torch.logsumexp`).
#[derive(Clone, Debug)]
pub struct Logsumexp {
    /// The dims reduced, as given; empty: all.
    pub dims: Vec<isize>,
    /// Whether reduced dims stay as size 1.
    pub keepdim: bool,
}

impl Logsumexp {
    /// Over `dims`, keeping them as 1 when `keepdim`.
    pub fn new(dims: impl Dims, keepdim: bool) -> Self {
        Logsumexp {
            dims: dims.to_dims(),
            keepdim,
        }
    }
}

impl Op for Logsumexp {
    const NAME: &'static str = "LogsumexpBackward";
    const OP: &'static str = "logsumexp";
    /// The input, the output with reduced dims kept as 1.
    type Saved = (Tensor, Tensor);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        let dims = try_resolve_dims("logsumexp", &self.dims, x.ndim())?;
        Ok(Spec {
            shape: final_shape(x.shape(), &dims, self.keepdim).into(),
            dtype: if x.dtype().is_float() {
                x.dtype()
            } else {
                DType::F32
            },
            device: x.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let x = crate::ops::as_float(x[0]);
        let dims = try_resolve_dims("logsumexp", &self.dims, x.ndim()).expect("checked by spec");
        let dims_i: Vec<isize> = dims.iter().map(|&d| d as isize).collect();
        let y = if x.numel() == 0 {
            x.exp().sum_dim(dims_i, self.keepdim).log()
        } else {
            let mut m = x.clone();
            for &d in &dims {
                m = m.max_dim(d as isize, true).0;
            }
            let m = Tensor::where_cond(&m.abs().eq_scalar(f64::INFINITY), &m.zeros_like(), &m);
            let s = (&x - &m).exp().sum_dim(dims_i, self.keepdim).log();
            let shape = out.spec().shape.clone();
            &s + &m.reshape(shape.as_slice())
        };
        out.set(y)
    }

    fn save(&self, x: &[&Tensor], y: &Tensor, _: &[bool]) -> Self::Saved {
        let x = crate::ops::as_float(x[0]);
        let dims = try_resolve_dims("logsumexp", &self.dims, x.ndim()).expect("checked by spec");
        let keep = keepdim_shape(x.shape(), &dims);
        (x, y.reshape(keep))
    }

    /// `g · exp(x - y)`, with g and y broadcast back over the reduced dims.
    fn backward(&self, (x, y): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let g = g.reshape(y.shape());
        grads[0].add(&g * &(x - y).exp())
    }
}

impl Tensor {
    /// `log Σ exp(x)` over `dims` (one or a list), stably (`torch.logsumexp`).
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// let x = tensor![[1000., 1000.], [0., f32::NEG_INFINITY]];
    /// let y = x.logsumexp(1, false).to_vec::<f32>();
    /// assert!((y[0] - (1000. + 2f32.ln())).abs() < 1e-3 && y[1] == 0.0);
    /// ```
    #[track_caller]
    pub fn logsumexp(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        apply(Logsumexp::new(dims, keepdim), &[self])
    }
}
