//! Parameter-free layers: activations, softmax, dropout, flatten, identity.

use super::dsl::get;
use super::linear::LayerWorkspace;
use super::{functional as F, Differentiable, Forward, Module, TrainStep};
use crate::autograd::{no_grad, NoGradGuard};
use crate::backend::Device;
use crate::ops::into::{self, Act};
use crate::tensor::{norm_dim, Tensor};
use crate::vjp;

/// Whether the in-place kernels take `t` (a float tensor on the CPU).
fn float_cpu(t: &Tensor) -> bool {
    t.dtype().is_float() && t.device().is_cpu()
}

/// Module impl for a layer without parameters.
macro_rules! no_parameters {
    ($t:ty) => {
        impl Module for $t {
            fn visit_parameters(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Tensor)) {}
            fn visit_parameters_mut(
                &mut self,
                _prefix: &str,
                _f: &mut dyn FnMut(&str, &mut Tensor),
            ) {
            }
        }
    };
}

/// An elementwise activation whose gradient is computed from its output.
macro_rules! activation {
    ($(#[$doc:meta])* $name:ident, $f:path, $rule:path, $act:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;

        impl $name {
            /// The layer (it has no parameters, so `device` only keeps the
            /// constructor uniform with the others).
            pub fn new(_device: &Device) -> Self {
                $name
            }
        }

        no_parameters!($name);

        impl Forward for $name {
            fn forward(&self, x: &Tensor) -> Tensor {
                $f(x)
            }
        }

        impl Differentiable for $name {
            /// The output.
            type Saved = Tensor;
            fn forward_train(&self, x: &Tensor) -> (Tensor, Tensor) {
                let y = no_grad(|| $f(x));
                (y.clone(), y)
            }
            fn backward(&self, y: Tensor, grad_out: &Tensor, input_grad: bool) -> Option<Tensor> {
                input_grad.then(|| no_grad(|| $rule(&y, grad_out)))
            }
        }

        impl TrainStep for $name {
            /// The output and the input gradient.
            type Workspace = LayerWorkspace;
            fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut LayerWorkspace) -> &'w Tensor {
                if !float_cpu(x) {
                    return ws.out.insert(no_grad(|| $f(x)));
                }
                let out = into::slot(&mut ws.out, x.shape(), x.dtype(), x.device(), &[x]);
                into::act_into($act, out, x);
                out
            }
            fn backward_ws<'w>(
                &self,
                ws: &'w mut LayerWorkspace,
                grad_out: &Tensor,
                input_grad: bool,
            ) -> Option<&'w Tensor> {
                if !input_grad {
                    return None;
                }
                let y = get(&ws.out);
                let g = grad_out;
                if !(y.shape() == g.shape() && y.dtype() == g.dtype() && float_cpu(g)) {
                    ws.dx = Some(no_grad(|| $rule(y, g)));
                    return ws.dx.as_ref();
                }
                let dx = into::slot(&mut ws.dx, y.shape(), y.dtype(), y.device(), &[y, g]);
                into::act_backward_into($act, dx, y, g, false);
                Some(dx)
            }
        }
    };
}

activation!(
    /// `max(x, 0)` elementwise (`nn.ReLU`).
    ReLU, F::relu, vjp::relu, Act::Relu
);
activation!(
    /// The logistic function elementwise (`nn.Sigmoid`).
    Sigmoid, F::sigmoid, vjp::sigmoid, Act::Sigmoid
);
activation!(
    /// Hyperbolic tangent elementwise (`nn.Tanh`).
    Tanh, F::tanh, vjp::tanh, Act::Tanh
);

/// Returns its input (`nn.Identity`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl Identity {
    /// The layer.
    pub fn new(_device: &Device) -> Self {
        Identity
    }
}

no_parameters!(Identity);

impl Forward for Identity {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.clone()
    }
}

impl Differentiable for Identity {
    type Saved = ();
    fn forward_train(&self, x: &Tensor) -> (Tensor, ()) {
        (x.clone(), ())
    }
    fn backward(&self, _: (), grad_out: &Tensor, input_grad: bool) -> Option<Tensor> {
        input_grad.then(|| grad_out.clone())
    }
}

impl TrainStep for Identity {
    /// Handles to the input and the gradient (nothing is copied).
    type Workspace = LayerWorkspace;
    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut LayerWorkspace) -> &'w Tensor {
        ws.out.insert(x.clone())
    }
    fn backward_ws<'w>(
        &self,
        ws: &'w mut LayerWorkspace,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        input_grad.then(|| &*ws.dx.insert(grad_out.clone()))
    }
}

