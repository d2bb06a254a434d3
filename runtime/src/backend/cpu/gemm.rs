//! Matrix products on slices: the single-threaded kernel per float type
//! (faer, or `sgemm.rs` for small f32 products) and the split of a large
//! product into row or column blocks over the helper pool. What the Linear
//! op and the losses' fused kernels call; the backend sees pointers and
//! strides only.

use std::mem::MaybeUninit;

use faer::{Accum, MatMut, MatRef, Par};

use super::{pool, sgemm};
use crate::tensor::{assert_matrix_within, DType, Float};

/// The float element types with a single-threaded matrix product (faer's,
/// or the AVX2 kernel of `sgemm.rs` for small f32 products).
pub(crate) trait Gemm: Float {
    /// `c (+)= a · b` on one thread, for `c` row-major with row stride `ldc`.
    ///
    /// # Safety
    /// `a` and `b` address valid m x k and k x n matrices, `c` an m x n block
    /// with row stride `ldc` that nothing else touches during the call.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: Mat<Self>,
        b: Mat<Self>,
        c: *mut Self,
        ldc: usize,
        acc: bool,
    );
}

/// A matrix operand: its first element, its row and column strides, and
/// how many elements of its buffer lie from `ptr` on (for the bounds check).
#[derive(Clone, Copy)]
pub(crate) struct Mat<T> {
    ptr: *const T,
    rs: usize,
    cs: usize,
    len: usize,
}

// SAFETY: a read-only view that parallel parts of one product share while
// the buffer it points into stays locked by the caller.
unsafe impl<T: Sync> Sync for Mat<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Send for Mat<T> {}

