//! softmax and log_softmax along a dim, computed stably (shifted by the max),
//! with backward kernels shared by the tape and the compile-time path.

use crate::autograd::{needs_grad, no_grad, record, Backward, SavedTensor};
use crate::error::OrPanic;
use crate::tensor::{norm_dim, Tensor};

/// dL/dx of `y = softmax(x, dim)` from the output: `y * (dy - Σ_dim dy·y)`.
pub fn softmax_backward(y: &Tensor, dy: &Tensor, dim: isize) -> Tensor {
    let dot = (dy * y).sum_dim(dim, true);
    y * &(dy - &dot)
}

/// dL/dx of `y = log_softmax(x, dim)` from the output: `dy - exp(y) · Σ_dim dy`.
pub fn log_softmax_backward(y: &Tensor, dy: &Tensor, dim: isize) -> Tensor {
    let total = dy.sum_dim(dim, true);
    dy - &(y.exp() * &total)
}

struct SoftmaxBackward {
    y: SavedTensor,
    dim: isize,
    log: bool,
}
impl Backward for SoftmaxBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let y = self.y.get();
        vec![Some(if self.log {
            log_softmax_backward(y, g, self.dim)
        } else {
            softmax_backward(y, g, self.dim)
        })]
    }
}

impl Tensor {
    fn softmax_impl(&self, dim: isize, log: bool) -> Tensor {
        let op = if log { "log_softmax" } else { "softmax" };
        let d = norm_dim(op, dim, self.ndim()).or_panic() as isize;
        let y = no_grad(|| {
            let x = super::as_float(self);
            if x.numel() == 0 {
                // Nothing to normalise (a size-0 dim has no max): an empty
                // result of the input's shape, as in PyTorch.
                return x.zeros_like();
            }
            #[cfg(feature = "cuda")]
            if x.device().is_cuda() && x.dtype() == crate::tensor::DType::F32 && x.ndim() > 0 {
                return crate::backend::cuda::ops::softmax(&x, d as usize, log);
            }
            let shifted = &x - &x.max_dim(d, true).0;
            if log {
                let lse = shifted.exp().sum_dim(d, true).log();
                &shifted - &lse
            } else {
                let e = shifted.exp();
                let s = e.sum_dim(d, true);
                &e / &s
            }
        });
        if !needs_grad(&[self]) {
            return y;
        }
        let saved = SavedTensor::new(&y);
        let name = if log {
            "LogSoftmaxBackward"
        } else {
            "SoftmaxBackward"
        };
        record(name, &[self], y, || SoftmaxBackward {
            y: saved,
            dim: d,
            log,
        })
    }

    /// `exp(x) / Σ_dim exp(x)`, computed stably (`torch.softmax`).
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// let p = tensor![[1., 2., 3.]].softmax(1);
    /// assert!((p.sum().item() - 1.0).abs() < 1e-6);
    /// ```
    #[track_caller]
    pub fn softmax(&self, dim: isize) -> Tensor {
        self.softmax_impl(dim, false)
    }

    /// `x - log Σ_dim exp(x)`, computed stably (`torch.log_softmax`).
    #[track_caller]
    pub fn log_softmax(&self, dim: isize) -> Tensor {
        self.softmax_impl(dim, true)
    }
}
