//! Elementwise arithmetic and math with broadcasting; comparisons and `where`;
//! dtype casts. Forward kernels and backward rules side by side.

use std::ops::{Add, Div, Mul, Neg, Sub};

use super::reduce::sum_to;
use super::{binary, unary};
use super::{float_map, float_zip, same_device};
use crate::autograd::{apply, needs_grad, record, try_apply, Backward, SavedTensor};
use crate::backend::{cpu, Buffer, Ew};
use crate::error::{OrPanic, Result};
use crate::tensor::{broadcast_shapes, DType, Tensor};

// ---------------------------------------------------------------- casts

struct CastBackward {
    from: DType,
}
impl Backward for CastBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(cast(g, self.from))]
    }
}

/// `t` converted to `dtype`; the same tensor when it already has it.
pub(crate) fn cast(t: &Tensor, dtype: DType) -> Tensor {
    if t.dtype() == dtype {
        return t.clone();
    }
    #[cfg(feature = "cuda")]
    if t.device().is_cuda() {
        let out = crate::backend::cuda::ops::cast(t, dtype);
        return if dtype.is_float() && t.dtype().is_float() {
            let from = t.dtype();
            record("ToCopyBackward", &[t], out, || CastBackward { from })
        } else {
            out
        };
    }
    let buf = {
        let b = t.storage().read();
        let l = t.layout();
        macro_rules! conv {
            ($v:expr, $conv:expr) => {
                match dtype {
                    DType::F32 => Buffer::F32(cpu::map("to_dtype", $v, l, |x| $conv(x) as f32)),
                    DType::F64 => Buffer::F64(cpu::map("to_dtype", $v, l, |x| $conv(x))),
                    DType::I64 => Buffer::I64(cpu::map("to_dtype", $v, l, |x| $conv(x) as i64)),
                    DType::Bool => Buffer::Bool(cpu::map("to_dtype", $v, l, |x| $conv(x) != 0.0)),
                }
            };
        }
        match &*b {
            Buffer::F32(v) => conv!(v, |x: f32| x as f64),
            Buffer::F64(v) => conv!(v, |x: f64| x),
            Buffer::I64(v) => conv!(v, |x: i64| x as f64),
            Buffer::Bool(v) => conv!(v, |x: bool| x as u8 as f64),
        }
    };
    let out = Tensor::from_buffer(buf, t.shape(), t.device());
    if dtype.is_float() && t.dtype().is_float() {
        let from = t.dtype();
        record("ToCopyBackward", &[t], out, || CastBackward { from })
    } else {
        out
    }
}

struct CloneBackward;
impl Backward for CloneBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(g.clone())]
    }
}

