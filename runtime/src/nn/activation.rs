//! Parameter-free layers: activations, softmax, dropout, flatten, identity.

use super::{functional as F, Differentiable, Forward, Module};
use crate::autograd::no_grad;
use crate::backend::Device;
use crate::tensor::Tensor;
use crate::vjp;

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
    ($(#[$doc:meta])* $name:ident, $f:path, $rule:path) => {
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
    };
}

activation!(
    /// `max(x, 0)` elementwise (`nn.ReLU`).
    ReLU, F::relu, vjp::relu
);
activation!(
    /// The logistic function elementwise (`nn.Sigmoid`).
    Sigmoid, F::sigmoid, vjp::sigmoid
);
activation!(
    /// Hyperbolic tangent elementwise (`nn.Tanh`).
    Tanh, F::tanh, vjp::tanh
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

/// Softmax or log-softmax along a dim.
macro_rules! softmax_layer {
    ($(#[$doc:meta])* $name:ident, $f:path, $rule:path) => {
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
    };
}

softmax_layer!(
    /// `exp(x) / Σ exp(x)` along `dim` (`nn.Softmax(dim)`).
    Softmax, F::softmax, vjp::softmax
);
softmax_layer!(
    /// `log softmax(x)` along `dim` (`nn.LogSoftmax(dim)`).
    LogSoftmax, F::log_softmax, vjp::log_softmax
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
