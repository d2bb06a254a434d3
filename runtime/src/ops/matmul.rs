//! Matrix products through faer: 1-D, 2-D and batched N-D with broadcast batch
//! dims. Strides go straight to faer, so a transposed operand costs no copy.

use std::mem::MaybeUninit;

use faer::{Accum, MatMut, MatRef, Par};

use super::reduce::sum_to;
use super::same_device;
use crate::autograd::{try_apply, GradSlot, Op, Out, Spec};
use crate::backend::cpu::sgemm::{self, MatPtr};
use crate::backend::cpu::SharedPtr;
use crate::backend::{cpu, memory, Buffer};
use crate::error::{Error, OrPanic, Result};
use crate::tensor::{
    assert_matrix_within, broadcast_dims, broadcast_shapes, checked_numel, DType, Layout, Tensor,
};

/// Below this many multiply-adds a product runs on one thread: waking rayon's
/// workers costs more than the second thread saves. Measured on 2 cores: one
/// thread wins up to n = 160 (square f32), two win from n = 192. (Under
/// Miri, small: its tests take the split paths at small sizes.)
const PAR_FLOPS: usize = if cfg!(miri) {
    8 * 8 * 8
} else {
    176 * 176 * 176
};

/// One operand of a batched product: its data, and for each batch the offset
/// of its matrix, with the matrix's row and column strides.
struct Operand<'a, T> {
    data: &'a [T],
    offsets: Vec<usize>,
    rs: isize,
    cs: isize,
}

impl<T> Operand<'_, T> {
    /// Panics, in release builds too, unless every batch's `rows` x `cols`
    /// matrix lies inside `data`: the bounds check of the unsafe product
    /// below, once per call (O(batches), nothing per element).
    #[track_caller]
    fn assert_within(&self, rows: usize, cols: usize) {
        assert!(
            self.rs >= 0 && self.cs >= 0,
            "matmul: internal error: negative strides"
        );
        let strides = (self.rs as usize, self.cs as usize);
        for &o in &self.offsets {
            assert_matrix_within("matmul", o, (rows, cols), strides, self.data.len());
        }
    }
}

/// An element type's own kernel for small single-threaded products, where
/// faer's packing costs more than it saves; false when it does not apply.
trait SmallGemm: Sized {
    /// # Safety
    /// `a` and `b` (pointer, row stride, column stride, elements readable
    /// from the pointer on) address valid m x k and k x n matrices; `dst`
    /// holds m x n elements, row-major.
    unsafe fn small(
        _m: usize,
        _n: usize,
        _k: usize,
        _a: (*const Self, isize, isize, usize),
        _b: (*const Self, isize, isize, usize),
        _dst: &mut [MaybeUninit<Self>],
    ) -> bool {
        false
    }
}

impl SmallGemm for f32 {
    unsafe fn small(
        m: usize,
        n: usize,
        k: usize,
        a: (*const f32, isize, isize, usize),
        b: (*const f32, isize, isize, usize),
        dst: &mut [MaybeUninit<f32>],
    ) -> bool {
        let mat = |(ptr, rs, cs, len): (*const f32, isize, isize, usize)| MatPtr {
            ptr,
            rs: rs as usize,
            cs: cs as usize,
            len,
        };
        // SAFETY: forwarded from the caller (layout strides are never negative).
        unsafe { sgemm::sgemm(m, n, k, mat(a), mat(b), dst) }
    }
}

impl SmallGemm for f64 {}

