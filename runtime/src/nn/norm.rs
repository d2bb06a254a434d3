//! Normalisation layers: `LayerNorm`, `GroupNorm`, `BatchNorm1d`/`2d`/`3d`.

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

/// Calls `f` on each present tensor of `items` under `prefix.name`.
fn visit_named<const N: usize>(
    prefix: &str,
    items: [(&str, &Option<Tensor>); N],
    f: &mut dyn FnMut(&str, &Tensor),
) {
    for (name, t) in items {
        if let Some(t) = t {
            f(&join_name(prefix, name), t);
        }
    }
}

/// [`visit_named`], letting `f` replace each handle.
fn visit_named_mut<const N: usize>(
    prefix: &str,
    items: [(&str, &mut Option<Tensor>); N],
    f: &mut dyn FnMut(&str, &mut Tensor),
) {
    for (name, t) in items {
        if let Some(t) = t {
            f(&join_name(prefix, name), t);
        }
    }
}

/// The traits of a norm layer over one op with an optional weight and bias
/// (fields `weight`, `bias`; methods `op()`, `inputs(x)`, `check_input(x)`).
macro_rules! affine_norm_layer {
    ($name:ident, $op:ty, $ws:ident, $size:expr) => {
        impl Module for $name {
            fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
                visit_named(prefix, [("weight", &self.weight), ("bias", &self.bias)], f);
            }

            fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
                visit_named_mut(prefix, [("weight", &mut self.weight), ("bias", &mut self.bias)], f);
            }
        }

        impl Forward for $name {
            #[track_caller]
            fn forward(&self, x: &Tensor) -> Tensor {
                self.try_forward(x).or_panic()
            }
        }

        impl Differentiable for $name {
            /// The input, and the weight when the input needs a gradient.
            type Saved = <$op as Op>::Saved;
            const SIZE: crate::size::SizeRule = $size;

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

        #[doc = concat!("[`", stringify!($name), "`]'s workspace: its output, what its op saved, and its input gradient (sum and buffer).")]
        pub type $ws = ParamOpWorkspace<$op>;

        impl TrainStep for $name {
            type Workspace = $ws;

            #[track_caller]
            fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut $ws) -> &'w Tensor {
                self.check_input(x).or_panic();
                let (inputs, n) = self.inputs(x);
                ws.forward(&self.op(), &inputs[..n])
            }

            fn backward_ws<'w>(
                &self,
                ws: &'w mut $ws,
                grad_out: &Tensor,
                input_grad: bool,
            ) -> Option<&'w Tensor> {
                let params = [self.weight.as_ref(), self.bias.as_ref()];
                ws.backward(&self.op(), params, grad_out, input_grad)
            }
        }
    };
}

affine_norm_layer!(
    LayerNorm,
    ops::LayerNorm,
    LayerNormWorkspace,
    crate::size::SizeRule::Maps {
        input: 0,
        output: 0
    }
);

/// The optional weight (ones) and bias (zeros) of `[c]` of the per-channel
/// norms, created on `device` when `affine`.
fn affine_params(c: usize, affine: bool, device: &Device) -> (Option<Tensor>, Option<Tensor>) {
    let opts = TensorOptions::new().device(device);
    (
        affine.then(|| Tensor::ones_opts([c], &opts).requires_grad_(true)),
        affine.then(|| Tensor::zeros_opts([c], &opts).requires_grad_(true)),
    )
}

/// The error naming `layer` (built only then) when `x` is not `[N, C, *]`
/// with `c` channels.
fn check_channels(layer: impl Fn() -> String, x: &Tensor, c: usize, dims: &str) -> Result<()> {
    if x.ndim() >= 2 && x.shape()[1] == c {
        return Ok(());
    }
    Err(Error::shape(
        "forward",
        format!(
            "{} expects {c} channels (dim 1 of its {dims} input), got an input of shape {:?}; \
             build the layer with the input's channels",
            layer(),
            x.shape()
        ),
    ))
}

/// `nn.GroupNorm`'s options beyond the sizes, with PyTorch's defaults:
/// `eps` 1e-5 and a learned per-channel weight (ones) and bias (zeros).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormOptions {
    /// Added to the variance.
    pub eps: f64,
    /// Whether the layer has a weight and bias.
    pub affine: bool,
}

impl Default for GroupNormOptions {
    fn default() -> Self {
        GroupNormOptions {
            eps: 1e-5,
            affine: true,
        }
    }
}

