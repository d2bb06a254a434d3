//! A register-tiled f32 matrix product for small single-threaded products on
//! x86-64 with AVX2 and FMA.
//!
//! faer's kernels pack both operands first, which costs ~10% at n = 64; here A
//! is read in place (one broadcast per element, any strides) and B's rows are
//! loaded straight from memory (or from one copied 16-column panel when B is
//! wide), so it needs B's columns to be contiguous and n a multiple of 16.
//! Each 6 x 16 tile of C is accumulated in 12 AVX registers over the whole k
//! loop and written once.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use crate::tensor::assert_matrix_within;

/// Rows of C per register tile.
const MR: usize = 6;
/// Columns of C per register tile (two AVX vectors).
const NR: usize = 16;

/// A matrix operand: its first element, its row and column strides, and how
/// many elements from `ptr` on belong to its buffer (for the bounds check).
#[derive(Clone, Copy)]
pub(crate) struct MatPtr {
    pub(crate) ptr: *const f32,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
    pub(crate) len: usize,
}

impl MatPtr {
    /// Panics, naming `op`, unless a `rows` x `cols` matrix with these
    /// strides lies inside the `len` elements from `ptr`.
    #[track_caller]
    fn assert_within(&self, op: &str, rows: usize, cols: usize) {
        assert_matrix_within(op, 0, (rows, cols), (self.rs, self.cs), self.len);
    }
}

/// `c = a · b` for `a` m x k, `b` k x n, and `c` a contiguous row-major m x n
/// block that is only written. Returns false, having written nothing, when
/// this kernel does not apply (no AVX2/FMA, `b`'s columns not contiguous, or
/// a shape it would handle worse than faer); the caller then uses faer.
///
/// Checks once per call, in release builds too, that a and b lie inside the
/// buffers their `len` describes and that `c` holds m x n elements.
///
/// # Safety
/// `a.ptr` and `b.ptr` must point at `a.len` and `b.len` readable elements.
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: MatPtr,
    b: MatPtr,
    c: &mut [MaybeUninit<f32>],
) -> bool {
    a.assert_within("matmul (sgemm)", m, k);
    b.assert_within("matmul (sgemm)", k, n);
    assert!(
        Some(c.len()) == m.checked_mul(n),
        "matmul (sgemm): internal error: an output of {} elements for a {m} x {n} product",
        c.len()
    );
    // Partial tiles of columns would need masked loads, which cost more than
    // faer's packing; fewer rows than a tile leave registers idle. Past a few
    // row tiles, a wide B or a long k makes the unpacked operands miss cache
    // and faer wins (measured on square and skinny shapes).
    if m < MR || n == 0 || !n.is_multiple_of(NR) || k == 0 || b.cs != 1 {
        return false;
    }
    if m > 2 * MR && (n > 128 || k > 512) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features are present; the caller vouches for a and b.
            unsafe { sgemm_avx2(m, n, k, a, b, c.as_mut_ptr().cast::<f32>()) };
            return true;
        }
    }
    let _ = c;
    false
}

/// [`sgemm`]'s AVX2 body: `c = a · b` by 6 x 16 register tiles.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a` and `b` address valid m x k and
/// k x n matrices (`b`'s columns contiguous, n a multiple of 16), `c` points
/// to m x n writable elements, row-major.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sgemm_avx2(m: usize, n: usize, k: usize, a: MatPtr, b: MatPtr, c: *mut f32) {
    // Rows of B 512 bytes or more apart alias in L1 and defeat the prefetcher:
    // with more than a couple of row tiles, each 16-column panel of B is then
    // copied to a contiguous buffer once and reused by every row tile (for
    // closer rows the copy costs more than it saves: measured).
    if m > 2 * MR && b.rs >= 128 {
        let mut panel: Vec<f32> = Vec::with_capacity(k * NR);
        let dst = panel.as_mut_ptr();
        let mut j = 0;
        while j < n {
            // SAFETY: columns j..j+NR and rows 0..k lie inside b; the panel
            // holds k*NR; rows i.. of a and c exist.
            unsafe {
                for p in 0..k {
                    let src = b.ptr.add(p * b.rs + j);
                    _mm256_storeu_ps(dst.add(p * NR), _mm256_loadu_ps(src));
                    _mm256_storeu_ps(dst.add(p * NR + 8), _mm256_loadu_ps(src.add(8)));
                }
                let mut i = 0;
                while i < m {
                    tile_at(m - i, k, a, i, dst, NR, c.add(i * n + j), n);
                    i += MR;
                }
            }
            j += NR;
        }
    } else {
        // Row tiles outer: a tile's rows of A stay in L1 while it sweeps B.
        let mut i = 0;
        while i < m {
            let mut j = 0;
            while j < n {
                // SAFETY: rows i.. of a and c and columns j..j+NR of b exist.
                unsafe { tile_at(m - i, k, a, i, b.ptr.add(j), b.rs, c.add(i * n + j), n) };
                j += NR;
            }
            i += MR;
        }
    }
}