/// `out[b] = a[b] · b[b]` for every batch b, with out contiguous (m x n per
/// batch) and possibly uninitialised: every element is written, none is read.
///
/// Big products are cut into blocks of rows (or columns, for a wide result),
/// each a single-threaded faer product on its own thread; the calling thread
/// computes one block itself (see `cpu::par_parts`). On 2 cores this beats
/// handing the whole product to faer's own parallel split by 10-50% at
/// n = 192..1024 (thread wake-ups) and matches it at n = 2048.
macro_rules! gemm_batches {
    ($t:ty, $a:expr, $b:expr, $out:expr, $m:expr, $n:expr, $k:expr) => {{
        let (a, b, out, m, n, k) = ($a, $b, $out, $m, $n, $k);
        let out: &mut [MaybeUninit<$t>] = out;
        // The bounds of everything the unsafe blocks below touch, checked
        // once per call: each batch's matrices inside their buffers, and
        // the output holding every batch's m x n block.
        a.assert_within(m, k);
        b.assert_within(k, n);
        assert!(
            a.offsets.len() == b.offsets.len()
                && m.checked_mul(n)
                    .and_then(|mn| mn.checked_mul(a.offsets.len()))
                    .is_some_and(|total| total <= out.len()),
            "matmul: internal error: an output of {} elements for {} products of {m} x {n}",
            out.len(),
            a.offsets.len()
        );
        let dst_base = SharedPtr::new(out.as_mut_ptr());
        // Rows r0..r0+rows and columns c0..c0+cols of product i, single-threaded.
        let block = |i: usize, r0: usize, rows: usize, c0: usize, cols: usize| {
            // SAFETY: offsets and strides come from valid layouts of these
            // buffers (checked above), the block lies inside product i's
            // m x n slice of `out`, and parallel blocks are disjoint. faer
            // only writes it (`Accum::Replace`: documented not to read the
            // previous values), so it may be uninitialised.
            unsafe {
                let dst = dst_base.get().add(i * m * n + r0 * n + c0);
                if k == 0 {
                    for r in 0..rows {
                        for c in 0..cols {
                            (*dst.add(r * n + c)).write(0.0);
                        }
                    }
                    return;
                }
                let a_ptr = a.data.as_ptr().add(a.offsets[i]).offset(r0 as isize * a.rs);
                let b_ptr = b.data.as_ptr().add(b.offsets[i]).offset(c0 as isize * b.cs);
                if rows == m && cols == n {
                    let whole = std::slice::from_raw_parts_mut(dst, m * n);
                    let small_a = (a_ptr, a.rs, a.cs, a.data.len() - a.offsets[i]);
                    let small_b = (b_ptr, b.rs, b.cs, b.data.len() - b.offsets[i]);
                    if <$t as SmallGemm>::small(m, n, k, small_a, small_b, whole) {
                        return;
                    }
                }
                let lhs = MatRef::<$t>::from_raw_parts(a_ptr, rows, k, a.rs, a.cs);
                let rhs = MatRef::<$t>::from_raw_parts(b_ptr, k, cols, b.rs, b.cs);
                let dst =
                    MatMut::<$t>::from_raw_parts_mut(dst.cast::<$t>(), rows, cols, n as isize, 1);
                faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0, Par::Seq);
            }
        };
        let batches = a.offsets.len();
        let flops = m * n * k;
        let threads = rayon::current_num_threads();
        if m * n == 0 || batches == 0 {
        } else if threads == 1 || batches * flops.max(1) < PAR_FLOPS {
            for i in 0..batches {
                block(i, 0, m, 0, n);
            }
        } else if flops < PAR_FLOPS {
            // Many small products: whole products per thread.
            let parts = threads.min(batches);
            cpu::par_parts(parts, |p| {
                for i in batches * p / parts..batches * (p + 1) / parts {
                    block(i, 0, m, 0, n);
                }
            });
        } else {
            // Two blocks per thread balance a busy core, but past ~1024³ each
            // block's copy of the shared operand costs more than that saves.
            let want = if flops > 1 << 30 {
                threads
            } else {
                2 * threads
            };
            // Blocks of whole 16-row (16-column) tiles along the longer side.
            let (len, split_rows) = if m >= n { (m, true) } else { (n, false) };
            let split = cpu::TileSplit::new(len, want, 16);
            for i in 0..batches {
                cpu::par_parts(split.parts, |p| {
                    let (start, size) = split.block(p);
                    if split_rows {
                        block(i, start, size, 0, n);
                    } else {
                        block(i, 0, m, start, size);
                    }
                });
            }
        }
    }};
}

