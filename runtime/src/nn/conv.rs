//! Convolution layers: `Conv1d`, `Conv2d` (one op: the 1-D form is the 2-D
//! one on a single row) and `ConvTranspose2d` (its adjoint).

use super::linear::{backward_params, weight_bias_module, ParamOpWorkspace};
use super::module::join_name;
use super::{init, Differentiable, Forward, Module, TrainStep};
use crate::autograd::{forward_saving, no_grad, Op};
use crate::backend::Device;
use crate::error::{OrPanic, Result};
use crate::ops::{self, Conv1dOptions, Conv2dOptions, ConvTranspose2dOptions, Pair};
use crate::tensor::{Tensor, TensorOptions};

/// A 2-D convolution layer (`nn.Conv2d`) over `[N, C, H, W]` inputs:
/// weight `[out_channels, in_channels/groups, kh, kw]` and bias
/// `[out_channels]`, both initialised as PyTorch does (U(-b, b) with
/// `b = 1/√fan_in`, `fan_in = in_channels/groups·kh·kw`). In `network!`,
/// `Conv2d(in, out, k)` expects `in` channels and produces `out`.
///
/// ```
/// use deriv_runtime::nn::{Conv2d, Conv2dOptions, Forward};
/// use deriv_runtime::{Device, Tensor};
/// let conv = Conv2d::with_options(3, 8, 3, &Conv2dOptions::new().padding(1), &Device::Cpu);
/// let y = conv.forward(&Tensor::randn([2, 3, 16, 16]));
/// assert_eq!(y.shape(), &[2, 8, 16, 16]);
/// ```
pub struct Conv2d {
    /// `[out_channels, in_channels/groups, kh, kw]`.
    pub weight: Tensor,
    /// `[out_channels]`, if the layer has one.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation and groups.
    pub options: Conv2dOptions,
    op: ops::Conv2d,
}

/// A 1-D convolution layer (`nn.Conv1d`) over `[N, C, L]` inputs: weight
/// `[out_channels, in_channels/groups, k]` and bias `[out_channels]`,
/// initialised as PyTorch does. In `network!`, `Conv1d(in, out, k)` expects
/// `in` channels and produces `out`.
///
/// ```
/// use deriv_runtime::nn::{Conv1d, Conv1dOptions, Forward};
/// use deriv_runtime::{Device, Tensor};
/// let conv = Conv1d::with_options(4, 6, 3, &Conv1dOptions::new().padding("same"), &Device::Cpu);
/// assert_eq!(conv.forward(&Tensor::randn([2, 4, 10])).shape(), &[2, 6, 10]);
/// ```
pub struct Conv1d {
    /// `[out_channels, in_channels/groups, k]`.
    pub weight: Tensor,
    /// `[out_channels]`, if the layer has one.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation and groups.
    pub options: Conv1dOptions,
    op: ops::Conv2d,
}

/// A convolution's weight `[out, in/groups, kernel..]` (`[in, out/groups,
/// kernel..]` when `transposed`) and bias `[out]`, with PyTorch's
/// initialisation. Panics unless the channels split into the groups.
#[track_caller]
fn conv_params(
    layer: &str,
    (in_channels, out_channels): (usize, usize),
    kernel: &[usize],
    (groups, transposed): (usize, bool),
    bias: bool,
    device: &Device,
) -> (Tensor, Option<Tensor>) {
    let g = groups;
    assert!(
        g > 0 && in_channels.is_multiple_of(g) && out_channels.is_multiple_of(g),
        "{layer}: in_channels ({in_channels}) and out_channels ({out_channels}) must both be \
         divisible by groups ({g})"
    );
    let opts = TensorOptions::new().device(device);
    let mut shape = if transposed {
        vec![in_channels, out_channels / g]
    } else {
        vec![out_channels, in_channels / g]
    };
    shape.extend_from_slice(kernel);
    let weight = Tensor::zeros_opts(&shape, &opts);
    init::kaiming_uniform_(&weight, 5f64.sqrt());
    let fan_in = init::fan_in(&weight);
    let bias = bias.then(|| {
        let b = Tensor::zeros_opts([out_channels], &opts);
        let bound = if fan_in > 0 {
            1.0 / (fan_in as f64).sqrt()
        } else {
            0.0
        };
        init::uniform_(&b, -bound, bound);
        b.requires_grad_(true)
    });
    (weight.requires_grad_(true), bias)
}

impl Conv2d {
    /// A layer with stride 1, no padding and a bias, on `device`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Pair,
        device: &Device,
    ) -> Self {
        Self::with_options(
            in_channels,
            out_channels,
            kernel_size,
            &Conv2dOptions::new(),
            device,
        )
    }

    /// A layer with other options. Panics with PyTorch's message when the
    /// channels do not split into the groups, or on `"same"` padding with
    /// a stride.
    #[track_caller]
    pub fn with_options(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Pair,
        options: &Conv2dOptions,
        device: &Device,
    ) -> Self {
        let k = kernel_size.pair();
        let (weight, bias) = conv_params(
            "Conv2d",
            (in_channels, out_channels),
            &k,
            (options.groups, false),
            options.bias,
            device,
        );
        Conv2d {
            weight,
            bias,
            options: *options,
            op: options.op(k).or_panic(),
        }
    }
}

