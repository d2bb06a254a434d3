//! Convolutions and pooling: `conv2d` (its CPU kernels in conv2d.rs),
//! `max_pool2d`, `avg_pool2d`, `adaptive_avg_pool2d` (pool.rs), and the GPU's
//! paths composed of tensor ops (composed.rs).

mod composed;
mod conv2d;
mod pool;
mod transpose;

pub use conv2d::Conv2d;
pub use pool::Pool2d;
pub use transpose::ConvTranspose2d;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A size given once for both spatial dims (`3`) or per dim (`[3, 5]`).
pub trait Pair {
    /// The (rows, columns) sizes.
    fn pair(self) -> [usize; 2];
}
impl Pair for usize {
    fn pair(self) -> [usize; 2] {
        [self, self]
    }
}
impl Pair for [usize; 2] {
    fn pair(self) -> [usize; 2] {
        self
    }
}
impl Pair for (usize, usize) {
    fn pair(self) -> [usize; 2] {
        [self.0, self.1]
    }
}

/// A convolution's zero padding: PyTorch's `padding=` (a number or a pair,
/// `"same"` or `"valid"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// These many zeros on both sides of the rows and of the columns.
    Explicit([usize; 2]),
    /// The output keeps the input's size (stride 1 only); an odd total
    /// puts the extra zero after, as PyTorch does.
    Same,
    /// No padding.
    Valid,
}

impl From<usize> for Padding {
    fn from(p: usize) -> Self {
        Padding::Explicit([p, p])
    }
}
impl From<[usize; 2]> for Padding {
    fn from(p: [usize; 2]) -> Self {
        Padding::Explicit(p)
    }
}
impl From<&str> for Padding {
    /// `"same"` or `"valid"`; anything else panics with the choices.
    #[track_caller]
    fn from(p: &str) -> Self {
        match p {
            "same" => Padding::Same,
            "valid" => Padding::Valid,
            other => panic!(
                "conv2d: padding {other:?} is not a padding: use \"same\", \"valid\", a number \
                 or [rows, cols]"
            ),
        }
    }
}

/// `nn.Conv2d`'s and `F.conv2d`'s options beyond the tensors, with
/// PyTorch's defaults: stride 1, no padding, dilation 1, one group, and
/// (for the layer) a bias.
///
/// ```
/// use deriv_runtime::nn::Conv2dOptions;
/// let o = Conv2dOptions::new().stride(2).padding("same").groups(2);
/// assert_eq!((o.stride, o.groups), ([2, 2], 2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    /// Steps between output positions (rows, columns).
    pub stride: [usize; 2],
    /// Zero padding.
    pub padding: Padding,
    /// Spacing between kernel taps (rows, columns).
    pub dilation: [usize; 2],
    /// Channels split into this many independent groups.
    pub groups: usize,
    /// Whether `nn::Conv2d` has a bias (`F::conv2d` takes it as an argument).
    pub bias: bool,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            stride: [1, 1],
            padding: Padding::Explicit([0, 0]),
            dilation: [1, 1],
            groups: 1,
            bias: true,
        }
    }
}

/// The builder methods the convolutions' options share (fields `stride`
/// and `dilation`, taken as `$arg` and stored through `$store`; `groups`;
/// `bias`).
macro_rules! conv_setters {
    ($arg:ty, $store:path) => {
        /// PyTorch's defaults.
        pub fn new() -> Self {
            Self::default()
        }
        /// Sets the stride.
        pub fn stride(mut self, s: $arg) -> Self {
            self.stride = $store(s);
            self
        }
        /// Sets the dilation.
        pub fn dilation(mut self, d: $arg) -> Self {
            self.dilation = $store(d);
            self
        }
        /// Sets the number of groups.
        pub fn groups(mut self, g: usize) -> Self {
            self.groups = g;
            self
        }
        /// Whether the layer has a bias.
        pub fn bias(mut self, bias: bool) -> Self {
            self.bias = bias;
            self
        }
    };
}

impl Conv2dOptions {
    conv_setters!(impl Pair, Pair::pair);
    /// Sets the padding: a number, `[rows, cols]`, `"same"` or `"valid"`.
    #[track_caller]
    pub fn padding(mut self, p: impl Into<Padding>) -> Self {
        self.padding = p.into();
        self
    }

    /// The op for a kernel of `kernel` (rows, columns): `"same"` resolved.
    pub(crate) fn op(&self, kernel: [usize; 2]) -> Result<Conv2d> {
        let padding = match self.padding {
            Padding::Explicit([h, w]) => [h, h, w, w],
            Padding::Valid => [0; 4],
            Padding::Same => {
                if self.stride != [1, 1] {
                    return Err(Error::Invalid(format!(
                        "conv2d: padding='same' is not supported for strided convolutions \
                         (stride {:?}); give the padding as a number",
                        self.stride
                    )));
                }
                let total = |k: usize, d: usize| d * k.saturating_sub(1);
                let (th, tw) = (
                    total(kernel[0], self.dilation[0]),
                    total(kernel[1], self.dilation[1]),
                );
                [th / 2, th - th / 2, tw / 2, tw - tw / 2]
            }
        };
        Ok(Conv2d {
            stride: self.stride,
            padding,
            dilation: self.dilation,
            groups: self.groups,
        })
    }
}