/// Offsets of each batch's matrix for a layout whose last two dims are the
/// matrix, broadcast over `batch` (a checked shape).
fn batch_offsets(l: &Layout, batch: &[usize]) -> Result<Vec<usize>> {
    let nd = l.ndim();
    let own = Layout {
        shape: l.shape[..nd - 2].into(),
        strides: l.strides[..nd - 2].into(),
        offset: l.offset,
    }
    .broadcast_to(batch);
    let n = checked_numel("matmul", batch)?;
    let mut offs = memory::try_alloc("matmul", batch, n)?;
    cpu::walk(batch, [&own.strides], [own.offset], 0, n, |[o]| {
        offs.push(o)
    });
    Ok(offs)
}

/// A tensor viewed with at least two dims: a 1-D `[k]` becomes `[1, k]` (lhs)
/// or `[k, 1]` (rhs). A plain layout change, never recorded.
fn as_matrix(t: &Tensor, lhs: bool) -> Tensor {
    if t.ndim() >= 2 {
        return t.clone();
    }
    let l = t.layout();
    let (shape, strides) = if lhs {
        // The stride of the size-1 dim is never stepped; saturating keeps
        // it a plain number whatever the view.
        (
            vec![1, l.shape[0]],
            vec![l.shape[0].saturating_mul(l.strides[0]), l.strides[0]],
        )
    } else {
        (vec![l.shape[0], 1], vec![l.strides[0], 1])
    };
    t.with_layout(Layout {
        shape: shape.into(),
        strides: strides.into(),
        offset: l.offset,
    })
}

/// The broadcast batch dims of the (≥2-D) matrix operands `a` and `b`, after
/// checking that their inner dims agree; `user` are the shapes as the user
/// gave them, for the messages.
fn batch_dims(a: &[usize], b: &[usize], user: (&[usize], &[usize])) -> Result<Vec<usize>> {
    let (an, bn) = (a.len(), b.len());
    let (m, k) = (a[an - 2], a[an - 1]);
    let (k2, n) = (b[bn - 2], b[bn - 1]);
    if k != k2 {
        return Err(Error::shape(
            "matmul",
            format!(
                "shapes {:?} and {:?} cannot be multiplied ({m}x{k} and {k2}x{n}): the last \
                 dim of the first ({k}) must equal the second-to-last dim of the second ({k2}); \
                 transpose an operand with .t() or .transpose(-2, -1) if that is what you meant",
                user.0, user.1
            ),
        ));
    }
    // The count is checked on the whole output shape by the callers.
    broadcast_dims("matmul", &a[..an - 2], &b[..bn - 2]).map_err(|e| match e {
        Error::Shape { op, msg } => Error::Shape {
            op,
            msg: format!(
                "the batch dims (all but the last two) of shapes {:?} and {:?} must \
                 broadcast, but {msg}",
                user.0, user.1
            ),
        },
        e => e,
    })
}

/// The shape of `a.matmul(b)` with PyTorch's rules (1-D operands promoted and
/// squeezed back, batch dims broadcast), or the error naming both shapes.
pub(crate) fn output_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return Err(Error::shape(
            "matmul",
            format!(
                "both arguments need at least 1 dimension, got shapes {a:?} and {b:?}; use \
                 * to multiply by a scalar"
            ),
        ));
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let mut shape = batch_dims(&a2, &b2, (a, b))?;
    if a.len() > 1 {
        shape.push(a2[a2.len() - 2]);
    }
    if b.len() > 1 {
        shape.push(b2[b2.len() - 1]);
    }
    // Two valid operands can make a product whose count overflows
    // ([2^32, 1] · [1, 2^32]).
    checked_numel("matmul", &shape)?;
    Ok(shape)
}

