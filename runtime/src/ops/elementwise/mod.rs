//! Elementwise arithmetic and math with broadcasting; comparisons and
//! `where` (`select.rs`).

use std::ops::{Add, Div, Mul, Neg, Sub};

use super::{binary, unary};
use crate::autograd::{apply, try_apply};
use crate::backend::{cpu, Buffer, Ew};
use crate::error::{OrPanic, Result};
use crate::tensor::{DType, Tensor};

mod compare;
mod math;
mod operators;
mod select;

pub use math::*;
pub use select::Where;

// ---------------------------------------------------------------- casts

/// `t` converted to `dtype`; the same tensor when it already has it.
pub(crate) fn cast(t: &Tensor, dtype: DType) -> Tensor {
    if t.dtype() == dtype {
        return t.clone();
    }
    apply(super::ToCopy::of(t, Some(dtype), None), &[t])
}

impl Tensor {
    /// A contiguous copy of the data in new storage (PyTorch's `x.clone()`;
    /// Rust's `clone()` copies only the handle). Differentiable.
    pub fn clone_data(&self) -> Tensor {
        apply(super::ToCopy::of(self, None, None), &[self])
    }
}

/// A zero-dimensional tensor holding the float `v`, typed like a Python float
/// in PyTorch: it keeps a float tensor's dtype, and makes integer math f32.
pub(crate) fn scalar_for(t: &Tensor, v: f64) -> Tensor {
    match t.dtype() {
        DType::F64 => Tensor::scalar(v),
        // A float number with an integer or bool tensor computes in f32, as a
        // Python float does in PyTorch.
        _ => Tensor::scalar(v as f32),
    }
}

/// A zero-dimensional tensor holding the integer `v`, typed to combine with
/// `t` without changing its dtype (bool tensors give i64), as a Python int.
pub(super) fn int_scalar_for(t: &Tensor, v: i64) -> Tensor {
    match t.dtype() {
        DType::F32 => Tensor::scalar(v as f32),
        DType::F64 => Tensor::scalar(v as f64),
        _ => Tensor::scalar(v),
    }
}

/// The right-hand side of a binary op: a tensor, or a number that becomes a
/// 0-d tensor of the other side's dtype (`x.add(1.0)`, `x.mul_(0.9)`).
pub trait Operand {
    /// The operand as a tensor compatible with `like`.
    fn into_operand(self, like: &Tensor) -> Tensor;
    /// The plain number, when this operand is one.
    fn as_number(&self) -> Option<f64> {
        None
    }
}

impl Operand for &Tensor {
    fn into_operand(self, _like: &Tensor) -> Tensor {
        self.clone()
    }
}

impl Operand for Tensor {
    fn into_operand(self, _like: &Tensor) -> Tensor {
        self
    }
}

macro_rules! number_operand {
    ($make:ident, $as:ty; $($t:ty),*) => {$(
        impl Operand for $t {
            fn into_operand(self, like: &Tensor) -> Tensor {
                $make(like, self as $as)
            }
            fn as_number(&self) -> Option<f64> {
                Some(*self as f64)
            }
        }
    )*};
}
number_operand!(scalar_for, f64; f64, f32);
number_operand!(int_scalar_for, i64; i32, i64);

// ---------------------------------------------------------------- integer arithmetic

pub(super) fn zip_int(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    gpu: (Ew, f64, f64),
    f: impl Fn(i64, i64) -> i64 + Sync,
) -> Result<Tensor> {
    let (shape, a, la, b, lb) = super::broadcast_pair(op, a, b, DType::I64)?;
    #[cfg(feature = "cuda")]
    if a.device().is_cuda() {
        let ins: &[(&crate::backend::Array, &crate::tensor::Layout)] = if gpu.0.arity() == 1 {
            &[(a.array(), &la)]
        } else {
            &[(a.array(), &la), (b.array(), &lb)]
        };
        return Ok(Tensor::from_array(crate::backend::cuda::ops::ew_new(
            gpu.0,
            DType::I64,
            &shape,
            ins,
            gpu.1,
            gpu.2,
        )));
    }
    let _ = gpu;
    let out = super::read_pair(&a, &b, |ga, gb| match (ga, gb) {
        (Buffer::I64(x), Buffer::I64(y)) => cpu::zip(op, x, &la, y, &lb, f),
        _ => unreachable!("both operands were cast to i64"),
    })?;
    Ok(Tensor::from_buffer(Buffer::I64(out), &shape, a.device()))
}

pub(super) fn both_int(a: &Tensor, b: &Tensor) -> bool {
    !a.dtype().is_float() && !b.dtype().is_float()
}

// ---------------------------------------------------------------- add / sub / mul / div

/// The number of a `float tensor op number` that the one-pass path computes
/// exactly as the 0-d operand would: any f64, or an integer whose conversion
/// through f64 is exact (|v| <= 2^53).
pub(super) fn fast_scalar(t: &Tensor, other: &impl Operand) -> Option<f64> {
    let v = other.as_number()?;
    (t.dtype().is_float() && v.abs() <= 9_007_199_254_740_992.0).then_some(v)
}

