//! `Linear`: y = x·Wᵀ + b.

use super::module::{accumulate_grad, grad_accumulated, join_name};
use super::{init, Differentiable, Forward, Module, TrainStep};
use crate::autograd::{forward_into, forward_saving, no_grad, GradSlot, NoGradGuard, Op};
use crate::backend::Device;
use crate::error::OrPanic;
use crate::ops;
use crate::tensor::{Tensor, TensorOptions};

/// A fully connected layer, `y = x·Wᵀ + b` (`nn.Linear`): weight of shape
/// `[out_features, in_features]`, bias `[out_features]`, both initialised from
/// U(-1/√in, 1/√in) like PyTorch.
///
/// ```
/// use deriv_runtime::nn::{Forward, Linear};
/// use deriv_runtime::{Device, Tensor};
/// let fc = Linear::new(784, 10, &Device::Cpu);
/// let y = fc.forward(&Tensor::randn([64, 784]));
/// assert_eq!(y.shape(), &[64, 10]);
/// ```
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, if the layer has one.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer with a bias, its parameters created on `device`.
    pub fn new(in_features: usize, out_features: usize, device: &Device) -> Self {
        Self::with_bias(in_features, out_features, true, device)
    }

    /// A layer with or without a bias.
    pub fn with_bias(in_features: usize, out_features: usize, bias: bool, device: &Device) -> Self {
        let opts = TensorOptions::new().device(device);
        let weight = Tensor::zeros_opts([out_features, in_features], &opts);
        init::kaiming_uniform_(&weight, 5f64.sqrt());
        let bias = bias.then(|| {
            let b = Tensor::zeros_opts([out_features], &opts);
            let bound = if in_features > 0 {
                1.0 / (in_features as f64).sqrt()
            } else {
                0.0
            };
            init::uniform_(&b, -bound, bound);
            b.requires_grad_(true)
        });
        Linear {
            weight: weight.requires_grad_(true),
            bias,
        }
    }

    /// Inputs per sample.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Outputs per sample.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

/// `Module` for a layer with a `weight` and an optional `bias` (PyTorch's
/// parameter names).
macro_rules! weight_bias_module {
    ($name:ident) => {
        impl Module for $name {
            fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
                f(&join_name(prefix, "weight"), &self.weight);
                if let Some(b) = &self.bias {
                    f(&join_name(prefix, "bias"), b);
                }
            }

            fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
                f(&join_name(prefix, "weight"), &mut self.weight);
                if let Some(b) = &mut self.bias {
                    f(&join_name(prefix, "bias"), b);
                }
            }
        }
    };
}
pub(crate) use weight_bias_module;

weight_bias_module!(Linear);

impl Linear {
    /// The forward pass, or an `Err` naming this layer when `x` does not fit
    /// it: a last dimension other than `in_features` (PyTorch's "mat1 and
    /// mat2 shapes cannot be multiplied (AxB and CxD)"), or a dtype other
    /// than the weight's ("expected both to have the same dtype"), with the
    /// fix. [`Forward::forward`] panics with the same message.
    ///
    /// ```
    /// use deriv_runtime::nn::Linear;
    /// use deriv_runtime::{Device, Tensor};
    /// let fc = Linear::new(13, 3, &Device::Cpu);
    /// let err = fc.try_forward(&Tensor::zeros([64, 14])).unwrap_err().to_string();
    /// assert!(err.contains("(64x14 and 13x3)") && err.contains("Linear(in_features=13, out_features=3)"));
    /// ```
    pub fn try_forward(&self, x: &Tensor) -> crate::Result<Tensor> {
        self.check_input(x)?;
        super::functional::try_linear(x, &self.weight, self.bias.as_ref())
    }

    /// The error naming this layer when `x` does not fit it (on every path:
    /// the tape, the compile-time one and `TrainStep`); allocates nothing
    /// when it fits.
    fn check_input(&self, x: &Tensor) -> crate::Result<()> {
        if x.shape().last() == Some(&self.in_features()) && x.dtype() == self.weight.dtype() {
            return Ok(());
        }
        let name = format!(
            "Linear(in_features={}, out_features={})",
            self.in_features(),
            self.out_features()
        );
        ops::linear::check_input(x, &self.weight, Some(&name))
    }
}

impl Forward for Linear {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        self.try_forward(x).or_panic()
    }
}

impl Linear {
    /// The op's inputs: the input, the weight, and the bias when there is one.
    fn inputs<'a>(&'a self, x: &'a Tensor) -> ([&'a Tensor; 3], usize) {
        match &self.bias {
            Some(b) => ([x, &self.weight, b], 3),
            None => ([x, &self.weight, &self.weight], 2),
        }
    }
}

