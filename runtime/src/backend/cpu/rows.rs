//! Row-wise kernels' helpers: rows split across the pool, and sums and
//! maxima over a row in independent lanes, so that the reduction
//! vectorises (one running total would chain every add to the one before).

use super::{par_parts, SharedPtr, PAR_THRESHOLD};
use crate::tensor::Float;

/// The width of a block of independent lanes (partial results of a
/// reduction, units of a recurrent cell): 16 f32 fill an AVX-512 register
/// (two AVX2 ones).
pub(crate) const LANES: usize = 16;

/// Calls `f(rows, out)` on blocks of whole rows of `out` (`row_len`
/// elements each) that together cover it, in parallel when `out` is
/// large: `rows` is the block's row range, `out` its elements.
pub(crate) fn par_rows<T: Send>(
    out: &mut [T],
    row_len: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [T]) + Sync,
) {
    let rows = out.len().checked_div(row_len).unwrap_or(0);
    let parts = if out.len() < PAR_THRESHOLD {
        1
    } else {
        rayon::current_num_threads().min(rows).max(1)
    };
    if parts == 1 {
        return f(0..rows, out);
    }
    let ptr = SharedPtr::new(out.as_mut_ptr());
    par_parts(parts, |p| {
        let (start, end) = (rows * p / parts, rows * (p + 1) / parts);
        // SAFETY: the blocks `start..end` of distinct parts are disjoint
        // and lie inside `out`, which outlives the parallel call.
        let block = unsafe {
            std::slice::from_raw_parts_mut(ptr.get().add(start * row_len), (end - start) * row_len)
        };
        f(start..end, block)
    });
}

/// `step` folded over `x` in [`LANES`] independent accumulators (of any
/// type: f64 ones sum f32 elements exactly enough), which `combine` then
/// joins: the loop vectorises. (For a sum the order differs from a running
/// total's by rounding only.)
#[inline(always)]
pub(crate) fn lane_fold<T: Copy, A: Copy>(
    x: &[T],
    init: A,
    step: impl Fn(A, T) -> A,
    combine: impl Fn(A, A) -> A,
) -> A {
    let mut acc = [init; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] = step(acc[l], c[l]);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, &v| step(a, v));
    acc.iter().fold(tail, |a, &v| combine(a, v))
}

/// Σ `f(x[i])` in lanes, as [`lane_fold`].
#[inline(always)]
pub(crate) fn lane_sum_of<T: Float>(x: &[T], f: impl Fn(T) -> T) -> T {
    lane_fold(x, T::ZERO, |s, v| s + f(v), |a, b| a + b)
}

/// Σ `a[i]·b[i]` in lanes, as [`lane_fold`].
#[inline(always)]
pub(crate) fn lane_dot<T: Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::ZERO; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::ZERO, |s, (&x, &y)| s + x * y);
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// The largest element; NaN if any is (PyTorch's max).
#[inline(always)]
pub(crate) fn lane_max<T: Float>(x: &[T]) -> T {
    let first = x.first().copied().unwrap_or(T::ZERO);
    let max = |m: T, v: T| if v > m || v.is_nan() { v } else { m };
    lane_fold(x, first, max, max)
}

/// The sum of the elements.
#[inline(always)]
pub(crate) fn lane_sum<T: Float>(x: &[T]) -> T {
    lane_sum_of(x, |v| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_reductions_match_plain_loops() {
        for n in [0, 1, 15, 16, 17, 100] {
            let x: Vec<f64> = (0..n)
                .map(|i| ((i * 37 % 23) as f64 - 11.0) / 3.0)
                .collect();
            let y: Vec<f64> = (0..n).map(|i| (i % 5) as f64 - 2.0).collect();
            let sum: f64 = x.iter().sum();
            assert!((lane_sum(&x) - sum).abs() < 1e-12, "sum of {n}");
            let dot: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
            assert!((lane_dot(&x, &y) - dot).abs() < 1e-12, "dot of {n}");
            let squares: f64 = x.iter().map(|v| v * v).sum();
            assert!(
                (lane_sum_of(&x, |v| v * v) - squares).abs() < 1e-12,
                "squares of {n}"
            );
            if n > 0 {
                let max = x.iter().copied().fold(f64::MIN, f64::max);
                assert_eq!(lane_max(&x), max, "max of {n}");
                let mut with_nan = x.clone();
                with_nan[n / 2] = f64::NAN;
                assert!(lane_max(&with_nan).is_nan(), "NaN in {n}");
            }
        }
    }

    #[test]
    fn par_rows_covers_every_row_once() {
        let (rows, len) = (1000, 64);
        let mut out = vec![0usize; rows * len];
        par_rows(&mut out, len, |range, block| {
            assert_eq!(block.len(), range.len() * len);
            for (r, row) in range.zip(block.chunks_exact_mut(len)) {
                row.iter_mut().for_each(|v| *v += r + 1);
            }
        });
        assert!(out
            .chunks(len)
            .enumerate()
            .all(|(r, row)| row.iter().all(|&v| v == r + 1)));
    }
}
