//! Adam and AdamW (PyTorch's `torch.optim.Adam` and `torch.optim.AdamW`).

use super::base::{Algorithm, Core, SLOTS};
use super::fused::{self, AdamParams};
use super::{impl_optimizer, opt, ParamGroup};
use crate::tensor::{Float, Tensor};

/// Adam's rule; `decoupled` makes it AdamW's.
pub(crate) struct AdamRule {
    decoupled: bool,
}

impl AdamRule {
    /// This step's hyperparameters, which the CPU and the GPU kernel both take.
    fn params(&self, g: &ParamGroup, step: u64) -> AdamParams {
        AdamParams {
            lr: g.lr,
            beta1: g.betas.0,
            beta2: g.betas.1,
            eps: g.eps,
            weight_decay: g.weight_decay,
            decoupled: self.decoupled,
            amsgrad: g.amsgrad,
            maximize: g.maximize,
            step,
        }
    }
}

impl Algorithm for AdamRule {
    fn name(&self) -> &'static str {
        if self.decoupled {
            "AdamW"
        } else {
            "Adam"
        }
    }
    fn options(&self) -> u16 {
        opt::LR | opt::BETAS | opt::EPS | opt::WEIGHT_DECAY | opt::AMSGRAD | opt::MAXIMIZE
    }
    fn slot_names(&self) -> [&'static str; SLOTS] {
        ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    }
    fn slots(&self, g: &ParamGroup) -> [bool; SLOTS] {
        [true, true, g.amsgrad]
    }
    fn update<F: Float>(
        &self,
        g: &ParamGroup,
        step: u64,
        _fresh: bool,
        p: &mut [F],
        grad: &[F],
        [m, v, vmax]: [&mut [F]; SLOTS],
    ) {
        let h = self.params(g, step);
        fused::adam(p, grad, m, v, vmax, &h);
    }
    #[cfg(feature = "cuda")]
    fn update_cuda(
        &self,
        g: &ParamGroup,
        step: u64,
        _fresh: bool,
        p: &crate::backend::Array,
        grad: &crate::backend::Array,
        [m, v, vmax]: [Option<&crate::backend::Array>; SLOTS],
    ) {
        let h = self.params(g, step);
        let (m, v) = (
            m.expect("Adam uses exp_avg"),
            v.expect("Adam uses exp_avg_sq"),
        );
        crate::backend::cuda::adam_step(p, grad, m, v, vmax, &h);
    }
}

fn defaults(lr: f64, weight_decay: f64) -> ParamGroup {
    let mut d = ParamGroup::new(Vec::new());
    d.lr = lr;
    d.betas = (0.9, 0.999);
    d.eps = 1e-8;
    d.weight_decay = weight_decay;
    d
}

/// The builder methods Adam and AdamW share.
macro_rules! adam_options {
    () => {
        /// Coefficients of the running averages of the gradient and its
        /// square (default (0.9, 0.999)); each must lie in [0, 1).
        #[track_caller]
        pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
            self.core
                .set_default(opt::BETAS, |g| g.betas = (beta1, beta2));
            self
        }

        /// Term added to the denominator (default 1e-8).
        #[track_caller]
        pub fn eps(mut self, eps: f64) -> Self {
            self.core.set_default(opt::EPS, |g| g.eps = eps);
            self
        }

        /// Use the AMSGrad variant: normalize by the largest second moment so
        /// far (default false).
        #[track_caller]
        pub fn amsgrad(mut self, amsgrad: bool) -> Self {
            self.core.set_default(opt::AMSGRAD, |g| g.amsgrad = amsgrad);
            self
        }

        /// Maximize the objective instead of minimizing it (default false).
        #[track_caller]
        pub fn maximize(mut self, maximize: bool) -> Self {
            self.core
                .set_default(opt::MAXIMIZE, |g| g.maximize = maximize);
            self
        }
    };
}

