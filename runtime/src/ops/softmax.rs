//! softmax and log_softmax along a dim, computed stably (shifted by the max),
//! with backward kernels shared by the tape and the compile-time path.

use crate::autograd::{apply, GradSlot, Op, Out, Spec};
use crate::error::Result;
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

/// `softmax(x, dim)` (`log: false`) or `log_softmax(x, dim)` (`log: true`),
/// computed stably (shifted by the max along `dim`).
#[derive(Clone, Copy, Debug)]
pub struct Softmax {
    /// The dim normalised over (negative counting from the end).
    pub dim: isize,
    /// log_softmax instead.
    pub log: bool,
}

impl Softmax {
    /// Softmax over `dim`.
    pub fn new(dim: isize) -> Self {
        Softmax { dim, log: false }
    }
}

/// `log_softmax(x, dim)`: [`Softmax`] in log space.
#[derive(Clone, Copy, Debug)]
pub struct LogSoftmax;

impl LogSoftmax {
    /// Log-softmax over `dim`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(dim: isize) -> Softmax {
        Softmax { dim, log: true }
    }
}

impl Op for Softmax {
    const NAME: &'static str = "SoftmaxBackward";
    type Saved = Tensor;

    fn name(&self, _: &[&Tensor]) -> &'static str {
        if self.log {
            "LogSoftmaxBackward"
        } else {
            "SoftmaxBackward"
        }
    }

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        norm_dim(self.op(), self.dim, x.ndim())?;
        Ok(Spec {
            shape: x.shape().to_vec(),
            dtype: if x.dtype().is_float() { x.dtype() } else { crate::tensor::DType::F32 },
            device: x.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let d = norm_dim(self.op(), self.dim, x[0].ndim()).expect("checked by spec") as isize;
        let x = super::as_float(x[0]);
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() && x.dtype() == crate::tensor::DType::F32 && x.ndim() > 0 {
            return out.set(crate::backend::cuda::ops::softmax(&x, d as usize, self.log));
        }
        let shifted = &x - &x.max_dim(d, true).0;
        out.set(if self.log {
            let lse = shifted.exp().sum_dim(d, true).log();
            &shifted - &lse
        } else {
            let e = shifted.exp();
            let s = e.sum_dim(d, true);
            &e / &s
        })
    }

    fn save(&self, _: &[&Tensor], y: &Tensor, _: &[bool]) -> Tensor {
        y.clone()
    }

    fn backward(&self, y: &Tensor, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let d = norm_dim(self.op(), self.dim, y.ndim()).expect("checked by spec") as isize;
        grads[0].add(if self.log {
            log_softmax_backward(y, g, d)
        } else {
            softmax_backward(y, g, d)
        })
    }
}

impl Softmax {
    fn op(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
}

impl Tensor {
    /// `exp(x) / Σ_dim exp(x)`, computed stably (`torch.softmax`).
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// let p = tensor![[1., 2., 3.]].softmax(1);
    /// assert!((p.sum().item() - 1.0).abs() < 1e-6);
    /// ```
    #[track_caller]
    pub fn softmax(&self, dim: isize) -> Tensor {
        apply(Softmax::new(dim), &[self])
    }

    /// `x - log Σ_dim exp(x)`, computed stably (`torch.log_softmax`).
    #[track_caller]
    pub fn log_softmax(&self, dim: isize) -> Tensor {
        apply(LogSoftmax::new(dim), &[self])
    }
}
