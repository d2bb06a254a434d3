//! CPU kernels: strided traversal with contiguous fast paths, AVX2 code for
//! the contiguous loops where the CPU has it, and all cores above a size threshold.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::tensor::Layout;

pub(crate) mod pool;
pub(crate) mod sgemm;

/// Below this many elements a kernel stays on the calling thread: handing
/// work to another thread costs more than it saves. Under Miri, small, so
/// that tests of a few hundred elements take the parallel paths too.
pub(crate) const PAR_THRESHOLD: usize = if cfg!(miri) { 64 } else { 1 << 15 };

/// Runs `f` compiled for AVX2 when the CPU has it (a contiguous loop inside
/// vectorises 8 f32 wide instead of SSE2's 4); plain otherwise. AVX2 changes no
/// result: IEEE arithmetic is the same at any width, and nothing is fused.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            /// # Safety
            /// The CPU must support AVX2.
            #[target_feature(enable = "avx2")]
            unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// A raw pointer that parallel parts share; each part touches its own range.
pub(crate) struct SharedPtr<T>(*mut T);
impl<T> Clone for SharedPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedPtr<T> {}
// SAFETY: used only to hand disjoint ranges of one buffer to parallel parts.
unsafe impl<T: Send> Send for SharedPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedPtr<T> {}
impl<T> SharedPtr<T> {
    pub(crate) fn new(ptr: *mut T) -> Self {
        SharedPtr(ptr)
    }
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// Calls `f(start, end)` on contiguous ranges covering `0..n`: one range below
/// [`PAR_THRESHOLD`], else one per pool thread, run in parallel.
fn par_ranges(n: usize, f: impl Fn(usize, usize) + Sync) {
    let parts = if n < PAR_THRESHOLD {
        1
    } else {
        rayon::current_num_threads()
            .min(n / (PAR_THRESHOLD / 2))
            .max(1)
    };
    if parts == 1 {
        f(0, n);
        return;
    }
    // Range ends on 16-element boundaries, so no two parts write one cache line.
    let bound = |i: usize| if i == parts { n } else { (n * i / parts) & !15 };
    par_parts(parts, |i| f(bound(i), bound(i + 1)));
}

/// `len` rows (or columns) cut into at most `parts` blocks of whole
/// `tile`-sized tiles, as even as whole tiles allow (only the last tile may
/// be partial). Rounding each block up to a tile instead would leave the last
/// block short: 784 columns in 4 blocks of 208 end with 160, and the thread
/// that takes it idles for 12% of the product.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileSplit {
    len: usize,
    tile: usize,
    tiles: usize,
    /// The number of blocks.
    pub(crate) parts: usize,
}

impl TileSplit {
    pub(crate) fn new(len: usize, parts: usize, tile: usize) -> Self {
        let tiles = len.div_ceil(tile);
        TileSplit {
            len,
            tile,
            tiles,
            parts: parts.min(tiles).max(1),
        }
    }

    /// Block `p`'s start and size.
    pub(crate) fn block(&self, p: usize) -> (usize, usize) {
        let start = self.tiles * p / self.parts * self.tile;
        let end = (self.tiles * (p + 1) / self.parts * self.tile).min(self.len);
        (start, end - start)
    }
}

/// Calls `f(i)` for every `i` in `0..parts`, in parallel: on the helper
/// pool ([`pool::par_run`], which allocates nothing) from outside the rayon
/// pool, by work stealing inside it.
pub(crate) fn par_parts(parts: usize, f: impl Fn(usize) + Sync) {
    match parts {
        0 => {}
        1 => f(0),
        _ if rayon::current_thread_index().is_some() => {
            (0..parts).into_par_iter().for_each(&f);
        }
        _ => pool::par_run(parts, &f),
    }
}

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