/// The product of two ≥2-D tensors with broadcast batch dims (no autograd).
/// Errors name `user`, the shapes the caller passed (before 1-D promotion).
fn matmul_nd(a: &Tensor, b: &Tensor, user: (&[usize], &[usize])) -> Result<Tensor> {
    let (an, bn) = (a.ndim(), b.ndim());
    let (m, k) = (a.shape()[an - 2], a.shape()[an - 1]);
    let n = b.shape()[bn - 1];
    let batch = batch_dims(a.shape(), b.shape(), user)?;
    let mut shape = batch.clone();
    shape.extend([m, n]);
    let total = checked_numel("matmul", &shape)?;
    #[cfg(feature = "cuda")]
    if a.device().is_cuda() {
        return Ok(Tensor::from_array(crate::backend::cuda::ops::matmul(
            a.array(),
            b.array(),
            &batch,
        )));
    }
    if total == 0 {
        // Nothing to compute (and the batch may be huge with m or n zero).
        return Ok(Tensor::zeros_opts(&shape, &a.options()));
    }
    let (al, bl) = (a.layout(), b.layout());
    macro_rules! go {
        ($t:ty, $x:expr, $y:expr, $variant:ident) => {{
            // Not zeroed: the product writes every element (see gemm_batches).
            // Allocated before the batch offsets, which are smaller.
            let mut out: Vec<$t> = memory::try_alloc("matmul", &shape, total)?;
            let (a_offs, b_offs) = (batch_offsets(al, &batch)?, batch_offsets(bl, &batch)?);
            let pa = Operand {
                data: $x,
                offsets: a_offs,
                rs: al.strides[an - 2] as isize,
                cs: al.strides[an - 1] as isize,
            };
            let pb = Operand {
                data: $y,
                offsets: b_offs,
                rs: bl.strides[bn - 2] as isize,
                cs: bl.strides[bn - 1] as isize,
            };
            gemm_batches!(
                $t,
                &pa,
                &pb,
                &mut out.spare_capacity_mut()[..total],
                m,
                n,
                k
            );
            // SAFETY: gemm_batches initialised all `total` elements.
            unsafe { out.set_len(total) };
            Ok(Buffer::$variant(out))
        }};
    }
    let buf = super::read_pair(a, b, |ga, gb| -> Result<Buffer> {
        match (ga, gb) {
            (Buffer::F32(x), Buffer::F32(y)) => go!(f32, x, y, F32),
            (Buffer::F64(x), Buffer::F64(y)) => go!(f64, x, y, F64),
            _ => unreachable!("operands were cast to one float dtype"),
        }
    })?;
    Ok(Tensor::from_buffer(buf, &shape, a.device()))
}

/// Whether the last two dims of a ≥2-D tensor are laid out column-major (a
/// transposed view such as `w.t()`).
fn column_major(t: &Tensor) -> bool {
    let n = t.ndim();
    t.strides()[n - 2] == 1 && t.strides()[n - 1] != 1 && t.shape()[n - 2] > 1
}

/// dL/da and dL/db of `a.matmul(b)` (PyTorch's rules: 1-D operands, broadcast
/// batch dims) from dL/d(output) `g`; `need` skips a side. Each gradient comes
/// out in its operand's memory order: for a transposed weight
/// (`x.matmul(&w.t())`) the gradient is computed as (gᵀ·x)ᵀ, so once the
/// transpose's own backward flips it back it is contiguous like `w`, and
/// accumulating it into `w.grad()` is a straight vector add.
pub fn matmul_backward(
    g: &Tensor,
    a: &Tensor,
    b: &Tensor,
    need: [bool; 2],
) -> (Option<Tensor>, Option<Tensor>) {
    let (a2, b2) = (as_matrix(a, true), as_matrix(b, false));
    // The gradient in the promoted (≥2-D) output shape.
    let batch = broadcast_shapes(
        "matmul",
        &a2.shape()[..a2.ndim() - 2],
        &b2.shape()[..b2.ndim() - 2],
    )
    .or_panic();
    let mut gshape = batch;
    gshape.extend([a2.shape()[a2.ndim() - 2], b2.shape()[b2.ndim() - 1]]);
    let g2 = g.reshape(&gshape);
    let gt = || g2.transpose(-2, -1);
    let da = need[0].then(|| {
        // da = g·bᵀ, or (b·gᵀ)ᵀ to come out column-major like a.
        let d = if column_major(&a2) {
            b2.matmul(&gt()).transpose(-2, -1)
        } else {
            g2.matmul(&b2.transpose(-2, -1))
        };
        sum_to(&d, a2.shape()).reshape(a.shape())
    });
    let db = need[1].then(|| {
        // db = aᵀ·g, or (gᵀ·a)ᵀ to come out column-major like b.
        let d = if column_major(&b2) {
            gt().matmul(&a2).transpose(-2, -1)
        } else {
            a2.transpose(-2, -1).matmul(&g2)
        };
        sum_to(&d, b2.shape()).reshape(b.shape())
    });
    (da, db)
}

