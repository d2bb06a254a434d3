use super::*;
use crate::autograd::{GradSlot, Op, Out, Spec};

// ---------------------------------------------------------------- gathering copies

/// Outer count, dim size and inner count of a contiguous shape split at `dim`.
pub(super) fn split_at(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

/// Checks index values against `size` and returns them as usize.
pub(super) fn checked_indices(
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
pub(super) fn gather_rows<T: Element>(
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

/// dL/dx of `index_select`: each row of `g` added to the input row it came from.
pub(super) fn index_select_backward(
    g: &Tensor,
    input_shape: &[usize],
    dim: usize,
    index: &Tensor,
) -> Tensor {
    #[cfg(feature = "cuda")]
    if g.device().is_cuda() {
        let z = Tensor::zeros_opts(input_shape, &g.options());
        let index = index.to(&g.device());
        let lidx = select_index_layout(&index, g.shape(), dim);
        let (lz, ds) = indexed_layout(z.layout(), g.shape(), dim);
        crate::backend::cuda::ops::scatter_add(
            z.array(),
            &lz,
            ds,
            index.array(),
            &lidx,
            g.array(),
            g.layout(),
        );
        return z;
    }
    // Checked by the forward.
    let idx: Vec<usize> = index.to_vec::<i64>().iter().map(|&i| i as usize).collect();
    let g = g.contiguous();
    let (outer, size, inner) = split_at(input_shape, dim);
    let gb = g.storage().read();
    let off = g.layout().offset;
    macro_rules! acc {
        ($v:expr, $t:ty) => {{
            // The input may have been an expanded view of any size.
            let n = outer * size * inner;
            let mut out: Vec<$t> =
                memory::try_zeros("index_select backward", input_shape, n).or_panic();
            let src = &$v[off..];
            for o in 0..outer {
                for (k, &i) in idx.iter().enumerate() {
                    let s = (o * idx.len() + k) * inner;
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
    Tensor::from_buffer(buf, input_shape, g.device())
}

/// `l` restricted to `shape` (no larger in any dim) with dim `dim`'s
/// stride moved out: the layout a gather/scatter kernel walks, and that stride.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) fn indexed_layout(l: &Layout, shape: &[usize], dim: usize) -> (Layout, usize) {
    let mut strides = l.strides.clone();
    let ds = strides[dim];
    strides[dim] = 0;
    (
        Layout {
            shape: shape.into(),
            strides,
            offset: l.offset,
        },
        ds,
    )
}

/// The 1-D (or 0-d) index of `index_select` laid out over the result's `shape`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) fn select_index_layout(index: &Tensor, shape: &[usize], dim: usize) -> Layout {
    let mut strides = vec![0; shape.len()];
    if index.ndim() == 1 {
        strides[dim] = index.strides()[0];
    }
    Layout {
        shape: shape.into(),
        strides: strides.into(),
        offset: index.layout().offset,
    }
}

/// Walks the positions of an index tensor of `ishape` and yields, for each,
/// (row-major position, offset of the same coordinates in a contiguous tensor
/// of `tshape` with coordinate `dim` set to zero).
pub(super) fn for_each_coord(
    ishape: &[usize],
    tshape: &[usize],
    dim: usize,
    mut f: impl FnMut(usize, usize),
) {
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

pub(super) fn check_index_shape(
    op: &'static str,
    input: &Tensor,
    index: &Tensor,
    dim: usize,
) -> Result<()> {
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

/// `x.index_select(dim, index)` (`torch.index_select`): inputs `[x, index]`,
/// the index 0-d or 1-d i64.
#[derive(Clone, Copy, Debug)]
pub struct IndexSelect {
    /// The dim indexed (negative counts from the end).
    pub dim: isize,
}

impl Op for IndexSelect {
    const NAME: &'static str = "IndexSelectBackward";
    const OP: &'static str = "index_select";
    /// The input's shape and the index.
    type Saved = (Vec<usize>, Tensor);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (src, index) = (x[0], x[1]);
        let d = norm_dim("index_select", self.dim, src.ndim())?;
        if index.ndim() > 1 {
            return Err(Error::shape(
                "index_select",
                format!("index must be 0-d or 1-d, got shape {:?}", index.shape()),
            ));
        }
        let mut shape = src.shape().to_vec();
        shape[d] = index.numel();
        // More indices than the dim's size can make a count that overflows.
        checked_numel("index_select", &shape)?;
        Ok(Spec {
            shape: shape.into(),
            dtype: src.dtype(),
            device: src.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (src, index) = (x[0], x[1]);
        let d = norm_dim("index_select", self.dim, src.ndim()).expect("checked by spec");
        match checked_indices("index_select", index, src.shape()[d], d) {
            Ok(idx) => out.set(index_select_rows(src, d, index, &idx, &out.spec().shape)),
            Err(e) => out.fail(e),
        }
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].shape().to_vec(), x[1].clone())
    }

    fn backward(&self, (shape, index): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let d = norm_dim("index_select", self.dim, shape.len()).expect("checked by spec");
        grads[0].add(index_select_backward(g, shape, d, index))
    }
}

/// The rows `idx` (the values of `index`) of dim `d` of `src`, as a new
/// tensor of `shape`.
fn index_select_rows(
    src: &Tensor,
    d: usize,
    index: &Tensor,
    idx: &[usize],
    shape: &[usize],
) -> Tensor {
    #[cfg(feature = "cuda")]
    if src.device().is_cuda() {
        let index = index.to(&src.device());
        let lidx = select_index_layout(&index, shape, d);
        let (lsrc, ds) = indexed_layout(src.layout(), shape, d);
        return Tensor::from_array(crate::backend::cuda::ops::gather(
            src.array(),
            &lsrc,
            ds,
            index.array(),
            &lidx,
        ));
    }
    let _ = index;
    let src = src.contiguous();
    let buf = {
        let b = src.storage().read();
        let off = src.layout().offset;
        let n = src.numel();
        let sh = src.shape();
        match &*b {
            Buffer::F32(v) => Buffer::F32(gather_rows(&v[off..off + n], sh, d, idx, shape)),
            Buffer::F64(v) => Buffer::F64(gather_rows(&v[off..off + n], sh, d, idx, shape)),
            Buffer::I64(v) => Buffer::I64(gather_rows(&v[off..off + n], sh, d, idx, shape)),
            Buffer::Bool(v) => Buffer::Bool(gather_rows(&v[off..off + n], sh, d, idx, shape)),
        }
    };
    Tensor::from_buffer(buf, shape, src.device())
}

/// `x.gather(dim, index)` (`torch.gather`): inputs `[x, index]`.
#[derive(Clone, Copy, Debug)]
pub struct Gather {
    /// The dim indexed (negative counts from the end).
    pub dim: isize,
}

impl Op for Gather {
    const NAME: &'static str = "GatherBackward";
    const OP: &'static str = "gather";
    /// The input's shape and the index.
    type Saved = (Vec<usize>, Tensor);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (src, index) = (x[0], x[1]);
        let d = norm_dim("gather", self.dim, src.ndim())?;
        check_index_shape("gather", src, index, d)?;
        Ok(Spec {
            shape: index.shape().into(),
            dtype: src.dtype(),
            device: src.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (src, index) = (x[0], x[1]);
        let d = norm_dim("gather", self.dim, src.ndim()).expect("checked by spec");
        match checked_indices("gather", index, src.shape()[d], d) {
            Ok(idx) => out.set(gather_elements(src, d, index, &idx)),
            Err(e) => out.fail(e),
        }
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].shape().to_vec(), x[1].clone())
    }

    fn backward(&self, (shape, index): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        grads[0].add(gather_backward(shape, self.dim, index, g))
    }
}

/// dL/dx of a gather from an input of `shape`: `g` scattered (added) back
/// to the positions `index` took along `dim` (`max_dim`'s values use it too).
pub(crate) fn gather_backward(shape: &[usize], dim: isize, index: &Tensor, g: &Tensor) -> Tensor {
    Tensor::zeros_opts(shape, &g.options()).scatter_add(dim, index, g)
}

/// `src`'s elements at `idx` (the values of `index`) along `d`, in `index`'s shape.
fn gather_elements(src: &Tensor, d: usize, index: &Tensor, idx: &[usize]) -> Tensor {
    #[cfg(feature = "cuda")]
    if src.device().is_cuda() {
        let index = index.to(&src.device());
        let (lsrc, ds) = indexed_layout(src.layout(), index.shape(), d);
        return Tensor::from_array(crate::backend::cuda::ops::gather(
            src.array(),
            &lsrc,
            ds,
            index.array(),
            index.layout(),
        ));
    }
    let src = src.contiguous();
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
    Tensor::from_buffer(buf, index.shape(), src.device())
}

/// `x.scatter_add(dim, index, src)` (`torch.scatter_add`): inputs
/// `[x, index, src]`; a copy of `x` with `src` added at `index`.
#[derive(Clone, Copy, Debug)]
pub struct ScatterAdd {
    /// The dim indexed (negative counts from the end).
    pub dim: isize,
}

impl Op for ScatterAdd {
    const NAME: &'static str = "ScatterAddBackward";
    const OP: &'static str = "scatter_add";
    /// The index and `src`'s shape.
    type Saved = (Tensor, Vec<usize>);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (dst, index, src) = (x[0], x[1], x[2]);
        let d = norm_dim("scatter_add", self.dim, dst.ndim())?;
        check_index_shape("scatter_add", dst, index, d)?;
        let covers = src.ndim() == index.ndim()
            && index.shape().iter().zip(src.shape()).all(|(i, s)| i <= s);
        if !covers {
            return Err(Error::shape(
                "scatter_add",
                format!(
                    "src of shape {:?} must cover index of shape {:?}",
                    src.shape(),
                    index.shape()
                ),
            ));
        }
        Ok(Spec::like(dst))
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (dst, index, src) = (x[0], x[1], x[2]);
        let d = norm_dim("scatter_add", self.dim, dst.ndim()).expect("checked by spec");
        match checked_indices("scatter_add", index, dst.shape()[d], d) {
            Ok(idx) => out.set(scatter_added(dst, d, index, &idx, src)),
            Err(e) => out.fail(e),
        }
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[1].clone(), x[2].shape().to_vec())
    }

    /// `x` gets `g`; `src` gets `g` gathered at `index` (zero where `src`
    /// is larger than the index and was not used).
    fn backward(&self, (index, src_shape): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        if grads[0].needed() {
            grads[0].add(g.clone());
        }
        if !grads[2].needed() {
            return;
        }
        let gs = g.gather(self.dim, index);
        let gs = if gs.shape() == src_shape.as_slice() {
            gs
        } else {
            let z = Tensor::zeros_opts(src_shape, &gs.options());
            let mut used = z.clone();
            for (d, &n) in gs.shape().iter().enumerate() {
                used = used.narrow(d as isize, 0, n);
            }
            used.copy_(&gs);
            z
        };
        grads[2].add(gs)
    }
}

/// A copy of `dst` with `src` added at `idx` (the values of `index`) along `d`.
fn scatter_added(dst: &Tensor, d: usize, index: &Tensor, idx: &[usize], src: &Tensor) -> Tensor {
    let out = dst.clone_data();
    let src_c = src.to_dtype(dst.dtype()).contiguous();
    #[cfg(feature = "cuda")]
    if dst.device().is_cuda() {
        let index = index.to(&dst.device());
        let src_c = src_c.to(&dst.device());
        let (lout, ds) = indexed_layout(out.layout(), index.shape(), d);
        let lsrc = Layout {
            shape: index.shape().into(),
            strides: src_c.strides().into(),
            offset: src_c.layout().offset,
        };
        crate::backend::cuda::ops::scatter_add(
            out.array(),
            &lout,
            ds,
            index.array(),
            index.layout(),
            src_c.array(),
            &lsrc,
        );
        return out;
    }
    let sstrides = contiguous_strides(src_c.shape());
    let dstride = contiguous_strides(dst.shape())[d];
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
                for_each_coord(index.shape(), dst.shape(), d, |pos, o| {
                    $o[o + idx[pos] * dstride] += $s[src_offs[pos]];
                })
            };
        }
        match (&mut *ob, &*sb) {
            (Buffer::F32(o), Buffer::F32(s)) => sc!(o, s),
            (Buffer::F64(o), Buffer::F64(s)) => sc!(o, s),
            (Buffer::I64(o), Buffer::I64(s)) => sc!(o, s),
            _ => panic!("scatter_add: unsupported dtype {}", dst.dtype()),
        }
    }
    out
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
        apply(IndexSelect { dim }, &[self, index])
    }

    /// `out[i][j][k] = self[i][index[i][j][k]][k]` for dim 1, and so on (`torch.gather`).
    #[track_caller]
    pub fn gather(&self, dim: isize, index: &Tensor) -> Tensor {
        apply(Gather { dim }, &[self, index])
    }

    /// A copy of `self` with `src` added at `index` along `dim`:
    /// `out[i][index[i][j]] += src[i][j]` for dim 1 (`torch.scatter_add`).
    #[track_caller]
    pub fn scatter_add(&self, dim: isize, index: &Tensor, src: &Tensor) -> Tensor {
        apply(ScatterAdd { dim }, &[self, index, src])
    }
}