/// Adam, PyTorch's `torch.optim.Adam`:
///
/// ```text
/// g = ∇ (negated when maximize) + weight_decay * p
/// m = beta1 * m + (1 - beta1) * g          v = beta2 * v + (1 - beta2) * g²
/// amsgrad: v_max = max(v_max, v), used for v below
/// p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
///
/// Defaults as PyTorch: betas (0.9, 0.999), eps 1e-8, weight_decay 0,
/// amsgrad false, maximize false. State: `state.{i}.step`,
/// `state.{i}.exp_avg`, `state.{i}.exp_avg_sq`, and with amsgrad
/// `state.{i}.max_exp_avg_sq`.
///
/// ```
/// use deriv_runtime::optim::{Adam, Optimizer};
/// use deriv_runtime::Tensor;
///
/// let w = Tensor::ones([2]).requires_grad_(true);
/// let mut opt = Adam::new(vec![w.clone()], 0.1).betas(0.8, 0.99);
/// (&w * 3.0).sum().backward();
/// opt.step(); // the first Adam step moves each weight by about lr
/// assert!((w.to_vec::<f32>()[0] - 0.9).abs() < 1e-6);
/// ```
pub struct Adam {
    core: Core<AdamRule>,
}

impl Adam {
    /// Adam over `params` with learning rate `lr` (PyTorch's default is 1e-3).
    ///
    /// Panics on an empty parameter list or a negative lr.
    #[track_caller]
    pub fn new(params: Vec<Tensor>, lr: f64) -> Self {
        Self::with_groups(vec![ParamGroup::new(params)], lr)
    }

    /// Adam over several groups; options a group does not set come from
    /// `lr` and the builder methods.
    #[track_caller]
    pub fn with_groups(groups: Vec<ParamGroup>, lr: f64) -> Self {
        Adam {
            core: Core::new(AdamRule { decoupled: false }, defaults(lr, 0.0), groups),
        }
    }

    adam_options!();

    /// L2 penalty added to the gradient (default 0). For decay of the weights
    /// themselves, use [`AdamW`].
    #[track_caller]
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.core
            .set_default(opt::WEIGHT_DECAY, |g| g.weight_decay = weight_decay);
        self
    }
}

impl_optimizer!(Adam);

/// AdamW, PyTorch's `torch.optim.AdamW`: Adam with decoupled weight decay.
/// Each step first shrinks the weights, `p = p * (1 - lr * weight_decay)`,
/// then applies Adam's update with the plain gradient.
///
/// Defaults as PyTorch: weight_decay 0.01, betas (0.9, 0.999), eps 1e-8,
/// amsgrad false, maximize false. State as [`Adam`]'s.
///
/// ```
/// use deriv_runtime::optim::{AdamW, Optimizer};
/// use deriv_runtime::Tensor;
///
/// let w = Tensor::ones([2]).requires_grad_(true);
/// let mut opt = AdamW::new(vec![w.clone()], 0.1).weight_decay(0.5);
/// (&w * 3.0).sum().backward();
/// opt.step(); // w = 1 * (1 - 0.1 * 0.5) - 0.1
/// assert!((w.to_vec::<f32>()[0] - 0.85).abs() < 1e-6);
/// ```
pub struct AdamW {
    core: Core<AdamRule>,
}

impl AdamW {
    /// AdamW over `params` with learning rate `lr` (PyTorch's default is 1e-3).
    ///
    /// Panics on an empty parameter list or a negative lr.
    #[track_caller]
    pub fn new(params: Vec<Tensor>, lr: f64) -> Self {
        Self::with_groups(vec![ParamGroup::new(params)], lr)
    }

    /// AdamW over several groups; options a group does not set come from
    /// `lr` and the builder methods.
    #[track_caller]
    pub fn with_groups(groups: Vec<ParamGroup>, lr: f64) -> Self {
        AdamW {
            core: Core::new(AdamRule { decoupled: true }, defaults(lr, 0.01), groups),
        }
    }

    adam_options!();

    /// Decoupled weight decay (default 0.01): each step multiplies the
    /// weights by `1 - lr * weight_decay`.
    #[track_caller]
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.core
            .set_default(opt::WEIGHT_DECAY, |g| g.weight_decay = weight_decay);
        self
    }
}

impl_optimizer!(AdamW);
