//! A ready-made [`TrainingModule`] for regression with any model that has a
//! compile-time backward.

use super::configure::{wrapper_common, Configure};
use super::{StepOutput, TrainingModule};
use crate::metrics::r2_from_sums;
use crate::nn::{Differentiable, Loss, MSELoss};
use crate::optim::lr_scheduler::LrScheduler;
use crate::optim::Optimizer;
use crate::tensor::Tensor;

/// Wraps a model into a regressor the [`Trainer`](super::Trainer) can fit:
/// a regression loss ([`MSELoss`] by default; [`L1Loss`](crate::nn::L1Loss),
/// [`HuberLoss`](crate::nn::HuberLoss) or any [`Loss`] with
/// [`loss`](Self::loss)), the model's compile-time backward for training
/// steps, and three metrics in the history: `mse` and `mae` (batch-weighted
/// means, so exact over the epoch) and `r2`, the coefficient of
/// determination of the whole epoch (from summed squares, as torchmetrics'
/// `R2Score` accumulates it; the mean over the outputs for `[N, k]` targets).
///
/// Batches are `(inputs, targets)`; the targets are converted to the
/// model's output dtype and shaped like its output (`[N]` targets fit an
/// `[N, 1]` output). The default optimizer is Adam with lr 1e-3.
///
/// ```
/// use deriv_runtime::nn::Linear;
/// use deriv_runtime::optim::SGD;
/// use deriv_runtime::train::{Regressor, Trainer};
/// use deriv_runtime::{tensor, Device};
///
/// // y = 2·x1 - x2 + 1, exactly.
/// let x = tensor![[0., 0.], [1., 0.], [0., 1.], [1., 1.], [2., 1.], [1., 2.]];
/// let y = tensor![1., 3., 0., 2., 4., 1.];
/// let mut reg = Regressor::new(Linear::new(2, 1, &Device::Cpu)).optimizer(|p| SGD::new(p, 0.1));
/// let batches = vec![(x.clone(), y.clone())];
/// let history = Trainer::new().max_epochs(300).quiet().fit(&mut reg, &batches, None).unwrap();
/// assert!(history.last("train_r2").unwrap() > 0.999);
/// assert!(reg.r2_score(&x, &y) > 0.999);
/// ```
pub struct Regressor<M> {
    /// The wrapped model (its parameters keep their own names).
    pub model: M,
    loss: Box<dyn Loss>,
    configure: Configure,
}

impl<M: Differentiable> Regressor<M> {
    /// A regressor trained with the mean squared error.
    pub fn new(model: M) -> Self {
        Regressor {
            model,
            loss: Box::new(MSELoss::new()),
            configure: Configure::default(),
        }
    }

    /// The loss to train with: `MSELoss::new()` (the default),
    /// `L1Loss::new()`, `HuberLoss::new().delta(..)`, or any other [`Loss`].
    pub fn loss(mut self, loss: impl Loss + 'static) -> Self {
        self.loss = Box::new(loss);
        self
    }

    /// The model's predictions for `x` (no tape).
    pub fn predict(&self, x: &Tensor) -> Tensor {
        crate::autograd::no_grad(|| self.model.forward(x))
    }

    /// R² of the predictions for `x` against `y`
    /// ([`metrics::r2_score`](crate::metrics::r2_score); `y` shaped like the
    /// predictions, or `[N]` for one output).
    #[track_caller]
    pub fn r2_score(&self, x: &Tensor, y: &Tensor) -> f64 {
        let pred = self.predict(x);
        crate::metrics::r2_score(&target(&pred, y), &pred)
    }

