//! Arithmetic with a number: `x + c`, `x - c`, `c - x`, `x * c`, `x / c`,
//! `c / x`, and `-x`, `x²`. One pass over the tensor, no 0-d operand tensor,
//! the number kept in the op (as `f64`; `c as f32` for f32 tensors, as
//! PyTorch does with a Python float).

use super::{Reads, Unary};
use crate::tensor::Math;

macro_rules! scalar_op {
    ($(#[$doc:meta])* $name:ident, $kernel:literal, $grad_fn:literal, $reads:ident, $is_g:expr,
     |$x:ident, $c:ident| $f:expr, |$g:ident, $s:ident, $c2:ident| $df:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name(pub f64);
        impl $name {
            /// With the number `c`.
            pub fn new(c: f64) -> Self {
                $name(c)
            }
        }
        impl Unary for $name {
            const GRAD_FN: &'static str = $grad_fn;
            const KERNEL: &'static str = $kernel;
            const READS: Reads = Reads::$reads;
            const GRAD_IS_G: bool = $is_g;
            fn params(&self) -> [f64; 2] {
                [self.0, 0.0]
            }
            #[inline(always)]
            fn f<M: Math>($x: M, p: [M; 2]) -> M {
                let $c = p[0];
                $f
            }
            #[inline(always)]
            #[allow(unused_variables)]
            fn df<M: Math>($g: M, $s: M, p: [M; 2]) -> M {
                let $c2 = p[0];
                $df
            }
        }
    };
}

scalar_op!(
    /// `x + c`.
    AddScalar, "add_s", "AddBackward", Nothing, true, |x, c| x + c, |g, s, c| g
);
scalar_op!(
    /// `x - c`.
    SubScalar, "sub_s", "SubBackward", Nothing, true, |x, c| x - c, |g, s, c| g
);
scalar_op!(
    /// `c - x`.
    RSubScalar, "rsub_s", "RsubBackward", Nothing, false, |x, c| c - x, |g, s, c| -g
);
scalar_op!(
    /// `x · c`.
    MulScalar, "mul_s", "MulBackward", Nothing, false, |x, c| x * c, |g, s, c| g * c
);
scalar_op!(
    /// `x / c`.
    DivScalar, "div_s", "DivBackward", Nothing, false, |x, c| x / c, |g, s, c| g / c
);
scalar_op!(
    /// `c / x`: dL/dx = `-g·c / x²`.
    RDivScalar, "rdiv_s", "DivBackward", Input, false, |x, c| c / x,
    |g, x, c| -(g * c) / (x * x)
);

/// `-x`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Neg;
impl Unary for Neg {
    const GRAD_FN: &'static str = "NegBackward";
    const KERNEL: &'static str = "neg";
    const READS: Reads = Reads::Nothing;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        -x
    }
    #[inline(always)]
    fn df<M: Math>(g: M, _: M, _: [M; 2]) -> M {
        -g
    }
}

/// `x²`: dL/dx = `g·2x`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Square;
impl Unary for Square {
    const GRAD_FN: &'static str = "PowBackward";
    const KERNEL: &'static str = "square";
    const READS: Reads = Reads::Input;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        x * x
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, _: [M; 2]) -> M {
        g * (M::k(2.0) * x)
    }
}

crate::unary_op!(AddScalar, SubScalar, RSubScalar, MulScalar, DivScalar, RDivScalar, Neg, Square);
