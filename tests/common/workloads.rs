//! The two training workloads of the performance targets, shared by
//! `tests/zero_alloc.rs` and `benches/network.rs` (included with `#[path]`):
//!
//! - W3: Linear(2,16)-ReLU-Linear(16,1), BCE-with-logits (mean), batch 16,
//!   SGD lr 0.1;
//! - W4: 784-256-ReLU-128-ReLU-10, cross-entropy (mean), batch 64, SGD lr 0.01.
//!
//! Each has three ways to run one full step (forward, loss value and
//! gradient, backward, `optim::SGD` step, `zero_grad_in_place`): the buffer-reusing
//! `TrainStep` path ([`WsTrainer`]), the allocating compile-time path
//! ([`compile_time_step`]) and the tape ([`tape_step`]).

#![allow(dead_code)]

use deriv::nn::{
    BCEWithLogitsLoss, CrossEntropyLoss, Differentiable, Forward, Linear, Loss, Module, ReLU,
    TrainStep,
};
use deriv::optim::{Optimizer, SGD};
use deriv::{network, no_grad, vjp, DType, Generator, Tensor, TensorOptions};

network! {
    /// W3: the small MLP.
    pub struct W3 = Linear(2, 16) -> ReLU -> Linear(16, 1);
}

network! {
    /// W4: the MNIST-sized MLP.
    pub struct W4 = Linear(784, 256) -> ReLU -> Linear(256, 128) -> ReLU -> Linear(128, 10);
}

/// W3's learning rate and batch.
pub const W3_LR: f64 = 0.1;
pub const W3_BATCH: usize = 16;
/// W4's learning rate and batch.
pub const W4_LR: f64 = 0.01;
pub const W4_BATCH: usize = 64;

/// A W3 batch: points in the plane, labelled 1 inside the unit circle.
pub fn w3_batch(gen: &mut Generator, dtype: DType) -> (Tensor, Tensor) {
    let x = Tensor::randn_with([W3_BATCH, 2], gen);
    let v = x.to_vec::<f64>();
    let t: Vec<f64> = v
        .chunks(2)
        .map(|p| (p[0] * p[0] + p[1] * p[1] < 1.0) as u8 as f64)
        .collect();
    (
        x.to_dtype(dtype),
        Tensor::from_vec(t, [W3_BATCH, 1]).to_dtype(dtype),
    )
}

/// A W4 batch: random images and class indices.
pub fn w4_batch(gen: &mut Generator, dtype: DType) -> (Tensor, Tensor) {
    let x = Tensor::randn_with([W4_BATCH, 784], gen);
    let t: Vec<i64> = (0..W4_BATCH).map(|_| gen.int_range(0, 10)).collect();
    (x.to_dtype(dtype), Tensor::from_vec(t, [W4_BATCH]))
}

/// Which loss a workload uses.
#[derive(Clone, Copy, Debug)]
pub enum LossKind {
    /// BCE-with-logits, mean, float targets shaped like the output.
    Bce,
    /// Cross-entropy, mean, i64 class indices.
    CrossEntropy,
}

impl LossKind {
    /// Value and gradient without allocating (`vjp::*_into`).
    pub fn into_buffers(self, y: &Tensor, t: &Tensor, loss: &Tensor, grad: &Tensor) -> f64 {
        match self {
            LossKind::Bce => vjp::bce_with_logits_into(y, t, loss, grad),
            LossKind::CrossEntropy => vjp::cross_entropy_into(y, t, loss, grad),
        }
    }

    /// Value and gradient as a user gets them on the compile-time path: the
    /// loss module's `forward_backward`.
    pub fn forward_backward(self, y: &Tensor, t: &Tensor) -> (Tensor, Tensor) {
        match self {
            LossKind::Bce => BCEWithLogitsLoss::new().forward_backward(y, t),
            LossKind::CrossEntropy => CrossEntropyLoss::new().forward_backward(y, t),
        }
    }

    /// The loss with recorded ops, from the documented formulas.
    pub fn tape(self, y: &Tensor, t: &Tensor) -> Tensor {
        match self {
            // mean(max(y, 0) - y·t + log(1 + exp(-|y|)))
            LossKind::Bce => (y.relu() - y * t + ((-y.abs()).exp() + 1.0).log()).mean(),
            // -mean(log_softmax(y)[n, t[n]])
            LossKind::CrossEntropy => {
                let picked = y.log_softmax(1).gather(1, &t.reshape([-1, 1]));
                -picked.mean()
            }
        }
    }

