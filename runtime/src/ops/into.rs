//! Out-variant CPU kernels: each writes its result into an existing,
//! contiguous tensor of the right shape and dtype instead of allocating one.
//! They serve the buffer-reusing training path ([`TrainStep`](crate::nn::TrainStep)),
//! whose steady state makes no heap allocation.
//!
//! Conventions:
//! - `out` is contiguous, of the op's result shape and dtype (f32 or f64),
//!   on the CPU, and shares no storage with an input; inputs may have any
//!   strides. A violated precondition is a bug in the caller and panics
//!   naming the op. Callers prepare `out` with [`slot`].
//! - `accumulate = true` adds the result into `out` instead of overwriting it.
//! - Nothing here records on the tape and nothing bumps more than `out`'s
//!   storage version.
//! - The arithmetic is the allocating ops' arithmetic (same formulas, same
//!   order within an element), so results agree to rounding.
//! - Large matrix products are split over the CPU backend's helper pool
//!   ([`par_run`]), which hands parts to its threads without allocating.

use std::mem::MaybeUninit;

use faer::{Accum, MatMut, MatRef, Par};

use crate::backend::cpu::pool::{par_run, par_width};
use crate::backend::cpu::{self, sgemm};
use crate::backend::{lock_storages, Buffer, Device};
use crate::tensor::{DType, Float, Layout, Tensor};

// ---------------------------------------------------------------- element types

