//! Optimizers that update parameters in place, outside the tape, and
//! learning-rate schedulers ([`lr_scheduler`]).
//!
//! The optimizers are PyTorch's `torch.optim` ones with the same update rules,
//! defaults, per-group options and state names: [`SGD`], [`Adam`], [`AdamW`],
//! [`RMSprop`] and [`Adagrad`].
//!
//! ```
//! use deriv_runtime::optim::{Optimizer, SGD};
//! use deriv_runtime::tensor;
//!
//! let w = tensor![1.0, -2.0].requires_grad_(true);
//! let mut opt = SGD::new(vec![w.clone()], 0.1).momentum(0.9);
//! for _ in 0..3 {
//!     opt.zero_grad();
//!     let loss = (&w * &w).sum(); // gradient 2w
//!     loss.backward();
//!     opt.step();
//! }
//! // From w = 1: buf = 2, w = 0.8; buf = 0.9 * 2 + 1.6 = 3.4, w = 0.46;
//! // buf = 0.9 * 3.4 + 0.92 = 3.98, w = 0.062.
//! assert!((w.to_vec::<f32>()[0] - 0.062).abs() < 1e-6);
//! ```
//!
//! Each optimizer keeps its per-element update in one function of the private
//! `fused` module (one loop over the contiguous parameter, gradient and state
//! buffers), so another backend can slot its kernel in beside it.

mod adagrad;
mod adam;
mod base;
#[cfg(feature = "cuda")]
pub mod cuda;
mod fused;
pub mod lr_scheduler;
mod rmsprop;
mod sgd;

pub use adagrad::Adagrad;
pub use adam::{Adam, AdamW};
pub use rmsprop::RMSprop;
pub use sgd::SGD;

use std::fmt;

use crate::error::Result;
use crate::tensor::Tensor;

/// What every optimizer does: update its parameters from their `.grad()`,
/// clear the gradients, expose its parameter groups, and save or restore its
/// state (PyTorch's `torch.optim.Optimizer`).
pub trait Optimizer: Send {
    /// One update of every parameter that has a `.grad()`, in place and
    /// outside the tape (nothing is recorded; the storage version counter is
    /// bumped as for any in-place write). Parameters without a gradient are
    /// skipped, as in PyTorch.
    ///
    /// Panics when a group's options are invalid (negative lr, nesterov
    /// without momentum, ...) or a gradient's dtype differs from its parameter's.
    fn step(&mut self);

    /// Drops every parameter's gradient (PyTorch's default
    /// `zero_grad(set_to_none=True)`): `.grad()` is `None` until the next
    /// backward. A dropped gradient nothing else holds keeps its buffer in
    /// the parameter, and a layer's compile-time `backward` writes the next
    /// gradient into it instead of allocating; the tape's backward (which
    /// computes gradients apart) and `set_grad(None)` free it.
    fn zero_grad(&mut self);

    /// Zeroes the existing gradient buffers in place
    /// (`zero_grad(set_to_none=False)`), keeping their allocations for the
    /// next backward: the allocation-free training loop.
    fn zero_grad_in_place(&mut self);

    /// The parameter groups with their options.
    fn param_groups(&self) -> &[ParamGroup];

    /// The parameter groups, to change options (`lr`, `momentum`, ...) between steps.
    fn param_groups_mut(&mut self) -> &mut [ParamGroup];

    /// Adds a group; options it did not set are taken from the optimizer's
    /// defaults (the values given to the constructor and its builder methods).
    ///
    /// Panics when a parameter is already in a group, is not a leaf, or the
    /// group sets an option this optimizer does not have.
    fn add_param_group(&mut self, group: ParamGroup);

    /// The first group's learning rate.
    fn lr(&self) -> f64 {
        self.param_groups()
            .first()
            .map(|g| g.lr)
            .expect("the optimizer has at least one parameter group")
    }

    /// Sets the learning rate of every group.
    fn set_lr(&mut self, lr: f64) {
        for g in self.param_groups_mut() {
            g.lr = lr;
        }
    }

    /// The optimizer's state under PyTorch's dotted names: per-parameter
    /// buffers `state.{i}.exp_avg` (`i` counts parameters across groups in
    /// order), step counts `state.{i}.step`, and group options
    /// `param_groups.{g}.lr`. The tensors are copies (a snapshot), so later
    /// steps do not change a saved state.
    fn state_dict(&self) -> OptimizerState;