impl<T> Mat<T> {
    /// The matrix at element `offset` of `data` with strides `rs`, `cs`.
    pub(crate) fn new(data: &[T], offset: usize, rs: usize, cs: usize) -> Self {
        let from = &data[offset..];
        Mat {
            ptr: from.as_ptr(),
            rs,
            cs,
            len: from.len(),
        }
    }
    /// The transpose (a view: strides swapped).
    pub(crate) fn t(self) -> Self {
        Mat {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
    /// Rows `r0..` of the matrix.
    fn rows_from(self, r0: usize) -> Self {
        let skip = r0 * self.rs;
        Mat {
            // SAFETY: callers stay inside the matrix.
            ptr: self.ptr.wrapping_add(skip),
            len: self.len.saturating_sub(skip),
            ..self
        }
    }
    /// Columns `c0..` of the matrix.
    fn cols_from(self, c0: usize) -> Self {
        let skip = c0 * self.cs;
        Mat {
            ptr: self.ptr.wrapping_add(skip),
            len: self.len.saturating_sub(skip),
            ..self
        }
    }
    /// Panics, naming `op`, unless a `rows` x `cols` matrix lies inside the
    /// buffer.
    #[track_caller]
    pub(crate) fn assert_within(&self, op: &str, rows: usize, cols: usize) {
        assert_matrix_within(op, 0, (rows, cols), (self.rs, self.cs), self.len);
    }
}

macro_rules! gemm_for {
    ($t:ty) => {
        impl Gemm for $t {
            unsafe fn gemm(
                m: usize,
                n: usize,
                k: usize,
                a: Mat<Self>,
                b: Mat<Self>,
                c: *mut Self,
                ldc: usize,
                acc: bool,
            ) {
                if m == 0 || n == 0 {
                    return;
                }
                if k == 0 {
                    if !acc {
                        for r in 0..m {
                            for j in 0..n {
                                // SAFETY: inside the m x n block (caller).
                                unsafe { *c.add(r * ldc + j) = 0.0 };
                            }
                        }
                    }
                    return;
                }
                if !acc && ldc == n && small_gemm::<$t>(m, n, k, a, b, c) {
                    return;
                }
                // SAFETY: forwarded from the caller.
                unsafe {
                    let lhs =
                        MatRef::<$t>::from_raw_parts(a.ptr, m, k, a.rs as isize, a.cs as isize);
                    let rhs =
                        MatRef::<$t>::from_raw_parts(b.ptr, k, n, b.rs as isize, b.cs as isize);
                    let dst = MatMut::<$t>::from_raw_parts_mut(c, m, n, ldc as isize, 1);
                    let beta = if acc { Accum::Add } else { Accum::Replace };
                    faer::linalg::matmul::matmul(dst, beta, lhs, rhs, 1.0, Par::Seq);
                }
            }
        }
    };
}
gemm_for!(f32);
gemm_for!(f64);

/// The AVX2 kernel for small f32 products (see `backend::cpu::sgemm`); false
/// when it does not apply (then faer runs).
fn small_gemm<T: Gemm>(m: usize, n: usize, k: usize, a: Mat<T>, b: Mat<T>, c: *mut T) -> bool {
    // Past two row tiles with B rows 128+ elements apart, the kernel copies B
    // into a panel it allocates each call: leave those to faer.
    if T::DTYPE != DType::F32 || (m > 12 && b.rs >= 128) {
        return false;
    }
    let cast = |x: Mat<T>| sgemm::MatPtr {
        ptr: x.ptr.cast::<f32>(),
        rs: x.rs,
        cs: x.cs,
        len: x.len,
    };
    // SAFETY: T is f32 (checked); c holds m*n elements (ldc == n, caller);
    // sgemm only writes them.
    unsafe {
        let out = std::slice::from_raw_parts_mut(c.cast::<MaybeUninit<f32>>(), m * n);
        sgemm::sgemm(m, n, k, cast(a), cast(b), out)
    }
}

// ---------------------------------------------------------------- split products

/// Products of at least this many multiply-adds are split across threads.
/// Handing a part to a spinning helper costs a few microseconds, less than a
/// rayon wake-up, so the bar is lower than the allocating matmul's.
/// (Under Miri, small: its tests take the split paths at small sizes.)
const PAR_FLOPS: usize = if cfg!(miri) { 1 << 12 } else { 1 << 21 };

/// Blocks per participant of a split product: claimed dynamically, two
/// each balance a helper that starts late (on a quiet machine one each
/// measures the same).
const BLOCKS_PER_THREAD: usize = 2;

/// `c (+)= a · b` (m x k times k x n into the contiguous m x n `c`), split
/// into row (or column) blocks across [`par_run`] when it is large. Checks
/// once per call, in release builds too, that `a` and `b` lie inside their
/// buffers and that `c` holds m x n elements, naming `op`.
///
/// # Safety
/// `a.ptr` and `b.ptr` point at `a.len` and `b.len` readable elements of
/// buffers that stay locked during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<T: Gemm>(
    op: &str,
    m: usize,
    n: usize,
    k: usize,
    a: Mat<T>,
    b: Mat<T>,
    c: &mut [T],
    acc: bool,
) {
    a.assert_within(op, m, k);
    b.assert_within(op, k, n);
    assert!(
        Some(c.len()) == m.checked_mul(n),
        "{op}: internal error: an output of {} elements for a {m} x {n} product",
        c.len()
    );
    let c = c.as_mut_ptr();
    let width = pool::par_width();
    if width == 1 || m * n * k < PAR_FLOPS || m.max(n) < 32 {
        // SAFETY: forwarded.
        unsafe { T::gemm(m, n, k, a, b, c, n, acc) };
        return;
    }
    let c = super::SharedPtr::new(c);
    let split_rows = m >= n;
    let len = if split_rows { m } else { n };
    let split = super::TileSplit::new(len, BLOCKS_PER_THREAD * width, 16);
    pool::par_run(split.parts, &|p| {
        let (start, size) = split.block(p);
        // SAFETY: the blocks are disjoint parts of c, inside the matrices.
        unsafe {
            if split_rows {
                T::gemm(
                    size,
                    n,
                    k,
                    a.rows_from(start),
                    b,
                    c.get().add(start * n),
                    n,
                    acc,
                );
            } else {
                T::gemm(
                    m,
                    size,
                    k,
                    a,
                    b.cols_from(start),
                    c.get().add(start),
                    n,
                    acc,
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split product checks, once per call, that its operands lie in
    /// their buffers and that the output is m x n, naming the op.
    #[test]
    fn gemm_refuses_operands_past_their_buffers() {
        let data = vec![1f32; 12];
        let mut out = vec![0f32; 12];
        let message = |f: &mut dyn FnMut()| -> String {
            let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("panic");
            e.downcast_ref::<String>().cloned().unwrap_or_default()
        };
        // 3 x 4 from offset 1 needs 13 elements.
        let a = Mat::new(&data, 1, 4, 1);
        let b = Mat::new(&data, 0, 4, 1);
        let msg = message(&mut || unsafe { gemm("linear", 3, 4, 4, a, b, &mut out, false) });
        assert!(
            msg.starts_with("linear: internal error: a 3 x 4 matrix"),
            "{msg}"
        );
        let (a, b3) = (Mat::new(&data, 0, 4, 1), Mat::new(&data, 0, 3, 1));
        let msg = message(&mut || unsafe { gemm("linear", 3, 3, 4, a, b3, &mut out, false) });
        assert!(
            msg.contains("an output of 12 elements for a 3 x 3 product"),
            "{msg}"
        );
        // A wrapped row count, as a wrapped shape would give.
        let msg =
            message(&mut || unsafe { gemm("linear", (1 << 62) + 1, 4, 4, a, b, &mut out, false) });
        assert!(msg.contains("internal error"), "{msg}");
        assert!(out.iter().all(|&x| x == 0.0), "nothing was written");
        // In bounds, it runs: ones · ones = 4 everywhere.
        unsafe { gemm("linear", 3, 3, 4, a, b3, &mut out[..9], false) };
        assert!(out[..9].iter().all(|&x| x == 4.0), "{out:?}");
    }
}