    fn output(&self, pred: &Tensor, y: &Tensor, loss: Tensor) -> StepOutput {
        let rows = pred.shape().first().copied().unwrap_or(1).max(1);
        let outputs = pred.numel() / rows;
        let (p, t) = (pred.to_vec::<f64>(), y.to_vec::<f64>());
        let n = p.len().max(1) as f64;
        let mse = p
            .iter()
            .zip(&t)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            / n;
        let mae = p.iter().zip(&t).map(|(a, b)| (a - b).abs()).sum::<f64>() / n;
        let mut out = StepOutput::new(loss)
            .metric("mse", mse)
            .metric("mae", mae)
            .batch_size(rows)
            .total("n", rows as f64);
        // Per output: the sums R² of the epoch is computed from.
        for j in 0..outputs {
            let (mut sse, mut sy, mut syy) = (0.0, 0.0, 0.0);
            for i in 0..rows {
                let (a, b) = (t[i * outputs + j], p[i * outputs + j]);
                sse += (a - b) * (a - b);
                sy += a;
                syy += a * a;
            }
            out = out
                .total(format!("sse.{j}"), sse)
                .total(format!("sum_y.{j}"), sy)
                .total(format!("sum_y2.{j}"), syy);
        }
        out
    }
}

/// `y` as the loss takes it: in the prediction's dtype and shape.
#[track_caller]
fn target(pred: &Tensor, y: &Tensor) -> Tensor {
    assert!(
        y.numel() == pred.numel(),
        "Regressor: the targets (shape {:?}) must have one value per model output (shape {:?})",
        y.shape(),
        pred.shape()
    );
    let y = if y.dtype() == pred.dtype() {
        y.clone()
    } else {
        y.to_dtype(pred.dtype())
    };
    y.reshape(pred.shape())
}

wrapper_common!(Regressor);

impl<M: Differentiable> TrainingModule for Regressor<M> {
    type Batch = (Tensor, Tensor);

    fn training_step(&mut self, (x, y): &(Tensor, Tensor)) -> StepOutput {
        let pred = self.model.forward(x);
        let y = target(&pred, y);
        let loss = self.loss.forward(&pred, &y);
        self.output(&pred.detach(), &y, loss)
    }

    fn validation_step(&mut self, batch: &(Tensor, Tensor)) -> StepOutput {
        self.training_step(batch)
    }

    fn configure_optimizers(&self) -> Box<dyn Optimizer> {
        self.configure.optimizer(self.model.parameters())
    }

    fn configure_scheduler(&self, optimizer: &mut dyn Optimizer) -> Option<Box<dyn LrScheduler>> {
        self.configure.scheduler(optimizer)
    }

    fn compiled_training_step(&mut self, (x, y): &(Tensor, Tensor)) -> Option<StepOutput> {
        let (pred, saved) = self.model.forward_train(x);
        let y = target(&pred, y);
        let (loss, d_pred) = self.loss.forward_backward(&pred, &y);
        self.model.backward(saved, &d_pred, false);
        Some(self.output(&pred, &y, loss))
    }

    /// `r2`: R² of the epoch from the summed squares, averaged over the outputs.
    fn epoch_metrics(&self, totals: &[(String, f64)]) -> Vec<(String, f64)> {
        let get = |name: &str| totals.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let Some(n) = get("n") else {
            return Vec::new();
        };
        let mut scores = Vec::new();
        while let (Some(sse), Some(sy), Some(syy)) = (
            get(&format!("sse.{}", scores.len())),
            get(&format!("sum_y.{}", scores.len())),
            get(&format!("sum_y2.{}", scores.len())),
        ) {
            // Σy² - (Σy)²/n cancels for a constant target; a variance below
            // 1e-12 of the second moment is rounding error, taken as 0.
            let ss_tot = syy - sy * sy / n;
            let ss_tot = if ss_tot <= 1e-12 * syy { 0.0 } else { ss_tot };
            scores.push(r2_from_sums(sse, ss_tot));
        }
        if n < 2.0 || scores.is_empty() {
            return vec![("r2".into(), f64::NAN)];
        }
        let r2 = scores.iter().sum::<f64>() / scores.len() as f64;
        vec![("r2".into(), r2)]
    }
}
