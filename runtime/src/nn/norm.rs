//! Normalisation layers: `LayerNorm`.

use super::linear::{backward_params, ParamOpWorkspace};
use super::module::join_name;
use super::{Differentiable, Forward, Module, TrainStep};
use crate::autograd::{forward_saving, no_grad, Op};
use crate::backend::Device;
use crate::error::{Error, OrPanic, Result};
use crate::ops;
use crate::tensor::{Tensor, TensorOptions};

/// A normalised shape: one size (`LayerNorm(64)`) or several trailing
/// dimensions (`[8, 64]`, a `Vec` or a slice).
pub trait NormalizedShape {
    /// The sizes.
    fn sizes(self) -> Vec<usize>;
}
impl NormalizedShape for usize {
    fn sizes(self) -> Vec<usize> {
        vec![self]
    }
}
impl<const N: usize> NormalizedShape for [usize; N] {
    fn sizes(self) -> Vec<usize> {
        self.to_vec()
    }
}
impl NormalizedShape for &[usize] {
    fn sizes(self) -> Vec<usize> {
        self.to_vec()
    }
}
impl NormalizedShape for Vec<usize> {
    fn sizes(self) -> Vec<usize> {
        self
    }
}

/// `nn.LayerNorm`'s options beyond the shape, with PyTorch's defaults:
/// `eps` 1e-5, a learned elementwise weight (ones) and bias (zeros).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormOptions {
    /// Added to the variance.
    pub eps: f64,
    /// Whether the layer has a weight (and, with `bias`, a bias).
    pub elementwise_affine: bool,
    /// Whether it has a bias (with `elementwise_affine`).
    pub bias: bool,
}

impl Default for LayerNormOptions {
    fn default() -> Self {
        LayerNormOptions {
            eps: 1e-5,
            elementwise_affine: true,
            bias: true,
        }
    }
}

/// Layer normalisation (`nn.LayerNorm`): each sample's last
/// `normalized_shape` dimensions are normalised to mean 0 and variance 1
/// (biased variance, `eps` added), then multiplied by `weight` and shifted
/// by `bias`, both of the normalised shape. In `network!`, `LayerNorm(d)`
/// expects and produces size `d`.
///
/// ```
/// use deriv_runtime::nn::{Forward, LayerNorm};
/// use deriv_runtime::{tensor, Device};
/// let ln = LayerNorm::new(4, &Device::Cpu);
/// let y = ln.forward(&tensor![[1., 2., 3., 4.], [2., 2., 2., 2.]]);
/// let v = y.to_vec::<f32>();
/// assert!((v[0] + 1.3416).abs() < 1e-3 && v[4].abs() < 1e-6);
/// ```
pub struct LayerNorm {
    /// Of the normalised shape (ones at first), when the layer has one.
    pub weight: Option<Tensor>,
    /// Of the normalised shape (zeros at first), when the layer has one.
    pub bias: Option<Tensor>,
    /// The trailing dimensions normalised together.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// A layer with PyTorch's defaults, its parameters created on `device`.
    pub fn new(normalized_shape: impl NormalizedShape, device: &Device) -> Self {
        Self::with_options(normalized_shape, &LayerNormOptions::default(), device)
    }

    /// A layer with other `eps`, without a weight, or without a bias.
    pub fn with_options(
        normalized_shape: impl NormalizedShape,
        options: &LayerNormOptions,
        device: &Device,
    ) -> Self {
        let shape = normalized_shape.sizes();
        let opts = TensorOptions::new().device(device);
        let affine = options.elementwise_affine;
        LayerNorm {
            weight: affine.then(|| Tensor::ones_opts(&shape, &opts).requires_grad_(true)),
            bias: (affine && options.bias)
                .then(|| Tensor::zeros_opts(&shape, &opts).requires_grad_(true)),
            normalized_shape: shape,
            eps: options.eps,
        }
    }

    fn op(&self) -> ops::LayerNorm {
        ops::LayerNorm {
            dims: self.normalized_shape.len(),
            eps: self.eps,
        }
    }

    /// The op's inputs: the input, then the weight and bias that exist.
    fn inputs<'a>(&'a self, x: &'a Tensor) -> ([&'a Tensor; 3], usize) {
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => ([x, w, b], 3),
            (Some(w), None) => ([x, w, x], 2),
            _ => ([x, x, x], 1),
        }
    }

    /// The error naming this layer when `x`'s trailing dimensions are not
    /// the normalised shape (PyTorch's message).
    fn check_input(&self, x: &Tensor) -> Result<()> {
        check_normalized_shape(x, &self.normalized_shape)
    }

    /// The forward pass, or the error of an input whose trailing dimensions
    /// are not the normalised shape.
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        super::functional::try_layer_norm(
            x,
            &self.normalized_shape,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.eps,
        )
    }
}

/// PyTorch's check of `layer_norm`'s input against `normalized_shape`.
pub(crate) fn check_normalized_shape(x: &Tensor, normalized_shape: &[usize]) -> Result<()> {
    let k = normalized_shape.len();
    if k > 0 && x.ndim() >= k && x.shape()[x.ndim() - k..] == *normalized_shape {
        return Ok(());
    }
    let stars = normalized_shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(Error::shape(
        "layer_norm",
        format!(
            "Given normalized_shape={normalized_shape:?}, expected input with shape [*, {stars}], \
             but got input of size {:?}; the last dims of the input must be the normalised shape",
            x.shape()
        ),
    ))
}

impl Module for LayerNorm {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        for (name, p) in [("weight", &self.weight), ("bias", &self.bias)] {
            if let Some(p) = p {
                f(&join_name(prefix, name), p);
            }
        }
    }

    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        for (name, p) in [("weight", &mut self.weight), ("bias", &mut self.bias)] {
            if let Some(p) = p {
                f(&join_name(prefix, name), p);
            }
        }
    }
}

impl Forward for LayerNorm {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        self.try_forward(x).or_panic()
    }
}

impl Differentiable for LayerNorm {
    /// The input, and the weight when the input needs a gradient.
    type Saved = <ops::LayerNorm as Op>::Saved;
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Maps {
        input: 0,
        output: 0,
    };

    #[track_caller]
    fn forward_train(&self, x: &Tensor) -> (Tensor, Self::Saved) {
        self.check_input(x).or_panic();
        let (inputs, n) = self.inputs(x);
        no_grad(|| forward_saving(&self.op(), &inputs[..n], &[true; 3][..n]))
    }

    fn backward(&self, saved: Self::Saved, grad_out: &Tensor, input_grad: bool) -> Option<Tensor> {
        let params = [self.weight.as_ref(), self.bias.as_ref()];
        backward_params(&self.op(), &saved, params, grad_out, input_grad)
    }
}

/// [`LayerNorm`]'s workspace: its output, what its op saved, and its input
/// gradient (sum and buffer).
pub type LayerNormWorkspace = ParamOpWorkspace<ops::LayerNorm>;

impl TrainStep for LayerNorm {
    type Workspace = LayerNormWorkspace;

    #[track_caller]
    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut LayerNormWorkspace) -> &'w Tensor {
        self.check_input(x).or_panic();
        let (inputs, n) = self.inputs(x);
        ws.forward(&self.op(), &inputs[..n])
    }

    fn backward_ws<'w>(
        &self,
        ws: &'w mut LayerNormWorkspace,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        let params = [self.weight.as_ref(), self.bias.as_ref()];
        ws.backward(&self.op(), params, grad_out, input_grad)
    }
}