impl Conv1d {
    /// A layer with stride 1, no padding and a bias, on `device`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        device: &Device,
    ) -> Self {
        Self::with_options(
            in_channels,
            out_channels,
            kernel_size,
            &Conv1dOptions::new(),
            device,
        )
    }

    /// A layer with other options (panics as [`Conv2d::with_options`] does).
    #[track_caller]
    pub fn with_options(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        options: &Conv1dOptions,
        device: &Device,
    ) -> Self {
        let (weight, bias) = conv_params(
            "Conv1d",
            (in_channels, out_channels),
            &[kernel_size],
            (options.groups, false),
            options.bias,
            device,
        );
        Conv1d {
            weight,
            bias,
            options: *options,
            op: options.as_2d().op([1, kernel_size]).or_panic(),
        }
    }
}

/// The traits of a convolution layer (fields `weight`, `bias`, `op`).
macro_rules! conv_layer {
    ($name:ident, $ws:ident, $op:ty) => {
        impl $name {
            /// The op's inputs: the input, the weight, and the bias when there is one.
            fn inputs<'a>(&'a self, x: &'a Tensor) -> ([&'a Tensor; 3], usize) {
                match &self.bias {
                    Some(b) => ([x, &self.weight, b], 3),
                    None => ([x, &self.weight, &self.weight], 2),
                }
            }

            /// The forward pass, or the error of an input that does not fit.
            pub fn try_forward(&self, x: &Tensor) -> Result<Tensor> {
                let (inputs, n) = self.inputs(x);
                crate::autograd::try_apply(self.op, &inputs[..n])
            }
        }

        weight_bias_module!($name);

        impl Forward for $name {
            #[track_caller]
            fn forward(&self, x: &Tensor) -> Tensor {
                self.try_forward(x).or_panic()
            }
        }

        impl Differentiable for $name {
            /// The input and the weight.
            type Saved = <$op as Op>::Saved;
            const SIZE: crate::size::SizeRule = crate::size::SizeRule::Channels {
                input: 0,
                output: 1,
            };

            #[track_caller]
            fn forward_train(&self, x: &Tensor) -> (Tensor, Self::Saved) {
                let (inputs, n) = self.inputs(x);
                self.op.spec(&inputs[..n]).or_panic();
                no_grad(|| forward_saving(&self.op, &inputs[..n], &[true; 3][..n]))
            }

            fn backward(&self, saved: Self::Saved, grad_out: &Tensor, input_grad: bool) -> Option<Tensor> {
                let params = [Some(&self.weight), self.bias.as_ref()];
                backward_params(&self.op, &saved, params, grad_out, input_grad)
            }
        }

        #[doc = concat!("[`", stringify!($name), "`]'s workspace: its output, what its op saved, and its input gradient (sum and buffer).")]
        pub type $ws = ParamOpWorkspace<$op>;

        impl TrainStep for $name {
            type Workspace = $ws;

            #[track_caller]
            fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut $ws) -> &'w Tensor {
                let (inputs, n) = self.inputs(x);
                ws.forward(&self.op, &inputs[..n])
            }

            fn backward_ws<'w>(
                &self,
                ws: &'w mut $ws,
                grad_out: &Tensor,
                input_grad: bool,
            ) -> Option<&'w Tensor> {
                let params = [Some(&self.weight), self.bias.as_ref()];
                ws.backward(&self.op, params, grad_out, input_grad)
            }
        }
    };
}

conv_layer!(Conv2d, Conv2dWorkspace, ops::Conv2d);
conv_layer!(Conv1d, Conv1dWorkspace, ops::Conv2d);
conv_layer!(
    ConvTranspose2d,
    ConvTranspose2dWorkspace,
    ops::ConvTranspose2d
);

/// A transposed 2-D convolution layer (`nn.ConvTranspose2d`): the adjoint
/// of a `Conv2d` with the same options, mapping `[N, in_channels, H, W]` to
/// `[N, out_channels, H_out, W_out]` (`H_out = (H − 1)·stride − 2·padding +
/// dilation·(kh − 1) + output_padding + 1`): weight `[in_channels,
/// out_channels/groups, kh, kw]` and bias `[out_channels]`, initialised as
/// PyTorch does. In `network!`, `ConvTranspose2d(in, out, k)` expects `in`
/// channels and produces `out`.
///
/// ```
/// use deriv_runtime::nn::{ConvTranspose2d, ConvTranspose2dOptions, Forward};
/// use deriv_runtime::{Device, Tensor};
/// let opts = ConvTranspose2dOptions::new().stride(2).padding(1).output_padding(1);
/// let up = ConvTranspose2d::with_options(8, 4, 3, &opts, &Device::Cpu);
/// assert_eq!(up.forward(&Tensor::randn([2, 8, 5, 5])).shape(), &[2, 4, 10, 10]);
/// ```
pub struct ConvTranspose2d {
    /// `[in_channels, out_channels/groups, kh, kw]`.
    pub weight: Tensor,
    /// `[out_channels]`, if the layer has one.
    pub bias: Option<Tensor>,
    /// Stride, padding, output padding, groups and dilation.
    pub options: ConvTranspose2dOptions,
    op: ops::ConvTranspose2d,
}

impl ConvTranspose2d {
    /// A layer with stride 1, no padding and a bias, on `device`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Pair,
        device: &Device,
    ) -> Self {
        let options = ConvTranspose2dOptions::new();
        Self::with_options(in_channels, out_channels, kernel_size, &options, device)
    }

    /// A layer with other options. Panics when the channels do not split
    /// into the groups.
    #[track_caller]
    pub fn with_options(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Pair,
        options: &ConvTranspose2dOptions,
        device: &Device,
    ) -> Self {
        let (weight, bias) = conv_params(
            "ConvTranspose2d",
            (in_channels, out_channels),
            &kernel_size.pair(),
            (options.groups, true),
            options.bias,
            device,
        );
        ConvTranspose2d {
            weight,
            bias,
            options: *options,
            op: options.op(),
        }
    }
}
