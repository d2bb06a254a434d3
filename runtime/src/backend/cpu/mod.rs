//! CPU kernels: strided traversal with contiguous fast paths, AVX2 code for
//! the contiguous loops where the CPU has it, and all cores above a size threshold.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::memory;
use crate::error::{OrPanic, Result};
use crate::tensor::Layout;

pub(crate) mod conv;
pub(crate) mod gemm;
pub(crate) mod pool;
pub(crate) mod rows;
pub(crate) mod sgemm;

/// Below this many elements a kernel stays on the calling thread: handing
/// work to another thread costs more than it saves. Under Miri, small, so
/// that tests of a few hundred elements take the parallel paths too.
pub(crate) const PAR_THRESHOLD: usize = if cfg!(miri) { 64 } else { 1 << 15 };

/// Runs `f` compiled for AVX-512 (AVX512F) when the CPU has it, for AVX2
/// otherwise when it has that, plain otherwise: a contiguous loop inside
/// vectorises 16 or 8 f32 wide instead of SSE2's 4. The width is chosen at
/// run time because these machines differ from day to day (an AMD EPYC with
/// AVX-512, an Intel Xeon with it, an older one with AVX2 only). The width
/// changes no result: IEEE arithmetic is the same at any width, and nothing
/// is fused. A large closure may stay a separate function compiled at the
/// baseline width; such a kernel is a [`Kernel`] for [`run_vectorized`].
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    run_vectorized(Closure(f))
}

/// A loop for [`run_vectorized`]. Its `run` is `#[inline(always)]`, so the
/// whole loop is compiled inside the wide target-feature function, however
/// large (LLVM does not inline a large closure called from the three
/// widths' functions, and it then runs at SSE2's width).
pub(crate) trait Kernel {
    /// What the loop returns.
    type Output;
    /// The loop (implementations mark it `#[inline(always)]`).
    fn run(self) -> Self::Output;
}

/// A closure as a [`Kernel`].
struct Closure<F>(F);

impl<R, F: FnOnce() -> R> Kernel for Closure<F> {
    type Output = R;
    #[inline(always)]
    fn run(self) -> R {
        (self.0)()
    }
}

/// Runs `kernel` compiled for the widest vectors the CPU has, as
/// [`vectorized`].
#[inline(always)]
pub(crate) fn run_vectorized<K: Kernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            /// # Safety
            /// The CPU must support AVX512F.
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512<K: Kernel>(k: K) -> K::Output {
                k.run()
            }
            // SAFETY: the CPU supports AVX512F (checked just above).
            return unsafe { avx512(kernel) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            /// # Safety
            /// The CPU must support AVX2.
            #[target_feature(enable = "avx2")]
            unsafe fn avx2<K: Kernel>(k: K) -> K::Output {
                k.run()
            }
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { avx2(kernel) };
        }
    }
    kernel.run()
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

/// Where a kernel puts each result: written over whatever the slot held
/// ([`Write`], also into uninitialised memory) or added to it
/// ([`Accumulate`], for gradients that sum). A kernel is generic over it, so
/// each loop is compiled once per way and the choice costs nothing per element.
pub(crate) trait Store<U>: Copy + Send + Sync {
    /// Puts `v` into the slot `p`.
    ///
    /// # Safety
    /// `p` is valid for writes (and, for [`Accumulate`], holds an initialised value).
    unsafe fn put(self, p: *mut U, v: U);
    /// Puts the first `n` of `values` into `p[0..n]`, through a slice (so
    /// the loop vectorises).
    ///
    /// # Safety
    /// `p` is valid for `n` writes (initialised, for [`Accumulate`]) that
    /// nothing else touches during the call.
    unsafe fn put_all(self, p: *mut U, n: usize, values: impl Iterator<Item = U>);
}

