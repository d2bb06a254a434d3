//! The hyperparameters of one optimizer update: plain numbers, one struct
//! per optimizer, which every device's update kernel for that optimizer
//! takes (the CPU's in `optim/fused.rs`, the GPU's in `backend/cuda/optim.rs`).

/// SGD's options for one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdParams {
    /// Learning rate.
    pub lr: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Momentum factor (0: no buffer).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Maximize the objective instead.
    pub maximize: bool,
    /// The momentum buffer was just created: it takes the gradient as is.
    pub first: bool,
}

/// Adam's and AdamW's options for one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    /// Learning rate.
    pub lr: f64,
    /// Coefficient of the running average of the gradient.
    pub beta1: f64,
    /// Coefficient of the running average of its square.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay: L2 in the gradient (Adam) or decoupled (AdamW).
    pub weight_decay: f64,
    /// AdamW: decay the weights instead of adding to the gradient.
    pub decoupled: bool,
    /// Use the maximum of past squared-gradient averages (AMSGrad).
    pub amsgrad: bool,
    /// Maximize the objective instead.
    pub maximize: bool,
    /// This step's count, 1 on the first.
    pub step: u64,
}

/// RMSprop's options for one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmspropParams {
    /// Learning rate.
    pub lr: f64,
    /// Smoothing constant.
    pub alpha: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Momentum factor (0: no buffer).
    pub momentum: f64,
    /// Normalize by the centered second moment.
    pub centered: bool,
    /// Maximize the objective instead.
    pub maximize: bool,
}

/// Adagrad's options for one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdagradParams {
    /// Learning rate.
    pub lr: f64,
    /// Learning-rate decay per step.
    pub lr_decay: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Maximize the objective instead.
    pub maximize: bool,
    /// This step's count, 1 on the first.
    pub step: u64,
}