/// Softmax or log-softmax along a dim.
macro_rules! softmax_layer {
    ($(#[$doc:meta])* $name:ident, $f:path, $rule:path, $log:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name {
            /// The dim that sums to one.
            pub dim: isize,
        }

        impl $name {
            /// The layer over `dim`.
            pub fn new(dim: isize, _device: &Device) -> Self {
                $name { dim }
            }
        }

        no_parameters!($name);

        impl Forward for $name {
            fn forward(&self, x: &Tensor) -> Tensor {
                $f(x, self.dim)
            }
        }

        impl Differentiable for $name {
            /// The output.
            type Saved = Tensor;
            fn forward_train(&self, x: &Tensor) -> (Tensor, Tensor) {
                let y = no_grad(|| $f(x, self.dim));
                (y.clone(), y)
            }
            fn backward(&self, y: Tensor, grad_out: &Tensor, input_grad: bool) -> Option<Tensor> {
                input_grad.then(|| no_grad(|| $rule(&y, grad_out, self.dim)))
            }
        }

        impl TrainStep for $name {
            /// The output and the input gradient.
            type Workspace = LayerWorkspace;
            fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut LayerWorkspace) -> &'w Tensor {
                let d = crate::error::OrPanic::or_panic(norm_dim(stringify!($f), self.dim, x.ndim()));
                if !(float_cpu(x) && x.is_contiguous() && x.ndim() > 0) {
                    return ws.out.insert(no_grad(|| $f(x, self.dim)));
                }
                let out = into::slot(&mut ws.out, x.shape(), x.dtype(), x.device(), &[x]);
                into::softmax_into(out, x, d, $log);
                out
            }
            fn backward_ws<'w>(
                &self,
                ws: &'w mut LayerWorkspace,
                grad_out: &Tensor,
                input_grad: bool,
            ) -> Option<&'w Tensor> {
                if !input_grad {
                    return None;
                }
                let y = get(&ws.out);
                let g = grad_out;
                let fast = y.shape() == g.shape()
                    && y.dtype() == g.dtype()
                    && float_cpu(g)
                    && y.is_contiguous()
                    && g.is_contiguous()
                    && y.ndim() > 0;
                if !fast {
                    ws.dx = Some(no_grad(|| $rule(y, g, self.dim)));
                    return ws.dx.as_ref();
                }
                let d = crate::error::OrPanic::or_panic(norm_dim(stringify!($f), self.dim, y.ndim()));
                let dx = into::slot(&mut ws.dx, y.shape(), y.dtype(), y.device(), &[y, g]);
                into::softmax_backward_into(dx, y, g, d, $log, false);
                Some(dx)
            }
        }
    };
}

softmax_layer!(
    /// `exp(x) / Σ exp(x)` along `dim` (`nn.Softmax(dim)`).
    Softmax, F::softmax, vjp::softmax, false
);
softmax_layer!(
    /// `log softmax(x)` along `dim` (`nn.LogSoftmax(dim)`).
    LogSoftmax, F::log_softmax, vjp::log_softmax, true
);

/// Flattens dims `start..=end` (`nn.Flatten`, default 1..=-1: keeps the batch dim).
#[derive(Clone, Copy, Debug)]
pub struct Flatten {
    /// First dim flattened.
    pub start: isize,
    /// Last dim flattened.
    pub end: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start: 1, end: -1 }
    }
}

impl Flatten {
    /// PyTorch's default: all dims but the first (batch) one.
    pub fn new(_device: &Device) -> Self {
        Self::default()
    }
}

no_parameters!(Flatten);

impl Forward for Flatten {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.flatten(self.start, self.end)
    }
}

impl Differentiable for Flatten {
    /// The input shape.
    type Saved = Vec<usize>;
    fn forward_train(&self, x: &Tensor) -> (Tensor, Vec<usize>) {
        (no_grad(|| self.forward(x)), x.shape().to_vec())
    }
    fn backward(&self, shape: Vec<usize>, grad_out: &Tensor, input_grad: bool) -> Option<Tensor> {
        input_grad.then(|| no_grad(|| vjp::reshape(grad_out, &shape)))
    }
}