/// Overwrites the destination.
#[derive(Clone, Copy)]
pub(crate) struct Write;
impl<U> Store<U> for Write {
    #[inline(always)]
    unsafe fn put(self, p: *mut U, v: U) {
        // SAFETY: forwarded from the caller.
        unsafe { p.write(v) }
    }
    #[inline(always)]
    unsafe fn put_all(self, p: *mut U, n: usize, values: impl Iterator<Item = U>) {
        // SAFETY: forwarded from the caller.
        let out = unsafe { std::slice::from_raw_parts_mut(p.cast::<MaybeUninit<U>>(), n) };
        for (o, v) in out.iter_mut().zip(values) {
            o.write(v);
        }
    }
}

/// Adds into the destination.
#[derive(Clone, Copy)]
pub(crate) struct Accumulate;
impl<U: Copy + std::ops::Add<Output = U>> Store<U> for Accumulate {
    #[inline(always)]
    unsafe fn put(self, p: *mut U, v: U) {
        // SAFETY: forwarded from the caller (an initialised, writable slot).
        unsafe { *p = *p + v }
    }
    #[inline(always)]
    unsafe fn put_all(self, p: *mut U, n: usize, values: impl Iterator<Item = U>) {
        // SAFETY: forwarded from the caller.
        let out = unsafe { std::slice::from_raw_parts_mut(p, n) };
        for (o, v) in out.iter_mut().zip(values) {
            *o = *o + v;
        }
    }
}

/// A contiguous destination of `len` elements and how results go into it.
/// Built from an uninitialised spare capacity ([`Dst::uninit`], write only)
/// or from initialised elements ([`Dst::init`], written or accumulated).
pub(crate) struct Dst<'a, U, S> {
    ptr: SharedPtr<U>,
    len: usize,
    store: S,
    _borrow: std::marker::PhantomData<&'a mut [U]>,
}

impl<'a, U> Dst<'a, U, Write> {
    /// Writes into possibly uninitialised memory.
    pub(crate) fn uninit(out: &'a mut [MaybeUninit<U>]) -> Self {
        Dst {
            ptr: SharedPtr(out.as_mut_ptr().cast()),
            len: out.len(),
            store: Write,
            _borrow: std::marker::PhantomData,
        }
    }
}