/// Group normalisation (`nn.GroupNorm(num_groups, num_channels)`): the
/// channels of each sample of `[N, C, *]` split into `num_groups` groups,
/// each normalised over its channels and positions (biased variance, `eps`
/// added), then each channel scaled by `weight` and shifted by `bias` (both
/// `[C]`). The same in training and evaluation. In `network!`,
/// `GroupNorm(g, c)` expects and produces `c` channels.
///
/// ```
/// use deriv_runtime::nn::{Forward, GroupNorm};
/// use deriv_runtime::{tensor, Device};
/// let gn = GroupNorm::new(2, 4, &Device::Cpu);
/// let y = gn.forward(&tensor![[1., 3., 5., 5.]]).to_vec::<f32>();
/// assert!((y[0] + 1.0).abs() < 1e-4 && (y[1] - 1.0).abs() < 1e-4 && y[2] == 0.0);
/// ```
pub struct GroupNorm {
    /// `[C]` (ones at first), when the layer is affine.
    pub weight: Option<Tensor>,
    /// `[C]` (zeros at first), when the layer is affine.
    pub bias: Option<Tensor>,
    /// The groups the channels are split into.
    pub num_groups: usize,
    /// The channels it expects.
    pub num_channels: usize,
    /// Added to the variance.
    pub eps: f64,
}

impl GroupNorm {
    /// A layer with PyTorch's defaults, its parameters created on `device`.
    pub fn new(num_groups: usize, num_channels: usize, device: &Device) -> Self {
        Self::with_options(
            num_groups,
            num_channels,
            &GroupNormOptions::default(),
            device,
        )
    }

    /// A layer with another `eps`, or without parameters.
    ///
    /// Panics, as PyTorch raises, when `num_channels` is not divisible by
    /// `num_groups`.
    #[track_caller]
    pub fn with_options(
        num_groups: usize,
        num_channels: usize,
        options: &GroupNormOptions,
        device: &Device,
    ) -> Self {
        assert!(
            num_groups > 0 && num_channels.is_multiple_of(num_groups),
            "GroupNorm: num_channels must be divisible by num_groups (got {num_channels} \
             channels in {num_groups} groups); pick a num_groups that divides num_channels"
        );
        let (weight, bias) = affine_params(num_channels, options.affine, device);
        GroupNorm {
            weight,
            bias,
            num_groups,
            num_channels,
            eps: options.eps,
        }
    }

    fn op(&self) -> ops::GroupNorm {
        ops::GroupNorm {
            groups: self.num_groups,
            eps: self.eps,
        }
    }

    fn inputs<'a>(&'a self, x: &'a Tensor) -> ([&'a Tensor; 3], usize) {
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => ([x, w, b], 3),
            _ => ([x, x, x], 1),
        }
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let layer = || format!("GroupNorm({}, {})", self.num_groups, self.num_channels);
        check_channels(layer, x, self.num_channels, "[N, C, *]")
    }

    /// The forward pass, or the error of an input without `num_channels`
    /// channels.
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let (inputs, n) = self.inputs(x);
        crate::autograd::try_apply(self.op(), &inputs[..n])
    }
}

affine_norm_layer!(
    GroupNorm,
    ops::GroupNorm,
    GroupNormWorkspace,
    crate::size::SizeRule::Channels {
        input: 1,
        output: 1
    }
);

/// `nn.BatchNorm*d`'s options beyond the channels, with PyTorch's defaults:
/// `eps` 1e-5, `momentum` 0.1, a learned weight (ones) and bias (zeros), and
/// running statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormOptions {
    /// Added to the variance.
    pub eps: f64,
    /// The running statistics' update weight; `None` for a cumulative
    /// average (`1 / num_batches_tracked`), as PyTorch's `momentum=None`.
    pub momentum: Option<f64>,
    /// Whether the layer has a weight and bias.
    pub affine: bool,
    /// Whether it keeps running statistics (used in evaluation); without
    /// them it normalises with the batch's statistics in both modes.
    pub track_running_stats: bool,
}

impl Default for BatchNormOptions {
    fn default() -> Self {
        BatchNormOptions {
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
        }
    }
}

