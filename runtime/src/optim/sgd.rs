//! Stochastic gradient descent with momentum, dampening, Nesterov momentum,
//! weight decay and maximize (PyTorch's `torch.optim.SGD`).

use super::base::{Algorithm, Core, SLOTS};
use super::fused::{self, SgdParams};
use super::{impl_optimizer, opt, ParamGroup};
use crate::tensor::{Float, Tensor};

/// This step's hyperparameters, which the CPU and the GPU kernel both take.
fn params(g: &ParamGroup, fresh: bool) -> SgdParams {
    SgdParams {
        lr: g.lr,
        weight_decay: g.weight_decay,
        momentum: g.momentum,
        dampening: g.dampening,
        nesterov: g.nesterov,
        maximize: g.maximize,
        first: fresh,
    }
}

pub(crate) struct SgdRule;

impl Algorithm for SgdRule {
    fn name(&self) -> &'static str {
        "SGD"
    }
    fn options(&self) -> u16 {
        opt::LR | opt::MOMENTUM | opt::DAMPENING | opt::WEIGHT_DECAY | opt::NESTEROV | opt::MAXIMIZE
    }
    fn slot_names(&self) -> [&'static str; SLOTS] {
        ["momentum_buffer", "", ""]
    }
    fn has_step(&self) -> bool {
        false
    }
    fn check(&self, g: &ParamGroup) -> Result<(), String> {
        if g.nesterov && (g.momentum <= 0.0 || g.dampening != 0.0) {
            return Err(format!(
                "Nesterov momentum requires a momentum and zero dampening (momentum is {}, \
                 dampening {}): set .momentum(m) with m > 0 and leave dampening at 0, or turn \
                 nesterov off",
                g.momentum, g.dampening
            ));
        }
        Ok(())
    }
    fn slots(&self, g: &ParamGroup) -> [bool; SLOTS] {
        [g.momentum != 0.0, false, false]
    }
    fn update<F: Float>(
        &self,
        g: &ParamGroup,
        _step: u64,
        fresh: bool,
        p: &mut [F],
        grad: &[F],
        [buf, _, _]: [&mut [F]; SLOTS],
    ) {
        let h = params(g, fresh);
        fused::sgd(p, grad, buf, &h);
    }
    #[cfg(feature = "cuda")]
    fn update_cuda(
        &self,
        g: &ParamGroup,
        _step: u64,
        fresh: bool,
        p: &crate::backend::Array,
        grad: &crate::backend::Array,
        [buf, _, _]: [Option<&crate::backend::Array>; SLOTS],
    ) {
        let h = params(g, fresh);
        crate::backend::cuda::sgd_step(p, grad, buf, &h);
    }
}

/// Stochastic gradient descent, PyTorch's `torch.optim.SGD`:
///
/// ```text
/// g = ∇ (negated when maximize) + weight_decay * p
/// momentum ≠ 0: buf = g on the first step, else momentum * buf + (1 - dampening) * g
///               g = g + momentum * buf (nesterov) or buf
/// p = p - lr * g
/// ```
///
/// Options default to PyTorch's: momentum 0, dampening 0, weight_decay 0,
/// nesterov false, maximize false. State: `state.{i}.momentum_buffer` (only
/// with momentum).
///
/// ```
/// use deriv_runtime::optim::{Optimizer, SGD};
/// use deriv_runtime::Tensor;
///
/// let w = Tensor::ones([3]).requires_grad_(true);
/// let mut opt = SGD::new(vec![w.clone()], 0.1).momentum(0.9).nesterov(true);
/// (&w * 2.0).sum().backward(); // grad 2
/// opt.step(); // buf = 2, g = 2 + 0.9 * 2 = 3.8, w = 1 - 0.38
/// assert!((w.to_vec::<f32>()[0] - 0.62).abs() < 1e-6);
/// ```
#[allow(clippy::upper_case_acronyms)] // PyTorch's name
pub struct SGD {
    core: Core<SgdRule>,
}

impl SGD {
    /// SGD over `params` with learning rate `lr` (one group).
    ///
    /// Panics on an empty parameter list or a negative lr.
    #[track_caller]
    pub fn new(params: Vec<Tensor>, lr: f64) -> Self {
        Self::with_groups(vec![ParamGroup::new(params)], lr)
    }

    /// SGD over several groups; options a group does not set come from `lr`
    /// and the builder methods.
    #[track_caller]
    pub fn with_groups(groups: Vec<ParamGroup>, lr: f64) -> Self {
        let mut defaults = ParamGroup::new(Vec::new());
        defaults.lr = lr;
        SGD {
            core: Core::new(SgdRule, defaults, groups),
        }
    }

    /// Momentum factor (default 0).
    #[track_caller]
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.core
            .set_default(opt::MOMENTUM, |g| g.momentum = momentum);
        self
    }

    /// Dampening for momentum (default 0).
    #[track_caller]
    pub fn dampening(mut self, dampening: f64) -> Self {
        self.core
            .set_default(opt::DAMPENING, |g| g.dampening = dampening);
        self
    }

    /// Nesterov momentum (default false); needs momentum > 0 and zero
    /// dampening, checked at the next step.
    #[track_caller]
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.core
            .set_default(opt::NESTEROV, |g| g.nesterov = nesterov);
        self
    }

    /// L2 penalty added to the gradient (default 0).
    #[track_caller]
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.core
            .set_default(opt::WEIGHT_DECAY, |g| g.weight_decay = weight_decay);
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

impl_optimizer!(SGD);
