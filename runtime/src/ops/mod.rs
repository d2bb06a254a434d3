//! Operations, one family per folder or file: each op's forward, saved values
//! and gradient rule side by side, so each file answers "how is this op
//! differentiated" (see [`Op`]).

pub(crate) mod activation;
pub mod attention;
pub mod binary;
pub mod conv;
pub(crate) mod copy;
pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod inplace;
pub mod linear;
pub(crate) mod loss;
pub mod matmul;
pub mod norm;
pub mod recurrent;
pub mod reduce;
pub mod registry;
pub(crate) mod shape;
pub mod softmax;
pub mod unary;
pub mod views;
pub(crate) use reduce::sum_to;

pub use crate::autograd::{GradSlot, Op, Out, Spec};
pub use attention::Attention;
pub use binary::{Add, Binary, Div, Maximum, Minimum, Mul, Pow, PowTensor, Sub};
pub use conv::{
    Conv1dOptions, Conv2d, Conv2dOptions, ConvTranspose2d, ConvTranspose2dOptions, Padding, Pair,
    Pool2d,
};
pub use copy::ToCopy;
pub use elementwise::Where;
pub use linear::Linear;
pub use matmul::Matmul;
pub(crate) use norm::count_batch_;
pub use norm::{update_running_stats_, BatchNorm, GroupNorm, LayerNorm};
pub use recurrent::{CellKind, RecurrentCell};
pub use reduce::{Cumsum, Logsumexp, Mean, MeanDim, Sum, SumDim, Var};
pub use shape::{Cat, Embedding, EmbeddingOptions, Expand, Gather, IndexSelect, ScatterAdd, Slice};
pub use softmax::{LogSoftmax, Softmax};
pub use unary::{
    Abs, AddScalar, Clamp, DivScalar, Elu, Exp, Gelu, GeluErf, GeluTanh, Hardtanh, LeakyRelu, Log,
    Logsigmoid, Mish, MulScalar, Neg, RDivScalar, RSubScalar, Reads, Relu, Sigmoid, Silu, Softplus,
    Sqrt, Square, SubScalar, Tanh, Unary,
};
pub use views::{Flatten, Permute, Reshape, Transpose, View, T};

use crate::backend::{cpu, Buffer, Ew};
use crate::error::{Error, Result};
use crate::tensor::{broadcast_shapes, DType, Layout, Tensor};

/// Fails unless both tensors are on the same device. As in PyTorch, a 0-d
/// CPU tensor (a number) combines with a tensor on any device.
pub(crate) fn same_device(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    let scalar = |t: &Tensor| t.ndim() == 0 && t.device().is_cpu();
    if a.device() != b.device() && !scalar(a) && !scalar(b) {
        return Err(Error::Device {
            op,
            msg: format!(
                "expected all tensors to be on the same device, but found {} and {}; \
                 move one with .to(&device)",
                a.device(),
                b.device()
            ),
        });
    }
    Ok(())
}

/// PyTorch's result type of two tensor operands: a 0-d operand decides the
/// dtype only when its category (bool < integer < float) is higher than the
/// other, dimensioned, operand's, so `f32 tensor * f64 0-d tensor` stays f32.
pub(crate) fn result_type(a: &Tensor, b: &Tensor) -> DType {
    fn category(d: DType) -> u8 {
        match d {
            DType::Bool => 0,
            DType::I64 => 1,
            DType::F32 | DType::F64 => 2,
        }
    }
    let (da, db) = (a.dtype(), b.dtype());
    match (a.ndim() == 0, b.ndim() == 0) {
        (false, true) if category(db) <= category(da) => da,
        (true, false) if category(da) <= category(db) => db,
        _ => DType::promote(da, db),
    }
}

/// `t` on `device`: 0-d CPU operands of GPU ops are copied over.
pub(crate) fn on_device(t: &Tensor, device: crate::Device) -> Tensor {
    if t.device() == device {
        t.clone()
    } else {
        crate::autograd::no_grad(|| t.to(&device))
    }
}

/// The device of a two-operand op: a GPU one wins over a 0-d CPU operand.
pub(crate) fn op_device(a: &Tensor, b: &Tensor) -> crate::Device {
    if a.device().is_cpu() {
        b.device()
    } else {
        a.device()
    }
}

/// `t` as a float tensor: itself when already float, else converted to f32
/// (integer and bool inputs to float math, as in PyTorch).
pub(crate) fn as_float(t: &Tensor) -> Tensor {
    if t.dtype().is_float() {
        t.clone()
    } else {
        elementwise::cast(t, DType::F32)
    }
}

/// Applies a float function elementwise; the macro [`float_map!`] writes the
/// f32 and f64 versions from one body. `gpu` names the same function (op and
/// parameters) for tensors on a GPU.
pub(crate) fn map_float(
    t: &Tensor,
    gpu: (Ew, f64, f64),
    f32f: impl Fn(f32) -> f32 + Sync,
    f64f: impl Fn(f64) -> f64 + Sync,
) -> Tensor {
    let t = as_float(t);
    #[cfg(feature = "cuda")]
    if t.device().is_cuda() {
        return Tensor::from_array(crate::backend::cuda::ops::map(
            gpu.0,
            t.array(),
            gpu.1,
            gpu.2,
        ));
    }
    let op = gpu.0.op_name();
    let buf = {
        let b = t.storage().read();
        match &*b {
            Buffer::F32(v) => Buffer::F32(cpu::map(op, v, t.layout(), f32f)),
            Buffer::F64(v) => Buffer::F64(cpu::map(op, v, t.layout(), f64f)),
            _ => unreachable!("as_float returns a float tensor"),
        }
    };
    Tensor::from_buffer(buf, t.shape(), t.device())
}