/// `a.matmul(b)` with PyTorch's rules (`torch.matmul`); its tape node is
/// named as PyTorch's for the operands' ranks (`MmBackward`, `MvBackward`,
/// `DotBackward`, `BmmBackward`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Matmul;

impl Op for Matmul {
    const NAME: &'static str = "MmBackward";
    const OP: &'static str = "matmul";
    type Saved = (Option<Tensor>, Option<Tensor>);

    fn name(&self, x: &[&Tensor]) -> &'static str {
        match (x[0].ndim(), x[1].ndim()) {
            (1, 1) => "DotBackward",
            (2, 1) => "MvBackward",
            (2, 2) => "MmBackward",
            _ => "BmmBackward",
        }
    }

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (a, b) = (x[0], x[1]);
        same_device("matmul", a, b)?;
        let shape = output_shape(a.shape(), b.shape())?.into();
        // As in PyTorch, no promotion: an f64 batch through f32 weights is a
        // mistake to report, not to paper over with an f64 result.
        if a.dtype() != b.dtype() {
            let (a, b) = (a.dtype(), b.dtype());
            return Err(Error::dtype(
                "matmul",
                format!(
                    "expected both operands to have the same dtype, but got {a} and {b}; \
                     convert one of them, e.g. with .to_dtype(DType::{a:?}) on the second \
                     or .to_dtype(DType::{b:?}) on the first"
                ),
            ));
        }
        Ok(Spec {
            shape,
            dtype: a.dtype(),
            device: a.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (a, b) = (x[0], x[1]);
        let dt = out.spec().dtype;
        // Integers multiply in f64 and come back as i64.
        let work = if dt.is_float() { dt } else { DType::F64 };
        let (ac, bc) = (
            super::elementwise::cast(a, work),
            super::elementwise::cast(b, work),
        );
        let y = match matmul_nd(
            &as_matrix(&ac, true),
            &as_matrix(&bc, false),
            (a.shape(), b.shape()),
        ) {
            Ok(y) => y,
            Err(e) => return out.fail(e),
        };
        out.set(y.reshape(out.spec().shape.as_slice()))
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, need: &[bool]) -> Self::Saved {
        // Each gradient reads the other operand and both shapes.
        let any = need.iter().any(|&n| n);
        (any.then(|| x[0].clone()), any.then(|| x[1].clone()))
    }

    fn backward(&self, s: &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let need = [grads[0].needed(), grads[1].needed()];
        // Only the shapes of the operand that is not saved are needed.
        let (a, b) = match s {
            (Some(a), Some(b)) => (a.clone(), b.clone()),
            _ => unreachable!("matmul saves both operands when either needs a gradient"),
        };
        let (da, db) = matmul_backward(g, &a, &b, need);
        if let Some(da) = da {
            grads[0].add(da);
        }
        if let Some(db) = db {
            grads[1].add(db);
        }
    }
}

