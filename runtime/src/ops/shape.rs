//! Shape ops. Views (reshape of viewable data, transpose, permute, squeeze,
//! unsqueeze, expand, narrow/slice, split, chunk) share storage; copies
//! (contiguous, index_select, gather, scatter_add, cat, stack) make new storage.

use super::index::{resolve_range, DimIndex, SliceRange};
use super::reduce::sum_to;
use super::same_device;
use crate::autograd::{apply, needs_grad, no_grad, record, try_apply, Backward, SavedTensor};
use crate::backend::{cpu, memory, Buffer};
use crate::error::{Error, OrPanic, Result};
use crate::tensor::{checked_numel, contiguous_strides, norm_dim, DType, Element, Layout, Tensor};

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

struct ExpandBackward {
    input_shape: Vec<usize>,
}
impl Backward for ExpandBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(sum_to(g, &self.input_shape))]
    }
}

struct SliceBackward {
    input_shape: Vec<usize>,
    dim: usize,
    start: usize,
    step: usize,
}
impl Backward for SliceBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let z = Tensor::zeros_opts(&self.input_shape, &g.options());
        let len = g.shape()[self.dim];
        let end = self.start + (len.max(1) - 1) * self.step + 1;
        if len > 0 {
            z.slice_step(
                self.dim as isize,
                self.start as isize..end as isize,
                self.step,
            )
            .copy_(g);
        }
        vec![Some(z)]
    }
}