/// Batch normalisation over the channels (dim 1) of `[N, C, *]`, PyTorch's
/// `nn.BatchNorm1d` (`D = 1`: `[N, C]` or `[N, C, L]`), `nn.BatchNorm2d`
/// (`[N, C, H, W]`) and `nn.BatchNorm3d` (`[N, C, D, H, W]`).
///
/// In training mode each channel is normalised with the batch's mean and
/// biased variance, and the running statistics move towards the batch's
/// (mean, and unbiased variance) by `momentum`; in evaluation mode
/// (`model.eval()`) the running statistics are used. `running_mean`,
/// `running_var` and `num_batches_tracked` are buffers: in `state_dict()`
/// under PyTorch's names, moved by `to(device)`, not trained. In
/// `network!`, `BatchNorm1d(c)` expects and produces `c` features and
/// `BatchNorm2d(c)` `c` channels.
///
/// ```
/// use deriv_runtime::nn::{BatchNorm1d, Forward, Module};
/// use deriv_runtime::{tensor, Device};
/// let mut bn = BatchNorm1d::new(1, &Device::Cpu);
/// let y = bn.forward(&tensor![[1.], [3.]]);
/// assert!((y.to_vec::<f32>()[0] + 1.0).abs() < 1e-4);
/// // Running statistics: 0.9·0 + 0.1·2 and 0.9·1 + 0.1·2 (unbiased).
/// assert_eq!(bn.running_mean.as_ref().unwrap().to_vec::<f32>(), [0.2]);
/// assert_eq!(bn.running_var.as_ref().unwrap().to_vec::<f32>(), [1.1]);
/// bn.eval();
/// let y = bn.forward(&tensor![[1.], [3.]]);
/// assert!((y.to_vec::<f32>()[0] - 0.7626).abs() < 1e-3); // (1 - 0.2)/√1.1
/// ```
pub struct BatchNorm<const D: usize> {
    /// `[C]` (ones at first), when the layer is affine.
    pub weight: Option<Tensor>,
    /// `[C]` (zeros at first), when the layer is affine.
    pub bias: Option<Tensor>,
    /// `[C]` (zeros at first), when it tracks running statistics.
    pub running_mean: Option<Tensor>,
    /// `[C]` (ones at first), when it tracks running statistics.
    pub running_var: Option<Tensor>,
    /// The training batches seen (an i64 scalar), when it tracks running
    /// statistics.
    pub num_batches_tracked: Option<Tensor>,
    /// The channels it expects.
    pub num_features: usize,
    /// Added to the variance.
    pub eps: f64,
    /// The running statistics' update weight (`None`: cumulative average).
    pub momentum: Option<f64>,
    training: bool,
}

/// `nn.BatchNorm1d`: over `[N, C]` or `[N, C, L]`.
pub type BatchNorm1d = BatchNorm<1>;
/// `nn.BatchNorm2d`: over `[N, C, H, W]`.
pub type BatchNorm2d = BatchNorm<2>;
/// `nn.BatchNorm3d`: over `[N, C, D, H, W]`.
pub type BatchNorm3d = BatchNorm<3>;

impl<const D: usize> BatchNorm<D> {
    /// A layer with PyTorch's defaults for `num_features` channels, in
    /// training mode, its parameters and buffers created on `device`.
    pub fn new(num_features: usize, device: &Device) -> Self {
        Self::with_options(num_features, &BatchNormOptions::default(), device)
    }

    /// A layer with other `eps` or `momentum`, without parameters, or
    /// without running statistics.
    pub fn with_options(num_features: usize, options: &BatchNormOptions, device: &Device) -> Self {
        let (weight, bias) = affine_params(num_features, options.affine, device);
        let opts = TensorOptions::new().device(device);
        let track = options.track_running_stats;
        BatchNorm {
            weight,
            bias,
            running_mean: track.then(|| Tensor::zeros_opts([num_features], &opts)),
            running_var: track.then(|| Tensor::ones_opts([num_features], &opts)),
            num_batches_tracked: track
                .then(|| Tensor::zeros_opts([] as [usize; 0], &opts.dtype(crate::DType::I64))),
            num_features,
            eps: options.eps,
            momentum: options.momentum,
            training: true,
        }
    }

    /// Whether the layer is in training mode (batch statistics, running
    /// ones updated).
    pub fn is_training(&self) -> bool {
        self.training
    }

    fn name(&self) -> String {
        format!("BatchNorm{D}d({})", self.num_features)
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let (ok, want) = match D {
            1 => (matches!(x.ndim(), 2 | 3), "2D or 3D"),
            _ => (x.ndim() == D + 2, ["", "", "4D", "5D"][D.min(3)]),
        };
        if !ok {
            return Err(Error::shape(
                "forward",
                format!(
                    "{} expected {want} input (got {}D input of shape {:?})",
                    self.name(),
                    x.ndim(),
                    x.shape()
                ),
            ));
        }
        let dims = if D == 1 {
            "[N, C] or [N, C, L]"
        } else {
            "[N, C, ..]"
        };
        check_channels(|| self.name(), x, self.num_features, dims)
    }

    /// Whether the layer keeps running statistics.
    fn tracking(&self) -> bool {
        self.running_mean.is_some() && self.running_var.is_some()
    }

    /// The op this step runs: PyTorch's choice of batch statistics in
    /// training mode or without running ones.
    fn op(&self) -> ops::BatchNorm {
        ops::BatchNorm {
            eps: self.eps,
            affine: self.weight.is_some() && self.bias.is_some(),
            running: self.tracking() && !self.training,
        }
    }