impl Tensor {
    /// A contiguous copy of the data in new storage (PyTorch's `x.clone()`;
    /// Rust's `clone()` copies only the handle). Differentiable.
    pub fn clone_data(&self) -> Tensor {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            let out = crate::backend::cuda::ops::cast(self, self.dtype());
            return record("CloneBackward", &[self], out, || CloneBackward);
        }
        let buf = {
            let b = self.storage().read();
            let l = self.layout();
            match &*b {
                Buffer::F32(v) => Buffer::F32(cpu::map("clone", v, l, |x| x)),
                Buffer::F64(v) => Buffer::F64(cpu::map("clone", v, l, |x| x)),
                Buffer::I64(v) => Buffer::I64(cpu::map("clone", v, l, |x| x)),
                Buffer::Bool(v) => Buffer::Bool(cpu::map("clone", v, l, |x| x)),
            }
        };
        let out = Tensor::from_buffer(buf, self.shape(), self.device());
        record("CloneBackward", &[self], out, || CloneBackward)
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
fn int_scalar_for(t: &Tensor, v: i64) -> Tensor {
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

fn zip_int(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    gpu: (Ew, f64, f64),
    f: impl Fn(i64, i64) -> i64 + Sync,
) -> Result<Tensor> {
    let (shape, a, la, b, lb) = super::broadcast_pair(op, a, b, DType::I64)?;
    #[cfg(feature = "cuda")]
    if a.device().is_cuda() {
        let ins: &[(&Tensor, &crate::tensor::Layout)] = if gpu.0.arity() == 1 {
            &[(&a, &la)]
        } else {
            &[(&a, &la), (&b, &lb)]
        };
        return Ok(crate::backend::cuda::ops::ew_new(
            gpu.0,
            DType::I64,
            &shape,
            ins,
            gpu.1,
            gpu.2,
        ));
    }
    let _ = gpu;
    let out = super::read_pair(&a, &b, |ga, gb| match (ga, gb) {
        (Buffer::I64(x), Buffer::I64(y)) => cpu::zip(op, x, &la, y, &lb, f),
        _ => unreachable!("both operands were cast to i64"),
    })?;
    Ok(Tensor::from_buffer(Buffer::I64(out), &shape, a.device()))
}

fn both_int(a: &Tensor, b: &Tensor) -> bool {
    !a.dtype().is_float() && !b.dtype().is_float()
}

// ---------------------------------------------------------------- add / sub / mul / div

/// The number of a `float tensor op number` that the one-pass path computes
/// exactly as the 0-d operand would: any f64, or an integer whose conversion
/// through f64 is exact (|v| <= 2^53).
fn fast_scalar(t: &Tensor, other: &impl Operand) -> Option<f64> {
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

struct PowBackward {
    a: SavedTensor,
    b: SavedTensor,
    out: SavedTensor,
    needs: [bool; 2],
}
impl Backward for PowBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let (a, b, out) = (self.a.get(), self.b.get(), self.out.get());
        let ga = self.needs[0].then(|| {
            let d = float_zip!("pow_backward", a, b, Ew::PowBwdA, |x, y| if y == 0.0 {
                0.0
            } else {
                y * x.powf(y - 1.0)
            })
            .or_panic();
            sum_to(&(g * &d), a.shape())
        });
        let gb = self.needs[1].then(|| {
            // d(a^b)/db = a^b ln a, taken as 0 where a = 0 and b >= 0 (PyTorch's choice).
            let d = float_zip!("pow_backward", out, a, Ew::MulLn, |o, x| o * x.ln()).or_panic();
            let zero_base =
                Tensor::where_cond(&a.eq_scalar(0.0), &b.ge_scalar(0.0), &Tensor::scalar(false));
            let d = Tensor::where_cond(&zero_base, &d.zeros_like(), &d);
            sum_to(&(g * &d), b.shape())
        });
        vec![ga, gb]
    }
}

/// `x.pow(p)` for a number `p` (`x ** p`): squares, small integer powers
/// (repeated multiplication, as `powi`) and other powers (`powf`).
#[derive(Clone, Copy, Debug)]
pub struct Pow {
    /// The exponent.
    pub p: f64,
}

impl Pow {
    /// To the power `p` (any number type: `Pow::new(3)`).
    pub fn new(p: impl Into<f64>) -> Self {
        Pow { p: p.into() }
    }
}

impl crate::autograd::Op for Pow {
    const NAME: &'static str = "PowBackward";
    const OP: &'static str = "pow";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Same;
    type Saved = Tensor;
    fn spec(&self, x: &[&Tensor]) -> Result<crate::autograd::Spec> {
        unary::spec(x)
    }
    fn forward(&self, x: &[&Tensor], out: &mut crate::autograd::Out<'_>) {
        let (x, p) = (x[0], self.p);
        out.set(if p == 2.0 {
            float_map!(x, Ew::Square, |x| x * x)
        } else if p.fract() == 0.0 && p.abs() < 64.0 {
            float_map!(x, Ew::PowI, p, |x| x.powi(p as i32))
        } else {
            float_map!(x, Ew::PowF, p, |x| x.powf(p as F))
        })
    }
    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Tensor {
        x[0].clone()
    }
    fn backward(&self, x: &Tensor, g: &Tensor, grads: &mut [crate::autograd::GradSlot<'_>]) {
        grads[0].add(pow_scalar_backward(x, self.p, g))
    }
}

/// dL/dx of `x^p` for a number p, fused into one pass: `g·p·x^(p-1)`.
pub fn pow_scalar_backward(x: &Tensor, p: f64, g: &Tensor) -> Tensor {
    if p == 0.0 {
        g * &x.zeros_like()
    } else if p == 2.0 {
        float_zip!("pow_backward", g, x, Ew::PowSqBwd, |d, x| d * (2.0 * x)).or_panic()
    } else {
        float_zip!("pow_backward", g, x, Ew::PowSBwd, p, |d, x| d
            * ((p as F) * x.powf((p - 1.0) as F)))
        .or_panic()
    }
}

struct MaxMinBackward {
    a: SavedTensor,
    b: SavedTensor,
    is_max: bool,
}
impl Backward for MaxMinBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let (a, b) = (self.a.get(), self.b.get());
        // The winner takes the gradient; ties split it evenly (as PyTorch does).
        let sign = if self.is_max { 1.0 } else { -1.0 };
        let wa = float_zip!("maximum_backward", a, b, Ew::MaxMinBwd, sign, |x, y| {
            let d = (x - y) * (sign as F);
            if d > 0.0 {
                1.0
            } else if d == 0.0 {
                0.5
            } else {
                0.0
            }
        })
        .or_panic();
        let ga = sum_to(&(g * &wa), a.shape());
        let gb = sum_to(&(g * &(1.0 - &wa)), b.shape());
        vec![Some(ga), Some(gb)]
    }
}