impl Tensor {
    /// A view with the same storage and another layout, linked to `self` on the tape.
    fn view_op(&self, name: &'static str, layout: Layout, back: impl Backward + 'static) -> Tensor {
        let out = self.with_layout(layout);
        if needs_grad(&[self]) {
            record(name, &[self], out, || back)
        } else {
            out
        }
    }

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
            dims.iter().map(|&d| l.shape[d]).collect(),
            dims.iter().map(|&d| l.strides[d]).collect(),
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
        let ok = shape.len() >= self.ndim()
            && self
                .shape()
                .iter()
                .zip(&shape[shape.len() - self.ndim()..])
                .all(|(&s, &t)| s == t || s == 1);
        if !ok {
            return Err(Error::shape(
                "expand",
                format!(
                    "cannot expand shape {:?} to {shape:?}: each existing dim must equal the \
                     target size or be 1, and new dims go in front",
                    self.shape()
                ),
            ));
        }
        // A view allocates nothing, but its count must still fit: every op
        // on it computes with it.
        checked_numel("expand", shape)?;
        let layout = self.layout().broadcast_to(shape);
        Ok(self.view_op(
            "ExpandBackward",
            layout,
            ExpandBackward {
                input_shape: self.shape().to_vec(),
            },
        ))
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
        let l = self.layout();
        let mut layout = l.clone();
        // Inside the view's extent when the slice is non-empty (start <
        // size); an empty slice at the end of a dim whose stride was never
        // stepped may not be, and reads nothing: it keeps the offset then.
        layout.offset = start
            .checked_mul(l.strides[d])
            .and_then(|o| o.checked_add(l.offset))
            .unwrap_or(l.offset);
        layout.shape[d] = len.div_ceil(step);
        // With two or more elements the stepped stride lies inside the
        // extent; a step past the dim leaves one element, whose stride is
        // never stepped: keep every stride within MAX_NUMEL either way (the
        // kernels' walks add a stride to an offset).
        layout.strides[d] = l.strides[d]
            .checked_mul(step)
            .filter(|&s| s <= crate::tensor::MAX_NUMEL)
            .unwrap_or(l.strides[d]);
        self.view_op(
            "SliceBackward",
            layout,
            SliceBackward {
                input_shape: self.shape().to_vec(),
                dim: d,
                start,
                step,
            },
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

// ---------------------------------------------------------------- gathering copies

/// Outer count, dim size and inner count of a contiguous shape split at `dim`.
fn split_at(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

/// Checks index values against `size` and returns them as usize.
fn checked_indices(
    op: &'static str,
    index: &Tensor,
    size: usize,
    dim: usize,
) -> Result<Vec<usize>> {
    if index.dtype() != DType::I64 {
        return Err(Error::dtype(
            op,
            format!(
                "index must be an i64 tensor, got {}; convert with .to_dtype(DType::I64)",
                index.dtype()
            ),
        ));
    }
    index
        .to_vec::<i64>()
        .into_iter()
        .map(|i| {
            // Negative indices are out of bounds here, as in PyTorch (only
            // dims and `select` count from the end).
            if i < 0 || i >= size as i64 {
                Err(Error::Invalid(format!(
                    "{op}: index {i} is out of bounds for dimension {dim} with size {size}"
                )))
            } else {
                Ok(i as usize)
            }
        })
        .collect()
}

/// The rows `idx` of dim `dim` of a contiguous `src` of `shape`, into a
/// new buffer of `out_shape` (a checked shape: `shape` with `idx.len()` at
/// `dim`).
fn gather_rows<T: Element>(
    src: &[T],
    shape: &[usize],
    dim: usize,
    idx: &[usize],
    out_shape: &[usize],
) -> Vec<T> {
    let (outer, size, inner) = split_at(shape, dim);
    let mut out = memory::alloc("index_select", out_shape, outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            let s = (o * size + i) * inner;
            out.extend_from_slice(&src[s..s + inner]);
        }
    }
    out
}

struct IndexSelectBackward {
    input_shape: Vec<usize>,
    dim: usize,
    idx: Vec<usize>,
}
impl Backward for IndexSelectBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if g.device().is_cuda() {
            let z = Tensor::zeros_opts(&self.input_shape, &g.options());
            let idx: Vec<i64> = self.idx.iter().map(|&i| i as i64).collect();
            let n = idx.len();
            let index = Tensor::from_vec(idx, [n]).to(&g.device());
            let lidx = select_index_layout(&index, g.shape(), self.dim);
            let (lz, ds) = indexed_layout(z.layout(), g.shape(), self.dim);
            crate::backend::cuda::ops::scatter_add(&z, &lz, ds, &index, &lidx, g, g.layout());
            return vec![Some(z)];
        }
        let g = g.contiguous();
        let (outer, size, inner) = split_at(&self.input_shape, self.dim);
        let gb = g.storage().read();
        let off = g.layout().offset;
        macro_rules! acc {
            ($v:expr, $t:ty) => {{
                // The input may have been an expanded view of any size.
                let n = outer * size * inner;
                let mut out: Vec<$t> =
                    memory::try_zeros("index_select backward", &self.input_shape, n).or_panic();
                let src = &$v[off..];
                for o in 0..outer {
                    for (k, &i) in self.idx.iter().enumerate() {
                        let s = (o * self.idx.len() + k) * inner;
                        let d = (o * size + i) * inner;
                        for (a, &b) in out[d..d + inner].iter_mut().zip(&src[s..s + inner]) {
                            *a += b;
                        }
                    }
                }
                Buffer::from_vec(out)
            }};
        }
        let buf = match &*gb {
            Buffer::F32(v) => acc!(v, f32),
            Buffer::F64(v) => acc!(v, f64),
            _ => unreachable!("gradients are float"),
        };
        vec![Some(Tensor::from_buffer(
            buf,
            &self.input_shape,
            g.device(),
        ))]
    }
}

/// `l` restricted to `shape` (no larger in any dim) with dim `dim`'s
/// stride moved out: the layout a gather/scatter kernel walks, and that stride.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn indexed_layout(l: &Layout, shape: &[usize], dim: usize) -> (Layout, usize) {
    let mut strides = l.strides.clone();
    let ds = strides[dim];
    strides[dim] = 0;
    (
        Layout {
            shape: shape.to_vec(),
            strides,
            offset: l.offset,
        },
        ds,
    )
}

/// The 1-D (or 0-d) index of `index_select` laid out over the result's `shape`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn select_index_layout(index: &Tensor, shape: &[usize], dim: usize) -> Layout {
    let mut strides = vec![0; shape.len()];
    if index.ndim() == 1 {
        strides[dim] = index.strides()[0];
    }
    Layout {
        shape: shape.to_vec(),
        strides,
        offset: index.layout().offset,
    }
}

