//! `a + b`, `a - b`, `a * b`, `a / b` with broadcasting.

use super::Binary;
use crate::tensor::Math;

/// `a + b`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Add;
impl Binary for Add {
    const GRAD_FN: &'static str = "AddBackward";
    const KERNEL: &'static str = "add";
    const SIGNS: Option<[f64; 2]> = Some([1.0, 1.0]);
    #[inline(always)]
    fn f<M: Math>(a: M, b: M) -> M {
        a + b
    }
    #[inline(always)]
    fn int(a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
    fn da<M: Math>(g: M, _: M, _: M) -> M {
        g
    }
    fn db<M: Math>(g: M, _: M, _: M) -> M {
        g
    }
}

/// `a - b`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sub;
impl Binary for Sub {
    const GRAD_FN: &'static str = "SubBackward";
    const KERNEL: &'static str = "sub";
    const SIGNS: Option<[f64; 2]> = Some([1.0, -1.0]);
    #[inline(always)]
    fn f<M: Math>(a: M, b: M) -> M {
        a - b
    }
    #[inline(always)]
    fn int(a: i64, b: i64) -> i64 {
        a.wrapping_sub(b)
    }
    fn da<M: Math>(g: M, _: M, _: M) -> M {
        g
    }
    fn db<M: Math>(g: M, _: M, _: M) -> M {
        -g
    }
}

/// `a · b`: dL/da = `g·b`, dL/db = `g·a`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mul;
impl Binary for Mul {
    const GRAD_FN: &'static str = "MulBackward";
    const KERNEL: &'static str = "mul";
    #[inline(always)]
    fn f<M: Math>(a: M, b: M) -> M {
        a * b
    }
    #[inline(always)]
    fn int(a: i64, b: i64) -> i64 {
        a.wrapping_mul(b)
    }
    #[inline(always)]
    fn da<M: Math>(g: M, _: M, b: M) -> M {
        g * b
    }
    #[inline(always)]
    fn db<M: Math>(g: M, a: M, _: M) -> M {
        g * a
    }
}

/// True division `a / b` (integers give f32, as in PyTorch): dL/da = `g / b`,
/// dL/db = `-g·a / b²`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Div;
impl Binary for Div {
    const GRAD_FN: &'static str = "DivBackward";
    const KERNEL: &'static str = "div";
    const FLOAT: bool = true;
    #[inline(always)]
    fn f<M: Math>(a: M, b: M) -> M {
        a / b
    }
    fn int(_: i64, _: i64) -> i64 {
        unreachable!("true division computes in a float dtype")
    }
    #[inline(always)]
    fn da<M: Math>(g: M, _: M, b: M) -> M {
        g / b
    }
    #[inline(always)]
    fn db<M: Math>(g: M, a: M, b: M) -> M {
        -g * a / (b * b)
    }
}

crate::binary_op!(Add, Sub, Mul, Div);
