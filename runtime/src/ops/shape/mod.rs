//! Shape ops. Views (reshape of viewable data, transpose, permute, squeeze,
//! unsqueeze, expand, narrow/slice, split, chunk) share storage; copies
//! (contiguous, index_select, gather, scatter_add, cat, stack) make new storage.

use super::index::{resolve_range, DimIndex, SliceRange};
use super::reduce::sum_to;
use super::same_device;
use crate::autograd::{apply, no_grad, try_apply, GradSlot, Op, Out, Spec};
use crate::backend::{cpu, memory, Buffer};
use crate::error::{Error, OrPanic, Result};
use crate::tensor::{checked_numel, contiguous_strides, norm_dim, DType, Element, Layout, Tensor};

mod cat;
mod embedding;
mod gather;

pub use cat::Cat;
pub(crate) use embedding::{
    check_weight as check_embedding_weight, renorm_for_lookup, try_embedding,
};
pub use embedding::{Embedding, EmbeddingOptions};
pub(crate) use gather::gather_backward;
pub use gather::{Gather, IndexSelect, ScatterAdd};

/// A target shape for `reshape`/`view`: sizes, one of which may be -1 (inferred).
pub trait ShapeSpec {
    /// The sizes as given, -1 meaning "infer".
    fn to_spec(&self) -> Vec<i64>;
}

/// A size as a spec entry: `usize` sizes past `i64::MAX` (which no tensor
/// can have) saturate there, so they are refused as too large rather than
/// read as negative (`usize::MAX as i64` would be -1, "infer").
trait SpecEntry: Copy {
    fn entry(self) -> i64;
}
impl SpecEntry for usize {
    fn entry(self) -> i64 {
        i64::try_from(self).unwrap_or(i64::MAX)
    }
}
macro_rules! spec_entry_signed {
    ($($t:ty),*) => {$(
        impl SpecEntry for $t {
            fn entry(self) -> i64 {
                self as i64
            }
        }
    )*};
}
spec_entry_signed!(isize, i32, i64);

macro_rules! impl_shape_spec {
    ($($t:ty),*) => {$(
        impl<const N: usize> ShapeSpec for [$t; N] {
            fn to_spec(&self) -> Vec<i64> { self.iter().map(|&d| d.entry()).collect() }
        }
        impl<const N: usize> ShapeSpec for &[$t; N] {
            fn to_spec(&self) -> Vec<i64> { self.iter().map(|&d| d.entry()).collect() }
        }
        impl ShapeSpec for &[$t] {
            fn to_spec(&self) -> Vec<i64> { self.iter().map(|&d| d.entry()).collect() }
        }
        impl ShapeSpec for Vec<$t> {
            fn to_spec(&self) -> Vec<i64> { self.iter().map(|&d| d.entry()).collect() }
        }
        impl ShapeSpec for &Vec<$t> {
            fn to_spec(&self) -> Vec<i64> { self.iter().map(|&d| d.entry()).collect() }
        }
    )*};
}
impl_shape_spec!(usize, isize, i32, i64);

/// Resolves a spec (with at most one -1) against the elements of `from`,
/// with checked counts: a spec whose sizes multiply past what a tensor can
/// hold is an error naming it, never a wrapped count that happens to match.
pub(crate) fn resolve_shape(op: &'static str, from: &[usize], spec: &[i64]) -> Result<Vec<usize>> {
    let numel = checked_numel(op, from)?;
    let infer: Vec<usize> = (0..spec.len()).filter(|&i| spec[i] == -1).collect();
    let bad = || {
        Error::shape(
            op,
            format!(
                "shape {spec:?} is invalid for input of shape {from:?} ({numel} elements); \
                 the new sizes must multiply to {numel} (use -1 for one size to infer it)"
            ),
        )
    };
    if infer.len() > 1 || spec.iter().any(|&d| d < -1) {
        return Err(bad());
    }
    // The inferred size counts as 1 in the product of the given ones.
    let mut out: Vec<usize> = spec
        .iter()
        .map(|&d| if d == -1 { 1 } else { d as usize })
        .collect();
    let known = checked_numel(op, &out).map_err(|_| {
        Error::shape(
            op,
            format!(
                "shape {spec:?} is invalid for input of shape {from:?} ({numel} elements): \
                 its sizes multiply past the {} (isize::MAX) elements a tensor can hold; \
                 the new sizes must multiply to {numel}",
                crate::tensor::MAX_NUMEL
            ),
        )
    })?;
    if let Some(&i) = infer.first() {
        if known == 0 || numel % known != 0 {
            return Err(bad());
        }
        out[i] = numel / known;
    } else if known != numel {
        return Err(bad());
    }
    Ok(out)
}