impl Differentiable for Linear {
    /// What the Linear op keeps: the input (for the weight's gradient) and the
    /// weight (for the input's).
    type Saved = <ops::Linear as Op>::Saved;
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Maps {
        input: 0,
        output: 1,
    };

    #[track_caller]
    fn forward_train(&self, x: &Tensor) -> (Tensor, Self::Saved) {
        self.check_input(x).or_panic();
        let (inputs, n) = self.inputs(x);
        no_grad(|| forward_saving(&ops::Linear, &inputs[..n], &[true; 3][..n]))
    }

    fn backward(&self, saved: Self::Saved, grad_out: &Tensor, input_grad: bool) -> Option<Tensor> {
        let params = [Some(&self.weight), self.bias.as_ref()];
        backward_params(&ops::Linear, &saved, params, grad_out, input_grad)
    }
}

/// The buffers a runtime layer keeps between [`TrainStep`] steps: its
/// output, an auxiliary tensor (a dropout mask) and its input gradient.
#[derive(Default)]
pub struct LayerWorkspace {
    pub(crate) out: Option<Tensor>,
    pub(crate) aux: Option<Tensor>,
    pub(crate) dx: Option<Tensor>,
    pub(crate) shape: Vec<usize>,
}

/// Whether `g` can take `param`'s gradient in place: contiguous, of the
/// parameter's shape, dtype and device.
fn fits_param(g: &Tensor, param: &Tensor) -> bool {
    g.is_contiguous()
        && g.dtype() == param.dtype()
        && g.device() == param.device()
        && crate::tensor::same_shape(g.shape(), param.shape())
}

/// `param`'s `.grad()` when the kernels can add into it in place; a zeroed
/// one (the buffer `zero_grad()` recycled, or a new one) is installed when
/// there is none yet. `None`: the gradient is computed apart and added
/// with [`accumulate_grad`].
pub(crate) fn grad_buffer(param: &Tensor) -> Option<Tensor> {
    let mut slot = param.grad_slot();
    if slot.grad.is_none() {
        let g = match slot.spare.take().filter(|s| fits_param(s, param)) {
            Some(spare) => {
                no_grad(|| spare.zero_());
                spare
            }
            None => no_grad(|| param.zeros_like()),
        };
        slot.grad = Some(g);
    }
    slot.grad.as_ref().filter(|g| fits_param(g, param)).cloned()
}

/// Where a layer's kernels put `param`'s gradient, as the sum and the
/// buffer of its [`GradSlot`]: added in place into its `.grad()` (both that
/// tensor), written over the buffer `zero_grad()` recycled (the buffer
/// only; installed afterwards), or into a new tensor (neither).
fn grad_target(param: &Tensor) -> (Option<Tensor>, Option<Tensor>) {
    let mut slot = param.grad_slot();
    match &slot.grad {
        Some(g) if fits_param(g, param) => (Some(g.clone()), Some(g.clone())),
        Some(_) => (None, None),
        None => (None, slot.spare.take().filter(|s| fits_param(s, param))),
    }
}

/// The buffers a layer over one op with parameters keeps between
/// [`TrainStep`] steps: the op's output, what it saved, and the input
/// gradient (sum and buffer). [`Linear`]'s and `LayerNorm`'s workspace.
pub struct ParamOpWorkspace<O: Op> {
    out: Option<Tensor>,
    saved: Option<O::Saved>,
    dx: Option<Tensor>,
    buf: Option<Tensor>,
    /// A non-contiguous output gradient (a broadcast one, as a mean's
    /// backward gives), copied: the fused kernels read contiguous ones.
    grad: Option<Tensor>,
}

impl<O: Op> Default for ParamOpWorkspace<O> {
    fn default() -> Self {
        ParamOpWorkspace {
            out: None,
            saved: None,
            dx: None,
            buf: None,
            grad: None,
        }
    }
}

impl<O: Op> ParamOpWorkspace<O> {
    /// Runs `op` on `[input, params..]` into the kept output (reused while
    /// it fits), without recording, and keeps what backward needs.
    pub(crate) fn forward(&mut self, op: &O, inputs: &[&Tensor]) -> &Tensor {
        let _guard = NoGradGuard::new();
        self.saved = None;
        forward_into(
            op,
            inputs,
            &[true; 5][..inputs.len()],
            &mut self.out,
            Some(&mut self.saved),
        )
    }

    /// The output of the last [`forward`](Self::forward).
    pub(crate) fn output(&self) -> Option<&Tensor> {
        self.out.as_ref()
    }

