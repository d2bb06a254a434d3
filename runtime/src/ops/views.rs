//! The view ops as [`Op`]s: reshape, view, flatten, permute, transpose, t.
//! Each output shares its input's storage (reshape copies only when the
//! strides allow no view); backward maps the gradient back the same way.

use super::shape::resolve_shape;
use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::error::{Error, OrPanic, Result};
use crate::tensor::{norm_dim, Tensor};

fn spec_with(x: &Tensor, shape: Vec<usize>) -> Spec {
    Spec {
        shape: shape.into(),
        dtype: x.dtype(),
        device: x.device(),
    }
}

/// `x.reshape(shape)` (one size may be -1).
#[derive(Clone, Debug)]
pub struct Reshape {
    /// The target sizes, -1 for one inferred size.
    pub shape: Vec<i64>,
}
impl Reshape {
    /// To `shape` (anything `reshape` takes).
    pub fn new(shape: impl super::shape::ShapeSpec) -> Self {
        Reshape {
            shape: shape.to_spec(),
        }
    }
}
impl Op for Reshape {
    const NAME: &'static str = "ViewBackward";
    const VIEW: bool = true;
    type Saved = Vec<usize>;
    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        Ok(spec_with(
            x[0],
            resolve_shape("reshape", x[0].shape(), &self.shape)?,
        ))
    }
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let shape = out.spec().shape.clone();
        out.set(x[0].reshape_raw(&shape).or_panic())
    }
    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Vec<usize> {
        x[0].shape().to_vec()
    }
    fn backward(&self, shape: &Vec<usize>, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        grads[0].add(g.reshape(shape.as_slice()))
    }
}

/// `x.view(shape)`: always a view, an error when the strides don't allow it.
#[derive(Clone, Debug)]
pub struct View {
    /// The target sizes, -1 for one inferred size.
    pub shape: Vec<i64>,
}
impl View {
    /// To `shape`.
    pub fn new(shape: impl super::shape::ShapeSpec) -> Self {
        View {
            shape: shape.to_spec(),
        }
    }
}
impl Op for View {
    const NAME: &'static str = "ViewBackward";
    const VIEW: bool = true;
    type Saved = Vec<usize>;
    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let shape = resolve_shape("view", x[0].shape(), &self.shape)?;
        // Checked here so that the try_ form reports it.
        x[0].view_raw("view", &shape)?;
        Ok(spec_with(x[0], shape))
    }
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let shape = out.spec().shape.clone();
        out.set(x[0].view_raw("view", &shape).or_panic())
    }
    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Vec<usize> {
        x[0].shape().to_vec()
    }
    fn backward(&self, shape: &Vec<usize>, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        grads[0].add(g.reshape(shape.as_slice()))
    }
}

/// `x.flatten(start, end)`: dims `start..=end` as one.
#[derive(Clone, Copy, Debug)]
pub struct Flatten {
    /// The first dim flattened.
    pub start: isize,
    /// The last dim flattened.
    pub end: isize,
}
impl Flatten {
    /// Dims `start..=end` (negative counting from the end).
    pub fn new(start: isize, end: isize) -> Self {
        Flatten { start, end }
    }
}
impl Op for Flatten {
    const NAME: &'static str = "ViewBackward";
    const VIEW: bool = true;
    type Saved = Vec<usize>;
    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        if x.ndim() == 0 {
            return Ok(spec_with(x, vec![1]));
        }
        let s = norm_dim("flatten", self.start, x.ndim())?;
        let e = norm_dim("flatten", self.end, x.ndim())?;
        if s > e {
            return Err(Error::shape(
                "flatten",
                format!("start_dim {} comes after end_dim {}", self.start, self.end),
            ));
        }
        let mut shape: Vec<usize> = x.shape()[..s].to_vec();
        shape.push(x.shape()[s..=e].iter().product());
        shape.extend_from_slice(&x.shape()[e + 1..]);
        Ok(spec_with(x, shape))
    }
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let shape = out.spec().shape.clone();
        out.set(x[0].reshape_raw(&shape).or_panic())
    }
    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Vec<usize> {
        x[0].shape().to_vec()
    }
    fn backward(&self, shape: &Vec<usize>, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        grads[0].add(g.reshape(shape.as_slice()))
    }
}

