//! CPU kernels: strided traversal with contiguous fast paths and rayon above a size threshold.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::tensor::Layout;

/// Below this many elements a kernel stays on the calling thread: spawning
/// rayon tasks costs more than the work.
pub(crate) const PAR_THRESHOLD: usize = 1 << 15;

/// Elements per rayon task for elementwise kernels.
const PAR_CHUNK: usize = 1 << 14;

/// Calls `f` with the storage offsets of elements `start..start + len` (in
/// row-major order of `shape`) for each of `K` stride sets at once.
#[inline]
pub(crate) fn walk<const K: usize>(
    shape: &[usize],
    strides: [&[usize]; K],
    base: [usize; K],
    start: usize,
    len: usize,
    mut f: impl FnMut([usize; K]),
) {
    if len == 0 {
        return;
    }
    let nd = shape.len();
    if nd == 0 {
        f(base);
        return;
    }
    // Multi-index of `start`.
    let mut idx = [0usize; 16];
    let mut big_idx;
    let idx: &mut [usize] = if nd <= 16 {
        &mut idx[..nd]
    } else {
        big_idx = vec![0usize; nd];
        &mut big_idx[..]
    };
    let mut rem = start;
    for d in (0..nd).rev() {
        idx[d] = rem % shape[d];
        rem /= shape[d];
    }
    let mut offs = base;
    for (k, off) in offs.iter_mut().enumerate() {
        for d in 0..nd {
            *off += idx[d] * strides[k][d];
        }
    }
    let inner = shape[nd - 1];
    let mut inner_strides = [0usize; K];
    for k in 0..K {
        inner_strides[k] = strides[k][nd - 1];
    }
    let mut done = 0;
    while done < len {
        // Run along the innermost dimension.
        let run = (inner - idx[nd - 1]).min(len - done);
        let mut o = offs;
        for _ in 0..run {
            f(o);
            for k in 0..K {
                o[k] += inner_strides[k];
            }
        }
        done += run;
        if done >= len {
            break;
        }
        // Carry into the outer dimensions.
        for k in 0..K {
            offs[k] = o[k] - inner * inner_strides[k];
        }
        idx[nd - 1] = 0;
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            for k in 0..K {
                offs[k] += strides[k][d];
            }
            if idx[d] < shape[d] {
                break;
            }
            for k in 0..K {
                offs[k] -= shape[d] * strides[k][d];
            }
            idx[d] = 0;
        }
    }
}

/// Builds a vector of `n` elements whose chunk `[start, start + chunk.len())` is
/// written by `fill(start, chunk)`, in parallel when `n` is large.
pub(crate) fn build_vec<U: Send>(
    n: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<U>]) + Sync,
) -> Vec<U> {
    let mut out: Vec<U> = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= PAR_THRESHOLD {
        spare
            .par_chunks_mut(PAR_CHUNK)
            .enumerate()
            .for_each(|(i, chunk)| fill(i * PAR_CHUNK, chunk));
    } else {
        fill(0, spare);
    }
    // SAFETY: every `fill` call writes each element of its chunk (the callers
    // below write exactly one value per slot), so all `n` are initialised.
    unsafe { out.set_len(n) };
    out
}

/// `out[i] = f(src[layout(i)])` for every element in row-major order.
pub(crate) fn map<T: Copy + Sync, U: Send>(
    src: &[T],
    layout: &Layout,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    let n = layout.numel();
    if layout.is_contiguous() {
        let s = &src[layout.offset..layout.offset + n];
        if n < PAR_THRESHOLD {
            return s.iter().map(|&x| f(x)).collect();
        }
        return build_vec(n, |start, chunk| {
            let end = start + chunk.len();
            for (o, &x) in chunk.iter_mut().zip(&s[start..end]) {
                o.write(f(x));
            }
        });
    }
    build_vec(n, |start, chunk| {
        let mut i = 0;
        walk(
            &layout.shape,
            [&layout.strides],
            [layout.offset],
            start,
            chunk.len(),
            |[o]| {
                chunk[i].write(f(src[o]));
                i += 1;
            },
        );
    })
}

