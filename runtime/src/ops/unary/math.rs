//! exp, log, sqrt, abs and clamp.

use super::{Reads, Unary};
use crate::autograd::apply;
use crate::tensor::{Math, Tensor};

/// e^x.
#[derive(Clone, Copy, Debug, Default)]
pub struct Exp;
impl Unary for Exp {
    const GRAD_FN: &'static str = "ExpBackward";
    const KERNEL: &'static str = "exp";
    const READS: Reads = Reads::Output;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        x.exp()
    }
    #[inline(always)]
    fn df<M: Math>(g: M, y: M, _: [M; 2]) -> M {
        g * y
    }
}

/// The natural logarithm.
#[derive(Clone, Copy, Debug, Default)]
pub struct Log;
impl Unary for Log {
    const GRAD_FN: &'static str = "LogBackward";
    const KERNEL: &'static str = "log";
    const READS: Reads = Reads::Input;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        x.ln()
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, _: [M; 2]) -> M {
        g / x
    }
}

/// The square root.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sqrt;
impl Unary for Sqrt {
    const GRAD_FN: &'static str = "SqrtBackward";
    const KERNEL: &'static str = "sqrt";
    const READS: Reads = Reads::Output;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        x.sqrt()
    }
    #[inline(always)]
    fn df<M: Math>(g: M, y: M, _: [M; 2]) -> M {
        g / (M::k(2.0) * y)
    }
}

/// |x|. Its derivative is PyTorch's `sign(x)`: 0 at 0 (and at NaN).
#[derive(Clone, Copy, Debug, Default)]
pub struct Abs;
impl Unary for Abs {
    const GRAD_FN: &'static str = "AbsBackward";
    const KERNEL: &'static str = "abs";
    const READS: Reads = Reads::Input;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        x.abs()
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, _: [M; 2]) -> M {
        let zero = M::k(0.0);
        M::select(x.gt(zero), g, M::select(x.lt(zero), -g, zero))
    }
}

/// `x` clamped into `[min, max]` (`torch.clamp`; an absent bound is
/// infinite). NaN stays NaN and `min > max` gives `max`, as in PyTorch; the
/// gradient passes where `min < x < max` (0 at a bound itself and at NaN, as
/// PyTorch 2.15 computes it).
#[derive(Clone, Copy, Debug)]
pub struct Clamp {
    /// The lower bound (`f64::NEG_INFINITY`: none).
    pub min: f64,
    /// The upper bound (`f64::INFINITY`: none).
    pub max: f64,
}
impl Default for Clamp {
    fn default() -> Self {
        Clamp::new(f64::NEG_INFINITY, f64::INFINITY)
    }
}
impl Clamp {
    /// Clamping into `[min, max]`.
    pub fn new(min: f64, max: f64) -> Self {
        Clamp { min, max }
    }
}
impl Unary for Clamp {
    const GRAD_FN: &'static str = "ClampBackward";
    const KERNEL: &'static str = "clamp";
    const READS: Reads = Reads::Input;
    fn params(&self) -> [f64; 2] {
        [self.min, self.max]
    }
    #[inline(always)]
    fn f<M: Math>(x: M, p: [M; 2]) -> M {
        let y = M::select(x.lt(p[0]), p[0], x);
        M::select(y.gt(p[1]), p[1], y)
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, p: [M; 2]) -> M {
        M::select(M::and(x.gt(p[0]), x.lt(p[1])), g, M::k(0.0))
    }
}

impl Tensor {
    /// Elementwise e^x.
    pub fn exp(&self) -> Tensor {
        apply(Exp, &[self])
    }

    /// Elementwise natural logarithm.
    pub fn log(&self) -> Tensor {
        apply(Log, &[self])
    }

    /// Elementwise square root.
    pub fn sqrt(&self) -> Tensor {
        apply(Sqrt, &[self])
    }
}

crate::unary_op!(Exp, Log, Sqrt, Abs, Clamp);