    /// The op's inputs: the input, the parameters and the statistics it uses.
    fn inputs<'a>(&'a self, x: &'a Tensor, op: &ops::BatchNorm) -> ([&'a Tensor; 5], usize) {
        let mut inputs = [x; 5];
        let mut n = 1;
        let params = [&self.weight, &self.bias].into_iter().filter(|_| op.affine);
        let stats = [&self.running_mean, &self.running_var]
            .into_iter()
            .filter(|_| op.running);
        for t in params.chain(stats).flatten() {
            inputs[n] = t;
            n += 1;
        }
        (inputs, n)
    }

    /// In training mode, after a forward that succeeded: counts the batch
    /// and moves the running statistics towards `x`'s (by `momentum`, or by
    /// `1/num_batches_tracked` without one).
    fn update(&self, x: &Tensor) -> Result<()> {
        let (Some(m), Some(v), true) = (&self.running_mean, &self.running_var, self.training)
        else {
            return Ok(());
        };
        let seen = self.num_batches_tracked.as_ref().map(ops::count_batch_);
        let factor = match (self.momentum, seen) {
            (Some(m), _) => m,
            (None, Some(n)) => 1.0 / n as f64,
            (None, None) => 0.0,
        };
        ops::update_running_stats_(x, m, v, factor)
    }

    /// The forward pass (updating the running statistics in training mode),
    /// or the error of an input of the wrong rank or channels.
    pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let op = self.op();
        let (inputs, n) = self.inputs(x, &op);
        let y = crate::autograd::try_apply(op, &inputs[..n])?;
        self.update(x)?;
        Ok(y)
    }
}

impl<const D: usize> Module for BatchNorm<D> {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        visit_named(prefix, [("weight", &self.weight), ("bias", &self.bias)], f);
    }

    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        visit_named_mut(
            prefix,
            [("weight", &mut self.weight), ("bias", &mut self.bias)],
            f,
        );
    }

    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        let items = [
            ("running_mean", &self.running_mean),
            ("running_var", &self.running_var),
            ("num_batches_tracked", &self.num_batches_tracked),
        ];
        visit_named(prefix, items, f);
    }

    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        let items = [
            ("running_mean", &mut self.running_mean),
            ("running_var", &mut self.running_var),
            ("num_batches_tracked", &mut self.num_batches_tracked),
        ];
        visit_named_mut(prefix, items, f);
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn visit_training(&self, f: &mut dyn FnMut(bool)) {
        f(self.training)
    }
}

impl<const D: usize> Forward for BatchNorm<D> {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        self.try_forward(x).or_panic()
    }
}

impl<const D: usize> Differentiable for BatchNorm<D> {
    /// The input, the weight when the input needs a gradient, and the
    /// running statistics in evaluation mode.
    type Saved = <ops::BatchNorm as Op>::Saved;
    const SIZE: crate::size::SizeRule = if D == 1 {
        crate::size::SizeRule::Maps {
            input: 0,
            output: 0,
        }
    } else {
        crate::size::SizeRule::Channels {
            input: 0,
            output: 0,
        }
    };

    #[track_caller]
    fn forward_train(&self, x: &Tensor) -> (Tensor, Self::Saved) {
        self.check_input(x).or_panic();
        let op = self.op();
        let (inputs, n) = self.inputs(x, &op);
        let out = no_grad(|| forward_saving(&op, &inputs[..n], &[true; 5][..n]));
        self.update(x).or_panic();
        out
    }

    fn backward(&self, saved: Self::Saved, grad_out: &Tensor, input_grad: bool) -> Option<Tensor> {
        let op = ops::BatchNorm {
            eps: self.eps,
            affine: self.weight.is_some() && self.bias.is_some(),
            running: saved.2.is_some(),
        };
        let params = [self.weight.as_ref(), self.bias.as_ref()];
        backward_params(&op, &saved, params, grad_out, input_grad)
    }
}

/// [`BatchNorm`]'s workspace.
pub type BatchNormWorkspace = ParamOpWorkspace<ops::BatchNorm>;

impl<const D: usize> TrainStep for BatchNorm<D> {
    type Workspace = BatchNormWorkspace;

    #[track_caller]
    fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut BatchNormWorkspace) -> &'w Tensor {
        self.check_input(x).or_panic();
        let op = self.op();
        let (inputs, n) = self.inputs(x, &op);
        let y = ws.forward(&op, &inputs[..n]);
        self.update(x).or_panic();
        y
    }

    fn backward_ws<'w>(
        &self,
        ws: &'w mut BatchNormWorkspace,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        let params = [self.weight.as_ref(), self.bias.as_ref()];
        ws.backward(&self.op(), params, grad_out, input_grad)
    }
}
