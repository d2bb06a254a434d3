//! What the ready-made training modules ([`Classifier`](super::Classifier),
//! [`Regressor`](super::Regressor)) share: the optimizer and scheduler
//! choice, and (by [`wrapper_common!`]) the `Module` impl and builders of a
//! wrapper around a `model`.

use crate::optim::lr_scheduler::LrScheduler;
use crate::optim::{Adam, Optimizer};
use crate::tensor::Tensor;

type MakeOptimizer = Box<dyn Fn(Vec<Tensor>) -> Box<dyn Optimizer> + Send + Sync>;
type MakeScheduler = Box<dyn Fn(&mut dyn Optimizer) -> Box<dyn LrScheduler> + Send + Sync>;

/// How to build the optimizer (Adam with lr 1e-3 unless set) and the
/// optional learning-rate scheduler.
pub(crate) struct Configure {
    make_optimizer: MakeOptimizer,
    make_scheduler: Option<MakeScheduler>,
}

impl Default for Configure {
    fn default() -> Self {
        Configure {
            make_optimizer: Box::new(|params| Box::new(Adam::new(params, 1e-3))),
            make_scheduler: None,
        }
    }
}

impl Configure {
    pub(crate) fn set_optimizer<O: Optimizer + 'static>(
        &mut self,
        make: impl Fn(Vec<Tensor>) -> O + Send + Sync + 'static,
    ) {
        self.make_optimizer = Box::new(move |params| Box::new(make(params)));
    }

    pub(crate) fn set_scheduler<S: LrScheduler + 'static>(
        &mut self,
        make: impl Fn(&mut dyn Optimizer) -> S + Send + Sync + 'static,
    ) {
        self.make_scheduler = Some(Box::new(move |opt| Box::new(make(opt))));
    }

    pub(crate) fn optimizer(&self, params: Vec<Tensor>) -> Box<dyn Optimizer> {
        (self.make_optimizer)(params)
    }

    pub(crate) fn scheduler(&self, optimizer: &mut dyn Optimizer) -> Option<Box<dyn LrScheduler>> {
        self.make_scheduler.as_ref().map(|make| make(optimizer))
    }
}

/// For a wrapper struct `$wrapper<M>` with fields `model: M` and
/// `configure: Configure`: `Module` (the model's parameters, under their own
/// names) and the `optimizer`/`scheduler` builders.
macro_rules! wrapper_common {
    ($wrapper:ident) => {
        impl<M: crate::nn::Module> crate::nn::Module for $wrapper<M> {
            fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
                self.model.visit_parameters(prefix, f)
            }
            fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
                self.model.visit_parameters_mut(prefix, f)
            }
            fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
                self.model.visit_buffers(prefix, f)
            }
            fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
                self.model.visit_buffers_mut(prefix, f)
            }
            fn set_training(&mut self, training: bool) {
                self.model.set_training(training)
            }
            fn visit_training(&self, f: &mut dyn FnMut(bool)) {
                self.model.visit_training(f)
            }
        }

        impl<M: crate::nn::Differentiable> $wrapper<M> {
            /// The optimizer to train with, built from the model's parameters.
            pub fn optimizer<O: crate::optim::Optimizer + 'static>(
                mut self,
                make: impl Fn(Vec<Tensor>) -> O + Send + Sync + 'static,
            ) -> Self {
                self.configure.set_optimizer(make);
                self
            }

            /// A learning-rate scheduler, stepped after every epoch:
            /// `.scheduler(|opt| StepLR::new(opt, 10, 0.5))`.
            pub fn scheduler<S: crate::optim::lr_scheduler::LrScheduler + 'static>(
                mut self,
                make: impl Fn(&mut dyn crate::optim::Optimizer) -> S + Send + Sync + 'static,
            ) -> Self {
                self.configure.set_scheduler(make);
                self
            }
        }
    };
}
pub(crate) use wrapper_common;
