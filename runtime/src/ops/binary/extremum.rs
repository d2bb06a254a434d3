//! `maximum(a, b)` and `minimum(a, b)` with broadcasting.
//!
//! Both propagate NaN. Their gradient is PyTorch's: the operand that wins
//! takes `g`, a tie splits it in half, and where either operand is NaN (no
//! comparison holds) both take all of it.

use super::Binary;
use crate::tensor::Math;

/// Whether `a == b` (false when either is NaN).
#[inline(always)]
fn tie<M: Math>(a: M, b: M) -> M::Mask {
    M::and(a.ge(b), a.le(b))
}

/// `g` where `a` is not `loses`, halved on a tie, 0 where it loses.
#[inline(always)]
fn share<M: Math>(g: M, a: M, b: M, loses: M::Mask) -> M {
    M::select(loses, M::k(0.0), M::select(tie(a, b), g * M::k(0.5), g))
}

/// The larger of `a` and `b` (`torch.maximum`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Maximum;
impl Binary for Maximum {
    const GRAD_FN: &'static str = "MaximumBackward";
    const KERNEL: &'static str = "maximum";
    #[inline(always)]
    fn f<M: Math>(a: M, b: M) -> M {
        a.max_nan(b)
    }
    #[inline(always)]
    fn int(a: i64, b: i64) -> i64 {
        a.max(b)
    }
    #[inline(always)]
    fn da<M: Math>(g: M, a: M, b: M) -> M {
        share(g, a, b, a.lt(b))
    }
    #[inline(always)]
    fn db<M: Math>(g: M, a: M, b: M) -> M {
        share(g, a, b, a.gt(b))
    }
}

/// The smaller of `a` and `b` (`torch.minimum`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Minimum;
impl Binary for Minimum {
    const GRAD_FN: &'static str = "MinimumBackward";
    const KERNEL: &'static str = "minimum";
    #[inline(always)]
    fn f<M: Math>(a: M, b: M) -> M {
        a.min_nan(b)
    }
    #[inline(always)]
    fn int(a: i64, b: i64) -> i64 {
        a.min(b)
    }
    #[inline(always)]
    fn da<M: Math>(g: M, a: M, b: M) -> M {
        share(g, a, b, a.gt(b))
    }
    #[inline(always)]
    fn db<M: Math>(g: M, a: M, b: M) -> M {
        share(g, a, b, a.lt(b))
    }
}

crate::binary_op!(Maximum, Minimum);
