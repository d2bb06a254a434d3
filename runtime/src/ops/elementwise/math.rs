use super::*;

// ---------------------------------------------------------------- unary math

/// The derivative rules of the one-input math ops, each from what it saved.
pub(super) enum Rule {
    /// saved = input: d = sign(x)
    Abs,
    /// saved = input: d = 1 where min <= x <= max
    Clamp(Option<f64>, Option<f64>),
}

pub(super) struct UnaryBackward {
    saved: SavedTensor,
    rule: Rule,
}
impl Backward for UnaryBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let s = self.saved.get();
        let gx =
            match &self.rule {
                Rule::Abs => float_zip!("abs_backward", g, s, Ew::AbsBwd, |d, x| if x > 0.0 {
                    d
                } else if x < 0.0 {
                    -d
                } else {
                    0.0
                })
                .or_panic(),
                Rule::Clamp(lo, hi) => {
                    let lo = lo.unwrap_or(f64::NEG_INFINITY);
                    let hi = hi.unwrap_or(f64::INFINITY);
                    float_zip!("clamp_backward", g, s, Ew::ClampBwd, lo, hi, |d, x| if x
                        >= (lo as F)
                        && x <= (hi as F)
                    {
                        d
                    } else {
                        0.0
                    })
                    .or_panic()
                }
            };
        vec![Some(gx)]
    }
}

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
    fn unary(&self, name: &'static str, out: Tensor, rule: Rule, save_output: bool) -> Tensor {
        if !needs_grad(&[self]) {
            return out;
        }
        let saved = SavedTensor::new(if save_output { &out } else { self });
        record(name, &[self], out, || UnaryBackward { saved, rule })
    }

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
        let out = float_map!(self, Ew::Abs, |x| x.abs());
        self.unary("AbsBackward", out, Rule::Abs, false)
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
        let out = float_map!(self, Ew::Clamp, lo, hi, |x| {
            // NaN stays NaN, and min > max gives max, as in PyTorch.
            let y = if x < (lo as F) { lo as F } else { x };
            if y > (hi as F) {
                hi as F
            } else {
                y
            }
        });
        self.unary("ClampBackward", out, Rule::Clamp(min, max), false)
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
