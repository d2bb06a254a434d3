//! Adagrad (PyTorch's `torch.optim.Adagrad`).

use super::base::{Algorithm, Core, SLOTS};
use super::fused::{self, AdagradParams};
use super::{impl_optimizer, opt, ParamGroup};
use crate::tensor::{Float, Tensor};

/// This step's hyperparameters, which the CPU and the GPU kernel both take.
fn params(g: &ParamGroup, step: u64) -> AdagradParams {
    AdagradParams {
        lr: g.lr,
        lr_decay: g.lr_decay,
        weight_decay: g.weight_decay,
        eps: g.eps,
        maximize: g.maximize,
        step,
    }
}

pub(crate) struct AdagradRule;

impl Algorithm for AdagradRule {
    fn name(&self) -> &'static str {
        "Adagrad"
    }
    fn options(&self) -> u16 {
        opt::LR
            | opt::LR_DECAY
            | opt::WEIGHT_DECAY
            | opt::INITIAL_ACCUMULATOR_VALUE
            | opt::EPS
            | opt::MAXIMIZE
    }
    fn slot_names(&self) -> [&'static str; SLOTS] {
        ["sum", "", ""]
    }
    fn slots(&self, _g: &ParamGroup) -> [bool; SLOTS] {
        [true, false, false]
    }
    fn init_value(&self, _slot: usize, g: &ParamGroup) -> f64 {
        g.initial_accumulator_value
    }
    fn update<F: Float>(
        &self,
        g: &ParamGroup,
        step: u64,
        _fresh: bool,
        p: &mut [F],
        grad: &[F],
        [sum, _, _]: [&mut [F]; SLOTS],
    ) {
        let h = params(g, step);
        fused::adagrad(p, grad, sum, &h);
    }
    #[cfg(feature = "cuda")]
    fn update_cuda(
        &self,
        g: &ParamGroup,
        step: u64,
        _fresh: bool,
        p: &crate::backend::Array,
        grad: &crate::backend::Array,
        [sum, _, _]: [Option<&crate::backend::Array>; SLOTS],
    ) {
        let h = params(g, step);
        crate::backend::cuda::adagrad_step(p, grad, sum.expect("Adagrad uses sum"), &h);
    }
}

/// Adagrad, PyTorch's `torch.optim.Adagrad`:
///
/// ```text
/// g = ∇ (negated when maximize) + weight_decay * p
/// lr~ = lr / (1 + (t - 1) * lr_decay)
/// sum = sum + g²            (sum starts at initial_accumulator_value)
/// p = p - lr~ * g / (sqrt(sum) + eps)
/// ```
///
/// Defaults as PyTorch: lr_decay 0, weight_decay 0,
/// initial_accumulator_value 0, eps 1e-10, maximize false (PyTorch's
/// default lr is 1e-2). State: `state.{i}.step`, `state.{i}.sum`.
///
/// ```
/// use deriv_runtime::optim::{Adagrad, Optimizer};
/// use deriv_runtime::Tensor;
///
/// let w = Tensor::ones([2]).requires_grad_(true);
/// let mut opt = Adagrad::new(vec![w.clone()], 0.5).initial_accumulator_value(5.0);
/// (&w * 2.0).sum().backward();
/// opt.step(); // sum = 5 + 4 = 9, w = 1 - 0.5 * 2 / 3
/// assert!((w.to_vec::<f32>()[0] - 2.0 / 3.0).abs() < 1e-6);
/// ```
pub struct Adagrad {
    core: Core<AdagradRule>,
}

impl Adagrad {
    /// Adagrad over `params` with learning rate `lr`.
    ///
    /// Panics on an empty parameter list or a negative lr.
    #[track_caller]
    pub fn new(params: Vec<Tensor>, lr: f64) -> Self {
        Self::with_groups(vec![ParamGroup::new(params)], lr)
    }

    /// Adagrad over several groups; options a group does not set come from
    /// `lr` and the builder methods.
    #[track_caller]
    pub fn with_groups(groups: Vec<ParamGroup>, lr: f64) -> Self {
        let mut defaults = ParamGroup::new(Vec::new());
        defaults.lr = lr;
        defaults.eps = 1e-10;
        Adagrad {
            core: Core::new(AdagradRule, defaults, groups),
        }
    }

    /// Learning-rate decay per step (default 0).
    #[track_caller]
    pub fn lr_decay(mut self, lr_decay: f64) -> Self {
        self.core
            .set_default(opt::LR_DECAY, |g| g.lr_decay = lr_decay);
        self
    }

    /// L2 penalty added to the gradient (default 0).
    #[track_caller]
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.core
            .set_default(opt::WEIGHT_DECAY, |g| g.weight_decay = weight_decay);
        self
    }

    /// Starting value of the sum of squared gradients (default 0).
    #[track_caller]
    pub fn initial_accumulator_value(mut self, value: f64) -> Self {
        self.core.set_default(opt::INITIAL_ACCUMULATOR_VALUE, |g| {
            g.initial_accumulator_value = value
        });
        self
    }

    /// Term added to the denominator (default 1e-10).
    #[track_caller]
    pub fn eps(mut self, eps: f64) -> Self {
        self.core.set_default(opt::EPS, |g| g.eps = eps);
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

impl_optimizer!(Adagrad);