impl Tensor {
    /// Elementwise `self ^ exponent` with broadcasting (`torch.pow`); the
    /// exponent is a tensor or a number (`x.pow(2.0)`).
    #[track_caller]
    pub fn pow(&self, exponent: impl Operand) -> Tensor {
        if let Some(p) = exponent.as_number() {
            return self.pow_scalar(p);
        }
        let exponent = &exponent.into_operand(self);
        let out = float_zip!("pow", self, exponent, Ew::Pow, |x, y| x.powf(y)).or_panic();
        let saved_out = needs_grad(&[self, exponent]).then(|| SavedTensor::new(&out));
        record("PowBackward", &[self, exponent], out, || PowBackward {
            a: SavedTensor::new(self),
            b: SavedTensor::new(exponent),
            out: saved_out.expect("saved when recording"),
            needs: [self.requires_grad(), exponent.requires_grad()],
        })
    }

    /// Elementwise `self ^ p` for a number `p` (`x ** 2`).
    pub fn pow_scalar(&self, p: f64) -> Tensor {
        apply(Pow::new(p), &[self])
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
        let sign = if is_max { 1.0 } else { -1.0 };
        let out = float_zip!(
            op,
            self,
            other,
            if is_max { Ew::Max } else { Ew::Min },
            |x, y| {
                // NaN-propagating, as PyTorch's maximum/minimum.
                let d = (x - y) * (sign as F);
                if x.is_nan() || y.is_nan() {
                    F::NAN
                } else if d >= 0.0 {
                    x
                } else {
                    y
                }
            }
        )
        .or_panic();
        let name = if is_max {
            "MaximumBackward"
        } else {
            "MinimumBackward"
        };
        record(name, &[self, other], out, || MaxMinBackward {
            a: SavedTensor::new(self),
            b: SavedTensor::new(other),
            is_max,
        })
    }
}

// ---------------------------------------------------------------- unary math

/// The derivative rules of the one-input math ops, each from what it saved.
enum Rule {
    /// saved = input: d = sign(x)
    Abs,
    /// saved = input: d = 1 where min <= x <= max
    Clamp(Option<f64>, Option<f64>),
}

struct UnaryBackward {
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
    super::unary::derivative_of(&super::unary::Exp, g, y)
}

/// dL/dx of `log(x)`, from the input: `g / x`.
pub fn log_backward(x: &Tensor, g: &Tensor) -> Tensor {
    super::unary::derivative_of(&super::unary::Log, g, x)
}