    /// The loss gradient with allocating ops: (sigmoid(y) - t)/N, or
    /// (softmax(y) - onehot(t))/N.
    pub fn grad_alloc(self, y: &Tensor, t: &Tensor) -> Tensor {
        no_grad(|| match self {
            LossKind::Bce => (y.sigmoid() - t) * (1.0 / y.numel() as f64),
            LossKind::CrossEntropy => {
                let (n, c) = (y.shape()[0], y.shape()[1]);
                let idx = t.to_vec::<i64>();
                let mut onehot = vec![0.0f64; n * c];
                for (r, &k) in idx.iter().enumerate() {
                    onehot[r * c + k as usize] = 1.0;
                }
                let onehot = Tensor::from_vec(onehot, [n, c]).to_dtype(y.dtype());
                (y.softmax(1) - onehot) * (1.0 / n as f64)
            }
        })
    }
}

/// The workloads' optimizer, as a user writes it (PyTorch's side of the
/// suite uses `torch.optim.SGD`): plain SGD over the model's parameters.
pub fn sgd(model: &impl Module, lr: f64) -> SGD {
    SGD::new(model.parameters(), lr)
}

/// The update and the zeroed gradients that end every step.
fn update(opt: &mut SGD) {
    opt.step();
    opt.zero_grad_in_place();
}

/// One step on the allocating compile-time path (`forward_train`/`backward`).
pub fn compile_time_step<M: Differentiable>(
    model: &M,
    x: &Tensor,
    t: &Tensor,
    loss: LossKind,
    opt: &mut SGD,
) {
    let (y, saved) = model.forward_train(x);
    let g = loss.grad_alloc(&y, t);
    model.backward(saved, &g, false);
    update(opt);
}

/// One compile-time step as a user writes it: `forward_train`, the loss
/// module's `forward_backward`, `backward`, `opt.step()`, `opt.zero_grad()`.
pub fn user_step<M: Differentiable>(
    model: &M,
    x: &Tensor,
    t: &Tensor,
    loss: LossKind,
    opt: &mut SGD,
) {
    let (y, saved) = model.forward_train(x);
    let (_, g) = loss.forward_backward(&y, t);
    model.backward(saved, &g, false);
    opt.step();
    opt.zero_grad();
}

/// One step on the tape.
pub fn tape_step<M: Forward + Module>(
    model: &M,
    x: &Tensor,
    t: &Tensor,
    loss: LossKind,
    opt: &mut SGD,
) {
    let y = model.forward(x);
    loss.tape(&y, t).backward();
    update(opt);
}

/// A model with its workspace, its parameter list and the loss buffers: one
/// [`step`](Self::step) allocates nothing once the buffers exist.
pub struct WsTrainer<M: TrainStep> {
    /// The model.
    pub model: M,
    ws: M::Workspace,
    opt: SGD,
    loss_kind: LossKind,
    loss: Option<Tensor>,
    grad: Option<Tensor>,
}

impl<M: TrainStep> WsTrainer<M> {
    /// Wraps `model` with its workspace and an [`SGD`] over its parameters.
    pub fn new(model: M, loss_kind: LossKind, lr: f64) -> Self {
        let ws = model.workspace();
        let opt = sgd(&model, lr);
        WsTrainer {
            model,
            ws,
            opt,
            loss_kind,
            loss: None,
            grad: None,
        }
    }

    /// Forward, loss value and gradient, backward (no input gradient),
    /// `SGD::step` and `zero_grad_in_place`; returns the loss.
    pub fn step(&mut self, x: &Tensor, t: &Tensor) -> f64 {
        let y = self.model.forward_train_ws(x, &mut self.ws);
        let opts = TensorOptions::new().dtype(y.dtype());
        if self.grad.as_ref().is_none_or(|g| g.shape() != y.shape()) {
            self.grad = Some(Tensor::zeros_opts(y.shape(), &opts));
            self.loss = Some(Tensor::zeros_opts([], &opts));
        }
        let (loss, grad) = (self.loss.as_ref().unwrap(), self.grad.as_ref().unwrap());
        let value = self.loss_kind.into_buffers(y, t, loss, grad);
        let _ = self.model.backward_ws(&mut self.ws, grad, false);
        update(&mut self.opt);
        value
    }

    /// Forward, loss and backward only (gradients left in `.grad()`).
    pub fn forward_backward(&mut self, x: &Tensor, t: &Tensor) -> f64 {
        let y = self.model.forward_train_ws(x, &mut self.ws);
        let opts = TensorOptions::new().dtype(y.dtype());
        let grad = Tensor::zeros_opts(y.shape(), &opts);
        let loss = Tensor::zeros_opts([], &opts);
        let value = self.loss_kind.into_buffers(y, t, &loss, &grad);
        let _ = self.model.backward_ws(&mut self.ws, &grad, false);
        value
    }
}
