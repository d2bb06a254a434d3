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

use crate::backend::cpu::gemm::Gemm;
use crate::backend::cpu::pool::par_run;
use crate::backend::cpu::{self};
use crate::backend::{lock_storages, Buffer, Device, Host};
use crate::tensor::{DType, Float, Layout, Tensor};

// ---------------------------------------------------------------- element types

/// The float element types the kernels are written for (f32 and f64).
pub(crate) trait Real: Float + Host + Gemm {}
impl Real for f32 {}
impl Real for f64 {}

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
                o[i] = (x.sigmoid() - t) * inv;
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
    use crate::test_util::{assert_close, f64s};

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
