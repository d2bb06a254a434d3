//! Parameter-free layers: the activations and softmax (each a layer over
//! one op of `crate::ops`), dropout, flatten, identity.

use super::dsl::{get, get_saved, slot};
use super::linear::LayerWorkspace;
use super::{functional as F, Differentiable, Forward, Module, TrainStep};
use crate::autograd::{apply, forward_into, forward_saving, no_grad, GradSlot, NoGradGuard, Op};
use crate::backend::Device;
use crate::ops::{self, Mul};
use crate::size::SizeRule;
use crate::tensor::Tensor;
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

/// The buffers an op layer keeps between [`TrainStep`] steps: its output,
/// what its op saved, and its input gradient (sum and buffer).
pub struct OpWorkspace<O: Op> {
    out: Option<Tensor>,
    saved: Option<O::Saved>,
    dx: Option<Tensor>,
    buf: Option<Tensor>,
}

impl<O: Op> Default for OpWorkspace<O> {
    fn default() -> Self {
        OpWorkspace {
            out: None,
            saved: None,
            dx: None,
            buf: None,
        }
    }
}

/// A layer that applies one op to its input (`self.op()`): the tape, the
/// compile-time path and the buffer-reusing path all run the op's own
/// forward and backward.
macro_rules! op_layer {
    ($name:ident, $op:ty) => {
        no_parameters!($name);

        impl Forward for $name {
            fn forward(&self, x: &Tensor) -> Tensor {
                apply(self.op(), &[x])
            }
        }

        impl Differentiable for $name {
            /// What the op keeps for backward.
            type Saved = <$op as Op>::Saved;
            const SIZE: SizeRule = <$op as Op>::SIZE;
            fn forward_train(&self, x: &Tensor) -> (Tensor, Self::Saved) {
                no_grad(|| forward_saving(&self.op(), &[x], &[true]))
            }
            fn backward(
                &self,
                saved: Self::Saved,
                grad_out: &Tensor,
                input_grad: bool,
            ) -> Option<Tensor> {
                if !input_grad {
                    return None;
                }
                let mut dx = None;
                no_grad(|| {
                    self.op()
                        .backward(&saved, grad_out, &mut [GradSlot::new(&mut dx, true)])
                });
                dx
            }
        }

        impl TrainStep for $name {
            type Workspace = OpWorkspace<$op>;
            fn forward_train_ws<'w>(&self, x: &Tensor, ws: &'w mut Self::Workspace) -> &'w Tensor {
                let _guard = NoGradGuard::new();
                ws.saved = None;
                forward_into(&self.op(), &[x], &[true], &mut ws.out, Some(&mut ws.saved))
            }
            fn backward_ws<'w>(
                &self,
                ws: &'w mut Self::Workspace,
                grad_out: &Tensor,
                input_grad: bool,
            ) -> Option<&'w Tensor> {
                if !input_grad {
                    return None;
                }
                let _guard = NoGradGuard::new();
                let saved = get_saved(&ws.saved);
                let mut dx = None;
                self.op().backward(
                    saved,
                    grad_out,
                    &mut [GradSlot::with_buffer(&mut dx, &mut ws.buf, true)],
                );
                ws.dx = dx;
                ws.dx.as_ref()
            }
        }
    };
}