impl TrainStep for Flatten {
    /// The flattened copy of the input, the input shape, and the gradient
    /// copied back to that shape (copies instead of views, so that no view
    /// handle is created per step).
    type Workspace = LayerWorkspace;
    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut LayerWorkspace) -> &'w Tensor {
        if !float_cpu(x) {
            ws.shape.clear();
            ws.shape.extend_from_slice(x.shape());
            return ws.out.insert(no_grad(|| self.forward(x)));
        }
        let reuse = ws.shape == x.shape()
            && ws
                .out
                .as_ref()
                .is_some_and(|o| o.dtype() == x.dtype() && !o.shares_storage(x));
        if !reuse {
            let y = no_grad(|| self.forward(x).clone_data());
            ws.shape.clear();
            ws.shape.extend_from_slice(x.shape());
            return ws.out.insert(y);
        }
        let out = get(&ws.out);
        into::copy_into(out, x);
        out
    }
    fn backward_ws<'w>(
        &self,
        ws: &'w mut LayerWorkspace,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        if !input_grad {
            return None;
        }
        if !(float_cpu(grad_out) && grad_out.numel() == ws.shape.iter().product::<usize>()) {
            ws.dx = Some(no_grad(|| vjp::reshape(grad_out, &ws.shape)));
            return ws.dx.as_ref();
        }
        let g = grad_out;
        let dx = into::slot(&mut ws.dx, &ws.shape, g.dtype(), g.device(), &[g]);
        into::copy_into(dx, g);
        Some(dx)
    }
}

/// Zeroes each element with probability `p` while training and scales the
/// rest by `1/(1-p)`; the identity in eval mode (`nn.Dropout`).
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f64,
    training: bool,
}

impl Dropout {
    /// Dropout with probability `p`, in training mode.
    #[track_caller]
    pub fn new(p: f64, _device: &Device) -> Self {
        assert!(
            (0.0..=1.0).contains(&p),
            "Dropout: probability has to be between 0 and 1, but got {p}"
        );
        Dropout { p, training: true }
    }

    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }
}

impl Module for Dropout {
    fn visit_parameters(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Tensor)) {}
    fn visit_parameters_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(&str, &mut Tensor)) {}
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

impl Forward for Dropout {
    fn forward(&self, x: &Tensor) -> Tensor {
        F::dropout(x, self.p, self.training)
    }
}

impl Differentiable for Dropout {
    /// The scaled keep-mask, when one was applied.
    type Saved = Option<Tensor>;
    fn forward_train(&self, x: &Tensor) -> (Tensor, Option<Tensor>) {
        if !self.training || self.p == 0.0 {
            return (x.clone(), None);
        }
        let mask = F::dropout_mask(x, self.p);
        (no_grad(|| x * &mask), Some(mask))
    }
    fn backward(
        &self,
        mask: Option<Tensor>,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<Tensor> {
        input_grad.then(|| match mask {
            Some(m) => no_grad(|| vjp::dropout(&m, grad_out)),
            None => grad_out.clone(),
        })
    }
}

impl TrainStep for Dropout {
    /// The output, the scaled keep-mask (drawn in place each step) and the
    /// input gradient; in eval mode (or `p = 0`) handles only, as the
    /// identity.
    type Workspace = LayerWorkspace;
    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut LayerWorkspace) -> &'w Tensor {
        let _guard = NoGradGuard::new();
        if !self.training || self.p == 0.0 {
            ws.aux = None;
            return ws.out.insert(x.clone());
        }
        if !float_cpu(x) {
            let (y, mask) = self.forward_train(x);
            ws.aux = mask;
            return ws.out.insert(y);
        }
        let mask = into::slot(&mut ws.aux, x.shape(), x.dtype(), x.device(), &[x]);
        let out = into::slot(&mut ws.out, x.shape(), x.dtype(), x.device(), &[x, mask]);
        into::dropout_into(out, mask, x, self.p);
        out
    }
    fn backward_ws<'w>(
        &self,
        ws: &'w mut LayerWorkspace,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        if !input_grad {
            return None;
        }
        let g = grad_out;
        let Some(mask) = ws.aux.as_ref() else {
            return Some(ws.dx.insert(g.clone()));
        };
        if !(mask.shape() == g.shape() && mask.dtype() == g.dtype() && float_cpu(g)) {
            ws.dx = Some(no_grad(|| vjp::dropout(mask, g)));
            return ws.dx.as_ref();
        }
        let dx = into::slot(&mut ws.dx, g.shape(), g.dtype(), g.device(), &[g, mask]);
        into::mul_into(dx, g, mask, false);
        Some(dx)
    }
}
