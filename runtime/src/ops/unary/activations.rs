//! The piecewise and logistic activations: relu, sigmoid, tanh, silu,
//! leaky_relu, elu, hardtanh. PyTorch's formulas, NaN handling and
//! derivative conventions (at a kink, the derivative of the lower piece).

use super::{Reads, Unary};
use crate::autograd::apply;
use crate::tensor::{Math, Tensor};

/// `relu(x) = max(x, 0)`; NaN and -0.0 stay as they are, as in PyTorch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Relu;
impl Unary for Relu {
    const GRAD_FN: &'static str = "ReluBackward";
    const KERNEL: &'static str = "relu";
    const READS: Reads = Reads::Output;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        M::select(x.lt(M::k(0.0)), M::k(0.0), x)
    }
    /// PyTorch's `threshold_backward(g, y, 0)`: `y <= 0 ? 0 : g`.
    #[inline(always)]
    fn df<M: Math>(g: M, y: M, _: [M; 2]) -> M {
        M::select(y.le(M::k(0.0)), M::k(0.0), g)
    }
}

/// The logistic function `1 / (1 + e^-x)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sigmoid;
impl Unary for Sigmoid {
    const GRAD_FN: &'static str = "SigmoidBackward";
    const KERNEL: &'static str = "sigmoid";
    const READS: Reads = Reads::Output;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        x.sigmoid()
    }
    #[inline(always)]
    fn df<M: Math>(g: M, y: M, _: [M; 2]) -> M {
        g * (M::k(1.0) - y) * y
    }
}

/// The hyperbolic tangent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tanh;
impl Unary for Tanh {
    const GRAD_FN: &'static str = "TanhBackward";
    const KERNEL: &'static str = "tanh";
    const READS: Reads = Reads::Output;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        x.tanh()
    }
    #[inline(always)]
    fn df<M: Math>(g: M, y: M, _: [M; 2]) -> M {
        g * (M::k(1.0) - y * y)
    }
}

/// SiLU (swish): `x · sigmoid(x)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silu;
impl Unary for Silu {
    const GRAD_FN: &'static str = "SiluBackward";
    const KERNEL: &'static str = "silu";
    const READS: Reads = Reads::Input;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        x / (M::k(1.0) + (-x).exp())
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, _: [M; 2]) -> M {
        let one = M::k(1.0);
        let s = one / (one + (-x).exp());
        g * s * (one + x * (one - s))
    }
}

/// `x` where positive, `negative_slope · x` elsewhere.
#[derive(Clone, Copy, Debug)]
pub struct LeakyRelu {
    /// The slope below 0 (PyTorch's default 0.01).
    pub negative_slope: f64,
}
impl Default for LeakyRelu {
    fn default() -> Self {
        LeakyRelu {
            negative_slope: 0.01,
        }
    }
}
impl LeakyRelu {
    /// With the given slope below 0.
    pub fn new(negative_slope: f64) -> Self {
        LeakyRelu { negative_slope }
    }
}
impl Unary for LeakyRelu {
    const GRAD_FN: &'static str = "LeakyReluBackward";
    const KERNEL: &'static str = "leaky_relu";
    const READS: Reads = Reads::Input;
    fn params(&self) -> [f64; 2] {
        [self.negative_slope, 0.0]
    }
    #[inline(always)]
    fn f<M: Math>(x: M, p: [M; 2]) -> M {
        M::select(x.gt(M::k(0.0)), x, x * p[0])
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, p: [M; 2]) -> M {
        M::select(x.gt(M::k(0.0)), g, g * p[0])
    }
}

/// ELU: `x` where positive, `alpha · (e^x - 1)` elsewhere.
#[derive(Clone, Copy, Debug)]
pub struct Elu {
    /// The negative saturation value (PyTorch's default 1.0).
    pub alpha: f64,
}
impl Default for Elu {
    fn default() -> Self {
        Elu { alpha: 1.0 }
    }
}
impl Elu {
    /// With the given `alpha`.
    pub fn new(alpha: f64) -> Self {
        Elu { alpha }
    }
}
impl Unary for Elu {
    const GRAD_FN: &'static str = "EluBackward";
    const KERNEL: &'static str = "elu";
    const READS: Reads = Reads::Input;
    fn params(&self) -> [f64; 2] {
        [self.alpha, 0.0]
    }
    #[inline(always)]
    fn f<M: Math>(x: M, p: [M; 2]) -> M {
        M::select(x.le(M::k(0.0)), x.exp_m1() * p[0], x)
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, p: [M; 2]) -> M {
        M::select(x.le(M::k(0.0)), g * p[0] * x.exp(), g)
    }
}

/// `x` clamped into `[min_val, max_val]`; NaN stays NaN.
#[derive(Clone, Copy, Debug)]
pub struct Hardtanh {
    /// The lower bound (PyTorch's default -1).
    pub min_val: f64,
    /// The upper bound (PyTorch's default 1).
    pub max_val: f64,
}
impl Default for Hardtanh {
    fn default() -> Self {
        Hardtanh {
            min_val: -1.0,
            max_val: 1.0,
        }
    }
}
impl Hardtanh {
    /// Clamping into `[min_val, max_val]`.
    pub fn new(min_val: f64, max_val: f64) -> Self {
        Hardtanh { min_val, max_val }
    }
}
impl Unary for Hardtanh {
    const GRAD_FN: &'static str = "HardtanhBackward";
    const KERNEL: &'static str = "hardtanh";
    const READS: Reads = Reads::Input;
    fn params(&self) -> [f64; 2] {
        [self.min_val, self.max_val]
    }
    #[inline(always)]
    fn f<M: Math>(x: M, p: [M; 2]) -> M {
        M::select(x.lt(p[0]), p[0], M::select(x.gt(p[1]), p[1], x))
    }
    /// PyTorch: 0 at and beyond the bounds.
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, p: [M; 2]) -> M {
        M::select(M::or(x.le(p[0]), x.ge(p[1])), M::k(0.0), g)
    }
}

impl Tensor {
    /// Elementwise `max(x, 0)` (NaN stays NaN, as in PyTorch).
    pub fn relu(&self) -> Tensor {
        apply(Relu, &[self])
    }

    /// Elementwise logistic function `1 / (1 + e^-x)`, stable for large |x|.
    pub fn sigmoid(&self) -> Tensor {
        apply(Sigmoid, &[self])
    }

    /// Elementwise hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        apply(Tanh, &[self])
    }
}

crate::unary_op!(Relu, Sigmoid, Tanh, Silu, LeakyRelu, Elu, Hardtanh);