/// Walks the positions of an index tensor of `ishape` and yields, for each,
/// (row-major position, offset of the same coordinates in a contiguous tensor
/// of `tshape` with coordinate `dim` set to zero).
fn for_each_coord(ishape: &[usize], tshape: &[usize], dim: usize, mut f: impl FnMut(usize, usize)) {
    let tstrides = contiguous_strides(tshape);
    let mut masked = tstrides.clone();
    masked[dim] = 0;
    let n: usize = ishape.iter().product();
    let mut pos = 0;
    cpu::walk(ishape, [&masked], [0], 0, n, |[o]| {
        f(pos, o);
        pos += 1;
    });
}

struct GatherBackward {
    input_shape: Vec<usize>,
    dim: usize,
    index: SavedTensor,
}
impl Backward for GatherBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let z = Tensor::zeros_opts(&self.input_shape, &g.options());
        vec![Some(z.scatter_add(self.dim as isize, self.index.get(), g))]
    }
}

struct ScatterAddBackward {
    dim: usize,
    index: SavedTensor,
    src_shape: Vec<usize>,
}
impl Backward for ScatterAddBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let gs = g.gather(self.dim as isize, self.index.get());
        // src may be larger than index: the elements it did not use get zero.
        let gs = if gs.shape() == self.src_shape.as_slice() {
            gs
        } else {
            let z = Tensor::zeros_opts(&self.src_shape, &gs.options());
            let mut used = z.clone();
            for (d, &n) in gs.shape().iter().enumerate() {
                used = used.narrow(d as isize, 0, n);
            }
            used.copy_(&gs);
            z
        };
        vec![Some(g.clone()), Some(gs)]
    }
}

fn check_index_shape(op: &'static str, input: &Tensor, index: &Tensor, dim: usize) -> Result<()> {
    let ok = index.ndim() == input.ndim()
        && (0..input.ndim()).all(|d| d == dim || index.shape()[d] <= input.shape()[d]);
    if ok {
        Ok(())
    } else {
        Err(Error::shape(
            op,
            format!(
                "index of shape {:?} does not fit input of shape {:?}: it needs the same \
                 number of dims, and no larger than the input outside dim {dim}",
                index.shape(),
                input.shape()
            ),
        ))
    }
}