impl<'a, U, S: Store<U>> Dst<'a, U, S> {
    /// Puts results into initialised elements with `store`.
    pub(crate) fn init(out: &'a mut [U], store: S) -> Self {
        Dst {
            ptr: SharedPtr(out.as_mut_ptr()),
            len: out.len(),
            store,
            _borrow: std::marker::PhantomData,
        }
    }

    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Calls `fill(start, part)` on sub-destinations covering the whole, in
    /// parallel when it is large.
    fn par_chunks(self, fill: impl Fn(usize, Dst<'_, U, S>) + Sync)
    where
        U: Send,
    {
        let (ptr, store) = (self.ptr, self.store);
        par_ranges(self.len, |start, end| {
            let part = Dst {
                // SAFETY: the ranges are disjoint and inside `len`.
                ptr: SharedPtr(unsafe { ptr.get().add(start) }),
                len: end - start,
                store,
                _borrow: std::marker::PhantomData,
            };
            fill(start, part);
        });
    }

    /// Stores `v` at `i`.
    ///
    /// # Safety
    /// `i < self.len()`.
    #[inline(always)]
    unsafe fn put(&self, i: usize, v: U) {
        debug_assert!(i < self.len);
        // SAFETY: in bounds (the caller); the destination is valid for its
        // length and borrowed exclusively for `'a`.
        unsafe { self.store.put(self.ptr.get().add(i), v) }
    }

    /// `self[i] <- v_i` for the `len` values of `values` (an iterator over
    /// zipped slices, so that the loop has no bounds checks), compiled for
    /// the vector width the CPU has. The destination becomes a `&mut` slice
    /// first: written through a raw pointer, the loop would reload its
    /// operands after every store and stay scalar.
    #[inline(always)]
    pub(crate) fn fill_from(&self, values: impl ExactSizeIterator<Item = U>) {
        let (ptr, store, n) = (self.ptr.get(), self.store, self.len);
        // Fewer values would leave part of a `Write` destination uninitialised.
        assert_eq!(
            values.len(),
            n,
            "a kernel's run and its destination differ in length"
        );
        // SAFETY: the destination is valid for `len` elements and borrowed
        // exclusively for `'a`; `values` fills all of them (checked).
        vectorized(|| unsafe { store.put_all(ptr, n, values) })
    }

    /// `self[i] <- f(src[i])` along a contiguous run.
    #[inline(always)]
    fn run1<T: Copy>(&self, src: &[T], f: &impl Fn(T) -> U) {
        // Every element is written: `Write` destinations may be uninitialised.
        assert_eq!(
            src.len(),
            self.len,
            "a kernel's run and its source differ in length"
        );
        self.fill_from(src.iter().map(
            #[inline(always)]
            |&x| f(x),
        ))
    }

    /// `self[i] <- f(a[i], b[i])` along contiguous runs.
    #[inline(always)]
    fn run2<A: Copy, B: Copy>(&self, a: &[A], b: &[B], f: &impl Fn(A, B) -> U) {
        assert!(
            a.len() == self.len && b.len() == self.len,
            "a kernel's run and its sources differ in length"
        );
        self.fill_from(a.iter().zip(b).map(
            #[inline(always)]
            |(&x, &y)| f(x, y),
        ))
    }
}

/// A kernel's destination with the way results go in chosen at run time:
/// the kernels below dispatch once per call to a loop compiled for each way.
pub(crate) enum Sink<'a, U> {
    /// Overwrite (also uninitialised memory).
    Write(Dst<'a, U, Write>),
    /// Add into what is there.
    Add(Dst<'a, U, Accumulate>),
}

/// [`map_into`] for a [`Sink`].
#[track_caller]
pub(crate) fn map_to<T, U>(
    op: &'static str,
    out: Sink<'_, U>,
    src: &[T],
    layout: &Layout,
    f: impl Fn(T) -> U + Sync,
) where
    T: Copy + Sync,
    U: Copy + Send + std::ops::Add<Output = U>,
{
    match out {
        Sink::Write(d) => map_into(op, d, src, layout, f),
        Sink::Add(d) => map_into(op, d, src, layout, f),
    }
}

/// [`zip_into`] for a [`Sink`].
#[track_caller]
pub(crate) fn zip_to<A, B, U>(
    op: &'static str,
    out: Sink<'_, U>,
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(A, B) -> U + Sync,
) where
    A: Copy + Sync,
    B: Copy + Sync,
    U: Copy + Send + std::ops::Add<Output = U>,
{
    match out {
        Sink::Write(d) => zip_into(op, d, a, la, b, lb, f),
        Sink::Add(d) => zip_into(op, d, a, la, b, lb, f),
    }
}

/// Running sums of contiguous `src` viewed as `[outer, len, inner]`, along
/// the middle dim (from its end when `reverse`), into `out` of the same size.
pub(crate) fn scan_to<U>(
    out: Sink<'_, U>,
    src: &[U],
    (outer, len, inner): (usize, usize, usize),
    reverse: bool,
) where
    U: Copy + Send + Sync + Default + std::ops::Add<Output = U>,
{
    fn run<U, S>(
        out: Dst<'_, U, S>,
        src: &[U],
        (outer, len, inner): (usize, usize, usize),
        reverse: bool,
    ) where
        U: Copy + Send + Sync + Default + std::ops::Add<Output = U>,
        S: Store<U>,
    {
        let block = len * inner;
        assert!(
            out.len() == outer * block && src.len() >= outer * block,
            "scan: destination or source smaller than {outer} x {len} x {inner}"
        );
        let (ptr, store) = (out.ptr, out.store);
        let one = |o: usize| {
            let mut acc = vec![U::default(); inner];
            for j in 0..len {
                let j = if reverse { len - 1 - j } else { j };
                let at = o * block + j * inner;
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = *a + src[at + i];
                    // SAFETY: at + i < outer * block = out.len(), checked above;
                    // parallel parts take distinct `o`.
                    unsafe { store.put(ptr.get().add(at + i), *a) };
                }
            }
        };
        if outer * block >= PAR_THRESHOLD && outer > 1 {
            par_parts(outer, one);
        } else {
            (0..outer).for_each(one);
        }
    }
    match out {
        Sink::Write(d) => run(d, src, (outer, len, inner), reverse),
        Sink::Add(d) => run(d, src, (outer, len, inner), reverse),
    }
}

/// Builds a vector of `n` elements whose range `[start, start + chunk.len())` is
/// written by `fill(start, chunk)`, in parallel when `n` is large. The
/// vector is the buffer of `op`'s result of `shape`, allocated fallibly: a
/// request the allocator refuses is an `Error::OutOfMemory` naming the op,
/// the shape and the bytes, not an abort.
pub(crate) fn try_build_vec<U: Send>(
    op: &'static str,
    shape: &[usize],
    n: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<U>]) + Sync,
) -> Result<Vec<U>> {
    let mut out: Vec<U> = memory::try_alloc(op, shape, n)?;
    let base = SharedPtr(out.spare_capacity_mut()[..n].as_mut_ptr());
    par_ranges(n, |start, end| {
        // SAFETY: the ranges are disjoint and inside the n-element capacity.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
        fill(start, chunk);
    });
    // SAFETY: every `fill` call writes each element of its chunk (the callers
    // below write exactly one value per slot), so all `n` are initialised.
    unsafe { out.set_len(n) };
    Ok(out)
}

