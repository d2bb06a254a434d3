//! `pow`: a tensor to the power of a number (`x.pow(2.0)`, `x ** 2`) or of
//! a tensor with broadcasting (`torch.pow(a, b)`), as one op with PyTorch's
//! name and gradients for both forms.

use super::{Binary, SavedOperands};
use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::backend::Ew;
use crate::error::{OrPanic, Result};
use crate::ops::{float_map, float_zip};
use crate::tensor::{Math, Tensor};

/// `a ^ b` elementwise: the tensor-exponent form's formulas. Integer
/// operands compute in f32, as the number form does.
#[derive(Clone, Copy, Debug, Default)]
pub struct PowTensor;
impl Binary for PowTensor {
    const GRAD_FN: &'static str = "PowBackward";
    const KERNEL: &'static str = "pow";
    const FLOAT: bool = true;
    #[inline(always)]
    fn f<M: Math>(a: M, b: M) -> M {
        a.powf(b)
    }
    fn int(_: i64, _: i64) -> i64 {
        unreachable!("pow with a tensor exponent computes in a float dtype")
    }
    /// `g·b·a^(b-1)`, and 0 where `b = 0` (PyTorch's `pow_backward_self`).
    #[inline(always)]
    fn da<M: Math>(g: M, a: M, b: M) -> M {
        let zero = M::k(0.0);
        let b_is_zero = M::and(b.ge(zero), b.le(zero));
        M::select(b_is_zero, zero, g * b * a.powf(b - M::k(1.0)))
    }
    /// `g·a^b·ln a`, and 0 where `a = 0` and `b >= 0` (PyTorch's
    /// `pow_backward_exponent`: the limit there, not `0·(-inf)`).
    #[inline(always)]
    fn db<M: Math>(g: M, a: M, b: M) -> M {
        let zero = M::k(0.0);
        let a_is_zero = M::and(a.ge(zero), a.le(zero));
        M::select(
            M::and(a_is_zero, b.ge(zero)),
            zero,
            g * (a.powf(b) * a.ln()),
        )
    }
}

crate::binary_op!(PowTensor);

/// `pow` on the tape and in `network!` (`pow(h, 2.0)`, `h.pow(e)`): to the
/// number `p` ([`Pow::new`]; one input), or to the second input
/// ([`Pow::default`]; two inputs, broadcast).
#[derive(Clone, Copy, Debug, Default)]
pub struct Pow {
    /// The exponent when it is a number; `None`: the second input.
    pub p: Option<f64>,
}

impl Pow {
    /// To the power `p` (any number type: `Pow::new(3)`).
    pub fn new(p: impl Into<f64>) -> Self {
        Pow { p: Some(p.into()) }
    }
}

/// What `pow`'s backward reads: the base (number exponent), or both operands.
#[doc(hidden)]
pub enum PowSaved {
    Base(Tensor),
    Operands(SavedOperands),
}

impl crate::autograd::Saved for PowSaved {
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        match self {
            PowSaved::Base(t) => f(t),
            PowSaved::Operands(s) => s.visit_mut(f),
        }
    }
}

impl Op for Pow {
    const NAME: &'static str = "PowBackward";
    const OP: &'static str = "pow";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Same;
    type Saved = PowSaved;
    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        match self.p {
            Some(_) => crate::ops::unary::spec(x),
            None => super::spec::<PowTensor>(x),
        }
    }
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let Some(p) = self.p else {
            return super::forward::<PowTensor>(x, out);
        };
        let x = x[0];
        out.set(if p == 2.0 {
            float_map!(x, Ew::Square, |x| x * x)
        } else if p.fract() == 0.0 && p.abs() < 64.0 {
            float_map!(x, Ew::PowI, p, |x| x.powi(p as i32))
        } else {
            float_map!(x, Ew::PowF, p, |x| x.powf(p as F))
        })
    }
    fn save(&self, x: &[&Tensor], _: &Tensor, need: &[bool]) -> PowSaved {
        match self.p {
            Some(_) => PowSaved::Base(x[0].clone()),
            None => PowSaved::Operands(super::save::<PowTensor>(x, need)),
        }
    }
    fn backward(&self, saved: &PowSaved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        match (saved, self.p) {
            (PowSaved::Base(x), Some(p)) => grads[0].add(pow_scalar_backward(x, p, g)),
            (PowSaved::Operands(s), None) => super::backward::<PowTensor>(s, g, grads),
            _ => unreachable!("saved by this op's own `save`"),
        }
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