/// dL/dx of `y = sqrt(x)`, from the output: `g / (2y)`.
pub fn sqrt_backward(y: &Tensor, g: &Tensor) -> Tensor {
    super::unary::derivative_of(&super::unary::Sqrt, g, y)
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

// ---------------------------------------------------------------- comparisons and where

fn compare(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: fn(std::cmp::Ordering) -> bool,
) -> Result<Tensor> {
    let dt = super::result_type(a, b);
    let (shape, a, la, b, lb) = super::broadcast_pair(op, a, b, dt)?;
    #[cfg(feature = "cuda")]
    if a.device().is_cuda() {
        let g = match op {
            "eq" => Ew::Eq,
            "ne" => Ew::Ne,
            "lt" => Ew::Lt,
            "le" => Ew::Le,
            "gt" => Ew::Gt,
            _ => Ew::Ge,
        };
        return Ok(crate::backend::cuda::ops::ew_new(
            g,
            dt,
            &shape,
            &[(&a, &la), (&b, &lb)],
            0.0,
            0.0,
        ));
    }
    let out = super::read_pair(&a, &b, |ga, gb| {
        // NaN compares unequal and unordered: every comparison but `ne` is false.
        let cmp = |o: Option<std::cmp::Ordering>| match o {
            Some(o) => f(o),
            None => op == "ne",
        };
        match (ga, gb) {
            (Buffer::F32(x), Buffer::F32(y)) => {
                cpu::zip(op, x, &la, y, &lb, |p, q| cmp(p.partial_cmp(&q)))
            }
            (Buffer::F64(x), Buffer::F64(y)) => {
                cpu::zip(op, x, &la, y, &lb, |p, q| cmp(p.partial_cmp(&q)))
            }
            (Buffer::I64(x), Buffer::I64(y)) => {
                cpu::zip(op, x, &la, y, &lb, |p, q| cmp(p.partial_cmp(&q)))
            }
            (Buffer::Bool(x), Buffer::Bool(y)) => {
                cpu::zip(op, x, &la, y, &lb, |p, q| cmp(p.partial_cmp(&q)))
            }
            _ => unreachable!("both operands were cast to one dtype"),
        }
    })?;
    Ok(Tensor::from_buffer(Buffer::Bool(out), &shape, a.device()))
}

macro_rules! comparisons {
    ($($name:ident, $sname:ident, $doc:literal, $f:expr;)*) => {
        impl Tensor {
            $(
                #[doc = concat!("Elementwise `self ", $doc, " other` with broadcasting: a bool mask.")]
                #[track_caller]
                pub fn $name(&self, other: &Tensor) -> Tensor {
                    compare(stringify!($name), self, other, $f).or_panic()
                }
                #[doc = concat!("Elementwise `self ", $doc, " value`: a bool mask.")]
                pub fn $sname(&self, value: f64) -> Tensor {
                    // Whole numbers compare exactly with integer tensors.
                    let v = if !self.dtype().is_float() && value.fract() == 0.0 {
                        int_scalar_for(self, value as i64)
                    } else {
                        scalar_for(self, value)
                    };
                    compare(stringify!($name), self, &v, $f).or_panic()
                }
            )*
        }
    };
}

comparisons! {
    eq, eq_scalar, "==", |o| o.is_eq();
    ne, ne_scalar, "!=", |o| o.is_ne();
    lt, lt_scalar, "<", |o| o.is_lt();
    le, le_scalar, "<=", |o| o.is_le();
    gt, gt_scalar, ">", |o| o.is_gt();
    ge, ge_scalar, ">=", |o| o.is_ge();
}

struct WhereBackward {
    cond: SavedTensor,
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
}
impl Backward for WhereBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let zero = g.zeros_like();
        let cond = self.cond.get();
        let ga = sum_to(&Tensor::where_cond(cond, g, &zero), &self.a_shape);
        let gb = sum_to(&Tensor::where_cond(cond, &zero, g), &self.b_shape);
        vec![Some(ga), Some(gb)]
    }
}

impl Tensor {
    /// Elementwise `cond ? a : b` with broadcasting of all three
    /// (`torch.where(cond, a, b)`; `where` is a Rust keyword). Differentiable
    /// in `a` and `b`.
    ///
    /// ```
    /// use deriv_runtime::{tensor, Tensor};
    /// let x = tensor![-1., 2., -3.];
    /// let y = Tensor::where_cond(&x.gt_scalar(0.0), &x, &x.zeros_like());
    /// assert_eq!(y.to_vec::<f32>(), vec![0., 2., 0.]);
    /// ```
    #[track_caller]
    pub fn where_cond(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        Self::try_where(cond, a, b).or_panic()
    }