/// [`try_build_vec`], panicking with its message.
#[track_caller]
pub(crate) fn build_vec<U: Send>(
    op: &'static str,
    shape: &[usize],
    n: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<U>]) + Sync,
) -> Vec<U> {
    try_build_vec(op, shape, n, fill).or_panic()
}

/// A new vector of `n` elements (the buffer of `op`'s result of `shape`,
/// allocated fallibly) filled by `kernel` through a [`Write`] destination.
pub(crate) fn try_new_vec<U: Send>(
    op: &'static str,
    shape: &[usize],
    n: usize,
    kernel: impl FnOnce(Dst<'_, U, Write>),
) -> Result<Vec<U>> {
    let mut out: Vec<U> = memory::try_alloc(op, shape, n)?;
    kernel(Dst::uninit(&mut out.spare_capacity_mut()[..n]));
    // SAFETY: the kernels write every element of their destination.
    unsafe { out.set_len(n) };
    Ok(out)
}

/// `out[i] <- f(src[layout(i)])` for every element in row-major order, for
/// op `op` (named in the messages of the checks: the layout lies inside
/// `src`, and the destination has its size).
#[track_caller]
pub(crate) fn map_into<T: Copy + Sync, U: Send, S: Store<U>>(
    op: &'static str,
    out: Dst<'_, U, S>,
    src: &[T],
    layout: &Layout,
    f: impl Fn(T) -> U + Sync,
) {
    layout.assert_within(op, src.len());
    assert_eq!(
        out.len(),
        layout.numel(),
        "{op}: internal error: destination size"
    );
    if layout.is_contiguous() {
        let s = &src[layout.offset..layout.offset + out.len()];
        return out.par_chunks(|start, part| part.run1(&s[start..start + part.len()], &f));
    }
    out.par_chunks(|start, part| {
        let mut i = 0;
        walk(
            &layout.shape,
            [&layout.strides],
            [layout.offset],
            start,
            part.len(),
            |[o]| {
                // SAFETY: `walk` calls this `part.len()` times, so i < len.
                unsafe { part.put(i, f(src[o])) };
                i += 1;
            },
        );
    })
}

/// `out[i] = f(src[layout(i)])` for every element in row-major order.
/// Panics as [`try_map`] errs.
#[track_caller]
pub(crate) fn map<T: Copy + Sync, U: Send>(
    op: &'static str,
    src: &[T],
    layout: &Layout,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    try_map(op, src, layout, f).or_panic()
}

/// [`map`], with a result that cannot be allocated as an `Err`.
#[track_caller]
pub(crate) fn try_map<T: Copy + Sync, U: Send>(
    op: &'static str,
    src: &[T],
    layout: &Layout,
    f: impl Fn(T) -> U + Sync,
) -> Result<Vec<U>> {
    layout.assert_within(op, src.len());
    try_new_vec(op, &layout.shape, layout.numel(), |out| {
        map_into(op, out, src, layout, f)
    })
}

/// Panics naming `op` unless every layout has the first one's shape (the
/// kernels walk them together).
#[track_caller]
fn assert_same_shape(op: &'static str, layouts: &[&Layout]) {
    for l in &layouts[1..] {
        assert!(
            crate::tensor::same_shape(&l.shape, &layouts[0].shape),
            "{op}: internal error: operand layouts of shapes {:?} and {:?} walked together; \
             this is a bug in deriv, please report it",
            layouts[0].shape,
            l.shape
        );
    }
}

/// `out[i] <- f(a[la(i)], b[lb(i)])` where both layouts already have the
/// output's shape (broadcast dimensions carry stride 0).
#[track_caller]
pub(crate) fn zip_into<A: Copy + Sync, B: Copy + Sync, U: Send, S: Store<U>>(
    op: &'static str,
    out: Dst<'_, U, S>,
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(A, B) -> U + Sync,
) {
    assert_same_shape(op, &[la, lb]);
    la.assert_within(op, a.len());
    lb.assert_within(op, b.len());
    let n = la.numel();
    assert_eq!(out.len(), n, "{op}: internal error: destination size");
    if n == 0 {
        return;
    }
    let a_contig = la.is_contiguous();
    let b_contig = lb.is_contiguous();
    if a_contig && b_contig {
        let sa = &a[la.offset..la.offset + n];
        let sb = &b[lb.offset..lb.offset + n];
        return out.par_chunks(|start, part| {
            let end = start + part.len();
            part.run2(&sa[start..end], &sb[start..end], &f)
        });
    }
    // One side a single broadcast value: a tight loop over the other.
    if a_contig && lb.strides.iter().all(|&s| s == 0) {
        let y = b[lb.offset];
        return map_into(op, out, a, la, |x| f(x, y));
    }
    if la.strides.iter().all(|&s| s == 0) && b_contig {
        let x = a[la.offset];
        return map_into(op, out, b, lb, |y| f(x, y));
    }
    // Both contiguous over trailing dims (a bias row broadcast over a batch,
    // say): walk the leading dims, and run tight loops along the rows.
    let (k, inner) = common_contiguous_suffix(la, lb);
    if inner >= 8 {
        let (outer_a, outer_b) = (&la.strides[..k], &lb.strides[..k]);
        return out.par_chunks(|start, part| {
            let end = start + part.len();
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
                    let run = Dst {
                        // SAFETY: `pos - start + (c1 - c0)` stays inside the part.
                        ptr: SharedPtr(unsafe { part.ptr.get().add(pos - start) }),
                        len: c1 - c0,
                        store: part.store,
                        _borrow: std::marker::PhantomData,
                    };
                    run.run2(&a[oa + c0..oa + c1], &b[ob + c0..ob + c1], &f);
                    pos += c1 - c0;
                },
            );
        });
    }
    out.par_chunks(|start, part| {
        let mut i = 0;
        walk(
            &la.shape,
            [&la.strides, &lb.strides],
            [la.offset, lb.offset],
            start,
            part.len(),
            |[oa, ob]| {
                // SAFETY: `walk` calls this `part.len()` times, so i < len.
                unsafe { part.put(i, f(a[oa], b[ob])) };
                i += 1;
            },
        );
    })
}

/// `out[i] = f(a[la(i)], b[lb(i)])` where both layouts already have the output's shape
/// (broadcast dimensions carry stride 0). A result that cannot be allocated
/// is an `Err` (the binary ops have `try_` forms).
#[track_caller]
pub(crate) fn zip<A: Copy + Sync, B: Copy + Sync, U: Send>(
    op: &'static str,
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(A, B) -> U + Sync,
) -> Result<Vec<U>> {
    assert_same_shape(op, &[la, lb]);
    try_new_vec(op, &la.shape, la.numel(), |out| {
        zip_into(op, out, a, la, b, lb, f)
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

mod zip3;
pub(crate) use zip3::{zip3, zip3_to};

mod update;
pub(crate) use update::{update, update_scalar};

#[cfg(test)]
mod tests;