impl Tensor {
    /// Matrix product with PyTorch's rules (`torch.matmul`): 1-D · 1-D is a dot
    /// product, 2-D · 2-D a matrix product, 1-D operands are promoted to a
    /// row/column and squeezed back, and leading batch dims broadcast. Both
    /// operands must have the same dtype (PyTorch refuses f32 · f64 too;
    /// elementwise ops promote, matmul does not).
    ///
    /// ```
    /// use deriv_runtime::{tensor, Tensor};
    /// let a = tensor![[1., 2.], [3., 4.]];
    /// assert_eq!(a.matmul(&a.t()).to_vec::<f32>(), vec![5., 11., 11., 25.]);
    /// let batch = Tensor::ones([8, 3, 2]).matmul(&a); // [8, 3, 2]
    /// assert_eq!(batch.shape(), &[8, 3, 2]);
    /// ```
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        self.try_matmul(other).or_panic()
    }

    /// Fallible [`matmul`](Self::matmul).
    pub fn try_matmul(&self, other: &Tensor) -> Result<Tensor> {
        try_apply(Matmul, &[self, other])
    }

    /// Matrix product of two 2-D tensors (`torch.mm`).
    #[track_caller]
    pub fn mm(&self, other: &Tensor) -> Tensor {
        assert!(
            self.ndim() == 2 && other.ndim() == 2,
            "mm: both arguments must be 2-D, got shapes {:?} and {:?}; use matmul for other ranks",
            self.shape(),
            other.shape()
        );
        self.matmul(other)
    }

    /// Dot product of two 1-D tensors of the same length (`torch.dot`).
    #[track_caller]
    pub fn dot(&self, other: &Tensor) -> Tensor {
        assert!(
            self.ndim() == 1 && other.ndim() == 1 && self.numel() == other.numel(),
            "dot: expects two 1-D tensors of the same length, got shapes {:?} and {:?}",
            self.shape(),
            other.shape()
        );
        self.matmul(other)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::tensor::Tensor;

    fn filled(shape: &[usize], seed: usize) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1009) as f32 / 1009.0 - 0.5)
            .collect();
        Tensor::from_vec(v, shape)
    }

    /// `a · b` of 2-D tensors (any strides) in f64, by the definition.
    pub(crate) fn naive(a: &Tensor, b: &Tensor) -> Vec<f64> {
        let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
        let (x, y) = (a.to_vec::<f64>(), b.to_vec::<f64>());
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    out[i * n + j] += x[i * k + p] * y[p * n + j];
                }
            }
        }
        out
    }

    fn assert_close(got: &Tensor, want: &[f64], what: &str) {
        for (i, (g, w)) in got.to_vec::<f64>().iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}: element {i}: {g} vs {w}"
            );
        }
    }

    /// The batched product's operands are checked against their buffers
    /// once per call, for every batch's matrix.
    #[test]
    fn operands_past_their_buffers_are_refused() {
        let data = vec![1f32; 8];
        let op = |offsets: Vec<usize>| super::Operand {
            data: &data,
            offsets,
            rs: 2,
            cs: 1,
        };
        op(vec![0, 4]).assert_within(2, 2);
        for offsets in [vec![0, 5], vec![usize::MAX]] {
            let e = std::panic::catch_unwind(|| op(offsets).assert_within(2, 2)).unwrap_err();
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(
                msg.starts_with("matmul: internal error: a 2 x 2 matrix"),
                "{msg}"
            );
        }
    }

    /// Every scheduling branch of `gemm_batches`: single-threaded (faer and the
    /// small kernel), row blocks, column blocks, transposed operands, whole
    /// products per thread, and an empty inner dimension.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "hours under Miri; unsafe_paths::matmul_paths_match_the_definition takes the same splits at small sizes"
    )]
    fn every_split_matches_the_definition() {
        for &(m, k, n) in &[
            (64, 64, 64),
            (200, 180, 190),
            (20, 300, 1000),
            (257, 129, 100),
        ] {
            let (a, b) = (filled(&[m, k], 1), filled(&[k, n], 2));
            assert_close(&a.matmul(&b), &naive(&a, &b), &format!("{m}x{k} . {k}x{n}"));
            let (at, bt) = (filled(&[k, m], 3).t(), filled(&[n, k], 4).t());
            assert_close(
                &at.matmul(&bt),
                &naive(&at, &bt),
                &format!("transposed {m}x{k}x{n}"),
            );
        }
        let (a, b) = (filled(&[16, 96, 80], 5), filled(&[16, 80, 96], 6));
        let c = a.matmul(&b);
        for i in 0..16 {
            let (ai, bi) = (a.select(0, i as isize), b.select(0, i as isize));
            let want = naive(&ai, &bi);
            assert_close(&c.select(0, i as isize), &want, &format!("batch {i}"));
        }
        let z = Tensor::zeros([300, 0]).matmul(&Tensor::zeros([0, 400]));
        assert_eq!(z.shape(), &[300, 400]);
        assert!(z.to_vec::<f32>().iter().all(|&x| x == 0.0));
    }
}
