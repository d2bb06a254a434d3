//! GELU, exact (with erf) or with PyTorch's tanh approximation.

use super::{Reads, Unary};
use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::error::Result;
use crate::tensor::{Math, Tensor};

/// 1/√2.
const SQRT1_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// PyTorch's `kAlpha = M_2_SQRTPI * M_SQRT1_2 * 0.5` = 1/√(2π).
const ALPHA: f64 = std::f64::consts::FRAC_2_SQRT_PI * SQRT1_2 * 0.5;
/// PyTorch's `kBeta = M_SQRT2 * M_2_SQRTPI * 0.5` = √(2/π).
const BETA: f64 = std::f64::consts::SQRT_2 * std::f64::consts::FRAC_2_SQRT_PI * 0.5;
const KAPPA: f64 = 0.044715;

/// `gelu(x) = x · Φ(x)`, Φ the standard normal CDF: `x/2 · (1 + erf(x/√2))`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GeluErf;
impl Unary for GeluErf {
    const GRAD_FN: &'static str = "GeluBackward";
    const KERNEL: &'static str = "gelu";
    const READS: Reads = Reads::Input;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        x * M::k(0.5) * (M::k(1.0) + (x * M::k(SQRT1_2)).erf())
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, _: [M; 2]) -> M {
        let cdf = M::k(0.5) * (M::k(1.0) + (x * M::k(SQRT1_2)).erf());
        let pdf = M::k(ALPHA) * (x * x * M::k(-0.5)).exp();
        g * (cdf + x * pdf)
    }
}

/// GELU's tanh approximation: `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GeluTanh;
impl Unary for GeluTanh {
    const GRAD_FN: &'static str = "GeluBackward";
    const KERNEL: &'static str = "gelu_tanh";
    const READS: Reads = Reads::Input;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        let inner = M::k(BETA) * (x + M::k(KAPPA) * x * x * x);
        M::k(0.5) * x * (M::k(1.0) + inner.tanh())
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, _: [M; 2]) -> M {
        let x_sq = x * x;
        let inner = M::k(BETA) * (x + M::k(KAPPA) * x_sq * x);
        let t = inner.tanh();
        let left = M::k(0.5) * x;
        let right = M::k(1.0) + t;
        let left_derivative = M::k(0.5) * right;
        let inner_derivative = M::k(BETA) * (M::k(1.0) + M::k(3.0 * KAPPA) * x_sq);
        let right_derivative = left * (M::k(1.0) - t * t) * inner_derivative;
        g * (left_derivative + right_derivative)
    }
}

/// GELU (`F.gelu(x, approximate)`): exact, or `approximate = "tanh"`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gelu {
    /// Whether to use the tanh approximation.
    pub tanh: bool,
}

impl Gelu {
    /// `approximate` is `"none"` (exact, with erf) or `"tanh"`, as in PyTorch.
    #[track_caller]
    pub fn new(approximate: &str) -> Self {
        match approximate {
            "none" => Gelu { tanh: false },
            "tanh" => Gelu { tanh: true },
            other => panic!(
                "gelu: approximate argument must be either \"none\" or \"tanh\", not {other:?}"
            ),
        }
    }
}

crate::unary_op!(GeluErf, GeluTanh);

impl Op for Gelu {
    const NAME: &'static str = "GeluBackward";
    const OP: &'static str = "gelu";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Same;
    type Saved = Option<Tensor>;
    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        <GeluErf as Op>::spec(&GeluErf, x)
    }
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        if self.tanh {
            GeluTanh.forward(x, out)
        } else {
            GeluErf.forward(x, out)
        }
    }
    fn save(&self, x: &[&Tensor], y: &Tensor, need: &[bool]) -> Option<Tensor> {
        GeluErf.save(x, y, need)
    }
    fn backward(&self, saved: &Option<Tensor>, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        if self.tanh {
            GeluTanh.backward(saved, g, grads)
        } else {
            GeluErf.backward(saved, g, grads)
        }
    }
}
