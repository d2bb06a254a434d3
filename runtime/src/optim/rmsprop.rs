//! RMSprop (PyTorch's `torch.optim.RMSprop`).

use super::base::{Algorithm, Core, SLOTS};
use super::fused::{self, RmspropParams};
use super::{impl_optimizer, opt, ParamGroup};
use crate::tensor::{Float, Tensor};

/// This step's hyperparameters, which the CPU and the GPU kernel both take.
fn params(g: &ParamGroup) -> RmspropParams {
    RmspropParams {
        lr: g.lr,
        alpha: g.alpha,
        eps: g.eps,
        weight_decay: g.weight_decay,
        momentum: g.momentum,
        centered: g.centered,
        maximize: g.maximize,
    }
}

pub(crate) struct RmspropRule;

impl Algorithm for RmspropRule {
    fn name(&self) -> &'static str {
        "RMSprop"
    }
    fn options(&self) -> u16 {
        opt::LR
            | opt::ALPHA
            | opt::EPS
            | opt::WEIGHT_DECAY
            | opt::MOMENTUM
            | opt::CENTERED
            | opt::MAXIMIZE
    }
    fn slot_names(&self) -> [&'static str; SLOTS] {
        ["square_avg", "momentum_buffer", "grad_avg"]
    }
    fn slots(&self, g: &ParamGroup) -> [bool; SLOTS] {
        [true, g.momentum > 0.0, g.centered]
    }
    fn update<F: Float>(
        &self,
        g: &ParamGroup,
        _step: u64,
        _fresh: bool,
        p: &mut [F],
        grad: &[F],
        [square_avg, buf, grad_avg]: [&mut [F]; SLOTS],
    ) {
        let h = params(g);
        fused::rmsprop(p, grad, square_avg, buf, grad_avg, &h);
    }
    #[cfg(feature = "cuda")]
    fn update_cuda(
        &self,
        g: &ParamGroup,
        _step: u64,
        _fresh: bool,
        p: &crate::backend::Array,
        grad: &crate::backend::Array,
        [square_avg, buf, grad_avg]: [Option<&crate::backend::Array>; SLOTS],
    ) {
        let h = params(g);
        let square_avg = square_avg.expect("RMSprop uses square_avg");
        crate::backend::cuda::rmsprop_step(p, grad, square_avg, buf, grad_avg, &h);
    }
}

/// RMSprop, PyTorch's `torch.optim.RMSprop`:
///
/// ```text
/// g = ∇ (negated when maximize) + weight_decay * p
/// v = alpha * v + (1 - alpha) * g²
/// centered: g_avg = alpha * g_avg + (1 - alpha) * g,  v~ = v - g_avg²  (else v~ = v)
/// momentum > 0: buf = momentum * buf + g / (sqrt(v~) + eps),  p = p - lr * buf
/// otherwise:    p = p - lr * g / (sqrt(v~) + eps)
/// ```
///
/// Defaults as PyTorch: alpha 0.99, eps 1e-8, weight_decay 0, momentum 0,
/// centered false, maximize false (PyTorch's default lr is 1e-2). State:
/// `state.{i}.step`, `state.{i}.square_avg`, with momentum
/// `state.{i}.momentum_buffer`, centered `state.{i}.grad_avg`.
///
/// ```
/// use deriv_runtime::optim::{Optimizer, RMSprop};
/// use deriv_runtime::Tensor;
///
/// let w = Tensor::ones([2]).requires_grad_(true);
/// let mut opt = RMSprop::new(vec![w.clone()], 0.01).alpha(0.75);
/// (&w * 2.0).sum().backward();
/// opt.step(); // v = 0.25 * 4 = 1, w = 1 - 0.01 * 2 / 1
/// assert!((w.to_vec::<f32>()[0] - 0.98).abs() < 1e-6);
/// ```
pub struct RMSprop {
    core: Core<RmspropRule>,
}

impl RMSprop {
    /// RMSprop over `params` with learning rate `lr`.
    ///
    /// Panics on an empty parameter list or a negative lr.
    #[track_caller]
    pub fn new(params: Vec<Tensor>, lr: f64) -> Self {
        Self::with_groups(vec![ParamGroup::new(params)], lr)
    }

    /// RMSprop over several groups; options a group does not set come from
    /// `lr` and the builder methods.
    #[track_caller]
    pub fn with_groups(groups: Vec<ParamGroup>, lr: f64) -> Self {
        let mut defaults = ParamGroup::new(Vec::new());
        defaults.lr = lr;
        defaults.alpha = 0.99;
        defaults.eps = 1e-8;
        RMSprop {
            core: Core::new(RmspropRule, defaults, groups),
        }
    }

    /// Smoothing constant of the squared-gradient average (default 0.99).
    #[track_caller]
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.core.set_default(opt::ALPHA, |g| g.alpha = alpha);
        self
    }

    /// Term added to the denominator (default 1e-8).
    #[track_caller]
    pub fn eps(mut self, eps: f64) -> Self {
        self.core.set_default(opt::EPS, |g| g.eps = eps);
        self
    }

    /// L2 penalty added to the gradient (default 0).
    #[track_caller]
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.core
            .set_default(opt::WEIGHT_DECAY, |g| g.weight_decay = weight_decay);
        self
    }

    /// Momentum factor (default 0).
    #[track_caller]
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.core
            .set_default(opt::MOMENTUM, |g| g.momentum = momentum);
        self
    }

    /// Normalize by the variance estimate `v - g_avg²` instead of `v` (default false).
    #[track_caller]
    pub fn centered(mut self, centered: bool) -> Self {
        self.core
            .set_default(opt::CENTERED, |g| g.centered = centered);
        self
    }

    /// Maximize the objective instead of minimizing it (default false).
    #[track_caller]
    pub fn maximize(mut self, maximize: bool) -> Self {
        self.core
            .set_default(opt::MAXIMIZE, |g| g.maximize = maximize);
        self
    }
}

impl_optimizer!(RMSprop);