/// The float element types the kernels are written for (f32 and f64): the
/// tensor's own [`Float`] math, plus what only these kernels need.
pub(crate) trait Real: Float {
    fn ln_1p(self) -> Self;
    fn of(b: &Buffer) -> &[Self];
    fn of_mut(b: &mut Buffer) -> &mut [Self];
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

/// A matrix operand: its first element and its row and column strides.
#[derive(Clone, Copy)]
pub(crate) struct Mat<T> {
    ptr: *const T,
    rs: usize,
    cs: usize,
}

// SAFETY: a read-only view that parallel parts of one product share while
// the buffer it points into stays locked by the caller.
unsafe impl<T: Sync> Sync for Mat<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Send for Mat<T> {}

impl<T> Mat<T> {
    /// The transpose (a view: strides swapped).
    fn t(self) -> Self {
        Mat {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// Rows `r0..` of the matrix.
    fn rows_from(self, r0: usize) -> Self {
        Mat {
            // SAFETY: callers stay inside the matrix.
            ptr: self.ptr.wrapping_add(r0 * self.rs),
            ..self
        }
    }
    /// Columns `c0..` of the matrix.
    fn cols_from(self, c0: usize) -> Self {
        Mat {
            ptr: self.ptr.wrapping_add(c0 * self.cs),
            ..self
        }
    }
}

macro_rules! real {
    ($t:ty, $variant:ident, $dtype:ident) => {
        impl Real for $t {
            #[inline(always)]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            fn of(b: &Buffer) -> &[Self] {
                match b {
                    Buffer::$variant(v) => v,
                    other => unreachable!(
                        "a {} buffer where {} was checked",
                        other.dtype(),
                        DType::$dtype
                    ),
                }
            }
            fn of_mut(b: &mut Buffer) -> &mut [Self] {
                match b {
                    Buffer::$variant(v) => v,
                    other => unreachable!(
                        "a {} buffer where {} was checked",
                        other.dtype(),
                        DType::$dtype
                    ),
                }
            }
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
real!(f32, F32, F32);
real!(f64, F64, F64);

/// The AVX2 kernel for small f32 products (see `backend::cpu::sgemm`); false
/// when it does not apply (then faer runs).
fn small_gemm<T: Real>(m: usize, n: usize, k: usize, a: Mat<T>, b: Mat<T>, c: *mut T) -> bool {
    // Past two row tiles with B rows 128+ elements apart, the kernel copies B
    // into a panel it allocates each call: leave those to faer.
    if T::DTYPE != DType::F32 || (m > 12 && b.rs >= 128) {
        return false;
    }
    let cast = |x: Mat<T>| sgemm::MatPtr {
        ptr: x.ptr.cast::<f32>(),
        rs: x.rs,
        cs: x.cs,
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
/// into row (or column) blocks across [`par_run`] when it is large.
///
/// # Safety
/// `a`, `b` address valid matrices; `c` holds m*n elements nothing else touches.
unsafe fn gemm<T: Real>(m: usize, n: usize, k: usize, a: Mat<T>, b: Mat<T>, c: *mut T, acc: bool) {
    let width = par_width();
    if width == 1 || m * n * k < PAR_FLOPS || m.max(n) < 32 {
        // SAFETY: forwarded.
        unsafe { T::gemm(m, n, k, a, b, c, n, acc) };
        return;
    }
    let c = cpu::SharedPtr::new(c);
    let split_rows = m >= n;
    let len = if split_rows { m } else { n };
    let split = cpu::TileSplit::new(len, BLOCKS_PER_THREAD * width, 16);
    par_run(split.parts, &|p| {
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

// ---------------------------------------------------------------- buffers

/// Whether `t` is a buffer [`slot`] can reuse for a result of `shape`/`dtype`
/// on `device`.
fn fits(t: &Tensor, shape: &[usize], dtype: DType, device: Device) -> bool {
    t.shape() == shape && t.dtype() == dtype && t.device() == device && t.is_contiguous()
}

/// The buffer kept in `slot` when it fits (contiguous, of `shape`, `dtype`,
/// `device`) and shares no storage with any of `inputs`; otherwise a new
/// zeroed one is stored there first (the first step, a new batch size).
pub(crate) fn slot<'s>(
    slot: &'s mut Option<Tensor>,
    shape: &[usize],
    dtype: DType,
    device: Device,
    inputs: &[&Tensor],
) -> &'s Tensor {
    let reuse = match slot {
        Some(t) => fits(t, shape, dtype, device) && inputs.iter().all(|i| !i.shares_storage(t)),
        None => false,
    };
    if !reuse {
        *slot = Some(crate::autograd::no_grad(|| {
            Tensor::zeros_opts(
                shape,
                &crate::tensor::TensorOptions::new()
                    .dtype(dtype)
                    .device(&device),
            )
        }));
    }
    slot.as_ref().expect("the slot was filled above")
}

/// Like [`slot`], for a result shaped like `like` but with last dim `last`
/// (compared without building the shape unless a new buffer is needed).
pub(crate) fn slot_last<'s>(
    s: &'s mut Option<Tensor>,
    like: &[usize],
    last: usize,
    dtype: DType,
    device: Device,
    inputs: &[&Tensor],
) -> &'s Tensor {
    let same = |t: &Tensor| {
        let sh = t.shape();
        !like.is_empty()
            && sh.len() == like.len()
            && sh[..sh.len() - 1] == like[..like.len() - 1]
            && sh[sh.len() - 1] == last
    };
    if let Some(t) = s.as_ref() {
        if same(t) {
            let shape = t.shape();
            let reuse =
                fits(t, shape, dtype, device) && inputs.iter().all(|i| !i.shares_storage(t));
            if reuse {
                return s.as_ref().expect("checked");
            }
        }
    }
    let mut shape = like.to_vec();
    match shape.last_mut() {
        Some(l) => *l = last,
        None => shape.push(last),
    }
    slot(s, &shape, dtype, device, inputs)
}

/// Panics unless `out` can receive `op`'s result: CPU, contiguous, of
/// `shape` and a float dtype, sharing no storage with `inputs`.
fn check_out(op: &str, out: &Tensor, shape: &[usize], inputs: &[&Tensor]) {
    assert!(
        out.is_contiguous() && out.shape() == shape && out.dtype().is_float(),
        "{op}: the output buffer must be a contiguous float tensor of shape {shape:?}, got a \
         {} tensor of shape {:?} (contiguous: {}); prepare it with a workspace slot",
        out.dtype(),
        out.shape(),
        out.is_contiguous()
    );
    for i in inputs {
        assert!(
            !i.shares_storage(out),
            "{op}: the output buffer shares storage with an input; use a separate buffer"
        );
        assert!(
            i.dtype() == out.dtype(),
            "{op}: an input is {} but the output buffer is {}; convert with .to_dtype(..)",
            i.dtype(),
            out.dtype()
        );
    }
}

/// Runs `f` on `out`'s elements (write-locked, contiguous) and the inputs'
/// storage (read-locked once per distinct storage), for element type `T`.
fn with_bufs<T: Real, const N: usize, R>(
    out: &Tensor,
    ins: [&Tensor; N],
    f: impl FnOnce(&mut [T], [&[T]; N]) -> R,
) -> R {
    let first = |i: usize| (0..i).find(|&j| ins[j].shares_storage(ins[i])).unwrap_or(i);
    // In the global lock order; an aliased input's guard is its first entry's.
    let (guards, [w]) = lock_storages(ins.map(|t| Some(&**t.storage())), [Some(out.storage())]);
    let slices: [&[T]; N] = std::array::from_fn(|i| {
        T::of(
            guards[first(i)]
                .as_ref()
                .expect("the first of each storage is locked"),
        )
    });
    let mut w = w.expect("a named storage is locked");
    let off = out.layout().offset;
    let n = out.numel();
    f(&mut T::of_mut(&mut w)[off..off + n], slices)
}

/// Calls `f(i, x)` for each element of `t` (read from `data`) in row-major order.
#[inline]
fn each<T: Real>(data: &[T], l: &Layout, mut f: impl FnMut(usize, T)) {
    let n = l.numel();
    if l.is_contiguous() {
        for (i, &x) in data[l.offset..l.offset + n].iter().enumerate() {
            f(i, x);
        }
        return;
    }
    let mut i = 0;
    cpu::walk(&l.shape, [&l.strides], [l.offset], 0, n, |[o]| {
        f(i, data[o]);
        i += 1;
    });
}

/// Calls `f(i, x, y)` for each element of two same-shaped tensors.
#[inline]
fn each2<T: Real>(a: &[T], la: &Layout, b: &[T], lb: &Layout, mut f: impl FnMut(usize, T, T)) {
    let n = la.numel();
    if la.is_contiguous() && lb.is_contiguous() {
        let (sa, sb) = (&a[la.offset..la.offset + n], &b[lb.offset..lb.offset + n]);
        for (i, (&x, &y)) in sa.iter().zip(sb).enumerate() {
            f(i, x, y);
        }
        return;
    }
    let mut i = 0;
    cpu::walk(
        &la.shape,
        [&la.strides, &lb.strides],
        [la.offset, lb.offset],
        0,
        n,
        |[oa, ob]| {
            f(i, a[oa], b[ob]);
            i += 1;
        },
    );
}

/// Dispatches a kernel generic over [`Real`] on a float dtype.
macro_rules! by_dtype {
    ($op:expr, $dtype:expr, $k:ident :: <T> ($($arg:expr),* $(,)?)) => {
        match $dtype {
            DType::F32 => $k::<f32>($($arg),*),
            DType::F64 => $k::<f64>($($arg),*),
            other => panic!("{}: not supported for {} tensors; use f32 or f64", $op, other),
        }
    };
}

/// Writes `value` into `out`, or adds it.
#[inline(always)]
fn put<T: Real>(o: &mut T, value: T, acc: bool) {
    if acc {
        *o += value;
    } else {
        *o = value;
    }
}

// ---------------------------------------------------------------- elementwise

/// `out = x` (any layout, same number of elements, read in row-major order).
pub(crate) fn copy_into(out: &Tensor, x: &Tensor) {
    assert_eq!(out.numel(), x.numel(), "copy_into: element counts differ");
    check_out("copy_into", out, out.shape(), &[x]);
    fn k<T: Real>(out: &Tensor, x: &Tensor) {
        with_bufs::<T, 1, _>(out, [x], |o, [xs]| each(xs, x.layout(), |i, v| o[i] = v));
    }
    by_dtype!("copy_into", out.dtype(), k::<T>(out, x))
}

/// `out (+)= g` elementwise (same shape).
pub(crate) fn add_into(out: &Tensor, g: &Tensor, acc: bool) {
    check_out("add_into", out, g.shape(), &[g]);
    fn k<T: Real>(out: &Tensor, g: &Tensor, acc: bool) {
        with_bufs::<T, 1, _>(out, [g], |o, [gs]| {
            each(gs, g.layout(), |i, v| put(&mut o[i], v, acc))
        });
    }
    by_dtype!("add_into", out.dtype(), k::<T>(out, g, acc))
}

/// `out = a + b` elementwise (same shapes).
pub(crate) fn sum2_into(out: &Tensor, a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape(), b.shape(), "sum2_into: shapes differ");
    check_out("add", out, a.shape(), &[a, b]);
    fn k<T: Real>(out: &Tensor, a: &Tensor, b: &Tensor) {
        with_bufs::<T, 2, _>(out, [a, b], |o, [sa, sb]| {
            each2(sa, a.layout(), sb, b.layout(), |i, x, y| o[i] = x + y)
        });
    }
    by_dtype!("add", out.dtype(), k::<T>(out, a, b))
}

/// `out = a * b` elementwise (same shapes).
pub(crate) fn mul_into(out: &Tensor, a: &Tensor, b: &Tensor, acc: bool) {
    assert_eq!(a.shape(), b.shape(), "mul_into: shapes differ");
    check_out("mul", out, a.shape(), &[a, b]);
    fn k<T: Real>(out: &Tensor, a: &Tensor, b: &Tensor, acc: bool) {
        with_bufs::<T, 2, _>(out, [a, b], |o, [sa, sb]| {
            each2(sa, a.layout(), sb, b.layout(), |i, x, y| {
                put(&mut o[i], x * y, acc)
            })
        });
    }
    by_dtype!("mul", out.dtype(), k::<T>(out, a, b, acc))
}

/// An elementwise activation with a gradient computed from its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    Relu,
    Sigmoid,
    Tanh,
}

impl Act {
    #[inline(always)]
    fn apply<T: Real>(self, x: T) -> T {
        match self {
            // The tape's formula: NaN and -0.0 pass through, as in PyTorch.
            Act::Relu => {
                if x < T::ZERO {
                    T::ZERO
                } else {
                    x
                }
            }
            // The tape's formula (ops/activation.rs), stable for large |x|.
            Act::Sigmoid => {
                if x >= T::ZERO {
                    T::ONE / (T::ONE + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (T::ONE + e)
                }
            }
            Act::Tanh => x.tanh(),
        }
    }
    /// dL/dx from the output `y` and dL/dy `d` (the tape's kernels).
    #[inline(always)]
    fn grad<T: Real>(self, y: T, d: T) -> T {
        match self {
            Act::Relu => {
                if y <= T::ZERO {
                    T::ZERO
                } else {
                    d
                }
            }
            Act::Sigmoid => d * y * (T::ONE - y),
            Act::Tanh => d * (T::ONE - y * y),
        }
    }
}

/// `out = act(x)`.
pub(crate) fn act_into(act: Act, out: &Tensor, x: &Tensor) {
    check_out("activation", out, x.shape(), &[x]);
    fn k<T: Real>(act: Act, out: &Tensor, x: &Tensor) {
        with_bufs::<T, 1, _>(out, [x], |o, [xs]| {
            let l = x.layout();
            if l.is_contiguous() {
                let s = &xs[l.offset..l.offset + o.len()];
                match act {
                    // Monomorphic loops vectorise.
                    Act::Relu => o
                        .iter_mut()
                        .zip(s)
                        .for_each(|(o, &v)| *o = Act::Relu.apply(v)),
                    Act::Sigmoid => o
                        .iter_mut()
                        .zip(s)
                        .for_each(|(o, &v)| *o = Act::Sigmoid.apply(v)),
                    Act::Tanh => o
                        .iter_mut()
                        .zip(s)
                        .for_each(|(o, &v)| *o = Act::Tanh.apply(v)),
                }
            } else {
                each(xs, l, |i, v| o[i] = act.apply(v));
            }
        });
    }
    by_dtype!("activation", out.dtype(), k::<T>(act, out, x))
}

/// `out (+)= act'(x) · g`, from the activation's output `y`.
pub(crate) fn act_backward_into(act: Act, out: &Tensor, y: &Tensor, g: &Tensor, acc: bool) {
    assert_eq!(y.shape(), g.shape(), "activation backward: shapes differ");
    check_out("activation backward", out, y.shape(), &[y, g]);
    fn k<T: Real>(act: Act, out: &Tensor, y: &Tensor, g: &Tensor, acc: bool) {
        with_bufs::<T, 2, _>(out, [y, g], |o, [ys, gs]| {
            each2(ys, y.layout(), gs, g.layout(), |i, v, d| {
                put(&mut o[i], act.grad(v, d), acc)
            })
        });
    }
    by_dtype!(
        "activation backward",
        out.dtype(),
        k::<T>(act, out, y, g, acc)
    )
}

/// `out = x · mask` where the mask keeps each element with probability
/// `1 - p` (drawn from the global generator, as `Tensor::rand(..) >= p`) and
/// is `1/(1-p)` there: writes the mask into `mask` and the product into `out`.
pub(crate) fn dropout_into(out: &Tensor, mask: &Tensor, x: &Tensor, p: f64) {
    check_out("dropout", out, x.shape(), &[x, mask]);
    check_out("dropout", mask, x.shape(), &[x]);
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    fn k<T: Real>(mask: &Tensor, p: f64, scale: f64) {
        // The generator's lock first, then the storage's, as everywhere: code
        // run under `with_global_generator` may lock storages.
        crate::random::with_global_generator(|g| {
            let mut w = mask.storage().write();
            for v in T::of_mut(&mut w).iter_mut() {
                // The same draw and comparison as `Tensor::rand(shape).ge_scalar(p)`.
                let u = g.uniform() as f32;
                *v = T::from_f64(if u as f64 >= p { scale } else { 0.0 });
            }
        });
    }
    by_dtype!("dropout", mask.dtype(), k::<T>(mask, p, scale));
    mul_into(out, x, mask, false);
}

// ---------------------------------------------------------------- matrices

/// `t` viewed as a `[rows, cols]` matrix (its last dim is `cols`): 2-D
/// tensors with their strides, 1-D as one row, N-D when contiguous.
fn as_mat(t: &Tensor, cols: usize) -> Option<(usize, usize, usize)> {
    let l = t.layout();
    match l.ndim() {
        0 => None,
        1 => (l.shape[0] == cols).then_some((1, cols.max(1), 1)),
        2 => (l.shape[1] == cols).then_some((l.shape[0], l.strides[0], l.strides[1])),
        _ => (l.shape[l.ndim() - 1] == cols && l.is_contiguous())
            .then(|| (l.numel() / cols.max(1), cols, 1)),
    }
}

/// Whether `t` (a gradient flowing into a Linear layer with `cols` outputs)
/// has a matrix view the kernels read.
pub(crate) fn matrix_ok(t: &Tensor, cols: usize, dtype: DType) -> bool {
    t.dtype() == dtype && t.device().is_cpu() && as_mat(t, cols).is_some()
}

/// A [`Mat`] over a locked buffer: `(rows, row stride, column stride)` of `t`.
fn mat<T: Real>(data: &[T], t: &Tensor, (_, rs, cs): (usize, usize, usize)) -> Mat<T> {
    Mat {
        ptr: data[t.layout().offset..].as_ptr(),
        rs,
        cs,
    }
}

/// Whether [`linear_into`] and [`linear_backward_into`] handle these operands
/// (CPU, one float dtype, matrix views); otherwise callers take the
/// allocating path.
pub(crate) fn linear_supported(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
    let dt = w.dtype();
    dt.is_float()
        && x.dtype() == dt
        && b.is_none_or(|b| b.dtype() == dt && b.is_contiguous() && b.numel() == w.shape()[0])
        && x.device().is_cpu()
        && w.device().is_cpu()
        && w.ndim() == 2
        && x.ndim() >= 1
        && as_mat(x, w.shape()[1]).is_some()
}

/// `out = x · wᵀ + b` (a Linear layer), `out` of shape `x.shape[..-1] + [out_features]`.
/// The bias is written first and the product accumulated onto it.
pub(crate) fn linear_into(out: &Tensor, x: &Tensor, w: &Tensor, b: Option<&Tensor>) {
    let (nout, nin) = (w.shape()[0], w.shape()[1]);
    let xm = as_mat(x, nin).expect("linear_into: checked by linear_supported");
    let rows = xm.0;
    assert!(
        out.is_contiguous() && out.numel() == rows * nout && out.dtype() == w.dtype(),
        "linear_into: the output buffer must be a contiguous {} tensor of {rows} x {nout} \
         elements, got shape {:?}",
        w.dtype(),
        out.shape()
    );
    for t in [Some(x), Some(w), b].into_iter().flatten() {
        assert!(
            !t.shares_storage(out),
            "linear_into: the output buffer shares storage with an operand; use a separate buffer"
        );
    }
    fn k<T: Real>(
        out: &Tensor,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        xm: (usize, usize, usize),
    ) {
        let (nout, nin) = (w.shape()[0], w.shape()[1]);
        let rows = xm.0;
        let bias = b.unwrap_or(w);
        with_bufs::<T, 3, _>(out, [x, w, bias], |o, [xs, ws, bs]| {
            if let Some(b) = b {
                let bv = &bs[b.layout().offset..b.layout().offset + nout];
                for row in o.chunks_exact_mut(nout.max(1)) {
                    row.copy_from_slice(bv);
                }
            }
            let wl = w.layout();
            let wt = Mat {
                ptr: ws[wl.offset..].as_ptr(),
                rs: wl.strides[0],
                cs: wl.strides[1],
            }
            .t();
            // SAFETY: the views come from valid layouts of locked buffers;
            // `o` is rows x nout, exclusively ours.
            unsafe {
                gemm(
                    rows,
                    nout,
                    nin,
                    mat(xs, x, xm),
                    wt,
                    o.as_mut_ptr(),
                    b.is_some(),
                )
            };
        });
    }
    by_dtype!("linear", w.dtype(), k::<T>(out, x, w, b, xm))
}

/// The Linear layer's gradients from dL/dy `g` (shape `x.shape[..-1] + [out]`):
/// `dw += gᵀ·x`, `db += Σ_rows g` (into existing buffers), and `dx = g·w`
/// into `dx` when given.
pub(crate) fn linear_backward_into(
    g: &Tensor,
    x: &Tensor,
    w: &Tensor,
    dw: &Tensor,
    db: Option<&Tensor>,
    dx: Option<&Tensor>,
) {
    let (nout, nin) = (w.shape()[0], w.shape()[1]);
    let xm = as_mat(x, nin).expect("linear_backward_into: checked by linear_supported");
    let gm = as_mat(g, nout).expect("linear_backward_into: grad_out must be a matrix view");
    assert_eq!(
        gm.0, xm.0,
        "linear backward: grad_out and input rows differ"
    );
    check_out("linear backward (weight)", dw, w.shape(), &[g, x]);
    if let Some(db) = db {
        check_out("linear backward (bias)", db, &[nout], &[g]);
    }
    #[allow(clippy::too_many_arguments)]
    fn k<T: Real>(
        g: &Tensor,
        x: &Tensor,
        w: &Tensor,
        dw: &Tensor,
        db: Option<&Tensor>,
        dx: Option<&Tensor>,
        xm: (usize, usize, usize),
        gm: (usize, usize, usize),
    ) {
        let (nout, nin) = (w.shape()[0], w.shape()[1]);
        let rows = xm.0;
        // dw += gᵀ · x
        with_bufs::<T, 2, _>(dw, [g, x], |o, [gs, xs]| {
            // SAFETY: valid views of locked buffers; `o` is nout x nin.
            unsafe {
                gemm(
                    nout,
                    nin,
                    rows,
                    mat(gs, g, gm).t(),
                    mat(xs, x, xm),
                    o.as_mut_ptr(),
                    true,
                )
            };
        });
        // db += column sums of g
        if let Some(db) = db {
            with_bufs::<T, 1, _>(db, [g], |o, [gs]| {
                let base = g.layout().offset;
                for r in 0..rows {
                    let row = &gs[base + r * gm.1..];
                    for (j, o) in o.iter_mut().enumerate() {
                        *o += row[j * gm.2];
                    }
                }
            });
        }
        // dx = g · w
        if let Some(dx) = dx {
            assert!(
                !dx.shares_storage(g) && !dx.shares_storage(w),
                "linear backward: the input-gradient buffer shares storage with an operand"
            );
            assert!(
                dx.is_contiguous() && dx.numel() == rows * nin && dx.dtype() == w.dtype(),
                "linear backward: the input-gradient buffer must be a contiguous {} tensor of \
                 {rows} x {nin} elements",
                w.dtype()
            );
            with_bufs::<T, 2, _>(dx, [g, w], |o, [gs, ws]| {
                let wl = w.layout();
                let wm = Mat {
                    ptr: ws[wl.offset..].as_ptr(),
                    rs: wl.strides[0],
                    cs: wl.strides[1],
                };
                // SAFETY: as above; `o` is rows x nin.
                unsafe { gemm(rows, nin, nout, mat(gs, g, gm), wm, o.as_mut_ptr(), false) };
            });
        }
    }
    by_dtype!(
        "linear backward",
        w.dtype(),
        k::<T>(g, x, w, dw, db, dx, xm, gm)
    )
}

// ---------------------------------------------------------------- softmax

/// `(outer, n, inner)` of a contiguous shape split at `dim`.
fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    let outer = shape[..dim].iter().product();
    let inner = shape[dim + 1..].iter().product();
    (outer, shape[dim], inner)
}

/// `out = softmax(x, dim)` or `log_softmax(x, dim)` (shifted by the max, as
/// the allocating op), for a contiguous `x`.
pub(crate) fn softmax_into(out: &Tensor, x: &Tensor, dim: usize, log: bool) {
    assert!(
        x.is_contiguous(),
        "softmax_into: the input must be contiguous"
    );
    check_out("softmax", out, x.shape(), &[x]);
    let (outer, n, inner) = split_at_dim(x.shape(), dim);
    fn k<T: Real>(out: &Tensor, x: &Tensor, dims: (usize, usize, usize), log: bool) {
        let (outer, n, inner) = dims;
        with_bufs::<T, 1, _>(out, [x], |o, [xs]| {
            let xs = &xs[x.layout().offset..x.layout().offset + o.len()];
            for a in 0..outer {
                for c in 0..inner {
                    let at = |i: usize| a * n * inner + i * inner + c;
                    let mut m = xs[at(0)];
                    for i in 1..n {
                        let v = xs[at(i)];
                        if v > m || v.is_nan() {
                            m = v;
                        }
                    }
                    let mut s = T::ZERO;
                    for i in 0..n {
                        let e = (xs[at(i)] - m).exp();
                        s += e;
                        if !log {
                            o[at(i)] = e;
                        }
                    }
                    if log {
                        let lse = s.ln();
                        for i in 0..n {
                            o[at(i)] = (xs[at(i)] - m) - lse;
                        }
                    } else {
                        for i in 0..n {
                            o[at(i)] = o[at(i)] / s;
                        }
                    }
                }
            }
        });
    }
    if n == 0 {
        return;
    }
    by_dtype!(
        "softmax",
        out.dtype(),
        k::<T>(out, x, (outer, n, inner), log)
    )
}

/// `out (+)=` the softmax (`y·(g - Σ g·y)`) or log-softmax (`g - exp(y)·Σ g`)
/// input gradient from the output `y` (contiguous) and `g`.
pub(crate) fn softmax_backward_into(
    out: &Tensor,
    y: &Tensor,
    g: &Tensor,
    dim: usize,
    log: bool,
    acc: bool,
) {
    assert!(
        y.is_contiguous() && g.is_contiguous() && y.shape() == g.shape(),
        "softmax backward: the output and its gradient must be contiguous and of one shape"
    );
    check_out("softmax backward", out, y.shape(), &[y, g]);
    let (outer, n, inner) = split_at_dim(y.shape(), dim);
    fn k<T: Real>(
        out: &Tensor,
        y: &Tensor,
        g: &Tensor,
        dims: (usize, usize, usize),
        log: bool,
        acc: bool,
    ) {
        let (outer, n, inner) = dims;
        with_bufs::<T, 2, _>(out, [y, g], |o, [ys, gs]| {
            let ys = &ys[y.layout().offset..y.layout().offset + o.len()];
            let gs = &gs[g.layout().offset..g.layout().offset + o.len()];
            for a in 0..outer {
                for c in 0..inner {
                    let at = |i: usize| a * n * inner + i * inner + c;
                    let mut s = T::ZERO;
                    for i in 0..n {
                        s += if log {
                            gs[at(i)]
                        } else {
                            gs[at(i)] * ys[at(i)]
                        };
                    }
                    for i in 0..n {
                        let (yv, gv) = (ys[at(i)], gs[at(i)]);
                        let v = if log {
                            gv - yv.exp() * s
                        } else {
                            yv * (gv - s)
                        };
                        put(&mut o[at(i)], v, acc);
                    }
                }
            }
        });
    }
    by_dtype!(
        "softmax backward",
        out.dtype(),
        k::<T>(out, y, g, (outer, n, inner), log, acc)
    )
}

// ---------------------------------------------------------------- losses

/// Checks a 0-d/one-element loss buffer and a gradient buffer shaped like `input`.
fn check_loss_bufs(op: &str, input: &Tensor, loss: &Tensor, grad: &Tensor) {
    assert!(
        input.dtype().is_float(),
        "{op}: the input must be a float tensor, got {}",
        input.dtype()
    );
    assert!(
        loss.numel() == 1 && loss.dtype() == input.dtype() && loss.is_contiguous(),
        "{op}: the loss buffer must be a one-element {} tensor, got a {} tensor of shape {:?}",
        input.dtype(),
        loss.dtype(),
        loss.shape()
    );
    check_out(op, grad, input.shape(), &[input]);
    assert!(
        !loss.shares_storage(grad) && !loss.shares_storage(input),
        "{op}: the loss buffer must not share storage with the input or the gradient"
    );
}

/// `BCEWithLogitsLoss` (mean) without allocating: writes the loss
/// `mean(max(x, 0) - x·t + log(1 + exp(-|x|)))` into the one-element `loss`
/// and its gradient `(sigmoid(x) - t) / N` into `grad` (shaped like `input`),
/// and returns the loss. `target` has `input`'s shape (probabilities in [0, 1]).
pub fn bce_with_logits_into(input: &Tensor, target: &Tensor, loss: &Tensor, grad: &Tensor) -> f64 {
    assert!(
        input.shape() == target.shape(),
        "binary_cross_entropy_with_logits: target size {:?} must be the same as input size {:?}",
        target.shape(),
        input.shape()
    );
    check_loss_bufs("binary_cross_entropy_with_logits", input, loss, grad);
    assert!(
        !target.shares_storage(grad) && !target.shares_storage(loss),
        "binary_cross_entropy_with_logits: the target shares storage with an output buffer"
    );
    assert!(
        target.dtype() == input.dtype(),
        "binary_cross_entropy_with_logits: the target is {} but the input is {}; convert it \
         with .to_dtype(..)",
        target.dtype(),
        input.dtype()
    );
    fn k<T: Real>(input: &Tensor, target: &Tensor, loss: &Tensor, grad: &Tensor) -> f64 {
        let n = input.numel();
        let inv = T::from_f64(1.0 / n.max(1) as f64);
        let total = with_bufs::<T, 2, _>(grad, [input, target], |o, [xs, ts]| {
            // Accumulated in f64, as a reduction over the batch.
            let mut total = 0.0f64;
            each2(xs, input.layout(), ts, target.layout(), |i, x, t| {
                let relu = if x > T::ZERO { x } else { T::ZERO };
                let l = relu - x * t + (-x.abs()).exp().ln_1p();
                total += l.to_f64();
                o[i] = (Act::Sigmoid.apply(x) - t) * inv;
            });
            total
        });
        let value = if n == 0 { f64::NAN } else { total / n as f64 };
        let mut w = loss.storage().write();
        T::of_mut(&mut w)[loss.layout().offset] = T::from_f64(value);
        T::from_f64(value).to_f64()
    }
    by_dtype!(
        "binary_cross_entropy_with_logits",
        input.dtype(),
        k::<T>(input, target, loss, grad)
    )
}

/// PyTorch's default `ignore_index` for cross-entropy.
const IGNORE_INDEX: i64 = -100;

/// `CrossEntropyLoss` (mean, class-index targets) without allocating: for
/// logits `input` of shape `[N, C]` and an i64 `target` of shape `[N]`, writes
/// the loss `mean_n(-log_softmax(input)[n, target[n]])` into the one-element
/// `loss` and its gradient `(softmax(input) - onehot(target)) / N'` into
/// `grad`, and returns the loss. As in PyTorch (`ignore_index = -100`),
/// targets equal to -100 are skipped and `N'` counts the others (a batch of
/// ignored targets only has a NaN loss, as in PyTorch).
pub fn cross_entropy_into(input: &Tensor, target: &Tensor, loss: &Tensor, grad: &Tensor) -> f64 {
    assert!(
        input.ndim() == 2,
        "cross_entropy: expects input of shape [N, C], got {:?}; flatten extra dims first",
        input.shape()
    );
    assert!(
        target.dtype() == DType::I64 && target.shape() == [input.shape()[0]],
        "cross_entropy: expects an i64 target of shape [{}] (class indices), got a {} tensor \
         of shape {:?}; for class probabilities use the allocating loss",
        input.shape()[0],
        target.dtype(),
        target.shape()
    );
    check_loss_bufs("cross_entropy", input, loss, grad);
    fn k<T: Real>(input: &Tensor, target: &Tensor, loss: &Tensor, grad: &Tensor) -> f64 {
        let (n, c) = (input.shape()[0], input.shape()[1]);
        let total = {
            // The input and the targets read, the gradient written: locked
            // together in the global lock order.
            let ([xg, tg], [og]) = lock_storages(
                [Some(&**input.storage()), Some(target.storage())],
                [Some(grad.storage())],
            );
            let locked = "distinct storages are each locked";
            let (xg, tg, mut og) = (xg.expect(locked), tg.expect(locked), og.expect(locked));
            let Buffer::I64(tv) = &*tg else {
                unreachable!("checked i64 above")
            };
            let tl = target.layout();
            let tval = |r: usize| tv[tl.offset + r * tl.strides[0]];
            // Targets first, so a bad one panics before anything is written.
            let mut count = 0usize;
            for r in 0..n {
                let t = tval(r);
                if t != IGNORE_INDEX {
                    assert!(
                        (0..c as i64).contains(&t),
                        "cross_entropy: target {t} is out of bounds for {c} classes (row {r}); \
                         class indices must be in [0, {c}) or {IGNORE_INDEX} (ignored)"
                    );
                    count += 1;
                }
            }
            let inv = T::from_f64(1.0 / count as f64);
            let l = input.layout();
            let xs = T::of(&xg);
            let go = grad.layout().offset;
            let o = &mut T::of_mut(&mut og)[go..go + n * c];
            let mut total = 0.0f64;
            for r in 0..n {
                let at = |j: usize| xs[l.offset + r * l.strides[0] + j * l.strides[1]];
                let row = &mut o[r * c..(r + 1) * c];
                let t = tval(r);
                if t == IGNORE_INDEX {
                    row.iter_mut().for_each(|v| *v = T::ZERO);
                    continue;
                }
                let mut m = at(0);
                for j in 1..c {
                    let v = at(j);
                    if v > m || v.is_nan() {
                        m = v;
                    }
                }
                let mut s = T::ZERO;
                for (j, v) in row.iter_mut().enumerate() {
                    let e = (at(j) - m).exp();
                    *v = e;
                    s += e;
                }
                let lse = s.ln();
                total -= ((at(t as usize) - m) - lse).to_f64();
                for v in row.iter_mut() {
                    *v = *v / s * inv;
                }
                row[t as usize] = row[t as usize] - inv;
            }
            // No counted rows: PyTorch's mean of nothing is NaN.
            total / count as f64
        };
        let mut w = loss.storage().write();
        T::of_mut(&mut w)[loss.layout().offset] = T::from_f64(total);
        T::from_f64(total).to_f64()
    }
    by_dtype!(
        "cross_entropy",
        input.dtype(),
        k::<T>(input, target, loss, grad)
    )
}

// ---------------------------------------------------------------- optimizer helpers

/// `param -= lr · grad` in place (plain SGD), then `grad = 0` when `zero_grad`.
pub(crate) fn sgd_update_(param: &Tensor, grad: &Tensor, lr: f64, zero_grad: bool) {
    assert!(
        param.shape() == grad.shape() && param.is_contiguous() && grad.is_contiguous(),
        "sgd: a parameter and its gradient must be contiguous and of one shape (got {:?} and {:?})",
        param.shape(),
        grad.shape()
    );
    check_out("sgd", param, grad.shape(), &[grad]);
    fn k<T: Real>(param: &Tensor, grad: &Tensor, lr: f64, zero: bool) {
        let lr = T::from_f64(lr);
        let ([], [pw, gw]) = lock_storages([], [Some(&**param.storage()), Some(grad.storage())]);
        let locked = "distinct storages are each locked";
        let (mut pw, mut gw) = (pw.expect(locked), gw.expect(locked));
        let (po, go, n) = (param.layout().offset, grad.layout().offset, param.numel());
        let p = cpu::SharedPtr::new(T::of_mut(&mut pw)[po..po + n].as_mut_ptr());
        let g = cpu::SharedPtr::new(T::of_mut(&mut gw)[go..go + n].as_mut_ptr());
        let block = |start: usize, end: usize| {
            // SAFETY: blocks are disjoint ranges inside the n elements of
            // both buffers, which stay write-locked during the call.
            let (p, g) = unsafe {
                (
                    std::slice::from_raw_parts_mut(p.get().add(start), end - start),
                    std::slice::from_raw_parts_mut(g.get().add(start), end - start),
                )
            };
            for (p, g) in p.iter_mut().zip(g.iter_mut()) {
                *p = *p - lr * *g;
                if zero {
                    *g = T::ZERO;
                }
            }
        };
        // Big parameters (a 784 x 256 weight) are split across the helpers.
        const BLOCK: usize = if cfg!(miri) { 16 } else { 1 << 15 };
        if n < 2 * BLOCK {
            block(0, n);
        } else {
            let parts = n.div_ceil(BLOCK);
            par_run(parts, &|i| block(i * BLOCK, ((i + 1) * BLOCK).min(n)));
        }
    }
    by_dtype!("sgd", param.dtype(), k::<T>(param, grad, lr, zero_grad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64s(t: &Tensor) -> Vec<f64> {
        t.to_vec::<f64>()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{what} [{i}]: {g} vs {w}"
            );
        }
    }

    fn filled(shape: &[usize], seed: usize, dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1009) as f64 / 1009.0 - 0.5)
            .collect();
        Tensor::from_vec(v, shape).to_dtype(dtype)
    }

    use crate::ops::matmul::tests::naive;

    /// Linear forward and backward into buffers against the definitions, at
    /// sizes that take every path: the small kernel, faer, the split across
    /// the helper pool (rows and columns), a strided input, and f64.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "hours under Miri; unsafe_paths::out_variant_products_and_sgd_match_the_definitions takes the same paths at small sizes"
    )]
    fn linear_kernels_match_the_definitions() {
        for &(rows, nin, nout, dtype) in &[
            (16, 2, 16, DType::F32),
            (64, 784, 256, DType::F32),
            (300, 40, 20, DType::F32),
            (20, 300, 500, DType::F32),
            (9, 5, 3, DType::F64),
            (70, 200, 130, DType::F64),
        ] {
            let what = format!("{rows}x{nin}->{nout} {dtype}");
            // A transposed (strided) input view.
            let x = filled(&[nin, rows], 1, dtype).t();
            let w = filled(&[nout, nin], 2, dtype);
            let b = filled(&[nout], 3, dtype);
            assert!(linear_supported(&x, &w, Some(&b)));
            let y = Tensor::zeros_opts([rows, nout], &crate::TensorOptions::new().dtype(dtype));
            linear_into(&y, &x, &w, Some(&b));
            let mut want = naive(&x, &w.t());
            let bv = f64s(&b);
            for (i, v) in want.iter_mut().enumerate() {
                *v += bv[i % nout];
            }
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            assert_close(
                &f64s(&y),
                &want,
                tol * nin as f64,
                &format!("{what} forward"),
            );

            let g = filled(&[rows, nout], 4, dtype);
            let opts = crate::TensorOptions::new().dtype(dtype);
            // dw and db accumulate onto what is there (here: ones).
            let dw = Tensor::ones_opts([nout, nin], &opts);
            let db = Tensor::ones_opts([nout], &opts);
            let dx = Tensor::zeros_opts([rows, nin], &opts);
            linear_backward_into(&g, &x, &w, &dw, Some(&db), Some(&dx));
            let want_dw: Vec<f64> = naive(&g.t(), &x).iter().map(|v| v + 1.0).collect();
            assert_close(
                &f64s(&dw),
                &want_dw,
                tol * rows as f64,
                &format!("{what} dw"),
            );
            let gv = f64s(&g);
            let want_db: Vec<f64> = (0..nout)
                .map(|j| 1.0 + (0..rows).map(|r| gv[r * nout + j]).sum::<f64>())
                .collect();
            assert_close(
                &f64s(&db),
                &want_db,
                tol * rows as f64,
                &format!("{what} db"),
            );
            assert_close(
                &f64s(&dx),
                &naive(&g, &w),
                tol * nout as f64,
                &format!("{what} dx"),
            );
        }
    }

