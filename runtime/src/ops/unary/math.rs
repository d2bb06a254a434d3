//! exp, log and sqrt.

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

crate::unary_op!(Exp, Log, Sqrt);
