//! What a model implements to be trained by the [`Trainer`](super::Trainer).

use crate::nn::Module;
use crate::optim::lr_scheduler::LrScheduler;
use crate::optim::Optimizer;
use crate::tensor::Tensor;

/// What one training, validation or test step reports: the loss and any
/// metrics, averaged over the epoch weighted by `batch_size`.
///
/// ```
/// use deriv_runtime::{train::StepOutput, Tensor};
/// let out = StepOutput::new(Tensor::scalar(0.25f32)).metric("acc", 0.9).batch_size(16);
/// assert_eq!(out.metrics, vec![("acc".to_string(), 0.9)]);
/// ```
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// The loss. For `training_step` it is recorded on the tape (the Trainer
    /// calls `backward()` on it); after a compiled step it is a plain value.
    pub loss: Tensor,
    /// Named metrics of this batch (`acc`), reported as `train_acc`, `val_acc`.
    pub metrics: Vec<(String, f64)>,
    /// The weight of this batch in the epoch's averages (its sample count).
    pub batch_size: usize,
    /// Statistics the Trainer adds up over the epoch (not averaged) and hands
    /// to [`TrainingModule::epoch_metrics`], for metrics that are not a mean
    /// of per-batch values (R² needs the epoch's sums of squares).
    pub totals: Vec<(String, f64)>,
}

impl StepOutput {
    /// A step's loss, weighted 1 and with no metrics.
    pub fn new(loss: Tensor) -> Self {
        StepOutput {
            loss,
            metrics: Vec::new(),
            batch_size: 1,
            totals: Vec::new(),
        }
    }

    /// Adds a metric.
    pub fn metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.push((name.into(), value));
        self
    }

    /// Sets the batch's weight in the epoch averages (use the sample count).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Adds a statistic to sum over the epoch (see [`totals`](Self::totals)).
    pub fn total(mut self, name: impl Into<String>, value: f64) -> Self {
        self.totals.push((name.into(), value));
        self
    }
}

/// A model that knows how to train itself: PyTorch Lightning's
/// `LightningModule`.
///
/// Implement the steps on the tape (the loss returned by `training_step` is
/// differentiated with `backward()`), or also
/// [`compiled_training_step`](Self::compiled_training_step) to use a
/// compile-time backward (see [`Classifier`](super::Classifier), which does).
pub trait TrainingModule: Module {
    /// What a data loader yields, e.g. `(Tensor, Tensor)` of inputs and labels.
    type Batch;

    /// The loss (recorded on the tape) and metrics of one training batch.
    fn training_step(&mut self, batch: &Self::Batch) -> StepOutput;

    /// The loss and metrics of one validation batch (run under `no_grad`
    /// in evaluation mode).
    fn validation_step(&mut self, batch: &Self::Batch) -> StepOutput;

    /// One test batch; by default the validation step.
    fn test_step(&mut self, batch: &Self::Batch) -> StepOutput {
        self.validation_step(batch)
    }

    /// The optimizer over this model's parameters.
    fn configure_optimizers(&self) -> Box<dyn Optimizer>;

    /// A learning-rate scheduler over `optimizer`, stepped after every
    /// epoch; `None` (the default) keeps the learning rate fixed.
    fn configure_scheduler(&self, optimizer: &mut dyn Optimizer) -> Option<Box<dyn LrScheduler>> {
        let _ = optimizer;
        None
    }

    /// The compile-time path: computes the loss and adds every parameter's
    /// gradient into `.grad()` without recording, returning the step's
    /// output; `None` (the default) makes the Trainer use `training_step`
    /// and `backward()`.
    fn compiled_training_step(&mut self, batch: &Self::Batch) -> Option<StepOutput> {
        let _ = batch;
        None
    }

    /// Metrics of a whole epoch (training, validation or test), computed
    /// from the sums of the [`totals`](StepOutput::totals) its steps
    /// reported, and added to the history beside the averaged metrics (with
    /// the same `train_`/`val_`/`test_` prefix). The default reports none;
    /// [`Regressor`](super::Regressor) computes `r2` here.
    fn epoch_metrics(&self, totals: &[(String, f64)]) -> Vec<(String, f64)> {
        let _ = totals;
        Vec::new()
    }
}
