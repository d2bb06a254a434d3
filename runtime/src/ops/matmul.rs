//! Matrix products through faer: 1-D, 2-D and batched N-D with broadcast batch
//! dims. Strides go straight to faer, so a transposed operand costs no copy.

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::reduce::sum_to;
use super::same_device;
use crate::autograd::{record, Backward, SavedTensor};
use crate::backend::{cpu, Buffer};
use crate::error::{Error, OrPanic, Result};
use crate::tensor::{broadcast_shapes, DType, Layout, Tensor};

/// Below this many multiply-adds a product runs on one thread: rayon's
/// hand-off costs more than it saves (measured with `cargo bench`).
const PAR_FLOPS: usize = 96 * 96 * 96;

/// One operand of a batched product: its data, and for each batch the offset
/// of its matrix, with the matrix's row and column strides.
struct Operand<'a, T> {
    data: &'a [T],
    offsets: Vec<usize>,
    rs: isize,
    cs: isize,
}

/// `out[b] = a[b] · b[b]` for every batch b, with out contiguous (m x n per batch).
macro_rules! gemm_batches {
    ($t:ty, $a:expr, $b:expr, $out:expr, $m:expr, $n:expr, $k:expr) => {{
        let (a, b, out, m, n, k) = ($a, $b, $out, $m, $n, $k);
        let run = |i: usize, dst: &mut [$t], par: Par| {
            if k == 0 {
                dst.iter_mut().for_each(|x| *x = 0.0);
                return;
            }
            // SAFETY: offsets and strides come from valid layouts of these
            // buffers (checked by Layout), and dst is a distinct m*n slice.
            unsafe {
                let lhs = MatRef::<$t>::from_raw_parts(
                    a.data.as_ptr().add(a.offsets[i]),
                    m,
                    k,
                    a.rs,
                    a.cs,
                );
                let rhs = MatRef::<$t>::from_raw_parts(
                    b.data.as_ptr().add(b.offsets[i]),
                    k,
                    n,
                    b.rs,
                    b.cs,
                );
                let dst = MatMut::<$t>::from_raw_parts_mut(dst.as_mut_ptr(), m, n, n as isize, 1);
                faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0, par);
            }
        };
        let per = m * n;
        let batches = a.offsets.len();
        let flops = m * n * k;
        if per == 0 {
        } else if batches > 1 && flops < PAR_FLOPS && batches * flops >= PAR_FLOPS {
            out.par_chunks_mut(per)
                .enumerate()
                .for_each(|(i, d)| run(i, d, Par::Seq));
        } else {
            let par = if flops >= PAR_FLOPS {
                Par::rayon(0)
            } else {
                Par::Seq
            };
            for (i, d) in out.chunks_mut(per).enumerate() {
                run(i, d, par);
            }
        }
    }};
}

/// Offsets of each batch's matrix for a layout whose last two dims are the
/// matrix, broadcast over `batch`.
fn batch_offsets(l: &Layout, batch: &[usize]) -> Vec<usize> {
    let nd = l.ndim();
    let own = Layout {
        shape: l.shape[..nd - 2].to_vec(),
        strides: l.strides[..nd - 2].to_vec(),
        offset: l.offset,
    }
    .broadcast_to(batch);
    let n: usize = batch.iter().product();
    let mut offs = Vec::with_capacity(n);
    cpu::walk(batch, [&own.strides], [own.offset], 0, n, |[o]| {
        offs.push(o)
    });
    offs
}

/// A tensor viewed with at least two dims: a 1-D `[k]` becomes `[1, k]` (lhs)
/// or `[k, 1]` (rhs). A plain layout change, never recorded.
fn as_matrix(t: &Tensor, lhs: bool) -> Tensor {
    if t.ndim() >= 2 {
        return t.clone();
    }
    let l = t.layout();
    let (shape, strides) = if lhs {
        (
            vec![1, l.shape[0]],
            vec![l.shape[0] * l.strides[0], l.strides[0]],
        )
    } else {
        (vec![l.shape[0], 1], vec![l.strides[0], 1])
    };
    t.with_layout(Layout {
        shape,
        strides,
        offset: l.offset,
    })
}