/// dL/da and dL/db of `a / b` with broadcasting: `g / b` and `-g·a / b²`,
/// each summed to its operand's shape; `need` skips a side.
pub fn div_backward(
    g: &Tensor,
    a: &Tensor,
    b: &Tensor,
    need: [bool; 2],
) -> (Option<Tensor>, Option<Tensor>) {
    super::binary::grads(&super::binary::Div, g, a, b, need)
}

/// dL/da and dL/db of `a * b` with broadcasting: `g·b` and `g·a`, each summed
/// to its operand's shape; `need` skips a side.
pub fn mul_backward(
    g: &Tensor,
    a: &Tensor,
    b: &Tensor,
    need: [bool; 2],
) -> (Option<Tensor>, Option<Tensor>) {
    super::binary::grads(&super::binary::Mul, g, a, b, need)
}

impl Tensor {
    /// Elementwise `self + other` with broadcasting (`torch.add`).
    #[track_caller]
    pub fn add(&self, other: impl Operand) -> Tensor {
        self.try_add(other).or_panic()
    }

    /// Fallible [`add`](Self::add): an error names both shapes when they don't broadcast.
    pub fn try_add(&self, other: impl Operand) -> Result<Tensor> {
        if let Some(v) = fast_scalar(self, &other) {
            return Ok(apply(unary::AddScalar(v), &[self]));
        }
        try_apply(binary::Add, &[self, &other.into_operand(self)])
    }

    /// Elementwise `self - other` with broadcasting.
    #[track_caller]
    pub fn sub(&self, other: impl Operand) -> Tensor {
        self.try_sub(other).or_panic()
    }

    /// Fallible [`sub`](Self::sub).
    pub fn try_sub(&self, other: impl Operand) -> Result<Tensor> {
        if let Some(v) = fast_scalar(self, &other) {
            return Ok(apply(unary::SubScalar(v), &[self]));
        }
        try_apply(binary::Sub, &[self, &other.into_operand(self)])
    }

    /// Elementwise `self * other` with broadcasting.
    #[track_caller]
    pub fn mul(&self, other: impl Operand) -> Tensor {
        self.try_mul(other).or_panic()
    }

    /// Fallible [`mul`](Self::mul).
    pub fn try_mul(&self, other: impl Operand) -> Result<Tensor> {
        if let Some(v) = fast_scalar(self, &other) {
            return Ok(apply(unary::MulScalar(v), &[self]));
        }
        try_apply(binary::Mul, &[self, &other.into_operand(self)])
    }

    /// Elementwise true division with broadcasting (integers give f32, as in PyTorch).
    #[track_caller]
    pub fn div(&self, other: impl Operand) -> Tensor {
        self.try_div(other).or_panic()
    }

    /// Fallible [`div`](Self::div).
    pub fn try_div(&self, other: impl Operand) -> Result<Tensor> {
        if let Some(v) = fast_scalar(self, &other) {
            return Ok(apply(unary::DivScalar(v), &[self]));
        }
        try_apply(binary::Div, &[self, &other.into_operand(self)])
    }

    /// `self + alpha * other` (`torch.add(a, b, alpha=..)`).
    #[track_caller]
    pub fn add_scaled(&self, other: &Tensor, alpha: f64) -> Tensor {
        self.add(other * alpha)
    }
}

// ---------------------------------------------------------------- pow, maximum, minimum

impl Tensor {
    /// Elementwise `self ^ exponent` with broadcasting (`torch.pow`); the
    /// exponent is a tensor or a number (`x.pow(2.0)`).
    #[track_caller]
    pub fn pow(&self, exponent: impl Operand) -> Tensor {
        if let Some(p) = exponent.as_number() {
            return self.pow_scalar(p);
        }
        apply(super::Pow::default(), &[self, &exponent.into_operand(self)])
    }

    /// Elementwise `self ^ p` for a number `p` (`x ** 2`).
    pub fn pow_scalar(&self, p: f64) -> Tensor {
        apply(super::Pow::new(p), &[self])
    }

    /// Elementwise larger of two tensors, with broadcasting (`torch.maximum`).
    #[track_caller]
    pub fn maximum(&self, other: impl Operand) -> Tensor {
        self.extremum_with(&other.into_operand(self), true)
    }

    /// Elementwise smaller of two tensors, with broadcasting (`torch.minimum`).
    #[track_caller]
    pub fn minimum(&self, other: impl Operand) -> Tensor {
        self.extremum_with(&other.into_operand(self), false)
    }

    #[track_caller]
    fn extremum_with(&self, other: &Tensor, is_max: bool) -> Tensor {
        let op = if is_max { "maximum" } else { "minimum" };
        if both_int(self, other) {
            // Integers stay exact integers, as in PyTorch (f32 would round above 2^24).
            let pick = if is_max { i64::max } else { i64::min };
            return zip_int(
                op,
                self,
                other,
                (if is_max { Ew::Max } else { Ew::Min }, 0.0, 0.0),
                pick,
            )
            .or_panic();
        }
        if is_max {
            apply(crate::ops::Maximum, &[self, other])
        } else {
            apply(crate::ops::Minimum, &[self, other])
        }
    }
}
