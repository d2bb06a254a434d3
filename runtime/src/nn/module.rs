//! The traits every model implements.

use crate::autograd::no_grad;
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::io::StateDict;
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

    /// The parameters by dotted name, detached (sharing storage with the
    /// model, as in PyTorch): what [`save_safetensors`](Self::save_safetensors) writes.
    fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        self.visit_parameters("", &mut |n, t| sd.insert(n, t.detach()));
        sd
    }

    /// Copies each tensor of `state` into the parameter of that name, in
    /// place (so optimizers holding the parameters keep working), converting
    /// dtype as PyTorch's `load_state_dict` does.
    ///
    /// Strict, like PyTorch's default: a missing or unexpected name, or a
    /// shape that differs, is an `Err` naming it, and nothing is copied.
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()> {
        let keys = self.load_state_dict_with(state, true)?;
        debug_assert!(keys.missing_keys.is_empty() && keys.unexpected_keys.is_empty());
        Ok(())
    }

    /// [`load_state_dict`](Self::load_state_dict) with PyTorch's `strict`
    /// flag: when false, names on one side only are reported, not refused.
    /// A shape mismatch is always an `Err`.
    fn load_state_dict_with(
        &mut self,
        state: &StateDict,
        strict: bool,
    ) -> Result<IncompatibleKeys> {
        let mut keys = IncompatibleKeys::default();
        let mut mismatched = Vec::new();
        let mut own = Vec::new();
        self.visit_parameters("", &mut |n, t| {
            own.push(n.to_string());
            match state.get(n) {
                None => keys.missing_keys.push(n.to_string()),
                Some(src) if src.shape() != t.shape() => mismatched.push(format!(
                    "{n}: the checkpoint has shape {:?}, the model {:?}",
                    src.shape(),
                    t.shape()
                )),
                Some(_) => {}
            }
        });
        keys.unexpected_keys = state
            .keys()
            .filter(|k| !own.iter().any(|o| o == k))
            .map(str::to_string)
            .collect();
        if !mismatched.is_empty() {
            return Err(Error::Invalid(format!(
                "load_state_dict: size mismatch for {}; build the model with the sizes the \
                 checkpoint was saved from",
                mismatched.join("; ")
            )));
        }
        if strict && (!keys.missing_keys.is_empty() || !keys.unexpected_keys.is_empty()) {
            return Err(Error::Invalid(format!(
                "load_state_dict: missing keys [{}], unexpected keys [{}]; check the model \
                 matches the checkpoint, or pass strict = false to load what matches",
                keys.missing_keys.join(", "),
                keys.unexpected_keys.join(", ")
            )));
        }
        no_grad(|| {
            self.visit_parameters("", &mut |n, t| {
                if let Some(src) = state.get(n) {
                    let src = if src.device() != t.device() {
                        src.to(&t.device())
                    } else {
                        src.clone()
                    };
                    let src = if src.dtype() != t.dtype() {
                        src.to_dtype(t.dtype())
                    } else {
                        src
                    };
                    t.copy_(&src);
                }
            })
        });
        Ok(keys)
    }

    /// Writes the [`state_dict`](Self::state_dict) to a safetensors file
    /// (atomically), readable by `safetensors.torch.load_file`.
    fn save_safetensors(&self, path: &std::path::Path) -> Result<()> {
        crate::io::save_file(&self.state_dict(), path)
    }

    /// Loads parameters from a safetensors file, strictly (see
    /// [`load_state_dict`](Self::load_state_dict)); a truncated or corrupt
    /// file is an `Err` and leaves the parameters untouched.
    fn load_safetensors(&mut self, path: &std::path::Path) -> Result<()> {
        let state = crate::io::load_file(path)?;
        self.load_state_dict(&state).map_err(|e| Error::Format {
            path: path.display().to_string(),
            msg: e.to_string(),
        })
    }
}

/// The names [`Module::load_state_dict_with`] found on one side only
/// (PyTorch's `_IncompatibleKeys`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncompatibleKeys {
    /// Parameters of the model that the state dict lacks.
    pub missing_keys: Vec<String>,
    /// Entries of the state dict that name no parameter.
    pub unexpected_keys: Vec<String>,
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
