//! Optimizers that update parameters in place, outside the tape, and
//! learning-rate schedulers.

// Placeholder until the optimizers land (replaced by the optim branch).
use crate::tensor::Tensor;
/// An optimizer's state.
#[derive(Clone, Debug, Default)]
pub struct OptimizerState {
    /// Tensors by dotted name.
    pub tensors: Vec<(String, Tensor)>,
    /// Scalars by dotted name.
    pub scalars: Vec<(String, f64)>,
}
/// Placeholder.
pub trait Optimizer: Send {
    /// Placeholder.
    fn step(&mut self);
    /// Placeholder.
    fn zero_grad(&mut self);
    /// Placeholder.
    fn zero_grad_in_place(&mut self);
    /// Placeholder.
    fn lr(&self) -> f64;
    /// Placeholder.
    fn set_lr(&mut self, lr: f64);
    /// Placeholder.
    fn state_dict(&self) -> OptimizerState;
    /// Placeholder.
    fn load_state_dict(&mut self, state: &OptimizerState) -> crate::Result<()>;
}
/// Placeholder SGD.
pub struct SGD {
    params: Vec<Tensor>,
    lr: f64,
}
impl SGD {
    /// Placeholder.
    pub fn new(params: Vec<Tensor>, lr: f64) -> Self {
        SGD { params, lr }
    }
}
impl Optimizer for SGD {
    fn step(&mut self) {
        crate::no_grad(|| {
            for p in &self.params {
                if let Some(g) = p.grad() {
                    p.sub_(&(g * self.lr));
                }
            }
        })
    }
    fn zero_grad(&mut self) {
        for p in &self.params {
            p.set_grad(None)
        }
    }
    fn zero_grad_in_place(&mut self) {
        for p in &self.params {
            p.zero_grad()
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr
    }
    fn state_dict(&self) -> OptimizerState {
        OptimizerState::default()
    }
    fn load_state_dict(&mut self, _: &OptimizerState) -> crate::Result<()> {
        Ok(())
    }
}
