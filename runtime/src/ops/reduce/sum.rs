//! Sum and mean over all elements or chosen dims.

use super::{
    final_shape, keepdim_shape, reduce_blocks, sum_backward, sum_float, try_resolve_dims, Dims,
};
use crate::autograd::{apply, GradSlot, Op, Out, Spec};
use crate::backend::Buffer;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// `x.sum_dim(dims, keepdim)` (no dims: all of them, as `x.sum()`); integer
/// and bool inputs sum to i64, as in PyTorch.
#[derive(Clone, Debug, Default)]
pub struct Sum {
    /// The dims reduced, as given (negative counting from the end); empty: all.
    pub dims: Vec<isize>,
    /// Whether reduced dims stay as size 1.
    pub keepdim: bool,
}

/// The op of `.sum_dim(dims, keepdim)`: [`Sum`] with its dims.
pub type SumDim = Sum;

impl Sum {
    /// Over `dims` (one dim or a list), keeping them as 1 when `keepdim`.
    pub fn new(dims: impl Dims, keepdim: bool) -> Self {
        Sum {
            dims: dims.to_dims(),
            keepdim,
        }
    }
}

/// What a sum's or mean's backward reads: the input's shape and the kept shape.
#[doc(hidden)]
pub struct Shapes {
    input: Vec<usize>,
    keep: Vec<usize>,
}
impl crate::autograd::Saved for Shapes {
    fn visit_mut(&mut self, _: &mut dyn FnMut(&mut Tensor)) {}
}

fn shapes(op: &'static str, dims: &[isize], x: &Tensor) -> Shapes {
    let dims = try_resolve_dims(op, dims, x.ndim()).expect("checked by spec");
    Shapes {
        input: x.shape().to_vec(),
        keep: keepdim_shape(x.shape(), &dims),
    }
}

impl Op for Sum {
    const NAME: &'static str = "SumBackward";
    const OP: &'static str = "sum";
    type Saved = Shapes;

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        let dims = try_resolve_dims("sum", &self.dims, x.ndim())?;
        Ok(Spec {
            shape: final_shape(x.shape(), &dims, self.keepdim).into(),
            dtype: if x.dtype().is_float() {
                x.dtype()
            } else {
                DType::I64
            },
            device: x.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let x = x[0];
        let dims = try_resolve_dims("sum", &self.dims, x.ndim()).expect("checked by spec");
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let shape = out.spec().shape.clone();
            return out.set(Tensor::from_array(crate::backend::cuda::ops::sum_dims(
                x.array(),
                &dims,
                &shape,
            )));
        }
        let l = x.layout();
        let buf = {
            let b = x.storage().read();
            match &*b {
                Buffer::F32(v) => Buffer::F32(sum_float(v, l, &dims)),
                Buffer::F64(v) => Buffer::F64(sum_float(v, l, &dims)),
                Buffer::I64(v) => Buffer::I64(reduce_blocks(
                    "sum",
                    v,
                    l,
                    &dims,
                    0i64,
                    |a, x, _| a.wrapping_add(x),
                    |a| a,
                )),
                Buffer::Bool(v) => Buffer::I64(reduce_blocks(
                    "sum",
                    v,
                    l,
                    &dims,
                    0i64,
                    |a, x, _| a + x as i64,
                    |a| a,
                )),
            }
        };
        out.set(Tensor::from_buffer(
            buf,
            &out.spec().shape.clone(),
            x.device(),
        ))
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Shapes {
        shapes("sum", &self.dims, x[0])
    }

    fn backward(&self, s: &Shapes, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        grads[0].add(sum_backward(g, &s.input, &s.keep, 1.0))
    }
}

/// `x.mean_dim(dims, keepdim)` (no dims: all); float inputs only, as in PyTorch.
#[derive(Clone, Debug, Default)]
pub struct Mean {
    /// The dims reduced, as given; empty: all.
    pub dims: Vec<isize>,
    /// Whether reduced dims stay as size 1.
    pub keepdim: bool,
}

/// The op of `.mean_dim(dims, keepdim)`: [`Mean`] with its dims.
pub type MeanDim = Mean;

impl Mean {
    /// Over `dims`, keeping them as 1 when `keepdim`.
    pub fn new(dims: impl Dims, keepdim: bool) -> Self {
        Mean {
            dims: dims.to_dims(),
            keepdim,
        }
    }

    fn count(&self, x: &Tensor) -> usize {
        let dims = try_resolve_dims("mean", &self.dims, x.ndim()).expect("checked by spec");
        dims.iter().map(|&d| x.shape()[d]).product()
    }
}

impl Op for Mean {
    const NAME: &'static str = "MeanBackward";
    const OP: &'static str = "mean";
    type Saved = (Shapes, Vec<usize>);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        if !x[0].dtype().is_float() {
            return Err(Error::DType {
                op: "mean",
                msg: format!(
                    "input dtype must be floating point, got {}; convert with \
                     .to_dtype(DType::F32)",
                    x[0].dtype()
                ),
            });
        }
        let x = x[0];
        let dims = try_resolve_dims("mean", &self.dims, x.ndim())?;
        Ok(Spec {
            shape: final_shape(x.shape(), &dims, self.keepdim).into(),
            dtype: x.dtype(),
            device: x.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let sum = apply(Sum::new(self.dims.clone(), self.keepdim), x);
        out.set(sum * (1.0 / self.count(x[0]) as f64))
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (shapes("mean", &self.dims, x[0]), vec![self.count(x[0])])
    }

    fn backward(&self, s: &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let (shapes, count) = s;
        grads[0].add(sum_backward(
            g,
            &shapes.input,
            &shapes.keep,
            1.0 / count[0] as f64,
        ))
    }
}

impl Tensor {
    /// Sum of all elements: a 0-d tensor (integers and bools sum to i64).
    pub fn sum(&self) -> Tensor {
        apply(Sum::default(), &[self])
    }

    /// Sum over `dims` (one dim or a list; negative counts from the end),
    /// keeping them as size 1 when `keepdim`.
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// let x = tensor![[1., 2.], [3., 4.]];
    /// assert_eq!(x.sum_dim(0, false).to_vec::<f32>(), vec![4., 6.]);
    /// assert_eq!(x.sum_dim([0, 1], true).shape(), &[1, 1]);
    /// ```
    #[track_caller]
    pub fn sum_dim(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        apply(Sum::new(dims, keepdim), &[self])
    }

    /// Mean of all elements: a 0-d tensor. Panics for integer tensors, as
    /// PyTorch does: convert with `.to_dtype(DType::F32)` first.
    #[track_caller]
    pub fn mean(&self) -> Tensor {
        apply(Mean::default(), &[self])
    }

    /// Mean over `dims`, keeping them as size 1 when `keepdim`.
    #[track_caller]
    pub fn mean_dim(&self, dims: impl Dims, keepdim: bool) -> Tensor {
        apply(Mean::new(dims, keepdim), &[self])
    }
}
