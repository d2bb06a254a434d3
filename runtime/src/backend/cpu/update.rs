//! The in-place kernels: `dst = f(dst, src)` over a broadcast source, and
//! with a scalar.

use super::*;

/// `dst[ld(i)] = f(dst[ld(i)], src[ls(i)])` in place; `ls` has `ld`'s shape.
#[track_caller]
pub(crate) fn update<T: Copy + Send + Sync, S: Copy + Sync>(
    op: &'static str,
    dst: &mut [T],
    ld: &Layout,
    src: &[S],
    ls: &Layout,
    f: impl Fn(T, S) -> T + Sync,
) {
    assert_same_shape(op, &[ld, ls]);
    ld.assert_within(op, dst.len());
    ls.assert_within(op, src.len());
    let n = ld.numel();
    if n == 0 {
        return;
    }
    if ld.is_contiguous() && ls.is_contiguous() {
        let d = SharedPtr(dst[ld.offset..ld.offset + n].as_mut_ptr());
        let s = &src[ls.offset..ls.offset + n];
        par_ranges(n, |start, end| {
            // SAFETY: the ranges are disjoint and inside the n checked above.
            let d = unsafe { std::slice::from_raw_parts_mut(d.get().add(start), end - start) };
            let s = &s[start..end];
            vectorized(|| {
                for (x, &y) in d.iter_mut().zip(s) {
                    *x = f(*x, y);
                }
            })
        });
        return;
    }
    if ld.is_contiguous() && ls.strides.iter().all(|&s| s == 0) {
        let y = src[ls.offset];
        update_scalar(op, dst, ld, |x| f(x, y));
        return;
    }
    // A strided destination may overlap itself only through stride-0 dims,
    // which PyTorch rejects too; walk it sequentially.
    walk(
        &ld.shape,
        [&ld.strides, &ls.strides],
        [ld.offset, ls.offset],
        0,
        n,
        |[od, os]| dst[od] = f(dst[od], src[os]),
    );
}

/// `dst[ld(i)] = f(dst[ld(i)])` in place.
#[track_caller]
pub(crate) fn update_scalar<T: Copy + Send + Sync>(
    op: &'static str,
    dst: &mut [T],
    ld: &Layout,
    f: impl Fn(T) -> T + Sync,
) {
    ld.assert_within(op, dst.len());
    let n = ld.numel();
    if n == 0 {
        return;
    }
    if ld.is_contiguous() {
        let d = SharedPtr(dst[ld.offset..ld.offset + n].as_mut_ptr());
        par_ranges(n, |start, end| {
            // SAFETY: the ranges are disjoint and inside the n checked above.
            let d = unsafe { std::slice::from_raw_parts_mut(d.get().add(start), end - start) };
            vectorized(|| d.iter_mut().for_each(|x| *x = f(*x)))
        });
        return;
    }
    walk(&ld.shape, [&ld.strides], [ld.offset], 0, n, |[od]| {
        dst[od] = f(dst[od])
    });
}