    #[test]
    fn activations_and_their_gradients_match_the_tape_kernels() {
        let x = filled(&[7, 9], 5, DType::F64) * 8.0;
        let g = filled(&[7, 9], 6, DType::F64);
        for (act, y_ref) in [
            (Act::Relu, x.relu()),
            (Act::Sigmoid, x.sigmoid()),
            (Act::Tanh, x.tanh()),
        ] {
            let y = x.zeros_like();
            act_into(act, &y, &x);
            assert_eq!(f64s(&y), f64s(&y_ref), "{act:?}");
            let dx_ref = match act {
                Act::Relu => crate::vjp::relu(&y, &g),
                Act::Sigmoid => crate::vjp::sigmoid(&y, &g),
                Act::Tanh => crate::vjp::tanh(&y, &g),
            };
            let dx = x.ones_like();
            act_backward_into(act, &dx, &y, &g, true);
            let want: Vec<f64> = f64s(&dx_ref).iter().map(|v| v + 1.0).collect();
            assert_eq!(f64s(&dx), want, "{act:?} backward, accumulated");
        }
        // A strided input.
        let xt = x.t();
        let y = xt.contiguous().zeros_like();
        act_into(Act::Relu, &y, &xt);
        assert_eq!(f64s(&y), f64s(&xt.relu()));
    }

