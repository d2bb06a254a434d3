//! Copies: `to_dtype`, `to(&device)` and `clone_data` (PyTorch's `_to_copy`
//! and `clone`) as one op, whose gradient goes back to the input's dtype and
//! device.

use crate::autograd::{GradSlot, Op, Out, Saved, Spec};
use crate::backend::{cpu, Buffer};
use crate::error::Result;
use crate::tensor::{DType, Tensor};
use crate::Device;

/// A copy of the input converted to `dtype` on `device` (the same dtype
/// and device: a plain copy, `CloneBackward`). A float result keeps the
/// gradient; an integer or bool one is not differentiable.
#[derive(Clone, Copy, Debug)]
pub struct ToCopy {
    /// The copy's element type.
    pub dtype: DType,
    /// Where the copy lives.
    pub device: Device,
}

impl ToCopy {
    /// A copy of `t` with `t`'s dtype and device changed as given.
    pub fn of(t: &Tensor, dtype: Option<DType>, device: Option<Device>) -> Self {
        ToCopy {
            dtype: dtype.unwrap_or(t.dtype()),
            device: device.unwrap_or(t.device()),
        }
    }
}

/// Where a copy came from: its gradient goes back there.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Source {
    dtype: DType,
    device: Device,
}

impl Saved for Source {
    fn visit_mut(&mut self, _: &mut dyn FnMut(&mut Tensor)) {}
}

impl Op for ToCopy {
    const NAME: &'static str = "ToCopyBackward";
    const OP: &'static str = "to";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Same;
    type Saved = Source;
    fn name(&self, x: &[&Tensor]) -> &'static str {
        if x[0].dtype() == self.dtype && x[0].device() == self.device {
            "CloneBackward"
        } else {
            Self::NAME
        }
    }
    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        Ok(Spec {
            shape: crate::autograd::Shape::from_slice(x[0].shape()),
            dtype: self.dtype,
            device: self.device,
        })
    }
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let x = x[0];
        let copy = if x.device() == self.device {
            convert(x, self.dtype)
        } else {
            // Converted where the input is, then moved: a dtype change on
            // the way to or from the GPU costs one transfer.
            convert(x, self.dtype).to_device_nograd(&self.device)
        };
        out.set(copy)
    }
    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Source {
        Source {
            dtype: x[0].dtype(),
            device: x[0].device(),
        }
    }
    fn backward(&self, from: &Source, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        grads[0].add(g.to(&from.device).to_dtype(from.dtype))
    }
}

/// A new contiguous tensor holding `t`'s elements as `dtype`, on `t`'s device.
fn convert(t: &Tensor, dtype: DType) -> Tensor {
    #[cfg(feature = "cuda")]
    if t.device().is_cuda() {
        return Tensor::from_array(crate::backend::cuda::ops::cast(t.array(), dtype));
    }
    let b = t.storage().read();
    let l = t.layout();
    macro_rules! conv {
        ($v:expr, $conv:expr) => {
            match dtype {
                DType::F32 => Buffer::F32(cpu::map("to_dtype", $v, l, |x| $conv(x) as f32)),
                DType::F64 => Buffer::F64(cpu::map("to_dtype", $v, l, |x| $conv(x))),
                DType::I64 => Buffer::I64(cpu::map("to_dtype", $v, l, |x| $conv(x) as i64)),
                DType::Bool => Buffer::Bool(cpu::map("to_dtype", $v, l, |x| $conv(x) != 0.0)),
            }
        };
    }
    let buf = match &*b {
        // A plain copy: exact for any i64 (not through f64).
        Buffer::F32(v) if dtype == DType::F32 => Buffer::F32(cpu::map("clone", v, l, |x| x)),
        Buffer::F64(v) if dtype == DType::F64 => Buffer::F64(cpu::map("clone", v, l, |x| x)),
        Buffer::I64(v) if dtype == DType::I64 => Buffer::I64(cpu::map("clone", v, l, |x| x)),
        Buffer::Bool(v) if dtype == DType::Bool => Buffer::Bool(cpu::map("clone", v, l, |x| x)),
        // Rounded once, not through f64 (as PyTorch does).
        Buffer::I64(v) if dtype == DType::F32 => {
            Buffer::F32(cpu::map("to_dtype", v, l, |x| x as f32))
        }
        Buffer::F32(v) => conv!(v, |x: f32| x as f64),
        Buffer::F64(v) => conv!(v, |x: f64| x),
        Buffer::I64(v) => conv!(v, |x: i64| x as f64),
        Buffer::Bool(v) => conv!(v, |x: bool| x as u8 as f64),
    };
    Tensor::from_buffer(buf, t.shape(), t.device())
}