    /// Restores a state saved by [`state_dict`](Self::state_dict) from an
    /// optimizer built the same way (same kind, same groups of same-shaped
    /// parameters); training then continues exactly as it would have. Group
    /// options are restored too, as in PyTorch.
    ///
    /// Returns an error naming the first missing or mis-shaped entry, and then
    /// changes nothing. Entries outside `state.*` and `param_groups.*` are ignored.
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()>;
}

/// An optimizer's saved state: named tensors (per-parameter buffers) and
/// named numbers (step counts and group options; `true`/`false` as 1/0).
///
/// A checkpoint stores the tensors by name and the numbers as metadata.
#[derive(Clone, Debug, Default)]
pub struct OptimizerState {
    /// Per-parameter buffers, e.g. `("state.0.exp_avg", tensor)`.
    pub tensors: Vec<(String, Tensor)>,
    /// Step counts and group options, e.g. `("param_groups.0.lr", 0.001)`.
    pub scalars: Vec<(String, f64)>,
}

impl OptimizerState {
    /// The tensor saved under `name`.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The number saved under `name`.
    pub fn scalar(&self, name: &str) -> Option<f64> {
        self.scalars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// Bits naming the options a group may set (`ParamGroup::set`).
pub(crate) mod opt {
    pub const LR: u16 = 1 << 0;
    pub const WEIGHT_DECAY: u16 = 1 << 1;
    pub const MOMENTUM: u16 = 1 << 2;
    pub const DAMPENING: u16 = 1 << 3;
    pub const NESTEROV: u16 = 1 << 4;
    pub const MAXIMIZE: u16 = 1 << 5;
    pub const BETAS: u16 = 1 << 6;
    pub const EPS: u16 = 1 << 7;
    pub const AMSGRAD: u16 = 1 << 8;
    pub const ALPHA: u16 = 1 << 9;
    pub const CENTERED: u16 = 1 << 10;
    pub const LR_DECAY: u16 = 1 << 11;
    pub const INITIAL_ACCUMULATOR_VALUE: u16 = 1 << 12;
}

/// A set of parameters sharing options, PyTorch's `param_groups` entry.
///
/// Build one with [`ParamGroup::new`] and set the options it overrides; the
/// rest come from the optimizer's defaults when it is added:
///
/// ```
/// use deriv_runtime::optim::{Optimizer, ParamGroup, SGD};
/// use deriv_runtime::Tensor;
///
/// let body = Tensor::zeros([4, 4]).requires_grad_(true);
/// let head = Tensor::zeros([4]).requires_grad_(true);
/// let mut opt = SGD::new(vec![body], 0.1).momentum(0.9);
/// opt.add_param_group(ParamGroup::new(vec![head]).lr(0.01));
/// assert_eq!(opt.param_groups()[1].lr, 0.01);
/// assert_eq!(opt.param_groups()[1].momentum, 0.9); // inherited
/// ```
///
/// Each optimizer reads only its own options (SGD: lr, momentum, dampening,
/// nesterov, weight_decay, maximize; Adam/AdamW: lr, betas, eps,
/// weight_decay, amsgrad, maximize; RMSprop: lr, alpha, eps, weight_decay,
/// momentum, centered, maximize; Adagrad: lr, lr_decay, weight_decay,
/// initial_accumulator_value, eps, maximize); adding a group that sets
/// another one panics. Until a group is added, the options it did not set
/// read as 0 / false.
#[derive(Clone)]
pub struct ParamGroup {
    /// The parameters (leaf tensors) this group updates.
    pub params: Vec<Tensor>,
    /// Learning rate.
    pub lr: f64,
    /// L2 penalty added to the gradient (AdamW: decoupled decay of the weights).
    pub weight_decay: f64,
    /// Momentum factor (SGD, RMSprop).
    pub momentum: f64,
    /// Dampening for momentum (SGD).
    pub dampening: f64,
    /// Nesterov momentum (SGD).
    pub nesterov: bool,
    /// Maximize the objective instead of minimizing it.
    pub maximize: bool,
    /// Coefficients of the running averages of the gradient and its square (Adam, AdamW).
    pub betas: (f64, f64),
    /// Term added to the denominator for numerical stability.
    pub eps: f64,
    /// Use the AMSGrad variant (Adam, AdamW).
    pub amsgrad: bool,
    /// Smoothing constant (RMSprop).
    pub alpha: f64,
    /// Normalize by the centered second moment (RMSprop).
    pub centered: bool,
    /// Learning-rate decay (Adagrad).
    pub lr_decay: f64,
    /// Starting value of the sum of squared gradients (Adagrad).
    pub initial_accumulator_value: f64,
    /// The learning rate a scheduler started from (PyTorch's `initial_lr`),
    /// set by the first scheduler built on this optimizer.
    pub initial_lr: Option<f64>,
    /// Which options this group set itself (`opt::*` bits).
    pub(crate) set: u16,
}

impl ParamGroup {
    /// A group of `params` that takes every option from the optimizer it is added to.
    pub fn new(params: Vec<Tensor>) -> Self {
        ParamGroup {
            params,
            lr: 0.0,
            weight_decay: 0.0,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            maximize: false,
            betas: (0.0, 0.0),
            eps: 0.0,
            amsgrad: false,
            alpha: 0.0,
            centered: false,
            lr_decay: 0.0,
            initial_accumulator_value: 0.0,
            initial_lr: None,
            set: 0,
        }
    }

    /// This group's learning rate.
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self.set |= opt::LR;
        self
    }
    /// This group's weight decay.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self.set |= opt::WEIGHT_DECAY;
        self
    }
    /// This group's momentum (SGD, RMSprop).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self.set |= opt::MOMENTUM;
        self
    }
    /// This group's dampening (SGD).
    pub fn dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self.set |= opt::DAMPENING;
        self
    }
    /// Nesterov momentum for this group (SGD).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self.set |= opt::NESTEROV;
        self
    }
    /// Maximize instead of minimize for this group.
    pub fn maximize(mut self, maximize: bool) -> Self {
        self.maximize = maximize;
        self.set |= opt::MAXIMIZE;
        self
    }
    /// This group's betas (Adam, AdamW).
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self.set |= opt::BETAS;
        self
    }
    /// This group's eps.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self.set |= opt::EPS;
        self
    }
    /// AMSGrad for this group (Adam, AdamW).
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self.set |= opt::AMSGRAD;
        self
    }
    /// This group's smoothing constant (RMSprop).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self.set |= opt::ALPHA;
        self
    }
    /// Centered RMSprop for this group.
    pub fn centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self.set |= opt::CENTERED;
        self
    }
    /// This group's learning-rate decay (Adagrad).
    pub fn lr_decay(mut self, lr_decay: f64) -> Self {
        self.lr_decay = lr_decay;
        self.set |= opt::LR_DECAY;
        self
    }
    /// This group's initial accumulator value (Adagrad).
    pub fn initial_accumulator_value(mut self, value: f64) -> Self {
        self.initial_accumulator_value = value;
        self.set |= opt::INITIAL_ACCUMULATOR_VALUE;
        self
    }
}