/// The product of two ≥2-D tensors with broadcast batch dims (no autograd).
/// Errors name `user`, the shapes the caller passed (before 1-D promotion).
fn matmul_nd(a: &Tensor, b: &Tensor, user: (&[usize], &[usize])) -> Result<Tensor> {
    let (an, bn) = (a.ndim(), b.ndim());
    let (m, k) = (a.shape()[an - 2], a.shape()[an - 1]);
    let (k2, n) = (b.shape()[bn - 2], b.shape()[bn - 1]);
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
    let batch = broadcast_shapes("matmul", &a.shape()[..an - 2], &b.shape()[..bn - 2]).map_err(
        |e| match e {
            Error::Shape { op, msg } => Error::Shape {
                op,
                msg: format!(
                    "the batch dims (all but the last two) of shapes {:?} and {:?} must \
                     broadcast, but {msg}",
                    user.0, user.1
                ),
            },
            e => e,
        },
    )?;
    let a_offs = batch_offsets(a.layout(), &batch);
    let b_offs = batch_offsets(b.layout(), &batch);
    let mut shape = batch.clone();
    shape.extend([m, n]);
    let total: usize = shape.iter().product();
    let (al, bl) = (a.layout(), b.layout());
    let buf = {
        let ga = a.storage().read();
        let gb_holder;
        let gb = if a.shares_storage(b) {
            &ga
        } else {
            gb_holder = b.storage().read();
            &gb_holder
        };
        macro_rules! go {
            ($t:ty, $x:expr, $y:expr, $variant:ident) => {{
                let mut out = vec![0 as $t; total];
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
                gemm_batches!($t, &pa, &pb, &mut out[..], m, n, k);
                Buffer::$variant(out)
            }};
        }
        match (&*ga, &**gb) {
            (Buffer::F32(x), Buffer::F32(y)) => go!(f32, x, y, F32),
            (Buffer::F64(x), Buffer::F64(y)) => go!(f64, x, y, F64),
            _ => unreachable!("operands were cast to one float dtype"),
        }
    };
    Ok(Tensor::from_buffer(buf, &shape, a.device()))
}

struct MatmulBackward {
    a: SavedTensor,
    b: SavedTensor,
    needs: [bool; 2],
}
impl Backward for MatmulBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let (a, b) = (self.a.get(), self.b.get());
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
        let da = self.needs[0].then(|| {
            let d = g2.matmul(&b2.transpose(-2, -1));
            sum_to(&d, a2.shape()).reshape(a.shape())
        });
        let db = self.needs[1].then(|| {
            let d = a2.transpose(-2, -1).matmul(&g2);
            sum_to(&d, b2.shape()).reshape(b.shape())
        });
        vec![da, db]
    }
}

impl Tensor {
    /// Matrix product with PyTorch's rules (`torch.matmul`): 1-D · 1-D is a dot
    /// product, 2-D · 2-D a matrix product, 1-D operands are promoted to a
    /// row/column and squeezed back, and leading batch dims broadcast.
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
        same_device("matmul", self, other)?;
        if self.ndim() == 0 || other.ndim() == 0 {
            return Err(Error::shape(
                "matmul",
                format!(
                    "both arguments need at least 1 dimension, got shapes {:?} and {:?}; use \
                     * to multiply by a scalar",
                    self.shape(),
                    other.shape()
                ),
            ));
        }
        let mut dt = DType::promote(self.dtype(), other.dtype());
        let int_result = !dt.is_float();
        if int_result {
            dt = DType::F64;
        }
        let a = super::elementwise::cast(self, dt);
        let b = super::elementwise::cast(other, dt);
        let out = matmul_nd(
            &as_matrix(&a, true),
            &as_matrix(&b, false),
            (self.shape(), other.shape()),
        )?;
        // Drop the dims that 1-D operands were promoted with.
        let mut shape = out.shape().to_vec();
        if other.ndim() == 1 {
            shape.pop();
        }
        if self.ndim() == 1 {
            shape.remove(shape.len() - 1 - (other.ndim() != 1) as usize);
        }
        let out = out.reshape(shape);
        if int_result {
            return Ok(out.to_dtype(DType::I64));
        }
        let name = match (self.ndim(), other.ndim()) {
            (1, 1) => "DotBackward",
            (2, 1) => "MvBackward",
            (2, 2) => "MmBackward",
            _ => "BmmBackward",
        };
        Ok(record(name, &[self, other], out, || MatmulBackward {
            a: SavedTensor::new(self),
            b: SavedTensor::new(other),
            needs: [self.requires_grad(), other.requires_grad()],
        }))
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
