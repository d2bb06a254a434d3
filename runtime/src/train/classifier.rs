//! A ready-made [`TrainingModule`] for classification with any model that
//! has a compile-time backward.

use super::configure::{wrapper_common, Configure};
use super::{StepOutput, TrainingModule};
use crate::nn::{BCEWithLogitsLoss, CrossEntropyLoss, Differentiable, Loss};
use crate::optim::lr_scheduler::LrScheduler;
use crate::optim::Optimizer;
use crate::tensor::{DType, Tensor};

/// Wraps a model into a classifier the [`Trainer`](super::Trainer) can fit:
/// cross-entropy over class logits (`new`) or BCE-with-logits over one
/// logit per sample (`binary`), accuracy as the metric (`acc`), and the
/// model's compile-time backward for training steps (no tape).
///
/// Batches are `(inputs, labels)` with integer class labels. The default
/// optimizer is Adam with lr 1e-3; choose another with
/// [`optimizer`](Self::optimizer).
///
/// ```
/// use deriv_runtime::nn::{Linear, Module};
/// use deriv_runtime::optim::SGD;
/// use deriv_runtime::train::{Classifier, Trainer};
/// use deriv_runtime::{tensor, Device};
///
/// let model = Linear::new(2, 2, &Device::Cpu);
/// let mut clf = Classifier::new(model).optimizer(|params| SGD::new(params, 0.5));
/// // Class 1 exactly when the first feature is positive.
/// let x = tensor![[1.0, 0.3], [-1.0, 0.2], [0.8, -0.5], [-0.7, -0.1]];
/// let y = tensor![1i64, 0, 1, 0];
/// let batches = vec![(x.clone(), y.clone())];
/// Trainer::new().max_epochs(50).quiet().fit(&mut clf, &batches, None).unwrap();
/// assert_eq!(clf.accuracy(&x, &y), 1.0);
/// ```
pub struct Classifier<M> {
    /// The wrapped model (its parameters keep their own names).
    pub model: M,
    binary: bool,
    cross_entropy: CrossEntropyLoss,
    bce: BCEWithLogitsLoss,
    configure: Configure,
}

impl<M: Differentiable> Classifier<M> {
    /// A multi-class classifier: the model outputs `[N, C]` logits; the loss
    /// is cross-entropy against `[N]` integer labels.
    pub fn new(model: M) -> Self {
        Classifier {
            model,
            binary: false,
            cross_entropy: CrossEntropyLoss::new(),
            bce: BCEWithLogitsLoss::new(),
            configure: Configure::default(),
        }
    }

    /// A binary classifier: the model outputs one logit per sample (`[N, 1]`
    /// or `[N]`); the loss is BCE-with-logits against labels 0 and 1.
    pub fn binary(model: M) -> Self {
        Classifier {
            binary: true,
            ..Classifier::new(model)
        }
    }

    /// Cross-entropy's label smoothing (multi-class only).
    pub fn label_smoothing(mut self, smoothing: f64) -> Self {
        self.cross_entropy = self.cross_entropy.label_smoothing(smoothing);
        self
    }

    /// The predicted class of each input row (`[N]`, i64).
    pub fn predict(&self, x: &Tensor) -> Tensor {
        let logits = crate::autograd::no_grad(|| self.model.forward(x));
        self.classes(&logits)
    }

    /// The fraction of rows of `x` whose predicted class is `y`'s.
    pub fn accuracy(&self, x: &Tensor, y: &Tensor) -> f64 {
        crate::metrics::accuracy(y, &self.predict(x))
    }

    fn classes(&self, logits: &Tensor) -> Tensor {
        if self.binary {
            logits.reshape([-1]).gt_scalar(0.0).to_dtype(DType::I64)
        } else {
            logits.argmax_dim(-1, false)
        }
    }

    fn loss(&self) -> &dyn Loss {
        if self.binary {
            &self.bce
        } else {
            &self.cross_entropy
        }
    }

    /// The labels in the form the loss takes: float and shaped like the
    /// logits for BCE, as given for cross-entropy.
    fn target(&self, logits: &Tensor, y: &Tensor) -> Tensor {
        if self.binary {
            y.to_dtype(logits.dtype()).reshape(logits.shape())
        } else {
            y.clone()
        }
    }

    fn output(&self, logits: &Tensor, y: &Tensor, loss: Tensor) -> StepOutput {
        let acc = crate::metrics::accuracy(y, &self.classes(logits));
        StepOutput::new(loss)
            .metric("acc", acc)
            .batch_size(y.shape().first().copied().unwrap_or(1))
    }
}

wrapper_common!(Classifier);

impl<M: Differentiable> TrainingModule for Classifier<M> {
    type Batch = (Tensor, Tensor);

    fn training_step(&mut self, (x, y): &(Tensor, Tensor)) -> StepOutput {
        let logits = self.model.forward(x);
        let loss = self.loss().forward(&logits, &self.target(&logits, y));
        self.output(&logits, y, loss)
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
        let (logits, saved) = self.model.forward_train(x);
        let target = self.target(&logits, y);
        let (loss, d_logits) = self.loss().forward_backward(&logits, &target);
        self.model.backward(saved, &d_logits, false);
        Some(self.output(&logits, y, loss))
    }
}