/// `out[i] = f(a[la(i)], b[lb(i)])` where both layouts already have the output's shape
/// (broadcast dimensions carry stride 0).
pub(crate) fn zip<A: Copy + Sync, B: Copy + Sync, U: Send>(
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(A, B) -> U + Sync,
) -> Vec<U> {
    let n = la.numel();
    let a_contig = la.is_contiguous();
    let b_contig = lb.is_contiguous();
    if a_contig && b_contig {
        let sa = &a[la.offset..la.offset + n];
        let sb = &b[lb.offset..lb.offset + n];
        if n < PAR_THRESHOLD {
            return sa.iter().zip(sb).map(|(&x, &y)| f(x, y)).collect();
        }
        return build_vec(n, |start, chunk| {
            let end = start + chunk.len();
            for ((o, &x), &y) in chunk.iter_mut().zip(&sa[start..end]).zip(&sb[start..end]) {
                o.write(f(x, y));
            }
        });
    }
    // One side a single broadcast value: a tight loop over the other.
    if a_contig && lb.strides.iter().all(|&s| s == 0) {
        let y = b[lb.offset];
        return map(a, la, |x| f(x, y));
    }
    if la.strides.iter().all(|&s| s == 0) && b_contig {
        let x = a[la.offset];
        return map(b, lb, |y| f(x, y));
    }
    build_vec(n, |start, chunk| {
        let mut i = 0;
        walk(
            &la.shape,
            [&la.strides, &lb.strides],
            [la.offset, lb.offset],
            start,
            chunk.len(),
            |[oa, ob]| {
                chunk[i].write(f(a[oa], b[ob]));
                i += 1;
            },
        );
    })
}

/// `out[i] = f(c[lc(i)], a[la(i)], b[lb(i)])`, all layouts of the output's shape.
pub(crate) fn zip3<C: Copy + Sync, A: Copy + Sync, B: Copy + Sync, U: Send>(
    c: &[C],
    lc: &Layout,
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(C, A, B) -> U + Sync,
) -> Vec<U> {
    build_vec(lc.numel(), |start, chunk| {
        let mut i = 0;
        walk(
            &lc.shape,
            [&lc.strides, &la.strides, &lb.strides],
            [lc.offset, la.offset, lb.offset],
            start,
            chunk.len(),
            |[oc, oa, ob]| {
                chunk[i].write(f(c[oc], a[oa], b[ob]));
                i += 1;
            },
        );
    })
}

/// `dst[ld(i)] = f(dst[ld(i)], src[ls(i)])` in place; `ls` has `ld`'s shape.
pub(crate) fn update<T: Copy + Send + Sync, S: Copy + Sync>(
    dst: &mut [T],
    ld: &Layout,
    src: &[S],
    ls: &Layout,
    f: impl Fn(T, S) -> T + Sync,
) {
    let n = ld.numel();
    if ld.is_contiguous() && ls.is_contiguous() {
        let d = &mut dst[ld.offset..ld.offset + n];
        let s = &src[ls.offset..ls.offset + n];
        if n < PAR_THRESHOLD {
            for (x, &y) in d.iter_mut().zip(s) {
                *x = f(*x, y);
            }
        } else {
            d.par_chunks_mut(PAR_CHUNK)
                .zip(s.par_chunks(PAR_CHUNK))
                .for_each(|(dc, sc)| {
                    for (x, &y) in dc.iter_mut().zip(sc) {
                        *x = f(*x, y);
                    }
                });
        }
        return;
    }
    if ld.is_contiguous() && ls.strides.iter().all(|&s| s == 0) {
        let y = src[ls.offset];
        update_scalar(dst, ld, |x| f(x, y));
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
pub(crate) fn update_scalar<T: Copy + Send + Sync>(
    dst: &mut [T],
    ld: &Layout,
    f: impl Fn(T) -> T + Sync,
) {
    let n = ld.numel();
    if ld.is_contiguous() {
        let d = &mut dst[ld.offset..ld.offset + n];
        if n < PAR_THRESHOLD {
            d.iter_mut().for_each(|x| *x = f(*x));
        } else {
            d.par_chunks_mut(PAR_CHUNK)
                .for_each(|c| c.iter_mut().for_each(|x| *x = f(*x)));
        }
        return;
    }
    walk(
        &ld.shape,
        [&ld.strides],
        [ld.offset],
        0,
        n,
        |[od]| dst[od] = f(dst[od]),
    );
}