impl Tensor {
    /// The entries at `index` (1-D i64) along `dim` (`torch.index_select`).
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// let x = tensor![[1., 2.], [3., 4.], [5., 6.]];
    /// assert_eq!(x.index_select(0, &tensor![2, 0]).to_vec::<f32>(), vec![5., 6., 1., 2.]);
    /// ```
    #[track_caller]
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Tensor {
        let d = norm_dim("index_select", dim, self.ndim()).or_panic();
        assert!(
            index.ndim() <= 1,
            "index_select: index must be 0-d or 1-d, got shape {:?}",
            index.shape()
        );
        let idx = checked_indices("index_select", index, self.shape()[d], d).or_panic();
        let mut shape = self.shape().to_vec();
        shape[d] = idx.len();
        // More indices than the dim's size can make a count that overflows.
        checked_numel("index_select", &shape).or_panic();
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            let index = index.to(&self.device());
            let lidx = select_index_layout(&index, &shape, d);
            let (lsrc, ds) = indexed_layout(self.layout(), &shape, d);
            let out = crate::backend::cuda::ops::gather(self, &lsrc, ds, &index, &lidx);
            return record("IndexSelectBackward", &[self], out, || {
                IndexSelectBackward {
                    input_shape: self.shape().to_vec(),
                    dim: d,
                    idx,
                }
            });
        }
        let src = self.contiguous();
        let buf = {
            let b = src.storage().read();
            let off = src.layout().offset;
            let n = src.numel();
            let (sh, to) = (src.shape(), &shape[..]);
            match &*b {
                Buffer::F32(v) => Buffer::F32(gather_rows(&v[off..off + n], sh, d, &idx, to)),
                Buffer::F64(v) => Buffer::F64(gather_rows(&v[off..off + n], sh, d, &idx, to)),
                Buffer::I64(v) => Buffer::I64(gather_rows(&v[off..off + n], sh, d, &idx, to)),
                Buffer::Bool(v) => Buffer::Bool(gather_rows(&v[off..off + n], sh, d, &idx, to)),
            }
        };
        let out = Tensor::from_buffer(buf, &shape, self.device());
        record("IndexSelectBackward", &[self], out, || {
            IndexSelectBackward {
                input_shape: self.shape().to_vec(),
                dim: d,
                idx,
            }
        })
    }

    /// `out[i][j][k] = self[i][index[i][j][k]][k]` for dim 1, and so on (`torch.gather`).
    #[track_caller]
    pub fn gather(&self, dim: isize, index: &Tensor) -> Tensor {
        let d = norm_dim("gather", dim, self.ndim()).or_panic();
        check_index_shape("gather", self, index, d).or_panic();
        let idx = checked_indices("gather", index, self.shape()[d], d).or_panic();
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            let index = index.to(&self.device());
            let (lsrc, ds) = indexed_layout(self.layout(), index.shape(), d);
            let out = crate::backend::cuda::ops::gather(self, &lsrc, ds, &index, index.layout());
            return record("GatherBackward", &[self], out, || GatherBackward {
                input_shape: self.shape().to_vec(),
                dim: d,
                index: SavedTensor::new(&index),
            });
        }
        let src = self.contiguous();
        let dstride = contiguous_strides(src.shape())[d];
        let buf = {
            let b = src.storage().read();
            let off = src.layout().offset;
            macro_rules! g {
                ($v:expr) => {{
                    let mut out = memory::alloc("gather", index.shape(), idx.len());
                    for_each_coord(index.shape(), src.shape(), d, |pos, o| {
                        out.push($v[off + o + idx[pos] * dstride]);
                    });
                    Buffer::from_vec(out)
                }};
            }
            match &*b {
                Buffer::F32(v) => g!(v),
                Buffer::F64(v) => g!(v),
                Buffer::I64(v) => g!(v),
                Buffer::Bool(v) => g!(v),
            }
        };
        let out = Tensor::from_buffer(buf, index.shape(), self.device());
        record("GatherBackward", &[self], out, || GatherBackward {
            input_shape: self.shape().to_vec(),
            dim: d,
            index: SavedTensor::new(index),
        })
    }

    /// A copy of `self` with `src` added at `index` along `dim`:
    /// `out[i][index[i][j]] += src[i][j]` for dim 1 (`torch.scatter_add`).
    #[track_caller]
    pub fn scatter_add(&self, dim: isize, index: &Tensor, src: &Tensor) -> Tensor {
        let d = norm_dim("scatter_add", dim, self.ndim()).or_panic();
        check_index_shape("scatter_add", self, index, d).or_panic();
        assert!(
            src.ndim() == index.ndim()
                && index.shape().iter().zip(src.shape()).all(|(i, s)| i <= s),
            "scatter_add: src of shape {:?} must cover index of shape {:?}",
            src.shape(),
            index.shape()
        );
        let idx = checked_indices("scatter_add", index, self.shape()[d], d).or_panic();
        let out = no_grad(|| self.clone_data());
        let src_c = no_grad(|| src.to_dtype(self.dtype()).contiguous());
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            let index = index.to(&self.device());
            let src_c = src_c.to(&self.device());
            let (lout, ds) = indexed_layout(out.layout(), index.shape(), d);
            let lsrc = Layout {
                shape: index.shape().to_vec(),
                strides: src_c.strides().to_vec(),
                offset: src_c.layout().offset,
            };
            crate::backend::cuda::ops::scatter_add(
                &out,
                &lout,
                ds,
                &index,
                index.layout(),
                &src_c,
                &lsrc,
            );
            let _ = idx;
            return record("ScatterAddBackward", &[self, src], out, || {
                ScatterAddBackward {
                    dim: d,
                    index: SavedTensor::new(&index),
                    src_shape: src.shape().to_vec(),
                }
            });
        }
        let sstrides = contiguous_strides(src_c.shape());
        let dstride = contiguous_strides(self.shape())[d];
        {
            let ([sb], [ob]) =
                crate::backend::lock_storages([Some(&**src_c.storage())], [Some(out.storage())]);
            let locked = "distinct storages are each locked";
            let (sb, mut ob) = (sb.expect(locked), ob.expect(locked));
            let soff = src_c.layout().offset;
            // Source offsets: index coordinates in src's (possibly larger) shape.
            let n = index.numel();
            let mut src_offs = memory::alloc("scatter_add", index.shape(), n);
            cpu::walk(index.shape(), [&sstrides], [soff], 0, n, |[o]| {
                src_offs.push(o)
            });
            macro_rules! sc {
                ($o:expr, $s:expr) => {
                    for_each_coord(index.shape(), self.shape(), d, |pos, o| {
                        $o[o + idx[pos] * dstride] += $s[src_offs[pos]];
                    })
                };
            }
            match (&mut *ob, &*sb) {
                (Buffer::F32(o), Buffer::F32(s)) => sc!(o, s),
                (Buffer::F64(o), Buffer::F64(s)) => sc!(o, s),
                (Buffer::I64(o), Buffer::I64(s)) => sc!(o, s),
                _ => panic!("scatter_add: unsupported dtype {}", self.dtype()),
            }
        }
        record("ScatterAddBackward", &[self, src], out, || {
            ScatterAddBackward {
                dim: d,
                index: SavedTensor::new(index),
                src_shape: src.shape().to_vec(),
            }
        })
    }
}