/// Builds a vector of `n` elements whose range `[start, start + chunk.len())` is
/// written by `fill(start, chunk)`, in parallel when `n` is large.
pub(crate) fn build_vec<U: Send>(
    n: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<U>]) + Sync,
) -> Vec<U> {
    let mut out: Vec<U> = Vec::with_capacity(n);
    let base = SharedPtr(out.spare_capacity_mut().as_mut_ptr());
    par_ranges(n, |start, end| {
        // SAFETY: the ranges are disjoint and inside the n-element capacity.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
        fill(start, chunk);
    });
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
        return build_vec(n, |start, chunk| {
            let s = &s[start..start + chunk.len()];
            vectorized(|| {
                for (o, &x) in chunk.iter_mut().zip(s) {
                    o.write(f(x));
                }
            })
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
        return build_vec(n, |start, chunk| {
            let end = start + chunk.len();
            let (sa, sb) = (&sa[start..end], &sb[start..end]);
            vectorized(|| {
                for ((o, &x), &y) in chunk.iter_mut().zip(sa).zip(sb) {
                    o.write(f(x, y));
                }
            })
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
    // Both contiguous over trailing dims (a bias row broadcast over a batch,
    // say): walk the leading dims, and run tight loops along the rows.
    let (k, inner) = common_contiguous_suffix(la, lb);
    if inner >= 8 && n > 0 {
        let (outer_a, outer_b) = (&la.strides[..k], &lb.strides[..k]);
        return build_vec(n, |start, chunk| {
            let end = start + chunk.len();
            let first_row = start / inner;
            let rows = (end - 1) / inner - first_row + 1;
            let mut pos = start;
            walk(
                &la.shape[..k],
                [outer_a, outer_b],
                [la.offset, lb.offset],
                first_row,
                rows,
                |[oa, ob]| {
                    let row_start = pos - pos % inner;
                    let (c0, c1) = (pos - row_start, (end - row_start).min(inner));
                    let dst = &mut chunk[pos - start..pos - start + (c1 - c0)];
                    let (ra, rb) = (&a[oa + c0..oa + c1], &b[ob + c0..ob + c1]);
                    vectorized(|| {
                        for ((o, &x), &y) in dst.iter_mut().zip(ra).zip(rb) {
                            o.write(f(x, y));
                        }
                    });
                    pos += c1 - c0;
                },
            );
        });
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

/// The first dim `k` from which both layouts (of one shape) are row-major
/// contiguous, and the number of elements in that trailing block.
fn common_contiguous_suffix(la: &Layout, lb: &Layout) -> (usize, usize) {
    let mut k = la.ndim();
    let mut inner = 1;
    while k > 0 {
        let d = k - 1;
        if la.shape[d] != 1 && (la.strides[d] != inner || lb.strides[d] != inner) {
            break;
        }
        inner *= la.shape[d];
        k -= 1;
    }
    (k, inner)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The row-run path of `zip` against a plain element-by-element walk, for
    /// broadcasts whose trailing block is shared, with rows cut by the
    /// parallel chunking (sizes above PAR_THRESHOLD) and views with offsets.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "slow under Miri; unsafe_paths::parallel_elementwise_kernels_write_every_element_once runs row runs at small sizes"
    )]
    fn zip_row_runs_match_elementwise_walk() {
        let cases: [(&[usize], &[usize]); 5] = [
            (&[64, 256], &[256]),
            (&[300, 257], &[257]),
            (&[5, 7, 64], &[7, 64]),
            (&[4, 3, 10], &[4, 1, 10]),
            (&[2, 9, 1, 33], &[9, 1, 33]),
        ];
        for (sa, sb) in cases {
            let la = Layout::contiguous(sa);
            let nb: usize = sb.iter().product();
            // Offset views into larger buffers, so offsets are exercised too.
            let lb = Layout {
                offset: 3,
                ..Layout::contiguous(sb)
            }
            .broadcast_to(sa);
            let a: Vec<f32> = (0..la.numel()).map(|i| i as f32 * 0.5).collect();
            let b: Vec<f32> = (0..nb + 3).map(|i| i as f32 * -1.25).collect();
            let got = zip(&a, &la, &b, &lb, |x, y| x * 3.0 + y);
            let mut want = Vec::with_capacity(la.numel());
            walk(
                &la.shape,
                [&la.strides, &lb.strides],
                [0, 3],
                0,
                la.numel(),
                |[oa, ob]| want.push(a[oa] * 3.0 + b[ob]),
            );
            assert_eq!(got, want, "{sa:?} with {sb:?}");
        }
    }

    #[test]
    fn parallel_kernels_cover_every_element_once() {
        for n in [
            0,
            1,
            17,
            PAR_THRESHOLD - 1,
            PAR_THRESHOLD,
            3 * PAR_THRESHOLD + 5,
        ] {
            let v = build_vec(n, |start, chunk| {
                for (i, o) in chunk.iter_mut().enumerate() {
                    o.write(start + i);
                }
            });
            assert!(v.iter().copied().eq(0..n), "build_vec, n = {n}");
            let l = Layout::contiguous(&[n]);
            let mut d: Vec<usize> = (0..n).collect();
            update(&mut d, &l, &v, &l, |x, y| x + y);
            update_scalar(&mut d, &l, |x| x + 1);
            assert!(
                d.iter().copied().eq((0..n).map(|i| 2 * i + 1)),
                "update, n = {n}"
            );
        }
    }

    #[test]
    fn tile_split_covers_len_in_even_whole_tiles() {
        for (len, parts) in [
            (784, 4),
            (256, 4),
            (64, 4),
            (17, 4),
            (1, 3),
            (1000, 7),
            (32, 5),
        ] {
            let split = TileSplit::new(len, parts, 16);
            let mut next = 0;
            let sizes: Vec<usize> = (0..split.parts)
                .map(|p| {
                    let (start, size) = split.block(p);
                    assert_eq!(start, next, "len {len}, {parts} parts: contiguous");
                    assert_eq!(start % 16, 0, "len {len}: starts on a tile");
                    next = start + size;
                    size
                })
                .collect();
            assert_eq!(next, len, "len {len}: covered");
            assert!(sizes.iter().all(|&s| s > 0), "len {len}: {sizes:?}");
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            // Full blocks differ by at most one tile (the last may be partial).
            assert!(
                hi - lo <= 16 || sizes[..sizes.len() - 1].iter().all(|&s| s == *hi),
                "{sizes:?}"
            );
        }
        assert_eq!(TileSplit::new(784, 4, 16).block(3), (576, 208));
    }

    #[test]
    fn a_panicking_part_propagates_its_payload() {
        use std::panic::catch_unwind;
        let n = 4 * PAR_THRESHOLD;
        for bad_start in [true, false] {
            let r = catch_unwind(|| {
                build_vec(n, |start, chunk| {
                    if (start == 0) == bad_start {
                        panic!("boom at {start}");
                    }
                    chunk.iter_mut().for_each(|o| {
                        o.write(0u8);
                    });
                })
            });
            let msg = r.expect_err("a part panicked");
            let msg = msg
                .downcast_ref::<String>()
                .expect("a formatted panic message");
            assert!(msg.starts_with("boom at"), "{msg}");
        }
    }
}