/// `F.conv2d(input, weight, bias, ..)` on the tape, or the op's error.
pub(crate) fn try_conv2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &Conv2dOptions,
) -> Result<Tensor> {
    let kernel = match weight.shape() {
        [_, _, kh, kw] => [*kh, *kw],
        _ => [1, 1],
    };
    let op = options.op(kernel)?;
    match bias {
        Some(b) => crate::autograd::try_apply(op, &[input, weight, b]),
        None => crate::autograd::try_apply(op, &[input, weight]),
    }
}

/// `nn.ConvTranspose2d`'s and `F.conv_transpose2d`'s options beyond the
/// tensors, with PyTorch's defaults: stride 1, no padding, no output
/// padding, one group, dilation 1, and (for the layer) a bias.
///
/// ```
/// use deriv_runtime::nn::ConvTranspose2dOptions;
/// let o = ConvTranspose2dOptions::new().stride(2).padding(1).output_padding(1);
/// assert_eq!((o.stride, o.output_padding), ([2, 2], [1, 1]));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dOptions {
    /// The stride of the convolution this one is the adjoint of.
    pub stride: [usize; 2],
    /// That convolution's zero padding (rows, columns): trimmed from the output.
    pub padding: [usize; 2],
    /// Rows and columns added after the output (each below the stride or
    /// the dilation).
    pub output_padding: [usize; 2],
    /// Channels split into this many independent groups.
    pub groups: usize,
    /// Whether `nn::ConvTranspose2d` has a bias.
    pub bias: bool,
    /// Spacing between kernel taps (rows, columns).
    pub dilation: [usize; 2],
}

impl Default for ConvTranspose2dOptions {
    fn default() -> Self {
        ConvTranspose2dOptions {
            stride: [1, 1],
            padding: [0, 0],
            output_padding: [0, 0],
            groups: 1,
            bias: true,
            dilation: [1, 1],
        }
    }
}

impl ConvTranspose2dOptions {
    conv_setters!(impl Pair, Pair::pair);
    /// Sets the padding.
    pub fn padding(mut self, p: impl Pair) -> Self {
        self.padding = p.pair();
        self
    }
    /// Sets the output padding.
    pub fn output_padding(mut self, p: impl Pair) -> Self {
        self.output_padding = p.pair();
        self
    }

    /// The op.
    pub(crate) fn op(&self) -> ConvTranspose2d {
        let [ph, pw] = self.padding;
        ConvTranspose2d {
            conv: Conv2d {
                stride: self.stride,
                padding: [ph, ph, pw, pw],
                dilation: self.dilation,
                groups: self.groups,
            },
            output_padding: self.output_padding,
        }
    }
}

/// `F.conv_transpose2d(input, weight, bias, ..)` on the tape, or the op's error.
pub(crate) fn try_conv_transpose2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &ConvTranspose2dOptions,
) -> Result<Tensor> {
    let op = options.op();
    match bias {
        Some(b) => crate::autograd::try_apply(op, &[input, weight, b]),
        None => crate::autograd::try_apply(op, &[input, weight]),
    }
}

/// `nn.Conv1d`'s and `F.conv1d`'s options beyond the tensors, with
/// PyTorch's defaults: stride 1, no padding, dilation 1, one group, and
/// (for the layer) a bias. A 1-D convolution runs as the 2-D one on a
/// single row.
///
/// ```
/// use deriv_runtime::nn::Conv1dOptions;
/// let o = Conv1dOptions::new().stride(2).padding(1);
/// assert_eq!(o.stride, 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dOptions {
    /// Steps between output positions.
    pub stride: usize,
    /// Zero padding: `Padding::Explicit([p, p])` (from a number), `Same`
    /// or `Valid`.
    pub padding: Padding,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channels split into this many independent groups.
    pub groups: usize,
    /// Whether `nn::Conv1d` has a bias.
    pub bias: bool,
}

impl Default for Conv1dOptions {
    fn default() -> Self {
        Conv1dOptions {
            stride: 1,
            padding: Padding::Explicit([0, 0]),
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }
}

impl Conv1dOptions {
    conv_setters!(usize, std::convert::identity);
    /// Sets the padding: a number, `"same"` or `"valid"`.
    #[track_caller]
    pub fn padding(mut self, p: impl Into<Padding>) -> Self {
        self.padding = p.into();
        self
    }

    /// The same options for the 2-D convolution of one row.
    pub(crate) fn as_2d(&self) -> Conv2dOptions {
        Conv2dOptions {
            stride: [1, self.stride],
            padding: match self.padding {
                Padding::Explicit([_, p]) => Padding::Explicit([0, p]),
                other => other,
            },
            dilation: [1, self.dilation],
            groups: self.groups,
            bias: self.bias,
        }
    }
}

/// `F.conv1d(input, weight, bias, ..)` on the tape: `input` `[N, C, L]`,
/// `weight` `[O, C/groups, k]`.
pub(crate) fn try_conv1d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &Conv1dOptions,
) -> Result<Tensor> {
    let kernel = match weight.shape() {
        [_, _, k] => [1, *k],
        _ => {
            return Err(Error::shape(
                "conv1d",
                format!(
                    "the weight must be 3-D [out_channels, in_channels/groups, k], got shape {:?}",
                    weight.shape()
                ),
            ));
        }
    };
    let op = options.as_2d().op(kernel)?;
    match bias {
        Some(b) => crate::autograd::try_apply(op, &[input, weight, b]),
        None => crate::autograd::try_apply(op, &[input, weight]),
    }
}