// ---------------------------------------------------------------- cat and stack

struct CatBackward {
    dim: usize,
    sizes: Vec<usize>,
}
impl Backward for CatBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        g.split_sizes(&self.sizes, self.dim as isize)
            .into_iter()
            .map(Some)
            .collect()
    }
}

fn cat_impl(name: &'static str, tensors: &[Tensor], dim: isize) -> Result<Tensor> {
    let first = tensors.first().ok_or_else(|| {
        Error::Invalid(format!(
            "{}: expected a non-empty list of tensors",
            name_of(name)
        ))
    })?;
    let nd = first.ndim();
    if nd == 0 {
        return Err(Error::shape(
            "cat",
            "zero-dimensional tensor (at position 0) cannot be concatenated; use stack to \
             join 0-d tensors into a 1-D one, or unsqueeze(0) them first",
        ));
    }
    let d = norm_dim("cat", dim, nd)?;
    let mut dtype = first.dtype();
    for (i, t) in tensors.iter().enumerate() {
        same_device("cat", first, t)?;
        let ok = t.ndim() == nd && (0..nd).all(|k| k == d || t.shape()[k] == first.shape()[k]);
        if !ok {
            return Err(Error::shape(
                "cat",
                format!(
                    "sizes of tensors must match except in dimension {d}: tensor 0 has shape \
                     {:?} but tensor {i} has shape {:?}; make the other dims agree (reshape, \
                     narrow or expand), or join along the dim where they differ",
                    first.shape(),
                    t.shape()
                ),
            ));
        }
        dtype = DType::promote(dtype, t.dtype());
    }
    // Made after the output's count (and on the CPU its buffer) is checked:
    // copying huge expanded parts first would fail with a less useful error.
    let make_parts = || -> Vec<Tensor> {
        no_grad(|| {
            tensors
                .iter()
                .map(|t| t.to_dtype(dtype).contiguous())
                .collect()
        })
    };
    let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[d]).collect();
    let mut shape = first.shape().to_vec();
    let op = name_of(name);
    // Checked: many large parts can add up past what a tensor can hold.
    shape[d] = sizes
        .iter()
        .try_fold(0usize, |acc, &s| acc.checked_add(s))
        .ok_or_else(|| {
            Error::shape(
                op,
                format!(
                    "the sizes of dimension {d} of the tensors add up past usize::MAX \
                     ({} tensors of shape {:?} first); join fewer or smaller tensors",
                    tensors.len(),
                    first.shape()
                ),
            )
        })?;
    let n = checked_numel(op, &shape)?;
    #[cfg(feature = "cuda")]
    if first.device().is_cuda() {
        let parts = make_parts();
        let c = crate::backend::cuda::ops::buf(&parts[0]).ctx().clone();
        let out = crate::backend::cuda::ops::empty(&c, dtype, &shape);
        let mut start = 0;
        for (p, &size) in parts.iter().zip(&sizes) {
            let view = out
                .with_layout(out.layout().clone())
                .narrow(d as isize, start, size);
            crate::backend::cuda::ops::copy_into(&view, p, p.layout());
            start += size;
        }
        let refs: Vec<&Tensor> = tensors.iter().collect();
        return Ok(record(name, &refs, out, || CatBackward { dim: d, sizes }));
    }
    let (outer, _, inner) = split_at(&shape, d);
    let mut buf = match dtype {
        DType::F32 => Buffer::F32(memory::try_alloc(op, &shape, n)?),
        DType::F64 => Buffer::F64(memory::try_alloc(op, &shape, n)?),
        DType::I64 => Buffer::I64(memory::try_alloc(op, &shape, n)?),
        DType::Bool => Buffer::Bool(memory::try_alloc(op, &shape, n)?),
    };
    let parts = make_parts();
    // In the global lock order, each storage once (`cat([x, x])`).
    let storages: Vec<&crate::backend::Storage> = parts.iter().map(|p| &**p.storage()).collect();
    let locked = crate::backend::read_storages(&storages);
    let guards: Vec<&Buffer> = (0..parts.len())
        .map(|i| crate::backend::ReadLocked::buffer(&locked, i))
        .collect();
    macro_rules! join {
        ($out:expr, $variant:ident) => {{
            let slices: Vec<&[_]> = guards
                .iter()
                .zip(&parts)
                .map(|(g, p)| match *g {
                    Buffer::$variant(v) => &v[p.layout().offset..p.layout().offset + p.numel()],
                    _ => unreachable!("parts were cast to one dtype"),
                })
                .collect();
            for o in 0..outer {
                for (s, &size) in slices.iter().zip(&sizes) {
                    $out.extend_from_slice(&s[o * size * inner..(o + 1) * size * inner]);
                }
            }
        }};
    }
    match &mut buf {
        Buffer::F32(out) => join!(out, F32),
        Buffer::F64(out) => join!(out, F64),
        Buffer::I64(out) => join!(out, I64),
        Buffer::Bool(out) => join!(out, Bool),
    }
    drop(guards);
    let out = Tensor::from_buffer(buf, &shape, first.device());
    let refs: Vec<&Tensor> = tensors.iter().collect();
    Ok(record(name, &refs, out, || CatBackward { dim: d, sizes }))
}

