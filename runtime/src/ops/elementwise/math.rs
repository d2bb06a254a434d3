use super::*;

// ---------------------------------------------------------------- unary math

/// dL/dx of `y = exp(x)`, from the output: `g·y`.
pub fn exp_backward(y: &Tensor, g: &Tensor) -> Tensor {
    crate::ops::unary::derivative_of(&crate::ops::unary::Exp, g, y)
}

/// dL/dx of `log(x)`, from the input: `g / x`.
pub fn log_backward(x: &Tensor, g: &Tensor) -> Tensor {
    crate::ops::unary::derivative_of(&crate::ops::unary::Log, g, x)
}

/// dL/dx of `y = sqrt(x)`, from the output: `g / (2y)`.
pub fn sqrt_backward(y: &Tensor, g: &Tensor) -> Tensor {
    crate::ops::unary::derivative_of(&crate::ops::unary::Sqrt, g, y)
}

impl Tensor {
    /// Elementwise negation.
    pub fn neg(&self) -> Tensor {
        if !self.dtype().is_float() {
            return zip_int(
                "neg",
                self,
                &Tensor::scalar(0i64),
                (Ew::Neg, 0.0, 0.0),
                |x, _| x.wrapping_neg(),
            )
            .or_panic();
        }
        apply(unary::Neg, &[self])
    }

    /// Elementwise absolute value.
    pub fn abs(&self) -> Tensor {
        if self.dtype() == DType::I64 {
            return zip_int(
                "abs",
                self,
                &Tensor::scalar(0i64),
                (Ew::Abs, 0.0, 0.0),
                |x, _| x.wrapping_abs(),
            )
            .or_panic();
        }
        apply(unary::Abs, &[self])
    }

    /// Elementwise clamp into `[min, max]`; either bound may be `None` (`torch.clamp`).
    pub fn clamp(&self, min: Option<f64>, max: Option<f64>) -> Tensor {
        let lo = min.unwrap_or(f64::NEG_INFINITY);
        let hi = max.unwrap_or(f64::INFINITY);
        if self.dtype() == DType::I64 && [min, max].iter().flatten().all(|b| b.fract() == 0.0) {
            // Integer bounds keep an integer tensor exact, as in PyTorch.
            let (lo, hi) = (lo as i64, hi as i64);
            return zip_int(
                "clamp",
                self,
                &Tensor::scalar(0i64),
                (Ew::Clamp, lo as f64, hi as f64),
                move |x, _| x.max(lo).min(hi),
            )
            .or_panic();
        }
        apply(unary::Clamp::new(lo, hi), &[self])
    }

    /// Clamp from below (`clamp(min=..)`).
    pub fn clamp_min(&self, min: f64) -> Tensor {
        self.clamp(Some(min), None)
    }

    /// Clamp from above (`clamp(max=..)`).
    pub fn clamp_max(&self, max: f64) -> Tensor {
        self.clamp(None, Some(max))
    }

    /// Elementwise square.
    pub fn square(&self) -> Tensor {
        apply(unary::Square, &[self])
    }
}
