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

    /// Calls `f` with the dotted name and handle of each buffer: state saved
    /// and moved with the model but not trained (BatchNorm's running
    /// statistics). A layer without buffers keeps the default (none);
    /// containers pass it on.
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        let _ = (prefix, f);
    }

    /// Like [`visit_buffers`](Self::visit_buffers), letting `f` replace each
    /// handle (device moves).
    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        let _ = (prefix, f);
    }

    /// Switches training-only behaviour (dropout, batch statistics) on or
    /// off (PyTorch's `train(mode)`); containers pass it on.
    fn set_training(&mut self, training: bool) {
        let _ = training;
    }

    /// Calls `f` with the mode of each layer whose behaviour depends on it
    /// (dropout, batch norm, attention dropout); containers pass it on.
    fn visit_training(&self, f: &mut dyn FnMut(bool)) {
        let _ = f;
    }

    /// Whether the model is in training mode (PyTorch's `model.training`):
    /// false once [`eval`](Self::eval) has reached a layer whose behaviour
    /// depends on the mode, true again after [`train`](Self::train). (A
    /// model without such layers behaves the same in both modes and says
    /// true.)
    ///
    /// ```
    /// use deriv_runtime::nn::{Dropout, Linear, Module, Sequential};
    /// use deriv_runtime::Device;
    /// let mut m = Sequential::new().add(Linear::new(2, 2, &Device::Cpu)).add(Dropout::new(0.5, &Device::Cpu));
    /// assert!(m.is_training());
    /// m.eval();
    /// assert!(!m.is_training());
    /// ```
    fn is_training(&self) -> bool {
        let mut training = true;
        self.visit_training(&mut |t| training &= t);
        training
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

    /// Every buffer (`model.buffers()`), in declaration order.
    fn buffers(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        self.visit_buffers("", &mut |_, t| out.push(t.clone()));
        out
    }

    /// Every buffer with its dotted path (`bn1.running_mean`).
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit_buffers("", &mut |n, t| out.push((n.to_string(), t.clone())));
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

    /// Moves every parameter (still leaves that require grad) and buffer to
    /// `device`.
    fn to(&mut self, device: &Device) {
        let mut move_to = |_: &str, t: &mut Tensor| {
            if t.device() != *device {
                let moved = no_grad(|| t.to(device)).detach();
                moved.set_requires_grad(t.requires_grad());
                *t = moved;
            }
        };
        self.visit_parameters_mut("", &mut move_to);
        self.visit_buffers_mut("", &mut move_to);
    }

    /// Converts every float parameter and float buffer to `dtype`
    /// (`model.double()` is `to_dtype(DType::F64)`), keeping the parameters
    /// leaves that require grad; integer buffers (BatchNorm's
    /// `num_batches_tracked`) stay as they are, as in PyTorch.
    fn to_dtype(&mut self, dtype: DType) {
        let mut convert = |_: &str, t: &mut Tensor| {
            if t.dtype() != dtype && t.dtype().is_float() {
                let converted = no_grad(|| t.to_dtype(dtype)).detach();
                converted.set_requires_grad(t.requires_grad());
                *t = converted;
            }
        };
        self.visit_parameters_mut("", &mut convert);
        self.visit_buffers_mut("", &mut convert);
    }

    /// Training mode (`model.train()`).
    fn train(&mut self) {
        self.set_training(true);
    }

    /// Evaluation mode (`model.eval()`): dropout becomes the identity.
    fn eval(&mut self) {
        self.set_training(false);
    }

    /// The parameters and buffers by dotted name, detached (sharing storage
    /// with the model, as in PyTorch): what
    /// [`save_safetensors`](Self::save_safetensors) writes.
    fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        self.visit_parameters("", &mut |n, t| sd.insert(n, t.detach()));
        self.visit_buffers("", &mut |n, t| sd.insert(n, t.detach()));
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
        let mut check = |n: &str, t: &Tensor| {
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
        };
        self.visit_parameters("", &mut check);
        self.visit_buffers("", &mut check);
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
        let mut load = |n: &str, t: &Tensor| {
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
        };
        no_grad(|| {
            self.visit_parameters("", &mut load);
            self.visit_buffers("", &mut load);
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

    /// What the layer does to the size `network!` checks at compile time:
    /// `Maps { input, output }` names the constructor arguments giving the
    /// size it expects and the size it produces (`Linear(in, out)`), `Same`
    /// passes it through (activations), `Unknown` (the default) ends the
    /// check. See [`crate::size`].
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Unknown;

    /// The output, and what backward will need.
    fn forward_train(&self, x: &Tensor) -> (Tensor, Self::Saved);

    /// Consumes `saved`, accumulates parameter gradients, and returns dL/dx
    /// when `input_grad` is true (skipping that work otherwise).
    fn backward(&self, saved: Self::Saved, grad_out: &Tensor, input_grad: bool) -> Option<Tensor>;
}

/// Adds `grad` into `param`'s `.grad()` exactly as the tape does (in place when
/// a gradient is already there), then runs the parameter's
/// post-accumulate-grad hooks: what compile-time backward passes call.
pub fn accumulate_grad(param: &Tensor, grad: Tensor) {
    no_grad(|| {
        crate::autograd::engine::accumulate(param, grad);
        crate::autograd::run_post_accumulate_hooks(param);
    });
}

/// Runs `param`'s post-accumulate-grad hooks
/// ([`Tensor::register_post_accumulate_grad_hook`]): a layer whose
/// [`TrainStep::backward_ws`] adds into `.grad()` with its own kernels (not
/// through [`accumulate_grad`]) calls this once the gradient is complete, so
/// data-parallel training can start reducing it.
pub fn grad_accumulated(param: &Tensor) {
    no_grad(|| crate::autograd::run_post_accumulate_hooks(param));
}

/// The buffer-reusing training step: [`Differentiable`] with the
/// intermediate tensors kept in a workspace between steps, so that in steady
/// state (same batch shape, gradients already allocated) a step makes no heap
/// allocation.
///
/// `forward_train_ws` writes the output and what backward needs into
/// `ws` (allocating its buffers on the first step, or when a shape changes)
/// and returns the output; `backward_ws` reads them, adds dL/dθ into each
/// parameter's existing `.grad()` buffer in place (creating it zeroed on
/// the first step), and returns dL/dx when `input_grad` is true. The math is
/// the [`Differentiable`] path's, so both give the same gradients.
///
/// The returned tensors are buffers of the workspace: the next step
/// overwrites them in place, so copy one (`clone_data()`) to keep it. Call
/// `backward_ws` at most once per `forward_train_ws`.
///
/// The runtime's layers and every `network!` model (sequential and
/// one-input class form) and `#[module(sequential)]` type implement it.
/// A layer of your own implements it with its own buffers, or simply with a
/// [`Fallback`] workspace that runs its `Differentiable` methods (allocating):
///
/// ```
/// use deriv_runtime::nn::{Differentiable, Fallback, Forward, Linear, Module, TrainStep};
/// use deriv_runtime::{Device, Tensor};
/// # struct Cube;
/// # impl Module for Cube {
/// #     fn visit_parameters(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor)) {}
/// #     fn visit_parameters_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut Tensor)) {}
/// # }
/// # impl Forward for Cube { fn forward(&self, x: &Tensor) -> Tensor { x * x * x } }
/// # impl Differentiable for Cube {
/// #     type Saved = Tensor;
/// #     fn forward_train(&self, x: &Tensor) -> (Tensor, Tensor) { (x * x * x, x.clone()) }
/// #     fn backward(&self, x: Tensor, g: &Tensor, need: bool) -> Option<Tensor> {
/// #         need.then(|| g * &(&x * &x * 3.0))
/// #     }
/// # }
/// impl TrainStep for Cube {
///     type Workspace = Fallback<Self>;
///     fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut Fallback<Self>) -> &'w Tensor {
///         ws.forward_train(self, x)
///     }
///     fn backward_ws<'w>(
///         &self,
///         ws: &'w mut Fallback<Self>,
///         grad_out: &Tensor,
///         input_grad: bool,
///     ) -> Option<&'w Tensor> {
///         ws.backward(self, grad_out, input_grad)
///     }
/// }
///
/// // A step with a built-in layer: the second one reuses every buffer.
/// let fc = Linear::new(3, 2, &Device::Cpu);
/// let mut ws = fc.workspace();
/// let x = Tensor::randn([4, 3]);
/// for _ in 0..2 {
///     let y = fc.forward_train_ws(&x, &mut ws);
///     assert_eq!(y.shape(), &[4, 2]);
///     let g = Tensor::ones([4, 2]);
///     let dx = fc.backward_ws(&mut ws, &g, true).unwrap();
///     assert_eq!(dx.shape(), &[4, 3]);
/// }
/// // Two backward passes accumulated: db = 2 · 4 rows of ones.
/// assert_eq!(fc.bias.as_ref().unwrap().grad().unwrap().to_vec::<f32>(), vec![8.0, 8.0]);
/// ```
pub trait TrainStep: Differentiable {
    /// The buffers kept between steps (empty until the first step).
    type Workspace: Default + Send;

    /// An empty workspace for this model.
    fn workspace(&self) -> Self::Workspace {
        Self::Workspace::default()
    }

    /// The output, computed without recording into `ws`'s buffers, which
    /// also keep what [`backward_ws`](Self::backward_ws) needs.
    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut Self::Workspace) -> &'w Tensor;

    /// Adds dL/dθ into each parameter's `.grad()` (in place) from what the
    /// last [`forward_train_ws`](Self::forward_train_ws) left in `ws`, and
    /// returns dL/dx (a buffer of `ws`) when `input_grad` is true.
    fn backward_ws<'w>(
        &self,
        ws: &'w mut Self::Workspace,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor>;
}

/// A [`TrainStep`] workspace that runs a layer's allocating
/// [`Differentiable`] methods and keeps their results: the adapter for a
/// layer without buffer-reusing kernels (see [`TrainStep`]'s example).
pub struct Fallback<M: Differentiable + ?Sized> {
    out: Option<Tensor>,
    saved: Option<M::Saved>,
    dx: Option<Tensor>,
}

impl<M: Differentiable + ?Sized> Default for Fallback<M> {
    fn default() -> Self {
        Fallback {
            out: None,
            saved: None,
            dx: None,
        }
    }
}

impl<M: Differentiable + ?Sized> Fallback<M> {
    /// Runs `m.forward_train(x)`, keeps its `Saved`, and returns the output.
    pub fn forward_train(&mut self, m: &M, x: &Tensor) -> &Tensor {
        let (y, saved) = m.forward_train(x);
        self.saved = Some(saved);
        self.out.insert(y)
    }

    /// Runs `m.backward` on the kept `Saved` and returns dL/dx when asked.
    ///
    /// Panics when no [`forward_train`](Self::forward_train) preceded it.
    pub fn backward(&mut self, m: &M, grad_out: &Tensor, input_grad: bool) -> Option<&Tensor> {
        let saved = self.saved.take().expect(
            "backward_ws: nothing saved; call forward_train_ws first (once per backward_ws)",
        );
        self.dx = m.backward(saved, grad_out, input_grad);
        self.dx.as_ref()
    }
}

/// Implements [`TrainStep`] with a [`Fallback`] workspace (the allocating
/// [`Differentiable`] path's results, kept) for a layer without
/// buffer-reusing kernels: `deriv::fallback_train_step!(MyLayer);`, or
/// `deriv::fallback_train_step!(impl<K: Kind> for MyLayer<K>);`.
///
/// ```
/// # use deriv_runtime::nn::{Differentiable, Forward, Module};
/// # use deriv_runtime::Tensor;
/// # struct Cube;
/// # impl Module for Cube {
/// #     fn visit_parameters(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor)) {}
/// #     fn visit_parameters_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut Tensor)) {}
/// # }
/// # impl Forward for Cube { fn forward(&self, x: &Tensor) -> Tensor { x * x * x } }
/// # impl Differentiable for Cube {
/// #     type Saved = Tensor;
/// #     fn forward_train(&self, x: &Tensor) -> (Tensor, Tensor) { (x * x * x, x.clone()) }
/// #     fn backward(&self, x: Tensor, g: &Tensor, need: bool) -> Option<Tensor> {
/// #         need.then(|| g * &(&x * &x * 3.0))
/// #     }
/// # }
/// deriv_runtime::fallback_train_step!(Cube);
/// ```
#[macro_export]
macro_rules! fallback_train_step {
    (impl<$($g:ident: $b:path),*> for $ty:ty) => {
        $crate::fallback_train_step!(@impl [$($g: $b),*] $ty);
    };
    ($ty:ty) => {
        $crate::fallback_train_step!(@impl [] $ty);
    };
    (@impl [$($g:ident: $b:path),*] $ty:ty) => {
        impl<$($g: $b),*> $crate::nn::TrainStep for $ty {
            /// The allocating path's results, kept.
            type Workspace = $crate::nn::Fallback<Self>;

            fn forward_train_ws<'w>(
                &self,
                x: &$crate::Tensor,
                ws: &'w mut $crate::nn::Fallback<Self>,
            ) -> &'w $crate::Tensor {
                ws.forward_train(self, x)
            }

            fn backward_ws<'w>(
                &self,
                ws: &'w mut $crate::nn::Fallback<Self>,
                grad_out: &$crate::Tensor,
                input_grad: bool,
            ) -> ::core::option::Option<&'w $crate::Tensor> {
                ws.backward(self, grad_out, input_grad)
            }
        }
    };
}