/// A parameter-free activation layer over an op with no arguments.
macro_rules! simple_activation {
    ($(#[$doc:meta])* $name:ident, $op:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;

        impl $name {
            /// The layer (it has no parameters, so `device` only keeps the
            /// constructor uniform with the others).
            pub fn new(_device: &Device) -> Self {
                $name
            }
            fn op(&self) -> $op {
                <$op>::default()
            }
        }

        op_layer!($name, $op);
    };
}

simple_activation!(
    /// `max(x, 0)` elementwise (`nn.ReLU`).
    ReLU, ops::Relu
);
simple_activation!(
    /// The logistic function elementwise (`nn.Sigmoid`).
    Sigmoid, ops::Sigmoid
);
simple_activation!(
    /// Hyperbolic tangent elementwise (`nn.Tanh`).
    Tanh, ops::Tanh
);
simple_activation!(
    /// SiLU (swish), `x·sigmoid(x)` (`nn.SiLU`).
    SiLU, ops::Silu
);
simple_activation!(
    /// Mish, `x·tanh(softplus(x))` (`nn.Mish`).
    Mish, ops::Mish
);
simple_activation!(
    /// `log(sigmoid(x))`, computed stably (`nn.LogSigmoid`).
    LogSigmoid, ops::Logsigmoid
);

/// A parameter-free activation layer over an op with arguments: the layer
/// holds its op (whose fields it shows through `Deref`, and whose `Default`
/// is PyTorch's), so the arguments and their defaults are written once.
macro_rules! op_activation {
    ($(#[$doc:meta])* $name:ident, $op:ident, fn new($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name(pub ops::$op);

        impl $name {
            /// The layer with these arguments (as the functional form takes
            /// them); `device` only keeps the constructor uniform, as the
            /// layer has no parameters.
            pub fn new($($arg: $ty,)* _device: &Device) -> Self {
                $name(ops::$op::new($($arg),*))
            }
            fn op(&self) -> ops::$op {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = ops::$op;
            fn deref(&self) -> &ops::$op {
                &self.0
            }
        }

        op_layer!($name, ops::$op);
    };
}

op_activation!(
    /// `x` where positive, `negative_slope·x` elsewhere (`nn.LeakyReLU`;
    /// `Default` has PyTorch's slope 0.01).
    LeakyReLU, LeakyRelu, fn new(negative_slope: f64)
);
op_activation!(
    /// ELU: `x` where positive, `alpha·(e^x - 1)` elsewhere (`nn.ELU`;
    /// `Default` has PyTorch's alpha 1).
    ELU, Elu, fn new(alpha: f64)
);
op_activation!(
    /// `log(1 + e^(βx))/β`, the identity where `βx > threshold`
    /// (`nn.Softplus`; `Default` has PyTorch's β 1 and threshold 20).
    Softplus, Softplus, fn new(beta: f64, threshold: f64)
);
op_activation!(
    /// `x` clamped into `[min_val, max_val]` (`nn.Hardtanh`; `Default` has
    /// PyTorch's -1 and 1).
    Hardtanh, Hardtanh, fn new(min_val: f64, max_val: f64)
);

/// GELU, `x·Φ(x)` (`nn.GELU`): exact by default, or with the tanh
/// approximation (`GELU::with_approximate("tanh", &device)`).
#[derive(Clone, Copy, Debug, Default)]
pub struct GELU(pub ops::Gelu);

impl GELU {
    /// The exact GELU (PyTorch's default, `approximate="none"`).
    pub fn new(_device: &Device) -> Self {
        GELU::default()
    }
    /// With `approximate` `"none"` or `"tanh"`, as PyTorch's.
    #[track_caller]
    pub fn with_approximate(approximate: &str, _device: &Device) -> Self {
        GELU(ops::Gelu::new(approximate))
    }
    fn op(&self) -> ops::Gelu {
        self.0
    }
}

impl std::ops::Deref for GELU {
    type Target = ops::Gelu;
    fn deref(&self) -> &ops::Gelu {
        &self.0
    }
}
op_layer!(GELU, ops::Gelu);

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

/// `exp(x) / Σ exp(x)` along `dim` (`nn.Softmax(dim)`).
#[derive(Clone, Copy, Debug)]
pub struct Softmax {
    /// The dim that sums to one.
    pub dim: isize,
}
impl Softmax {
    /// The layer over `dim`.
    pub fn new(dim: isize, _device: &Device) -> Self {
        Softmax { dim }
    }
    fn op(&self) -> ops::Softmax {
        ops::Softmax::new(self.dim)
    }
}
op_layer!(Softmax, ops::Softmax);

/// `log softmax(x)` along `dim` (`nn.LogSoftmax(dim)`).
#[derive(Clone, Copy, Debug)]
pub struct LogSoftmax {
    /// The dim normalised over.
    pub dim: isize,
}
impl LogSoftmax {
    /// The layer over `dim`.
    pub fn new(dim: isize, _device: &Device) -> Self {
        LogSoftmax { dim }
    }
    fn op(&self) -> ops::LogSoftmax {
        ops::LogSoftmax::new(self.dim)
    }
}
op_layer!(LogSoftmax, ops::LogSoftmax);

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
        let reuse = crate::tensor::same_shape(&ws.shape, x.shape())
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
        crate::autograd::Out::into(out, false).copy_from(x);
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
        let dx = slot(&mut ws.dx, &ws.shape, g.dtype(), g.device(), &[g]);
        crate::autograd::Out::into(dx, false).copy_from(g);
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

    fn visit_training(&self, f: &mut dyn FnMut(bool)) {
        f(self.training)
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
        let mask = slot(&mut ws.aux, x.shape(), x.dtype(), x.device(), &[x]);
        F::fill_dropout_mask(mask, self.p);
        let out = slot(&mut ws.out, x.shape(), x.dtype(), x.device(), &[x, mask]);
        Mul.forward(&[x, mask], &mut crate::autograd::Out::into(out, false));
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
        if !(crate::tensor::same_shape(mask.shape(), g.shape())
            && mask.dtype() == g.dtype()
            && float_cpu(g))
        {
            ws.dx = Some(no_grad(|| vjp::dropout(mask, g)));
            return ws.dx.as_ref();
        }
        let dx = slot(&mut ws.dx, g.shape(), g.dtype(), g.device(), &[g, mask]);
        Mul.forward(&[g, mask], &mut crate::autograd::Out::into(dx, false));
        Some(dx)
    }
}

// ---------------------------------------------------------------- pooling

/// Max pooling over the last two dims of `[N, C, H, W]` or `[C, H, W]`
/// (`nn.MaxPool2d(kernel_size)`: windows `kernel_size` apart, no padding;
/// [`MaxPool2d::with`] for a stride and padding). Keeps the channels
/// `network!` tracks.
///
/// ```
/// use deriv_runtime::nn::{Forward, MaxPool2d};
/// use deriv_runtime::{Device, Tensor};
/// let pool = MaxPool2d::new(2, &Device::Cpu);
/// let y = pool.forward(&Tensor::arange(0.0, 16.0, 1.0).reshape([1, 1, 4, 4]));
/// assert_eq!(y.to_vec::<f32>(), vec![5.0, 7.0, 13.0, 15.0]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d(pub ops::Pool2d);

impl MaxPool2d {
    /// Windows of `kernel_size`, that far apart.
    pub fn new(kernel_size: impl ops::Pair + Copy, _device: &Device) -> Self {
        MaxPool2d(ops::Pool2d::max(kernel_size, kernel_size, 0))
    }
    /// With a stride and padding (at most half the kernel, as PyTorch requires).
    pub fn with(
        kernel_size: impl ops::Pair,
        stride: impl ops::Pair,
        padding: impl ops::Pair,
    ) -> Self {
        MaxPool2d(ops::Pool2d::max(kernel_size, stride, padding))
    }
    fn op(&self) -> ops::Pool2d {
        self.0
    }
    /// The output and where each maximum came from (`return_indices=True`):
    /// the flat index within its `H·W` plane, i64, in the output's shape.
    #[track_caller]
    pub fn forward_with_indices(&self, x: &Tensor) -> (Tensor, Tensor) {
        let idx = crate::error::OrPanic::or_panic(self.0.max_indices(x));
        (self.forward(x), idx)
    }
}
op_layer!(MaxPool2d, ops::Pool2d);

/// Average pooling over the last two dims (`nn.AvgPool2d(kernel_size)`:
/// windows `kernel_size` apart, no padding; [`AvgPool2d::with`] for a
/// stride, padding and `count_include_pad`, true by default as in PyTorch).
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d(pub ops::Pool2d);

impl AvgPool2d {
    /// Windows of `kernel_size`, that far apart.
    pub fn new(kernel_size: impl ops::Pair + Copy, _device: &Device) -> Self {
        AvgPool2d(ops::Pool2d::avg(kernel_size, kernel_size, 0, true))
    }
    /// With a stride, padding and whether padding counts in the mean.
    pub fn with(
        kernel_size: impl ops::Pair,
        stride: impl ops::Pair,
        padding: impl ops::Pair,
        count_include_pad: bool,
    ) -> Self {
        AvgPool2d(ops::Pool2d::avg(
            kernel_size,
            stride,
            padding,
            count_include_pad,
        ))
    }
    fn op(&self) -> ops::Pool2d {
        self.0
    }
}
op_layer!(AvgPool2d, ops::Pool2d);

/// Average pooling to a fixed output size (`nn.AdaptiveAvgPool2d`), with
/// PyTorch's windows (`floor(i·H/out)` to `ceil((i+1)·H/out)`).
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveAvgPool2d(pub ops::Pool2d);

impl AdaptiveAvgPool2d {
    /// To `output_size` (rows, columns; one number for both).
    pub fn new(output_size: impl ops::Pair, _device: &Device) -> Self {
        AdaptiveAvgPool2d(ops::Pool2d::adaptive_avg(output_size))
    }
    fn op(&self) -> ops::Pool2d {
        self.0
    }
}
op_layer!(AdaptiveAvgPool2d, ops::Pool2d);