    /// The old name of [`where_cond`](Self::where_cond): a trailing `_` marks
    /// in-place ops in deriv, and this one is not.
    #[deprecated(
        since = "0.1.0",
        note = "renamed to `Tensor::where_cond` (not an in-place op)"
    )]
    #[track_caller]
    pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        Self::try_where(cond, a, b).or_panic()
    }

    /// Fallible [`where_cond`](Self::where_cond).
    pub fn try_where(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        same_device("where", cond, a)?;
        same_device("where", a, b)?;
        let shape = broadcast_shapes("where", a.shape(), b.shape())?;
        let shape = broadcast_shapes("where", cond.shape(), &shape)?;
        let dt = super::result_type(a, b);
        let dev = [cond, a, b]
            .iter()
            .map(|t| t.device())
            .find(|d| d.is_cuda())
            .unwrap_or_default();
        let (ca, cb, cc) = (
            cast(&super::on_device(a, dev), dt),
            cast(&super::on_device(b, dev), dt),
            cast(&super::on_device(cond, dev), DType::Bool),
        );
        let (la, lb, lc) = (
            ca.layout().broadcast_to(&shape),
            cb.layout().broadcast_to(&shape),
            cc.layout().broadcast_to(&shape),
        );
        #[cfg(feature = "cuda")]
        if dev.is_cuda() {
            let out = crate::backend::cuda::ops::ew_new(
                Ew::Where,
                dt,
                &shape,
                &[(&cc, &lc), (&ca, &la), (&cb, &lb)],
                0.0,
                0.0,
            );
            return Ok(record("WhereBackward", &[a, b], out, || WhereBackward {
                cond: SavedTensor::new(cond),
                a_shape: a.shape().to_vec(),
                b_shape: b.shape().to_vec(),
            }));
        }
        let buf = {
            // Copies avoid locking one storage twice when operands alias.
            let ca = if ca.shares_storage(&cc) {
                ca.clone_data_nograd()
            } else {
                ca
            };
            let cb = if cb.shares_storage(&cc) || cb.shares_storage(&ca) {
                cb.clone_data_nograd()
            } else {
                cb
            };
            // In the global lock order (the three storages are distinct now).
            let ([gc, ga, gb], []) = crate::backend::lock_storages(
                [
                    Some(&**cc.storage()),
                    Some(ca.storage()),
                    Some(cb.storage()),
                ],
                [],
            );
            let locked = "distinct storages are each locked";
            let (gc, ga, gb) = (gc.expect(locked), ga.expect(locked), gb.expect(locked));
            let Buffer::Bool(c) = &*gc else {
                unreachable!("cond was cast to bool")
            };
            macro_rules! sel {
                ($x:expr, $y:expr, $v:ident) => {
                    Buffer::$v(cpu::zip3("where", c, &lc, $x, &la, $y, &lb, |k, p, q| {
                        if k {
                            p
                        } else {
                            q
                        }
                    })?)
                };
            }
            match (&*ga, &*gb) {
                (Buffer::F32(x), Buffer::F32(y)) => sel!(x, y, F32),
                (Buffer::F64(x), Buffer::F64(y)) => sel!(x, y, F64),
                (Buffer::I64(x), Buffer::I64(y)) => sel!(x, y, I64),
                (Buffer::Bool(x), Buffer::Bool(y)) => sel!(x, y, Bool),
                _ => unreachable!("operands were cast to one dtype"),
            }
        };
        let out = Tensor::from_buffer(buf, &shape, a.device());
        Ok(record("WhereBackward", &[a, b], out, || WhereBackward {
            cond: SavedTensor::new(cond),
            a_shape: a.shape().to_vec(),
            b_shape: b.shape().to_vec(),
        }))
    }

    /// A copy that records nothing (kernel plumbing).
    pub(crate) fn clone_data_nograd(&self) -> Tensor {
        crate::autograd::no_grad(|| self.clone_data())
    }

    /// Elementwise logical not of a mask.
    pub fn logical_not(&self) -> Tensor {
        self.eq_scalar(0.0)
    }
}

// ---------------------------------------------------------------- operators

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $inherent:ident, $scalar:path) => {
        impl $trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                Tensor::$inherent(self, rhs)
            }
        }
        impl $trait<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                Tensor::$inherent(&self, &rhs)
            }
        }
        impl $trait<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                Tensor::$inherent(&self, rhs)
            }
        }
        impl $trait<Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                Tensor::$inherent(self, &rhs)
            }
        }
        impl $trait<f64> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f64) -> Tensor {
                Tensor::$inherent(self, rhs)
            }
        }
        impl $trait<f64> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f64) -> Tensor {
                Tensor::$inherent(&self, rhs)
            }
        }
        impl $trait<&Tensor> for f64 {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                if rhs.dtype().is_float() {
                    return apply($scalar(self), &[rhs]);
                }
                Tensor::$inherent(&scalar_for(rhs, self), rhs)
            }
        }
        impl $trait<Tensor> for f64 {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                self.$method(&rhs)
            }
        }
    };
}

binary_operator!(Add, add, add, unary::AddScalar);
binary_operator!(Sub, sub, sub, unary::RSubScalar);
binary_operator!(Mul, mul, mul, unary::MulScalar);
binary_operator!(Div, div, div, unary::RDivScalar);

impl Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}

impl Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(&self)
    }
}