    #[test]
    fn softmax_kernels_match_the_allocating_ops() {
        let x = filled(&[3, 4, 5], 7, DType::F64) * 20.0;
        let g = filled(&[3, 4, 5], 8, DType::F64);
        for dim in 0..3 {
            for log in [false, true] {
                let y = x.zeros_like();
                softmax_into(&y, &x, dim, log);
                let y_ref = if log {
                    x.log_softmax(dim as isize)
                } else {
                    x.softmax(dim as isize)
                };
                assert_close(&f64s(&y), &f64s(&y_ref), 1e-14, "softmax");
                let dx = x.zeros_like();
                softmax_backward_into(&dx, &y, &g, dim, log, false);
                let dx_ref = if log {
                    crate::vjp::log_softmax(&y, &g, dim as isize)
                } else {
                    crate::vjp::softmax(&y, &g, dim as isize)
                };
                assert_close(&f64s(&dx), &f64s(&dx_ref), 1e-14, "softmax backward");
            }
        }
    }

    /// Reference values printed by PyTorch 2.15 (CPU, f64):
    /// ```python
    /// x = torch.tensor([[1000., 0., -1000.], [.5, -1.5, 2.], [3., 3., 3.], [-2., 1., 0.]],
    ///                  dtype=torch.float64, requires_grad=True)
    /// t = torch.tensor([1, 2, -100, 0])
    /// l = F.cross_entropy(x, t); l.backward(); print(l.item(), x.grad.tolist())
    /// ```
    #[test]
    fn cross_entropy_matches_pytorch_with_ignored_targets_and_huge_logits() {
        let x = Tensor::from_vec(
            vec![
                1000., 0., -1000., 0.5, -1.5, 2.0, 3.0, 3.0, 3.0, -2.0, 1.0, 0.0f64,
            ],
            [4, 3],
        );
        let t = Tensor::from_vec(vec![1i64, 2, -100, 0], [4]);
        let loss = Tensor::zeros_opts([], &crate::TensorOptions::new().dtype(DType::F64));
        let grad = x.zeros_like();
        let value = cross_entropy_into(&x, &t, &loss, &grad);
        assert_close(
            &[value, loss.item()],
            &[334.5249380886666; 2],
            1e-14,
            "loss",
        );
        let want = [
            0.3333333333333333,
            -0.3333333333333333,
            0.0,
            0.05934340183538635,
            0.00803125609561613,
            -0.06737465793100246,
            0.0,
            0.0,
            0.0,
            -0.3216269910135534,
            0.23512817089941374,
            0.0864988201141397,
        ];
        assert_close(&f64s(&grad), &want, 1e-14, "grad");
        // f32 agrees to f32 precision.
        let (x32, l32, g32) = (
            x.to_dtype(DType::F32),
            Tensor::zeros([]),
            Tensor::zeros([4, 3]),
        );
        let v32 = cross_entropy_into(&x32, &t, &l32, &g32);
        assert!((v32 - 334.5249380886666).abs() < 1e-4);
        assert_close(&f64s(&g32), &want, 1e-6, "f32 grad");
    }

