//! The scalar math elementwise kernels are written in, once for every device.
//!
//! An elementwise op's formula is a generic function over [`Math`]. The CPU
//! instantiates it with `f32` and `f64` (plain arithmetic, inlined into the
//! vectorised loops); the CUDA backend instantiates it with a tracing type
//! that prints each operation as PTX, which is how the GPU kernel of an op is
//! written from the same source as its CPU kernel. Control flow is therefore
//! written as data: comparisons give a [`Math::Mask`] and
//! [`select`](Math::select) picks between two computed values (which is also
//! what lets the CPU loops vectorise).

use std::ops::{Add, Div, Mul, Neg, Sub};

/// Scalar math for elementwise kernels: implemented by `f32`, `f64` and the
/// GPU backend's PTX tracer.
///
/// ```
/// use deriv_runtime::Math;
/// // softsign, written once for any device
/// fn softsign<M: Math>(x: M) -> M {
///     x / (M::k(1.0) + x.abs())
/// }
/// assert_eq!(softsign(3.0f32), 0.75);
/// assert_eq!(softsign(-1.0f64), -0.5);
/// ```
pub trait Math:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
{
    /// The result of a comparison (`bool` on the CPU).
    type Mask: Copy;

    /// The constant `v` in this type (rounded as `v as f32` for f32).
    fn k(v: f64) -> Self;
    /// e^x.
    fn exp(self) -> Self;
    /// e^x - 1, accurate near 0.
    fn exp_m1(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// ln(1 + x), accurate near 0.
    fn ln_1p(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// `self` to the power `p` (`powf`'s rules: `x^0 = 1`, `1^p = 1`, a
    /// negative base needs an integer exponent, else NaN).
    fn powf(self, p: Self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// The error function.
    fn erf(self) -> Self;
    /// The larger value; NaN if either is NaN (PyTorch's `maximum`).
    fn max_nan(self, other: Self) -> Self;
    /// The smaller value; NaN if either is NaN (PyTorch's `minimum`).
    fn min_nan(self, other: Self) -> Self;
    /// `self > other` (false when either is NaN).
    fn gt(self, other: Self) -> Self::Mask;
    /// `self >= other` (false when either is NaN).
    fn ge(self, other: Self) -> Self::Mask;
    /// `self < other` (false when either is NaN).
    fn lt(self, other: Self) -> Self::Mask;
    /// `self <= other` (false when either is NaN).
    fn le(self, other: Self) -> Self::Mask;
    /// Whether the value is NaN.
    fn is_nan(self) -> Self::Mask;
    /// Both masks hold.
    fn and(a: Self::Mask, b: Self::Mask) -> Self::Mask;
    /// Either mask holds.
    fn or(a: Self::Mask, b: Self::Mask) -> Self::Mask;
    /// `if mask { a } else { b }`, both already computed.
    fn select(mask: Self::Mask, a: Self, b: Self) -> Self;

    /// 1 / x.
    #[inline(always)]
    fn recip(self) -> Self {
        Self::k(1.0) / self
    }
    /// x².
    #[inline(always)]
    fn square(self) -> Self {
        self * self
    }
    /// The logistic function 1 / (1 + e^-x), computed from e^-|x| so that no
    /// intermediate overflows.
    #[inline(always)]
    fn sigmoid(self) -> Self {
        let e = (-self.abs()).exp();
        let one = Self::k(1.0);
        Self::select(self.ge(Self::k(0.0)), one / (one + e), e / (one + e))
    }
    /// ln(1 + e^x), without overflow for large x.
    #[inline(always)]
    fn softplus(self) -> Self {
        self.max_nan(Self::k(0.0)) + (-self.abs()).exp().ln_1p()
    }
}

macro_rules! math_for {
    ($t:ident, $erf:path) => {
        impl Math for $t {
            type Mask = bool;
            #[inline(always)]
            fn k(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $t::exp(self)
            }
            #[inline(always)]
            fn exp_m1(self) -> Self {
                $t::exp_m1(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $t::ln(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                $t::ln_1p(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $t::sqrt(self)
            }
            #[inline(always)]
            fn powf(self, p: Self) -> Self {
                $t::powf(self, p)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $t::abs(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $t::tanh(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn max_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    $t::NAN
                } else if self >= other {
                    self
                } else {
                    other
                }
            }
            #[inline(always)]
            fn min_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    $t::NAN
                } else if self <= other {
                    self
                } else {
                    other
                }
            }
            #[inline(always)]
            fn gt(self, other: Self) -> bool {
                self > other
            }
            #[inline(always)]
            fn ge(self, other: Self) -> bool {
                self >= other
            }
            #[inline(always)]
            fn lt(self, other: Self) -> bool {
                self < other
            }
            #[inline(always)]
            fn le(self, other: Self) -> bool {
                self <= other
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            #[inline(always)]
            fn and(a: bool, b: bool) -> bool {
                a & b
            }
            #[inline(always)]
            fn or(a: bool, b: bool) -> bool {
                a | b
            }
            #[inline(always)]
            fn select(mask: bool, a: Self, b: Self) -> Self {
                if mask {
                    a
                } else {
                    b
                }
            }
        }
    };
}
math_for!(f32, libm::erff);
math_for!(f64, libm::erf);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_functions_are_stable_at_the_extremes() {
        for x in [-1000.0f64, -30.0, -1.0, 0.0, 1.0, 30.0, 1000.0] {
            let s = x.sigmoid();
            let want = 1.0 / (1.0 + (-x).exp());
            assert!((s - want).abs() < 1e-15, "sigmoid({x}) = {s}, want {want}");
            let sp = x.softplus();
            let want = if x > 30.0 { x } else { x.exp().ln_1p() };
            assert!(
                (sp - want).abs() <= 1e-12 * want.abs().max(1e-300),
                "softplus({x})"
            );
        }
        assert!(f32::NAN.sigmoid().is_nan() && f64::NAN.softplus().is_nan());
        assert_eq!(f64::NEG_INFINITY.sigmoid(), 0.0);
        assert_eq!(f64::INFINITY.sigmoid(), 1.0);
    }

    #[test]
    fn erf_matches_known_values() {
        // erf(0.5), erf(1), erf(2) to 16 digits (Abramowitz & Stegun, table 7.1).
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
        ] {
            assert!((Math::erf(x) - want).abs() < 1e-15, "erf({x})");
            assert!((Math::erf(-x) + want).abs() < 1e-15, "erf(-{x})");
            assert!(
                (Math::erf(x as f32) - want as f32).abs() < 1e-7,
                "erff({x})"
            );
        }
    }
}