/// The tile at row `i` of a: 6 rows, or the `left` that remain.
///
/// # Safety
/// As [`tile`], for the `min(left, 6)` rows from row `i` of `a`, with
/// `c_ij` at row `i` of `c`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile_at(
    left: usize,
    k: usize,
    a: MatPtr,
    i: usize,
    b_j: *const f32,
    rsb: usize,
    c_ij: *mut f32,
    ldc: usize,
) {
    // SAFETY: forwarded from the caller: rows i..i+min(left, 6) exist.
    unsafe {
        let a_i = a.ptr.add(i * a.rs);
        match left {
            1 => tile::<1>(k, a_i, a, b_j, rsb, c_ij, ldc),
            2 => tile::<2>(k, a_i, a, b_j, rsb, c_ij, ldc),
            3 => tile::<3>(k, a_i, a, b_j, rsb, c_ij, ldc),
            4 => tile::<4>(k, a_i, a, b_j, rsb, c_ij, ldc),
            5 => tile::<5>(k, a_i, a, b_j, rsb, c_ij, ldc),
            _ => tile::<MR>(k, a_i, a, b_j, rsb, c_ij, ldc),
        }
    }
}

/// One R x 16 tile: `c[q][..16] = Σ_p a[q][p] · b[p][..16]`.
///
/// # Safety
/// Called from AVX2/FMA code; `a_i` starts R rows of k elements of `a` (its
/// strides), `b_j` k rows (`rsb` apart) of 16 contiguous elements, `c_ij` R
/// rows (`ldc` apart) of 16 writable elements.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile<const R: usize>(
    k: usize,
    a_i: *const f32,
    a: MatPtr,
    b_j: *const f32,
    rsb: usize,
    c_ij: *mut f32,
    ldc: usize,
) {
    // SAFETY: the caller passes R rows of a and c and k rows of 16 columns of b;
    // the pointer past b's last row is formed with wrapping arithmetic.
    unsafe {
        let rows: [*const f32; R] = std::array::from_fn(|q| a_i.add(q * a.rs));
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut bp = b_j;
        for p in 0..k {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for q in 0..R {
                let x = _mm256_set1_ps(*rows[q].add(p * a.cs));
                acc[q][0] = _mm256_fmadd_ps(x, b0, acc[q][0]);
                acc[q][1] = _mm256_fmadd_ps(x, b1, acc[q][1]);
            }
            bp = bp.wrapping_add(rsb);
        }
        for (q, acc) in acc.iter().enumerate() {
            let cp = c_ij.add(q * ldc);
            _mm256_storeu_ps(cp, acc[0]);
            _mm256_storeu_ps(cp.add(8), acc[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape class (full and partial row tiles, packed and
    /// unpacked B panels, strided and transposed A, padded B rows) against a plain triple loop in f64.
    /// Under Miri, one small shape of each class.
    #[test]
    fn matches_naive_product() {
        let mut seed = 1u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let shapes: &[(usize, usize, usize)] = if cfg!(miri) {
            &[(6, 16, 1), (7, 16, 3), (13, 32, 2), (13, 128, 2)]
        } else {
            &[
                (6, 16, 1),
                (7, 16, 5),
                (12, 32, 64),
                (13, 48, 7),
                (64, 64, 64),
                (65, 80, 33),
                (100, 32, 129),
                (6, 96, 2),
                (30, 128, 20),
                (12, 256, 40),
            ]
        };
        for &(m, n, k) in shapes {
            for a_transposed in [false, true] {
                let ldb = n + 3;
                let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
                let b: Vec<f32> = (0..k * ldb).map(|_| rnd()).collect();
                let (rs, cs) = if a_transposed { (1, m) } else { (k, 1) };
                let mut c = vec![MaybeUninit::<f32>::uninit(); m * n];
                // SAFETY: a is m x k with strides (rs, cs), b is k x n with
                // row stride ldb >= n; c holds m * n.
                let ran = unsafe {
                    sgemm(
                        m,
                        n,
                        k,
                        MatPtr {
                            ptr: a.as_ptr(),
                            rs,
                            cs,
                            len: a.len(),
                        },
                        MatPtr {
                            ptr: b.as_ptr(),
                            rs: ldb,
                            cs: 1,
                            len: b.len(),
                        },
                        &mut c,
                    )
                };
                // Built with the features (as Miri's CI run is), it runs.
                assert!(ran || !cfg!(all(target_feature = "avx2", target_feature = "fma")));
                if !ran {
                    // No AVX2/FMA on this machine: nothing to check.
                    return;
                }
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|p| a[i * rs + p * cs] as f64 * b[p * ldb + j] as f64)
                            .sum();
                        // SAFETY: sgemm wrote all m * n elements (it ran).
                        let got = unsafe { c[i * n + j].assume_init() } as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()) * k as f64,
                            "m={m} n={n} k={k} at ({i},{j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// The kernel checks, once per call, that both operands lie inside the
    /// lengths their `MatPtr`s give and that `c` is m x n, before it
    /// touches memory (a wrapped shape once walked 2^62 rows of a 4-element
    /// buffer here).
    #[test]
    fn refuses_operands_past_their_buffers() {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        let a = [1f32; 96];
        let mut c = vec![MaybeUninit::<f32>::uninit(); 96];
        let mat = |rs, len| MatPtr {
            ptr: a.as_ptr(),
            rs,
            cs: 1,
            len,
        };
        let run = |m: usize, k: usize, a: MatPtr, b: MatPtr, c: &mut [MaybeUninit<f32>]| {
            let r = catch_unwind(AssertUnwindSafe(|| unsafe { sgemm(m, 16, k, a, b, c) }));
            r.expect_err("a panic")
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default()
        };
        // 6 x 16 A needs 96 elements; claiming 95 is refused.
        let msg = run(6, 16, mat(16, 95), mat(16, 96), &mut c[..96]);
        assert!(
            msg.starts_with("matmul (sgemm): internal error: a 6 x 16 matrix"),
            "{msg}"
        );
        let msg = run(6, 6, mat(6, 36), mat(16, 95), &mut c[..96]);
        assert!(
            msg.contains("a 6 x 16 matrix with strides (16, 1)"),
            "{msg}"
        );
        // 2^62 + 1 rows, as the wrapped shape of issue 15 asked for.
        let msg = run((1 << 62) + 1, 4, mat(4, 4), mat(16, 96), &mut c[..96]);
        assert!(msg.contains("internal error"), "{msg}");
        let msg = run(6, 6, mat(6, 36), mat(16, 96), &mut c[..95]);
        assert!(
            msg.contains("an output of 95 elements for a 6 x 16 product"),
            "{msg}"
        );
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        let a = [1f32; 256];
        let mut c = vec![MaybeUninit::<f32>::uninit(); 256];
        let a16 = MatPtr {
            ptr: a.as_ptr(),
            rs: 16,
            cs: 1,
            len: a.len(),
        };
        let b8 = MatPtr {
            ptr: a.as_ptr(),
            rs: 8,
            cs: 1,
            len: a.len(),
        };
        let b16t = MatPtr {
            ptr: a.as_ptr(),
            rs: 1,
            cs: 16,
            len: a.len(),
        };
        // SAFETY: every operand lies inside `a` (256 elements): declined
        // calls read nothing, and none of these runs.
        unsafe {
            assert!(!sgemm(5, 16, 16, a16, a16, &mut c[..80])); // fewer rows than a tile
            assert!(!sgemm(8, 8, 16, a16, b8, &mut c[..64])); // a partial column tile
            assert!(!sgemm(8, 16, 16, a16, b16t, &mut c[..128])); // B's columns strided
            assert!(!sgemm(8, 16, 0, a16, a16, &mut c[..128])); // nothing to sum
            let long = MatPtr {
                ptr: a.as_ptr(),
                rs: 0,
                cs: 0,
                len: a.len(),
            };
            assert!(!sgemm(13, 16, 600, long, long, &mut c[..208])); // k past 512
        }
    }
}
