//! The losses' options (PyTorch's keyword arguments and defaults). They live
//! with the losses' ops, which read them; `nn` re-exports them.

use crate::tensor::Tensor;

/// How a loss combines its per-element values (PyTorch's `reduction=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// No reduction: one loss per element (per sample for the class losses).
    None,
    /// The mean (the default). Class-weighted `nll_loss`/`cross_entropy` with
    /// class indices divide by the sum of the targets' weights, and ignored
    /// targets do not count.
    #[default]
    Mean,
    /// The sum.
    Sum,
}

/// Options of [`cross_entropy_with`](crate::nn::functional::cross_entropy_with)
/// (PyTorch's keyword arguments and defaults).
///
/// ```
/// use deriv_runtime::nn::{functional as F, CrossEntropyOptions, Reduction};
/// use deriv_runtime::tensor;
/// let opts = CrossEntropyOptions { label_smoothing: 0.1, reduction: Reduction::Sum, ..Default::default() };
/// let loss = F::cross_entropy_with(&tensor![[2., 0., 1.]], &tensor![0], &opts);
/// assert_eq!(loss.shape(), &[] as &[usize]);
/// ```
#[derive(Clone, Debug)]
pub struct CrossEntropyOptions {
    /// A weight per class (`[C]`), or `None` for equal weights.
    pub weight: Option<Tensor>,
    /// How the per-sample losses combine.
    pub reduction: Reduction,
    /// Mixes the target with the uniform distribution: `(1 - ε)·target + ε/C`.
    /// In `[0, 1]`; 0 by default.
    pub label_smoothing: f64,
    /// A class-index target equal to this contributes nothing (and does not
    /// count in the mean). -100 by default; must be negative with
    /// class-probability targets.
    pub ignore_index: i64,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions {
            weight: None,
            reduction: Reduction::Mean,
            label_smoothing: 0.0,
            ignore_index: -100,
        }
    }
}

/// Options of [`nll_loss_with`](crate::nn::functional::nll_loss_with).
#[derive(Clone, Debug)]
pub struct NllLossOptions {
    /// A weight per class (`[C]`), or `None` for equal weights.
    pub weight: Option<Tensor>,
    /// How the per-sample losses combine.
    pub reduction: Reduction,
    /// A target equal to this contributes nothing; -100 by default.
    pub ignore_index: i64,
}

impl Default for NllLossOptions {
    fn default() -> Self {
        NllLossOptions {
            weight: None,
            reduction: Reduction::Mean,
            ignore_index: -100,
        }
    }
}

/// Options of
/// [`binary_cross_entropy_with_logits_with`](crate::nn::functional::binary_cross_entropy_with_logits_with).
#[derive(Clone, Debug, Default)]
pub struct BceWithLogitsOptions {
    /// A rescaling weight broadcast to the input's shape.
    pub weight: Option<Tensor>,
    /// The weight of positive examples, broadcast to the input's shape (a
    /// `[C]` tensor weights each class of a `[N, C]` multi-label input).
    pub pos_weight: Option<Tensor>,
    /// How the per-element losses combine.
    pub reduction: Reduction,
}
