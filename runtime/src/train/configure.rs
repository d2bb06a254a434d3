//! The optimizer and scheduler choice shared by the ready-made training
//! modules ([`Classifier`](super::Classifier), [`Regressor`](super::Regressor)).

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