    #[test]
    #[should_panic(expected = "target 3 is out of bounds for 3 classes")]
    fn cross_entropy_names_a_bad_target() {
        let x = Tensor::zeros([2, 3]);
        let t = Tensor::from_vec(vec![0i64, 3], [2]);
        cross_entropy_into(&x, &t, &Tensor::zeros([]), &Tensor::zeros([2, 3]));
    }

    /// Reference values printed by PyTorch 2.15 (CPU, f64):
    /// ```python
    /// z = torch.tensor([[100.], [-100.], [.3], [-.7]], dtype=torch.float64, requires_grad=True)
    /// y = torch.tensor([[0.], [1.], [1.], [.25]], dtype=torch.float64)
    /// l = F.binary_cross_entropy_with_logits(z, y); l.backward(); print(l.item(), z.grad.tolist())
    /// ```
    #[test]
    fn bce_with_logits_matches_pytorch_at_saturated_logits() {
        let z = Tensor::from_vec(vec![100.0f64, -100.0, 0.3, -0.7], [4, 1]);
        let y = Tensor::from_vec(vec![0.0f64, 1.0, 1.0, 0.25], [4, 1]);
        let loss = Tensor::zeros_opts([], &crate::TensorOptions::new().dtype(DType::F64));
        let grad = z.zeros_like();
        let value = bce_with_logits_into(&z, &y, &loss, &grad);
        assert_close(&[value, loss.item()], &[50.2831353233385; 2], 1e-14, "loss");
        let want = [0.25, -0.25, -0.10638937079708524, 0.020453056957958474];
        assert_close(&f64s(&grad), &want, 1e-14, "grad");
    }

    #[test]
    fn slots_are_reused_until_the_shape_changes_or_an_input_aliases() {
        let mut s = None;
        let x = Tensor::zeros([2, 3]);
        let first = slot(&mut s, &[4, 3], DType::F32, Device::Cpu, &[&x]).clone();
        let again = slot(&mut s, &[4, 3], DType::F32, Device::Cpu, &[&x]).clone();
        assert!(first.shares_storage(&again));
        let other = slot(&mut s, &[5, 3], DType::F32, Device::Cpu, &[&x]).clone();
        assert!(!other.shares_storage(&first) && other.shape() == [5, 3]);
        // The slot's own buffer passed as an input: a fresh one.
        let fresh = slot(&mut s, &[5, 3], DType::F32, Device::Cpu, &[&other]).clone();
        assert!(!fresh.shares_storage(&other));
    }
}
