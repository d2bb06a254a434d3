//! softplus and the functions built on it: mish, logsigmoid.

use super::{Reads, Unary};
use crate::tensor::Math;

/// `softplus(x) = log(1 + e^(βx)) / β`, and `x` where `βx > threshold` (PyTorch's rule).
#[derive(Clone, Copy, Debug)]
pub struct Softplus {
    /// β (PyTorch's default 1).
    pub beta: f64,
    /// Above `βx > threshold` the function is the identity (default 20).
    pub threshold: f64,
}
impl Default for Softplus {
    fn default() -> Self {
        Softplus {
            beta: 1.0,
            threshold: 20.0,
        }
    }
}
impl Softplus {
    /// With the given `beta` and `threshold`.
    pub fn new(beta: f64, threshold: f64) -> Self {
        Softplus { beta, threshold }
    }
}
impl Unary for Softplus {
    const GRAD_FN: &'static str = "SoftplusBackward";
    const KERNEL: &'static str = "softplus";
    const READS: Reads = Reads::Input;
    fn params(&self) -> [f64; 2] {
        [self.beta, self.threshold]
    }
    #[inline(always)]
    fn f<M: Math>(x: M, p: [M; 2]) -> M {
        let bx = x * p[0];
        M::select(bx.gt(p[1]), x, bx.exp().ln_1p() / p[0])
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, p: [M; 2]) -> M {
        let bx = x * p[0];
        let z = bx.exp();
        M::select(bx.gt(p[1]), g, g * z / (z + M::k(1.0)))
    }
}

/// Mish: `x · tanh(softplus(x))`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mish;
impl Unary for Mish {
    const GRAD_FN: &'static str = "MishBackward";
    const KERNEL: &'static str = "mish";
    const READS: Reads = Reads::Input;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        x * x.exp().ln_1p().tanh()
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, _: [M; 2]) -> M {
        let one = M::k(1.0);
        let s = one / (one + (-x).exp());
        let t = x.exp().ln_1p().tanh();
        g * (t + x * s * (one - t * t))
    }
}

/// `logsigmoid(x) = log(1 / (1 + e^-x))`, computed as `min(x, 0) - log1p(e^-|x|)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Logsigmoid;
impl Unary for Logsigmoid {
    const GRAD_FN: &'static str = "LogSigmoidBackward";
    const KERNEL: &'static str = "logsigmoid";
    const READS: Reads = Reads::Input;
    #[inline(always)]
    fn f<M: Math>(x: M, _: [M; 2]) -> M {
        x.min_nan(M::k(0.0)) - (-x.abs()).exp().ln_1p()
    }
    #[inline(always)]
    fn df<M: Math>(g: M, x: M, _: [M; 2]) -> M {
        let neg = x.lt(M::k(0.0));
        let max_deriv = M::select(neg, M::k(1.0), M::k(0.0));
        let sign = M::select(neg, M::k(1.0), M::k(-1.0));
        let z = (-x.abs()).exp();
        g * (max_deriv - sign * (z / (M::k(1.0) + z)))
    }
}

crate::unary_op!(Softplus, Mish, Logsigmoid);
