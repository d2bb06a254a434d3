use super::*;

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

pub(super) struct IndexSelectBackward {
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

pub(super) struct GatherBackward {
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

pub(super) struct ScatterAddBackward {
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
                shape: index.shape().into(),
                strides: src_c.strides().into(),
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
