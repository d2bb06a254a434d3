//! The traits every model implements.

use crate::autograd::no_grad;
use crate::backend::Device;
use crate::tensor::{DType, Tensor};

/// `prefix.name`, or `name` at the top level: the dotted parameter paths
/// (`encoder.fc1.weight`) of [`Module::named_parameters`].
pub fn join_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A model or layer: something with parameters (PyTorch's `nn.Module`).
///
/// Implementors write the two visitors (or `#[derive(Module)]` / `network!`
/// write them); everything else is provided.
///
/// ```
/// use deriv_runtime::nn::{Linear, Module};
/// use deriv_runtime::Device;
/// let fc = Linear::new(3, 2, &Device::Cpu);
/// let names: Vec<String> = fc.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["weight", "bias"]);
/// assert_eq!(fc.num_parameters(), 8);
/// ```
pub trait Module: Send + Sync {
    /// Calls `f` with the dotted name (under `prefix`) and handle of each parameter.
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor));

    /// Like [`visit_parameters`](Self::visit_parameters), letting `f` replace
    /// each handle (device moves, loading weights).
    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor));

    /// Switches training-only behaviour (dropout) on or off; containers pass it on.
    fn set_training(&mut self, training: bool) {
        let _ = training;
    }

    /// Every parameter, in declaration order.
    fn parameters(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        self.visit_parameters("", &mut |_, t| out.push(t.clone()));
        out
    }

    /// Every parameter with its dotted path (`fc1.weight`).
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit_parameters("", &mut |n, t| out.push((n.to_string(), t.clone())));
        out
    }

    /// The number of scalar parameters.
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        self.visit_parameters("", &mut |_, t| n += t.numel());
        n
    }

    /// Zeroes every parameter's gradient in place (keeping the buffers).
    fn zero_grad(&self) {
        self.visit_parameters("", &mut |_, t| t.zero_grad());
    }

    /// Moves every parameter to `device` (still leaves that require grad).
    fn to(&mut self, device: &Device) {
        self.visit_parameters_mut("", &mut |_, t| {
            if t.device() != *device {
                let moved = no_grad(|| t.to(device)).detach();
                moved.set_requires_grad(t.requires_grad());
                *t = moved;
            }
        });
    }

    /// Converts every float parameter to `dtype` (`model.double()` is
    /// `to_dtype(DType::F64)`), keeping them leaves that require grad.
    fn to_dtype(&mut self, dtype: DType) {
        self.visit_parameters_mut("", &mut |_, t| {
            if t.dtype() != dtype {
                let converted = no_grad(|| t.to_dtype(dtype)).detach();
                converted.set_requires_grad(t.requires_grad());
                *t = converted;
            }
        });
    }

    /// Training mode (`model.train()`).
    fn train(&mut self) {
        self.set_training(true);
    }

    /// Evaluation mode (`model.eval()`): dropout becomes the identity.
    fn eval(&mut self) {
        self.set_training(false);
    }
}

/// A module with one input and one output (`forward(x)`), on the tape.
pub trait Forward {
    /// Computes the output with recorded ops: when a parameter or `x`
    /// requires grad, `backward()` on a result reaches them.
    fn forward(&self, x: &Tensor) -> Tensor;
}

/// A module whose backward is known at compile time.
///
/// `forward_train` runs without recording and returns what backward needs;
/// `backward` consumes it, adds dL/dθ into each parameter's `.grad()` (as the
/// tape would) and returns dL/dx when asked. `network!` and
/// `#[derive(Module)]` compose these, and a user's own layer can implement
/// this trait to give the macros a custom gradient rule.
pub trait Differentiable: Module + Forward {
    /// Exactly what backward needs from the forward pass.
    type Saved: Send;

    /// The output, and what backward will need.
    fn forward_train(&self, x: &Tensor) -> (Tensor, Self::Saved);

    /// Consumes `saved`, accumulates parameter gradients, and returns dL/dx
    /// when `input_grad` is true (skipping that work otherwise).
    fn backward(&self, saved: Self::Saved, grad_out: &Tensor, input_grad: bool) -> Option<Tensor>;
}

/// Adds `grad` into `param`'s `.grad()` exactly as the tape does (in place when
/// a gradient is already there): what compile-time backward passes call.
pub fn accumulate_grad(param: &Tensor, grad: Tensor) {
    no_grad(|| crate::autograd::engine::accumulate(param, grad));
}