/// Runs `f` on the buffers of `a` and `b` under read locks, taken in the
/// global lock order, and once when both view one storage (`x * x`): a second
/// read lock on the same `RwLock` could deadlock behind a waiting writer.
#[track_caller]
pub(crate) fn read_pair<R>(a: &Tensor, b: &Tensor, f: impl FnOnce(&Buffer, &Buffer) -> R) -> R {
    let ([ga, gb], []) =
        crate::backend::lock_storages([Some(&**a.storage()), Some(b.storage())], []);
    let ga = ga.expect("the first entry is always locked");
    match &gb {
        Some(gb) => f(&ga, gb),
        None => f(&ga, &ga),
    }
}

/// The broadcast shape of `a` and `b` (on one device), and both cast to
/// `dtype` with their layouts broadcast to it.
pub(crate) fn broadcast_pair(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    dtype: DType,
) -> Result<(Vec<usize>, Tensor, Layout, Tensor, Layout)> {
    same_device(op, a, b)?;
    let shape = broadcast_shapes(op, a.shape(), b.shape())?;
    let dev = op_device(a, b);
    let a = elementwise::cast(&on_device(a, dev), dtype);
    let b = elementwise::cast(&on_device(b, dev), dtype);
    let la = a.layout().broadcast_to(&shape);
    let lb = b.layout().broadcast_to(&shape);
    Ok((shape, a, la, b, lb))
}

/// Applies a float function of two broadcast operands elementwise, computed in
/// their promoted float dtype.
pub(crate) fn zip_float(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    gpu: (Ew, f64, f64),
    f32f: impl Fn(f32, f32) -> f32 + Sync,
    f64f: impl Fn(f64, f64) -> f64 + Sync,
) -> Result<Tensor> {
    let mut dt = result_type(a, b);
    if !dt.is_float() {
        dt = DType::F32;
    }
    let (shape, a, la, b, lb) = broadcast_pair(op, a, b, dt)?;
    #[cfg(feature = "cuda")]
    if a.device().is_cuda() {
        return Ok(Tensor::from_array(crate::backend::cuda::ops::ew_new(
            gpu.0,
            dt,
            &shape,
            &[(a.array(), &la), (b.array(), &lb)],
            gpu.1,
            gpu.2,
        )));
    }
    let _ = gpu;
    let buf = read_pair(&a, &b, |ga, gb| match (ga, gb) {
        (Buffer::F32(x), Buffer::F32(y)) => cpu::zip(op, x, &la, y, &lb, f32f).map(Buffer::F32),
        (Buffer::F64(x), Buffer::F64(y)) => cpu::zip(op, x, &la, y, &lb, f64f).map(Buffer::F64),
        _ => unreachable!("both operands were cast to one float dtype"),
    })?;
    Ok(Tensor::from_buffer(buf, &shape, a.device()))
}

/// Writes one body for both float types: `float_map!(t, Ew::Exp, |x| x.exp())`,
/// where `Ew::Exp` names it for the GPU (with up to two f64 parameters:
/// `float_map!(t, Ew::AddS, v, |x| x + (v as F))`).
/// Inside the body `F` names the element type (`p as F`).
macro_rules! float_map {
    ($t:expr, $op:expr, |$x:ident| $body:expr) => {
        $crate::ops::float_map!($t, $op, 0.0, 0.0, |$x| $body)
    };
    ($t:expr, $op:expr, $a:expr, |$x:ident| $body:expr) => {
        $crate::ops::float_map!($t, $op, $a, 0.0, |$x| $body)
    };
    ($t:expr, $op:expr, $a:expr, $b:expr, |$x:ident| $body:expr) => {
        $crate::ops::map_float(
            $t,
            ($op, $a as f64, $b as f64),
            {
                #[allow(dead_code)]
                type F = f32;
                move |$x: F| -> F { $body }
            },
            {
                #[allow(dead_code)]
                type F = f64;
                move |$x: F| -> F { $body }
            },
        )
    };
}

/// Writes one body for both float types:
/// `float_zip!("op", a, b, Ew::Mul, |x, y| x * y)` (GPU op and up to two
/// f64 parameters as in [`float_map!`]). Inside the body `F` names the
/// element type.
macro_rules! float_zip {
    ($op:expr, $a:expr, $b:expr, $g:expr, |$x:ident, $y:ident| $body:expr) => {
        $crate::ops::float_zip!($op, $a, $b, $g, 0.0, 0.0, |$x, $y| $body)
    };
    ($op:expr, $a:expr, $b:expr, $g:expr, $pa:expr, |$x:ident, $y:ident| $body:expr) => {
        $crate::ops::float_zip!($op, $a, $b, $g, $pa, 0.0, |$x, $y| $body)
    };
    ($op:expr, $a:expr, $b:expr, $g:expr, $pa:expr, $pb:expr, |$x:ident, $y:ident| $body:expr) => {
        $crate::ops::zip_float(
            $op,
            $a,
            $b,
            ($g, $pa as f64, $pb as f64),
            {
                #[allow(dead_code)]
                type F = f32;
                move |$x: F, $y: F| -> F { $body }
            },
            {
                #[allow(dead_code)]
                type F = f64;
                move |$x: F, $y: F| -> F { $body }
            },
        )
    };
}

pub(crate) use {float_map, float_zip};
