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
    ($t:ident, $erf:path, $exp:path, $tanh:path, $ln:path, $ln_1p:path) => {
        impl Math for $t {
            type Mask = bool;
            #[inline(always)]
            fn k(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn exp_m1(self) -> Self {
                $t::exp_m1(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $ln(self)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                $ln_1p(self)
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
                $tanh(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            // Two selects (a loop calling them vectorises): a NaN `other`
            // fails the comparison and is picked; a NaN `self` is kept.
            #[inline(always)]
            fn max_nan(self, other: Self) -> Self {
                let m = if self >= other { self } else { other };
                if self.is_nan() {
                    self
                } else {
                    m
                }
            }
            #[inline(always)]
            fn min_nan(self, other: Self) -> Self {
                let m = if self <= other { self } else { other };
                if self.is_nan() {
                    self
                } else {
                    m
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
// f32's exp, tanh, ln and ln_1p are straight-line arithmetic so that the
// loops calling them vectorise; f64 keeps libm's (its gradchecks want the
// last digit).
math_for!(f32, libm::erff, exp_f32, tanh_f32, ln_f32, ln_1p_f32);
math_for!(f64, libm::erf, f64::exp, f64::tanh, f64::ln, f64::ln_1p);

/// e^x in f32 without a library call, so that a loop calling it vectorises
/// (libm's `expf` is an opaque call that keeps its loop scalar). The argument
/// is reduced to `x = n·ln 2 + r` with |r| ≤ ln 2 / 2 (Cody and Waite's
/// two-part ln 2, so `n·ln 2` is exact), e^r is its Taylor polynomial to r⁷
/// (truncation below 0.1 ulp), and 2ⁿ is built from exponent bits in two
/// halves so that results in the subnormal range come out too. Within 2 ulp
/// of the exact value over the whole range (tested against f64).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    // Past these, e^x is inf or rounds to 0; clamping keeps 2ⁿ's halves in
    // range (`clamp` passes a NaN through).
    let x = x.clamp(-104.0, 89.0);
    // Adding 1.5·2²³ rounds to an integer with plain arithmetic (no call to
    // `round`, which the baseline x86-64 target lacks as an instruction).
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_145_75; // ln 2's leading 15 bits (0x3f317200)
    const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 − LN2_HI, rounded
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n_f = shifted - ROUND;
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (x - n_f * LN2_HI) - n_f * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let half = n >> 1;
    let pow2 = |e: i32| f32::from_bits((e.wrapping_add(127) as u32) << 23);
    p * pow2(half) * pow2(n.wrapping_sub(half))
}

/// tanh in f32 without a library call (see [`exp_f32`]): near 0 its odd
/// Taylor polynomial (to x¹³: below 1e-8 relative error for |x| < 0.4),
/// elsewhere `(1 − t) / (1 + t)` with `t = e^(−2|x|)`, which cannot
/// overflow and has no cancellation there. Within 4 ulp (tested).
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    let s = x * x;
    let small = x
        * (1.0
            + s * (-1.0 / 3.0
                + s * (2.0 / 15.0
                    + s * (-17.0 / 315.0
                        + s * (62.0 / 2835.0
                            + s * (-1382.0 / 155_925.0 + s * (21_844.0 / 6_081_075.0)))))));
    let t = exp_f32(-2.0 * x.abs());
    let large = ((1.0 - t) / (1.0 + t)).copysign(x);
    if x.abs() < 0.4 {
        small
    } else {
        large
    }
}

/// ln x in f32 without a library call (see [`exp_f32`]). x = 2ᵏ·m with m
/// in [√½, √2) (a subnormal x scaled by 2²³ first), and with f = m − 1 and
/// s = f / (2 + f), ln m = f − f²/2 + s·(f²/2 + R(s²)), R the degree-8
/// minimax polynomial of `(ln((1 + s)/(1 − s)) − 2s) / s` in s² that
/// fdlibm's `logf` uses; k·ln 2 is added in two parts (its high part has
/// trailing zero bits, so k·LN2_HI is exact). Special values through
/// selects: ln 0 = −∞, ln ∞ = ∞, NaN for x < 0 or NaN. Within 1 ulp
/// (tested against f64).
#[inline(always)]
fn ln_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_138_1; // 0x3f317180
    const LN2_LO: f32 = 9.058_001e-6; // 0x3717f7d1
    const LG1: f32 = 0.666_666_6;
    const LG2: f32 = 0.400_009_72;
    const LG3: f32 = 0.284_987_87;
    const LG4: f32 = 0.242_790_79;
    let tiny = x < f32::MIN_POSITIVE;
    let scaled = if tiny { x * 8_388_608.0 } else { x };
    // Moves m's range to [√½, √2): adding (1 − √½)'s offset in the bits
    // carries into the exponent exactly when the mantissa is ≥ √2.
    let ix = scaled.to_bits().wrapping_add(0x3f80_0000 - 0x3f35_04f3);
    let k = (ix >> 23) as i32 - 0x7f - if tiny { 23 } else { 0 };
    let m = f32::from_bits((ix & 0x007f_ffff) + 0x3f35_04f3);
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let r = z * (LG1 + w * LG3) + w * (LG2 + w * LG4);
    let hfsq = 0.5 * f * f;
    let kf = k as f32;
    let y = s * (hfsq + r) + kf * LN2_LO - hfsq + f + kf * LN2_HI;
    let y = if x == f32::INFINITY { x } else { y };
    let y = if x == 0.0 { f32::NEG_INFINITY } else { y };
    if x < 0.0 || x.is_nan() {
        f32::NAN
    } else {
        y
    }
}

/// ln(1 + x) in f32 without a library call: ln u for u = 1 + x, corrected
/// by (x − (u − 1)) / u for what rounding u lost (Goldberg's form), so it
/// stays accurate near 0 (for |x| below half an ulp of 1, u = 1 and the
/// result is x). ln1p(−1) = −∞, ln1p(∞) = ∞, NaN below −1. Within 2 ulp
/// (tested against f64).
#[inline(always)]
fn ln_1p_f32(x: f32) -> f32 {
    let u = 1.0 + x;
    let correction = (x - (u - 1.0)) / u;
    let finite = u != 0.0 && u != f32::INFINITY;
    ln_f32(u) + if finite { correction } else { 0.0 }
}

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

    /// The distance in f32 steps between `got` and the exact value `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let step = (want as f32).abs().max(f32::MIN_POSITIVE);
        let step = f32::from_bits(step.to_bits() + 1) - step;
        (got as f64 - want).abs() / step as f64
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "a sweep of 260k points, slow under Miri, and plain arithmetic with no unsafe code"
    )]
    fn f32_exp_and_tanh_are_within_a_few_ulp() {
        let (mut worst_exp, mut worst_tanh) = (0.0f64, 0.0f64);
        let mut x = -103.0f32;
        while x < 88.7 {
            for x in [x, x * 1e-3, x * 1e-6] {
                worst_exp = worst_exp.max(ulps(Math::exp(x), (x as f64).exp()));
                worst_tanh = worst_tanh.max(ulps(Math::tanh(x), (x as f64).tanh()));
            }
            x += 0.000_731;
        }
        assert!(worst_exp <= 2.0, "exp is off by {worst_exp} ulp");
        assert!(worst_tanh <= 4.0, "tanh is off by {worst_tanh} ulp");
        // Edges: overflow, underflow into the subnormals and to 0, NaN, signs.
        assert_eq!(Math::exp(89.0f32), f32::INFINITY);
        assert_eq!(Math::exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(Math::exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(Math::exp(0.0f32), 1.0);
        let sub = Math::exp(-100.0f32);
        assert!(sub > 0.0 && ulps(sub, (-100.0f64).exp()) <= 1.0, "{sub}");
        assert!(Math::exp(f32::NAN).is_nan() && Math::tanh(f32::NAN).is_nan());
        assert_eq!(Math::tanh(f32::INFINITY), 1.0);
        assert_eq!(Math::tanh(f32::NEG_INFINITY), -1.0);
        assert!(Math::tanh(-0.0f32).is_sign_negative());
        assert_eq!(Math::tanh(1e-30f32), 1e-30);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "a sweep of 300k points, slow under Miri, and plain arithmetic with no unsafe code"
    )]
    fn f32_ln_and_ln_1p_are_within_a_few_ulp() {
        let (mut worst_ln, mut worst_ln_1p) = (0.0f64, 0.0f64);
        // ln over every binade (subnormals included), ln_1p over (−1, 1e30).
        let mut x = f32::from_bits(1);
        while x < 3e38 {
            worst_ln = worst_ln.max(ulps(Math::ln(x), (x as f64).ln()));
            // At least one step up (a subnormal times 1.00031 rounds back).
            x = (x * 1.000_31).max(f32::from_bits(x.to_bits() + 1));
        }
        let mut x = -0.999_999f32;
        while x < 1e30 {
            for x in [x, x * 1e-5, -x * 1e-5] {
                worst_ln_1p = worst_ln_1p.max(ulps(Math::ln_1p(x), (x as f64).ln_1p()));
            }
            x = if x < 1.0 { x + 0.000_173 } else { x * 1.001_7 };
        }
        assert!(worst_ln <= 1.0, "ln is off by {worst_ln} ulp");
        assert!(worst_ln_1p <= 2.0, "ln_1p is off by {worst_ln_1p} ulp");
        // Edges: zero, infinity, negatives, NaN, tiny arguments.
        assert_eq!(Math::ln(0.0f32), f32::NEG_INFINITY);
        assert_eq!(Math::ln(-0.0f32), f32::NEG_INFINITY);
        assert_eq!(Math::ln(f32::INFINITY), f32::INFINITY);
        assert_eq!(Math::ln(1.0f32), 0.0);
        assert!(Math::ln(-1.0f32).is_nan() && Math::ln(f32::NAN).is_nan());
        assert_eq!(Math::ln_1p(-1.0f32), f32::NEG_INFINITY);
        assert_eq!(Math::ln_1p(f32::INFINITY), f32::INFINITY);
        assert_eq!(Math::ln_1p(0.0f32), 0.0);
        assert_eq!(Math::ln_1p(1e-30f32), 1e-30);
        assert!(Math::ln_1p(-2.0f32).is_nan() && Math::ln_1p(f32::NAN).is_nan());
        assert_eq!(Math::ln_1p(f32::MAX), Math::ln(f32::MAX));
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