/// `x.permute(dims)`: output dim `i` is input dim `dims[i]`.
#[derive(Clone, Debug)]
pub struct Permute {
    /// A permutation of the input's dims.
    pub dims: Vec<usize>,
}
impl Permute {
    /// With output dim `i` taken from input dim `dims[i]`.
    pub fn new(dims: Vec<usize>) -> Self {
        Permute { dims }
    }
}
fn check_permutation(op: &'static str, dims: &[usize], x: &Tensor) -> Result<()> {
    let nd = x.ndim();
    let mut seen = vec![false; nd];
    let ok = dims.len() == nd
        && dims
            .iter()
            .all(|&d| d < nd && !std::mem::replace(&mut seen[d], true));
    if ok {
        Ok(())
    } else {
        Err(Error::shape(
            op,
            format!(
                "{dims:?} is not a permutation of the {nd} dims of a tensor of shape {:?}",
                x.shape()
            ),
        ))
    }
}
impl Op for Permute {
    const NAME: &'static str = "PermuteBackward";
    const VIEW: bool = true;
    type Saved = ();
    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        check_permutation("permute", &self.dims, x[0])?;
        Ok(spec_with(
            x[0],
            self.dims.iter().map(|&d| x[0].shape()[d]).collect(),
        ))
    }
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        out.set(x[0].permute_raw(&self.dims))
    }
    fn save(&self, _: &[&Tensor], _: &Tensor, _: &[bool]) {}
    fn backward(&self, _: &(), g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let mut inverse = vec![0; self.dims.len()];
        for (i, &d) in self.dims.iter().enumerate() {
            inverse[d] = i;
        }
        grads[0].add(g.permute_raw(&inverse))
    }
}

/// `x.transpose(d0, d1)`: two dims swapped.
#[derive(Clone, Copy, Debug)]
pub struct Transpose {
    /// One dim.
    pub dim0: isize,
    /// The other.
    pub dim1: isize,
}
impl Transpose {
    /// Swapping `dim0` and `dim1`.
    pub fn new(dim0: isize, dim1: isize) -> Self {
        Transpose { dim0, dim1 }
    }
    fn dims(&self, nd: usize) -> Result<Vec<usize>> {
        let mut dims: Vec<usize> = (0..nd).collect();
        if nd > 0 {
            let a = norm_dim("transpose", self.dim0, nd)?;
            let b = norm_dim("transpose", self.dim1, nd)?;
            dims.swap(a, b);
        }
        Ok(dims)
    }
}
impl Op for Transpose {
    const NAME: &'static str = "TransposeBackward";
    const VIEW: bool = true;
    type Saved = ();
    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let dims = self.dims(x[0].ndim())?;
        Ok(spec_with(
            x[0],
            dims.iter().map(|&d| x[0].shape()[d]).collect(),
        ))
    }
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        out.set(x[0].permute_raw(&self.dims(x[0].ndim()).or_panic()))
    }
    fn save(&self, _: &[&Tensor], _: &Tensor, _: &[bool]) {}
    fn backward(&self, _: &(), g: &Tensor, grads: &mut [GradSlot<'_>]) {
        grads[0].add(g.permute_raw(&self.dims(g.ndim()).or_panic()))
    }
}

/// `x.t()`: the transpose of a matrix (0-d and 1-d tensors unchanged).
#[derive(Clone, Copy, Debug, Default)]
pub struct T;
impl Op for T {
    const NAME: &'static str = "TBackward";
    const VIEW: bool = true;
    type Saved = ();
    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        if x.ndim() > 2 {
            return Err(Error::shape(
                "t",
                format!(
                    "expects a tensor with <= 2 dimensions, but this one has shape {:?}; use \
                     .transpose(-2, -1) to swap the last two dims",
                    x.shape()
                ),
            ));
        }
        Ok(spec_with(x, x.shape().iter().rev().copied().collect()))
    }
    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        out.set(x[0].permute_raw(&T::dims(x[0].ndim())))
    }
    fn save(&self, _: &[&Tensor], _: &Tensor, _: &[bool]) {}
    fn backward(&self, _: &(), g: &Tensor, grads: &mut [GradSlot<'_>]) {
        grads[0].add(g.permute_raw(&T::dims(g.ndim())))
    }
}
impl T {
    fn dims(nd: usize) -> Vec<usize> {
        (0..nd).rev().collect()
    }
}