/// `x.expand(shape)`: a view broadcasting size-1 dims (stride 0) and
/// adding dims in front; the gradient is summed back.
#[derive(Clone, Debug)]
pub struct Expand {
    /// The target shape.
    pub shape: Vec<usize>,
}

impl Op for Expand {
    const NAME: &'static str = "ExpandBackward";
    const OP: &'static str = "expand";
    const VIEW: bool = true;
    /// The input's shape.
    type Saved = Vec<usize>;

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (x, shape) = (x[0], self.shape.as_slice());
        let ok = shape.len() >= x.ndim()
            && x.shape()
                .iter()
                .zip(&shape[shape.len() - x.ndim()..])
                .all(|(&s, &t)| s == t || s == 1);
        if !ok {
            return Err(Error::shape(
                "expand",
                format!(
                    "cannot expand shape {:?} to {shape:?}: each existing dim must equal the \
                     target size or be 1, and new dims go in front",
                    x.shape()
                ),
            ));
        }
        // A view allocates nothing, but its count must still fit: every op
        // on it computes with it.
        checked_numel("expand", shape)?;
        Ok(Spec {
            shape: shape.into(),
            dtype: x.dtype(),
            device: x.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        out.set(x[0].with_layout(x[0].layout().broadcast_to(&self.shape)))
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Vec<usize> {
        x[0].shape().to_vec()
    }

    fn backward(&self, shape: &Vec<usize>, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        grads[0].add(sum_to(g, shape))
    }
}

/// `x.slice_step(dim, start.., step)`: a view of `len` elements of `dim`
/// (before stepping) from `start`, every `step`-th; the gradient goes back
/// into zeros at those places.
#[derive(Clone, Copy, Debug)]
pub struct Slice {
    /// The dim sliced (negative counts from the end).
    pub dim: isize,
    /// The first element taken.
    pub start: usize,
    /// The length of the range taken (clipped to the dim).
    pub len: usize,
    /// The step (at least 1).
    pub step: usize,
}

impl Op for Slice {
    const NAME: &'static str = "SliceBackward";
    const OP: &'static str = "slice";
    const VIEW: bool = true;
    /// The input's shape.
    type Saved = Vec<usize>;

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        if self.step == 0 {
            return Err(Error::shape("slice", "step must be positive, got 0"));
        }
        let d = norm_dim("slice", self.dim, x.ndim())?;
        let mut shape = x.shape().to_vec();
        if self
            .start
            .checked_add(self.len)
            .is_none_or(|end| end > shape[d])
        {
            return Err(Error::shape(
                "slice",
                format!(
                    "elements {}..{} are past dimension {d} of size {}; Tensor::slice \
                     clips a range to the dim",
                    self.start,
                    self.start.saturating_add(self.len),
                    shape[d]
                ),
            ));
        }
        shape[d] = self.len.div_ceil(self.step);
        Ok(Spec {
            shape: shape.into(),
            dtype: x.dtype(),
            device: x.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let x = x[0];
        let d = norm_dim("slice", self.dim, x.ndim()).expect("checked by spec");
        let l = x.layout();
        let mut layout = l.clone();
        // Inside the view's extent when the slice is non-empty (start <
        // size); an empty slice at the end of a dim whose stride was never
        // stepped may not be, and reads nothing: it keeps the offset then.
        layout.offset = self
            .start
            .checked_mul(l.strides[d])
            .and_then(|o| o.checked_add(l.offset))
            .unwrap_or(l.offset);
        layout.shape[d] = self.len.div_ceil(self.step);
        // With two or more elements the stepped stride lies inside the
        // extent; a step past the dim leaves one element, whose stride is
        // never stepped: keep every stride within MAX_NUMEL either way (the
        // kernels' walks add a stride to an offset).
        layout.strides[d] = l.strides[d]
            .checked_mul(self.step)
            .filter(|&s| s <= crate::tensor::MAX_NUMEL)
            .unwrap_or(l.strides[d]);
        out.set(x.with_layout(layout))
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Vec<usize> {
        x[0].shape().to_vec()
    }

    fn backward(&self, shape: &Vec<usize>, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let d = norm_dim("slice", self.dim, shape.len()).expect("checked by spec");
        let z = Tensor::zeros_opts(shape, &g.options());
        let len = g.shape()[d];
        if len > 0 {
            let end = self.start + (len - 1) * self.step + 1;
            z.slice_step(d as isize, self.start as isize..end as isize, self.step)
                .copy_(g);
        }
        grads[0].add(z)
    }
}

impl Tensor {
    /// The reshaped view or copy, unrecorded (the `Reshape` op's forward).
    pub(crate) fn reshape_raw(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.detach());
        }
        let src = match self.layout().view_strides(shape) {
            Some(_) => self.detach(),
            None => no_grad(|| self.contiguous()),
        };
        src.view_raw("reshape", shape)
    }

    /// The view in `shape`, unrecorded (the `View` op's forward).
    pub(crate) fn view_raw(&self, op: &'static str, shape: &[usize]) -> Result<Tensor> {
        let Some(strides) = self.layout().view_strides(shape) else {
            return Err(Error::shape(
                op,
                format!(
                    "view size {shape:?} is not compatible with the input's shape {:?} and \
                     strides {:?} (at least one dimension spans across two contiguous \
                     subspaces); use .reshape(..) instead, or .contiguous() first",
                    self.shape(),
                    self.strides()
                ),
            ));
        };
        Ok(self.with_layout(Layout::new(
            op,
            shape.to_vec(),
            strides,
            self.layout().offset,
        )?))
    }

    /// The permuted view, unrecorded (`dims` checked by the caller).
    pub(crate) fn permute_raw(&self, dims: &[usize]) -> Tensor {
        let l = self.layout();
        let layout = Layout::new(
            "permute",
            dims.iter().map(|&d| l.shape[d]).collect::<Vec<_>>(),
            dims.iter().map(|&d| l.strides[d]).collect::<Vec<_>>(),
            l.offset,
        )
        .or_panic();
        self.with_layout(layout)
    }

    /// The same elements in a new shape (one size may be -1): a view when the
    /// strides allow, a copy otherwise (`torch.reshape`).
    ///
    /// ```
    /// use deriv_runtime::Tensor;
    /// let x = Tensor::arange(0., 6., 1.);
    /// assert_eq!(x.reshape([2, -1]).shape(), &[2, 3]);
    /// ```
    #[track_caller]
    pub fn reshape(&self, shape: impl ShapeSpec) -> Tensor {
        self.try_reshape(shape).or_panic()
    }

    /// Fallible [`reshape`](Self::reshape).
    pub fn try_reshape(&self, shape: impl ShapeSpec) -> Result<Tensor> {
        let shape = shape.to_spec();
        if resolve_shape("reshape", self.shape(), &shape)? == self.shape() {
            return Ok(self.clone());
        }
        try_apply(super::views::Reshape::new(shape), &[self])
    }

    /// The same elements in a new shape, always sharing storage (`torch.view`);
    /// panics when the strides don't allow it, saying to use `reshape`.
    #[track_caller]
    pub fn view(&self, shape: impl ShapeSpec) -> Tensor {
        apply(super::views::View::new(shape.to_spec()), &[self])
    }

    /// Flattens dims `start..=end` into one (`torch.flatten`; `flatten(0, -1)` flattens all).
    #[track_caller]
    pub fn flatten(&self, start: isize, end: isize) -> Tensor {
        apply(super::views::Flatten::new(start, end), &[self])
    }

    /// Dims reordered: output dim i is input dim `dims[i]` (a view;
    /// `torch.permute`). Negative dims count from the end, as elsewhere.
    ///
    /// ```
    /// use deriv_runtime::Tensor;
    /// let x = Tensor::zeros([2, 3, 4]);
    /// assert_eq!(x.permute(&[2, 0, 1]).shape(), &[4, 2, 3]);
    /// assert_eq!(x.permute(&[0, -1, -2]).shape(), &[2, 4, 3]);
    /// ```
    #[track_caller]
    pub fn permute<D: DimIndex>(&self, dims: &[D]) -> Tensor {
        // Negative dims count from the end; the message shows them as given.
        let nd = self.ndim();
        let given: Vec<isize> = dims.iter().map(|&d| d.to_isize()).collect();
        let mut seen = vec![false; nd];
        let dims: Vec<usize> = given
            .iter()
            .filter_map(|&d| usize::try_from(if d < 0 { d + nd as isize } else { d }).ok())
            .filter(|&d| d < nd && !std::mem::replace(&mut seen[d], true))
            .collect();
        assert!(
            given.len() == nd && dims.len() == nd,
            "permute: {given:?} is not a permutation of the {nd} dims of a tensor of shape {:?}",
            self.shape()
        );
        apply(super::views::Permute::new(dims), &[self])
    }

    /// Swaps two dims (a view).
    #[track_caller]
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Tensor {
        if self.ndim() == 0 {
            return self.clone();
        }
        apply(super::views::Transpose::new(dim0, dim1), &[self])
    }

    /// The transpose of a matrix; 0-d and 1-d tensors are returned as they are (`torch.t`).
    #[track_caller]
    pub fn t(&self) -> Tensor {
        apply(super::views::T, &[self])
    }

    /// Removes every size-1 dim (a view).
    pub fn squeeze(&self) -> Tensor {
        let shape: Vec<usize> = self.shape().iter().copied().filter(|&s| s != 1).collect();
        self.reshape(shape)
    }

    /// Removes `dim` if it has size 1 (otherwise returns the tensor unchanged, as PyTorch).
    #[track_caller]
    pub fn squeeze_dim(&self, dim: isize) -> Tensor {
        let d = norm_dim("squeeze", dim, self.ndim()).or_panic();
        if self.ndim() == 0 || self.shape()[d] != 1 {
            return self.clone();
        }
        let mut shape = self.shape().to_vec();
        shape.remove(d);
        self.reshape(shape)
    }

    /// Inserts a size-1 dim at `dim` (`-1` appends) (a view).
    #[track_caller]
    pub fn unsqueeze(&self, dim: isize) -> Tensor {
        let d = norm_dim("unsqueeze", dim, self.ndim() + 1).or_panic();
        let mut shape = self.shape().to_vec();
        shape.insert(d, 1);
        self.reshape(shape)
    }

    /// Broadcasts to a larger `shape` without copying: size-1 dims stretch and
    /// new dims are added in front (`torch.expand`).
    #[track_caller]
    pub fn expand(&self, shape: impl AsRef<[usize]>) -> Tensor {
        self.try_expand(shape).or_panic()
    }

    /// Fallible [`expand`](Self::expand).
    pub fn try_expand(&self, shape: impl AsRef<[usize]>) -> Result<Tensor> {
        let shape = shape.as_ref();
        if shape == self.shape() {
            return Ok(self.clone());
        }
        try_apply(
            Expand {
                shape: shape.to_vec(),
            },
            &[self],
        )
    }

    /// Expands to `other`'s shape.
    #[track_caller]
    pub fn expand_as(&self, other: &Tensor) -> Tensor {
        self.expand(other.shape())
    }

    /// `len` elements of `dim` starting at `start` (a view; `torch.narrow`).
    #[track_caller]
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Tensor {
        let d = norm_dim("narrow", dim, self.ndim()).or_panic();
        let size = self.shape()[d];
        assert!(
            start.checked_add(len).is_some_and(|end| end <= size),
            "narrow: start ({start}) + length ({len}) exceeds dimension {d} of size {size} \
             (shape {:?})",
            self.shape()
        );
        self.slice_step(dim, start as isize..(start + len) as isize, 1)
    }

    /// The elements of `dim` in `range` (a view): `x.slice(1, 2..)` is
    /// `x[:, 2:]`. Any integer range works (`a..b`, `a..`, `..b`, `a..=b`,
    /// `..`, with `usize`, `isize`, `i32` or `i64` bounds); negative bounds
    /// count from the end and out-of-range bounds are clipped, as in Python.
    ///
    /// ```
    /// use deriv_runtime::Tensor;
    /// let x = Tensor::arange(0, 12, 1).reshape([3, 4]);
    /// let rows = x.shape()[0]; // a usize
    /// assert_eq!(x.slice(0, 1..rows).shape(), &[2, 4]);
    /// assert_eq!(x.slice(1, -2..).to_vec::<i64>(), vec![2, 3, 6, 7, 10, 11]);
    /// ```
    #[track_caller]
    pub fn slice(&self, dim: isize, range: impl SliceRange) -> Tensor {
        self.slice_step(dim, range, 1)
    }

    /// [`slice`](Self::slice) taking every `step`-th element (`x[:, a:b:step]`).
    #[track_caller]
    pub fn slice_step(&self, dim: isize, range: impl SliceRange, step: usize) -> Tensor {
        assert!(step > 0, "slice: step must be positive, got 0");
        let d = norm_dim("slice", dim, self.ndim()).or_panic();
        let (start, len) = resolve_range(range.bounds(), self.shape()[d]);
        apply(
            Slice {
                dim,
                start,
                len,
                step,
            },
            &[self],
        )
    }

    /// The slice at `index` along `dim`, with that dim removed (`x[:, i]`; a view).
    #[track_caller]
    pub fn select(&self, dim: isize, index: isize) -> Tensor {
        let d = norm_dim("select", dim, self.ndim()).or_panic();
        let size = self.shape()[d] as isize;
        let i = if index < 0 { index + size } else { index };
        assert!(
            (0..size).contains(&i),
            "select: index {index} is out of range for dimension {d} of size {size}"
        );
        self.narrow(d as isize, i as usize, 1)
            .squeeze_dim(d as isize)
    }

    /// Splits `dim` into pieces of `size` (the last may be smaller); views.
    #[track_caller]
    pub fn split(&self, size: usize, dim: isize) -> Vec<Tensor> {
        assert!(size > 0, "split: split_size must be positive, got 0");
        let d = norm_dim("split", dim, self.ndim()).or_panic();
        let n = self.shape()[d];
        (0..n.div_ceil(size))
            .map(|i| self.narrow(d as isize, i * size, size.min(n - i * size)))
            .collect()
    }

    /// Splits `dim` into pieces of the given sizes, which must add up to its size.
    #[track_caller]
    pub fn split_sizes(&self, sizes: &[usize], dim: isize) -> Vec<Tensor> {
        let d = norm_dim("split", dim, self.ndim()).or_panic();
        let n = self.shape()[d];
        assert!(
            sizes.iter().sum::<usize>() == n,
            "split_with_sizes: sizes {sizes:?} must sum to the size of dimension {d} ({n})"
        );
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let t = self.narrow(d as isize, start, s);
                start += s;
                t
            })
            .collect()
    }

    /// Splits `dim` into `chunks` nearly equal pieces (`torch.chunk`).
    #[track_caller]
    pub fn chunk(&self, chunks: usize, dim: isize) -> Vec<Tensor> {
        assert!(
            chunks > 0,
            "chunk: number of chunks must be positive, got 0"
        );
        let d = norm_dim("chunk", dim, self.ndim()).or_panic();
        let n = self.shape()[d];
        self.split(n.div_ceil(chunks).max(1), dim)
    }

    /// The tensor itself when contiguous, else a contiguous copy.
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            self.clone()
        } else {
            self.clone_data()
        }
    }
}