    /// The op's backward through [`backward_into_grads`]: the parameters'
    /// gradients added into their `.grad()`, the input's kept here.
    pub(crate) fn backward<const P: usize>(
        &mut self,
        op: &O,
        params: [Option<&Tensor>; P],
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&Tensor> {
        let _guard = NoGradGuard::new();
        let saved = super::dsl::get_saved(&self.saved);
        let grad_out = if grad_out.is_contiguous() {
            grad_out
        } else {
            let g = grad_out;
            let copy = super::dsl::slot(&mut self.grad, g.shape(), g.dtype(), g.device(), &[g]);
            copy.copy_(g);
            copy
        };
        backward_into_grads(
            params,
            &mut self.dx,
            Some(&mut self.buf),
            input_grad,
            |slots| op.backward(saved, grad_out, slots),
        )
    }
}

/// [`Linear`]'s workspace.
pub type LinearWorkspace = ParamOpWorkspace<ops::Linear>;

impl TrainStep for Linear {
    type Workspace = LinearWorkspace;

    #[track_caller]
    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut LinearWorkspace) -> &'w Tensor {
        self.check_input(x).or_panic();
        let (inputs, n) = self.inputs(x);
        ws.forward(&ops::Linear, &inputs[..n])
    }

    fn backward_ws<'w>(
        &self,
        ws: &'w mut LinearWorkspace,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        let params = [Some(&self.weight), self.bias.as_ref()];
        ws.backward(&ops::Linear, params, grad_out, input_grad)
    }
}

/// The backward of a layer whose op takes `[input, params..]` (a leading
/// run of present `params`) on the allocating compile-time path: the
/// parameters' gradients added into their `.grad()` as the tape does (in
/// place where there is one, into the buffer `zero_grad()` recycled where
/// there is not), the input's returned (a new tensor) when `input_grad`.
pub(crate) fn backward_params<O: Op, const P: usize>(
    op: &O,
    saved: &O::Saved,
    params: [Option<&Tensor>; P],
    grad_out: &Tensor,
    input_grad: bool,
) -> Option<Tensor> {
    let mut dx = None;
    backward_into_grads(params, &mut dx, None, input_grad, |slots| {
        op.backward(saved, grad_out, slots)
    });
    dx
}

/// The backward of a layer whose op takes `[input, params..]`: runs
/// `backward` on gradient slots for the input (into the reusable `buf` when
/// there is one, when `input_grad`) and for each present parameter (a
/// leading run of `params`; an absent one ends it), which add straight into
/// the parameters' `.grad()` buffers where they can (see [`grad_target`]);
/// then runs the parameters' gradient hooks (or installs or accumulates a
/// gradient computed apart) and keeps the input gradient in `dx`.
pub(crate) fn backward_into_grads<'w, const P: usize>(
    params: [Option<&Tensor>; P],
    dx: &'w mut Option<Tensor>,
    buf: Option<&mut Option<Tensor>>,
    input_grad: bool,
    backward: impl FnOnce(&mut [GradSlot<'_>]),
) -> Option<&'w Tensor> {
    no_grad(|| {
        let present = params.iter().take_while(|p| p.is_some()).count();
        let mut targets: [(Option<Tensor>, Option<Tensor>); P] =
            params.map(|p| p.map(grad_target).unwrap_or_default());
        let in_place: [bool; P] = std::array::from_fn(|i| targets[i].0.is_some());
        let mut sums: [Option<Tensor>; P] = std::array::from_fn(|i| targets[i].0.take());
        let mut bufs: [Option<Tensor>; P] = std::array::from_fn(|i| targets[i].1.take());
        let mut input_sum = None;
        {
            let mut slots: smallvec::SmallVec<[GradSlot<'_>; 4]> = smallvec::SmallVec::new();
            slots.push(match buf {
                Some(buf) => GradSlot::with_buffer(&mut input_sum, buf, input_grad),
                None => GradSlot::new(&mut input_sum, input_grad),
            });
            for (sum, b) in sums.iter_mut().zip(bufs.iter_mut()).take(present) {
                slots.push(match b {
                    Some(_) => GradSlot::with_buffer(sum, b, true),
                    None => GradSlot::new(sum, true),
                });
            }
            backward(&mut slots);
        }
        drop(bufs);
        for ((param, g), in_place) in params.iter().zip(sums).zip(in_place).take(present) {
            let param = param.expect("a leading present parameter");
            match (in_place, g) {
                (true, _) => grad_accumulated(param),
                (false, Some(g)) => accumulate_grad(param, g),
                (false, None) => {}
            }
        }
        *dx = input_sum;
    });
    dx.as_ref()
}

#[cfg(test)]
#[path = "linear_grad_tests.rs"]
mod grad_tests;