impl fmt::Debug for ParamGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shapes: Vec<&[usize]> = self.params.iter().map(|p| p.shape()).collect();
        f.debug_struct("ParamGroup")
            .field("params", &shapes)
            .field("lr", &self.lr)
            .field("weight_decay", &self.weight_decay)
            .field("momentum", &self.momentum)
            .field("dampening", &self.dampening)
            .field("nesterov", &self.nesterov)
            .field("maximize", &self.maximize)
            .field("betas", &self.betas)
            .field("eps", &self.eps)
            .field("amsgrad", &self.amsgrad)
            .field("alpha", &self.alpha)
            .field("centered", &self.centered)
            .field("lr_decay", &self.lr_decay)
            .field("initial_accumulator_value", &self.initial_accumulator_value)
            .field("initial_lr", &self.initial_lr)
            .finish()
    }
}

/// Implements [`Optimizer`] for a struct whose `core` field is a `base::Core`.
macro_rules! impl_optimizer {
    ($t:ty) => {
        impl $crate::optim::Optimizer for $t {
            fn step(&mut self) {
                self.core.step()
            }
            fn zero_grad(&mut self) {
                self.core.zero_grad()
            }
            fn zero_grad_in_place(&mut self) {
                self.core.zero_grad_in_place()
            }
            fn param_groups(&self) -> &[$crate::optim::ParamGroup] {
                &self.core.groups
            }
            fn param_groups_mut(&mut self) -> &mut [$crate::optim::ParamGroup] {
                &mut self.core.groups
            }
            fn add_param_group(&mut self, group: $crate::optim::ParamGroup) {
                self.core.add_param_group(group)
            }
            fn state_dict(&self) -> $crate::optim::OptimizerState {
                self.core.state_dict()
            }
            fn load_state_dict(
                &mut self,
                state: &$crate::optim::OptimizerState,
            ) -> $crate::error::Result<()> {
                self.core.load_state_dict(state)
            }
        }
    };
}
pub(crate) use impl_optimizer;