fn name_of(node: &'static str) -> &'static str {
    if node == "StackBackward" {
        "stack"
    } else {
        "cat"
    }
}

impl Tensor {
    /// Joins tensors along an existing `dim` (`torch.cat`).
    ///
    /// ```
    /// use deriv_runtime::{tensor, Tensor};
    /// let c = Tensor::cat(&[tensor![[1., 2.]], tensor![[3., 4.]]], 0);
    /// assert_eq!(c.shape(), &[2, 2]);
    /// ```
    #[track_caller]
    pub fn cat(tensors: &[Tensor], dim: isize) -> Tensor {
        Self::try_cat(tensors, dim).or_panic()
    }

    /// Fallible [`cat`](Self::cat).
    pub fn try_cat(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        cat_impl("CatBackward", tensors, dim)
    }

    /// Joins same-shaped tensors along a new `dim` (`torch.stack`).
    #[track_caller]
    pub fn stack(tensors: &[Tensor], dim: isize) -> Tensor {
        Self::try_stack(tensors, dim).or_panic()
    }

    /// Fallible [`stack`](Self::stack).
    pub fn try_stack(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::Invalid("stack: expected a non-empty list of tensors".into()))?;
        for (i, t) in tensors.iter().enumerate() {
            if t.shape() != first.shape() {
                return Err(Error::shape(
                    "stack",
                    format!(
                        "stack expects each tensor to be equal size, but got {:?} at entry 0 \
                         and {:?} at entry {i}; make the shapes equal, or use cat to join \
                         along an existing dim",
                        first.shape(),
                        t.shape()
                    ),
                ));
            }
        }
        let d = norm_dim("stack", dim, first.ndim() + 1)? as isize;
        let parts: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(d)).collect();
        cat_impl("StackBackward", &parts, d)
    }
}
