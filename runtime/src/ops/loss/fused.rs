//! The fused CPU kernels of the two losses classifiers train with:
//! BCE-with-logits and cross-entropy over class indices, mean or sum, without
//! weights or label smoothing. One pass over the logits gives the loss and
//! dL/d(logits). Every path that computes these losses' value or gradient in
//! that case runs them: the loss modules' `forward_backward` (the
//! compile-time step), the tape's BCE node, `vjp::*` and the allocation-free
//! `vjp::*_into` entry points of the buffer-reusing step. The other cases
//! (weights, `pos_weight`, label smoothing, no reduction, a GPU tensor) take
//! the composed path in `bce.rs`/`class.rs`, of which these are the
//! specialisation.

use super::{Reduction, Seed};
use crate::backend::cpu::{run_vectorized, Kernel};
use crate::backend::{lock_storages, Buffer, Device, Host};
use crate::error::{Error, Result};
use crate::tensor::{DType, Float, Tensor, TensorOptions};

/// PyTorch's default `ignore_index` for cross-entropy (the `*_into` form's).
const IGNORE_INDEX: i64 = -100;

// ---------------------------------------------------------------- kernels

/// BCE-with-logits over elements: returns Σ `max(x, 0) - x·t + log1p(e^-|x|)`
/// (accumulated in f64, as a reduction over the batch) and writes
/// `(σ(x) - t)·scale` into `grad` when given. The terms are computed a
/// block at a time into a stack array (a loop that vectorises: the f32
/// `exp` and `ln_1p` are inline arithmetic) and then summed in order.
fn bce_logits_kernel<T: Float>(x: &[T], t: &[T], grad: Option<&mut [T]>, scale: T) -> f64 {
    run_vectorized(BceLogits { x, t, grad, scale })
}

/// [`bce_logits_kernel`]'s loop.
struct BceLogits<'a, T> {
    x: &'a [T],
    t: &'a [T],
    grad: Option<&'a mut [T]>,
    scale: T,
}

impl<T: Float> Kernel for BceLogits<'_, T> {
    type Output = f64;

    #[inline(always)]
    fn run(self) -> f64 {
        const BLOCK: usize = 64;
        let BceLogits { x, t, grad, scale } = self;
        let mut grad = grad;
        let mut terms = [T::ZERO; BLOCK];
        let mut total = 0.0f64;
        for (b, (xs, ts)) in x.chunks(BLOCK).zip(t.chunks(BLOCK)).enumerate() {
            let terms = &mut terms[..xs.len()];
            for ((o, &x), &t) in terms.iter_mut().zip(xs).zip(ts) {
                let relu = if x > T::ZERO { x } else { T::ZERO };
                *o = relu - x * t + (-x.abs()).exp().ln_1p();
            }
            if let Some(g) = grad.as_deref_mut() {
                let g = &mut g[b * BLOCK..][..xs.len()];
                for ((g, &x), &t) in g.iter_mut().zip(xs).zip(ts) {
                    *g = (x.sigmoid() - t) * scale;
                }
            }
            for v in terms.iter() {
                total += v.to_f64();
            }
        }
        total
    }
}

/// Checks class-index targets against `c` classes (first, so a bad one fails
/// before anything is written) and counts those not equal to `ignore_index`.
fn count_targets(
    op: &str,
    n: usize,
    target: impl Fn(usize) -> i64,
    c: usize,
    ignore_index: i64,
) -> Result<usize> {
    let mut count = 0;
    for r in 0..n {
        let t = target(r);
        if t == ignore_index {
            continue;
        }
        if !(0..c as i64).contains(&t) {
            return Err(Error::Invalid(format!(
                "{op}: target {t} is out of bounds: class indices must be in [0, {c}) for {c} \
                 classes (or equal ignore_index {ignore_index})"
            )));
        }
        count += 1;
    }
    Ok(count)
}

/// Cross-entropy over the rows of the `[n, c]` logits `x`: returns Σ over
/// rows not ignored of `-log_softmax(x)[r, t_r]` (in f64) and writes
/// `(softmax(x)[r] - onehot(t_r))·scale` into `grad`'s rows when given (0 in
/// ignored rows). The targets must have passed [`count_targets`].
fn cross_entropy_kernel<T: Float>(
    x: &[T],
    c: usize,
    target: impl Fn(usize) -> i64,
    ignore_index: i64,
    mut grad: Option<&mut [T]>,
    scale: T,
) -> f64 {
    let mut total = 0.0f64;
    for (r, row) in x.chunks_exact(c.max(1)).enumerate() {
        let t = target(r);
        let g = grad.as_deref_mut().map(|g| &mut g[r * c..(r + 1) * c]);
        if t == ignore_index {
            if let Some(g) = g {
                g.iter_mut().for_each(|v| *v = T::ZERO);
            }
            continue;
        }
        // The max is NaN when a logit is, so the loss is too.
        let m = row
            .iter()
            .fold(row[0], |m, &v| if v > m || v.is_nan() { v } else { m });
        let s = match g {
            Some(g) => {
                let mut s = T::ZERO;
                for (o, &v) in g.iter_mut().zip(row) {
                    let e = (v - m).exp();
                    *o = e;
                    s += e;
                }
                let k = scale / s;
                g.iter_mut().for_each(|o| *o = *o * k);
                g[t as usize] = g[t as usize] - scale;
                s
            }
            None => row.iter().map(|&v| (v - m).exp()).sum(),
        };
        total -= ((row[t as usize] - m) - s.ln()).to_f64();
    }
    total
}

// ---------------------------------------------------------------- buffers

/// Whether `t` can take a fused kernel: an f32/f64 tensor in main memory.
fn host_float(t: &Tensor) -> bool {
    t.device() == Device::Cpu && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// The incoming gradient as a number when it is one (a mean or sum loss's).
fn seed_value(seed: Seed) -> Option<f64> {
    match seed {
        Seed::One => Some(1.0),
        Seed::Times(g) if g.numel() == 1 && g.device() == Device::Cpu => Some(g.item()),
        Seed::Times(_) => None,
    }
}

/// Runs `k` on the buffers of the contiguous `x` and of `t` (read) and of the
/// contiguous `grad` (written), locked together in the global lock order.
fn with_locked<R>(
    x: &Tensor,
    t: &Tensor,
    grad: Option<&Tensor>,
    k: impl FnOnce(&Buffer, &Buffer, Option<&mut Buffer>) -> R,
) -> R {
    let t_own = (!t.shares_storage(x)).then(|| &**t.storage());
    let ([xg, tg], [gg]) = lock_storages(
        [Some(&**x.storage()), t_own],
        [grad.map(|g| &**g.storage())],
    );
    let xb = xg.as_ref().expect("a named storage is locked");
    let tb = tg.as_deref().unwrap_or(xb);
    let mut gg = gg;
    k(xb, tb, gg.as_deref_mut())
}

/// `t`'s elements as a slice (contiguous `t`).
fn elems<'b, T: Host>(buf: &'b Buffer, t: &Tensor) -> &'b [T] {
    let off = t.layout().offset;
    &T::of(buf)[off..off + t.numel()]
}

/// `t`'s elements as a mutable slice (contiguous `t`).
fn elems_mut<'b, T: Host>(buf: &'b mut Buffer, t: &Tensor) -> &'b mut [T] {
    let off = t.layout().offset;
    &mut T::of_mut(buf)[off..off + t.numel()]
}

/// A 0-d tensor of `dtype` holding `v`.
fn scalar(v: f64, dtype: DType) -> Tensor {
    Tensor::full_opts([], v, &TensorOptions::new().dtype(dtype))
}

/// The mean of `total` over `count` terms (NaN over none, as PyTorch), or the sum.
fn reduced(total: f64, count: usize, reduction: Reduction) -> f64 {
    match reduction {
        Reduction::Mean => total / count as f64,
        _ => total,
    }
}

/// The gradient's factor: the seed, over the count for the mean.
fn grad_scale(seed: f64, count: usize, reduction: Reduction) -> f64 {
    match reduction {
        Reduction::Mean => seed / count as f64,
        _ => seed,
    }
}

// ---------------------------------------------------------------- BCE-with-logits

/// Runs the BCE kernel for `dtype` on locked buffers; returns Σ of the terms.
fn run_bce(x: &Tensor, t: &Tensor, grad: Option<&Tensor>, scale: f64) -> f64 {
    fn k<T: Float + Host>(x: &Tensor, t: &Tensor, grad: Option<&Tensor>, scale: f64) -> f64 {
        with_locked(x, t, grad, |xb, tb, gb| {
            let g = gb.map(|b| elems_mut::<T>(b, grad.expect("a buffer for a gradient")));
            bce_logits_kernel(elems(xb, x), elems(tb, t), g, T::from_f64(scale))
        })
    }
    match x.dtype() {
        DType::F64 => k::<f64>(x, t, grad, scale),
        _ => k::<f32>(x, t, grad, scale),
    }
}

/// The loss and/or input gradient of `binary_cross_entropy_with_logits`
/// through the fused kernel, or `None` when the case is not the fused one
/// (weights, no reduction, mixed dtypes, a GPU tensor, a seed that is not a
/// number).
pub(super) fn bce_logits(
    z: &Tensor,
    y: &Tensor,
    reduction: Reduction,
    want_loss: bool,
    seed: Option<Seed>,
) -> Option<(Option<Tensor>, Option<Tensor>)> {
    if reduction == Reduction::None || !host_float(z) || !host_float(y) || y.dtype() != z.dtype() {
        return None;
    }
    let seed = match seed {
        Some(s) => Some(seed_value(s)?),
        None => None,
    };
    let (z, y) = (z.contiguous(), y.contiguous());
    let n = z.numel();
    let opts = TensorOptions::new().dtype(z.dtype());
    let grad = seed.map(|_| Tensor::zeros_opts(z.shape(), &opts));
    let scale = grad_scale(seed.unwrap_or(0.0), n, reduction);
    let total = run_bce(&z, &y, grad.as_ref(), scale);
    let loss = want_loss.then(|| scalar(reduced(total, n, reduction), z.dtype()));
    Some((loss, grad))
}

/// Panics unless `loss` is a one-element buffer and `grad` a contiguous one
/// shaped like `input`, all of `input`'s dtype, sharing no storage.
fn check_into_bufs(op: &str, input: &Tensor, target: &Tensor, loss: &Tensor, grad: &Tensor) {
    assert!(
        host_float(input),
        "{op}: the input must be an f32 or f64 tensor in main memory, got {} on {:?}",
        input.dtype(),
        input.device()
    );
    assert!(
        loss.numel() == 1 && loss.dtype() == input.dtype() && loss.device() == Device::Cpu,
        "{op}: the loss buffer must be a one-element {} tensor, got a {} tensor of shape {:?}",
        input.dtype(),
        loss.dtype(),
        loss.shape()
    );
    assert!(
        grad.is_contiguous()
            && crate::tensor::same_shape(grad.shape(), input.shape())
            && grad.dtype() == input.dtype()
            && grad.device() == Device::Cpu,
        "{op}: the gradient buffer must be a contiguous {} tensor of shape {:?}, got a {} \
         tensor of shape {:?} (contiguous: {})",
        input.dtype(),
        input.shape(),
        grad.dtype(),
        grad.shape(),
        grad.is_contiguous()
    );
    for (a, b) in [
        (loss, grad),
        (loss, input),
        (loss, target),
        (grad, input),
        (grad, target),
    ] {
        assert!(
            !a.shares_storage(b),
            "{op}: the loss and gradient buffers must not share storage with each other or \
             with the input or target"
        );
    }
}

/// Writes `v` into the one-element `loss` (of dtype `dtype`).
fn store(loss: &Tensor, v: f64) {
    let off = loss.layout().offset;
    let mut w = loss.storage().write();
    match &mut *w {
        Buffer::F64(d) => d[off] = v,
        Buffer::F32(d) => d[off] = v as f32,
        _ => unreachable!("checked: a float loss buffer"),
    }
}

/// `BCEWithLogitsLoss` (mean) without allocating: writes the loss
/// `mean(max(x, 0) - x·t + log(1 + exp(-|x|)))` into the one-element `loss`
/// and its gradient `(sigmoid(x) - t) / N` into `grad` (shaped like `input`),
/// and returns the loss. `target` has `input`'s shape and dtype
/// (probabilities in [0, 1]). The kernel is the one
/// [`BCEWithLogitsLoss::forward_backward`](crate::nn::BCEWithLogitsLoss)
/// runs; the buffers are the buffer-reusing step's.
///
/// ```
/// use deriv_runtime::{tensor, vjp, Tensor};
/// let (z, y) = (tensor![[0.0], [2.0]], tensor![[1.0], [0.0]]);
/// let (loss, grad) = (Tensor::zeros([]), Tensor::zeros([2, 1]));
/// let value = vjp::bce_with_logits_into(&z, &y, &loss, &grad);
/// assert!((value - 1.4100376).abs() < 1e-6); // (ln 2 + 2 + ln(1 + e⁻²)) / 2
/// assert!((grad.to_vec::<f32>()[0] + 0.25).abs() < 1e-6); // (σ(0) - 1) / 2
/// ```
pub fn bce_with_logits_into(input: &Tensor, target: &Tensor, loss: &Tensor, grad: &Tensor) -> f64 {
    let op = "binary_cross_entropy_with_logits";
    assert!(
        input.shape() == target.shape(),
        "{op}: target size {:?} must be the same as input size {:?}",
        target.shape(),
        input.shape()
    );
    assert!(
        target.dtype() == input.dtype(),
        "{op}: the target is {} but the input is {}; convert it with .to_dtype(..)",
        target.dtype(),
        input.dtype()
    );
    check_into_bufs(op, input, target, loss, grad);
    let (x, t) = (input.contiguous(), target.contiguous());
    let n = x.numel();
    let total = run_bce(&x, &t, Some(grad), grad_scale(1.0, n, Reduction::Mean));
    let value = reduced(total, n, Reduction::Mean);
    store(loss, value);
    value_in(value, input.dtype())
}

/// `v` rounded to `dtype`, as the stored loss reads back.
fn value_in(v: f64, dtype: DType) -> f64 {
    if dtype == DType::F32 {
        v as f32 as f64
    } else {
        v
    }
}

// ---------------------------------------------------------------- cross-entropy

/// Checks the targets, then runs the cross-entropy kernel for `x`'s dtype on
/// locked buffers; returns (Σ of the terms, the count of targets not ignored).
/// `scale_of(count)` gives the gradient's factor.
fn run_cross_entropy(
    op: &str,
    x: &Tensor,
    t: &Tensor,
    ignore_index: i64,
    grad: Option<&Tensor>,
    scale_of: impl Fn(usize) -> f64,
) -> Result<(f64, usize)> {
    fn k<T: Float + Host>(
        op: &str,
        x: &Tensor,
        t: &Tensor,
        ignore_index: i64,
        grad: Option<&Tensor>,
        scale_of: impl Fn(usize) -> f64,
    ) -> Result<(f64, usize)> {
        let (n, c) = (x.shape()[0], x.shape()[1]);
        with_locked(x, t, grad, |xb, tb, gb| {
            let Buffer::I64(tv) = tb else {
                unreachable!("checked: i64 targets")
            };
            let tl = t.layout();
            let target = |r: usize| tv[tl.offset + r * tl.strides[0]];
            let count = count_targets(op, n, target, c, ignore_index)?;
            let g = gb.map(|b| elems_mut::<T>(b, grad.expect("a buffer for a gradient")));
            let scale = T::from_f64(scale_of(count));
            let total = cross_entropy_kernel(elems(xb, x), c, target, ignore_index, g, scale);
            Ok((total, count))
        })
    }
    match x.dtype() {
        DType::F64 => k::<f64>(op, x, t, ignore_index, grad, scale_of),
        _ => k::<f32>(op, x, t, ignore_index, grad, scale_of),
    }
}

/// The loss and/or input gradient of `cross_entropy` through the fused
/// kernel, or `Ok(None)` when the case is not the fused one: it needs `[N, C]`
/// logits in main memory, an i64 target of shape `[N]`, no class weights, no
/// label smoothing, a mean or sum, and a seed that is a number.
pub(super) fn cross_entropy(
    op: &str,
    x: &Tensor,
    t: &Tensor,
    opts: &super::CrossEntropyOptions,
    want_loss: bool,
    seed: Option<Seed>,
) -> Result<Option<(Option<Tensor>, Option<Tensor>)>> {
    let plain = opts.weight.is_none() && opts.label_smoothing == 0.0;
    let fits = x.ndim() == 2
        && host_float(x)
        && t.dtype() == DType::I64
        && t.device() == Device::Cpu
        && t.shape() == [x.shape()[0]];
    if !plain || !fits || opts.reduction == Reduction::None {
        return Ok(None);
    }
    let seed = match seed {
        Some(s) => match seed_value(s) {
            Some(v) => Some(v),
            None => return Ok(None),
        },
        None => None,
    };
    let x = x.contiguous();
    let grad = seed.map(|_| Tensor::zeros_opts(x.shape(), &TensorOptions::new().dtype(x.dtype())));
    let reduction = opts.reduction;
    let (total, count) = run_cross_entropy(op, &x, t, opts.ignore_index, grad.as_ref(), |n| {
        grad_scale(seed.unwrap_or(0.0), n, reduction)
    })?;
    let loss = want_loss.then(|| scalar(reduced(total, count, reduction), x.dtype()));
    Ok(Some((loss, grad)))
}

/// `CrossEntropyLoss` (mean, class-index targets) without allocating: for
/// logits `input` of shape `[N, C]` and an i64 `target` of shape `[N]`, writes
/// the loss `mean_n(-log_softmax(input)[n, target[n]])` into the one-element
/// `loss` and its gradient `(softmax(input) - onehot(target)) / N'` into
/// `grad`, and returns the loss. As in PyTorch (`ignore_index = -100`),
/// targets equal to -100 are skipped and `N'` counts the others (a batch of
/// ignored targets only has a NaN loss, as in PyTorch). The kernel is the
/// one [`CrossEntropyLoss::forward_backward`](crate::nn::CrossEntropyLoss)
/// runs. Panics on a target out of range, naming it.
///
/// ```
/// use deriv_runtime::{tensor, vjp, Tensor};
/// let x = tensor![[0.0, 0.0], [1.0, 1.0]];
/// let t = Tensor::from_vec(vec![0i64, 1], [2]);
/// let (loss, grad) = (Tensor::zeros([]), Tensor::zeros([2, 2]));
/// let value = vjp::cross_entropy_into(&x, &t, &loss, &grad);
/// assert!((value - std::f64::consts::LN_2).abs() < 1e-6);
/// assert_eq!(grad.to_vec::<f32>(), vec![-0.25, 0.25, 0.25, -0.25]);
/// ```
pub fn cross_entropy_into(input: &Tensor, target: &Tensor, loss: &Tensor, grad: &Tensor) -> f64 {
    let op = "cross_entropy";
    assert!(
        input.ndim() == 2,
        "{op}: expects input of shape [N, C], got {:?}; flatten extra dims first",
        input.shape()
    );
    assert!(
        target.dtype() == DType::I64
            && target.shape() == [input.shape()[0]]
            && target.device() == Device::Cpu,
        "{op}: expects an i64 target of shape [{}] (class indices), got a {} tensor of shape \
         {:?}; for class probabilities use the allocating loss",
        input.shape()[0],
        target.dtype(),
        target.shape()
    );
    check_into_bufs(op, input, target, loss, grad);
    let x = input.contiguous();
    let run = run_cross_entropy(op, &x, target, IGNORE_INDEX, Some(grad), |n| {
        grad_scale(1.0, n, Reduction::Mean)
    });
    let (total, count) = crate::error::OrPanic::or_panic(run);
    let value = reduced(total, count, Reduction::Mean);
    store(loss, value);
    value_in(value, input.dtype())
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
        let loss = Tensor::zeros_opts([], &TensorOptions::new().dtype(DType::F64));
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
        // The core the loss module's forward_backward calls runs the same
        // kernel, on a transposed (non-contiguous) view too.
        let xt = x.t().contiguous().t();
        assert!(!xt.is_contiguous());
        let opts = super::super::CrossEntropyOptions::default();
        let (l, g) =
            super::super::cross_entropy_core(&xt, &t, &opts, true, Some(Seed::One), None).unwrap();
        let (l, g) = (l.unwrap(), g.unwrap());
        assert_close(&[l.item()], &[334.5249380886666], 1e-14, "module loss");
        assert_close(&f64s(&g), &want, 1e-14, "module grad");
    }

    #[test]
    #[should_panic(
        expected = "cross_entropy: target 3 is out of bounds: class indices must be \
                               in [0, 3) for 3 classes"
    )]
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
        let loss = Tensor::zeros_opts([], &TensorOptions::new().dtype(DType::F64));
        let grad = z.zeros_like();
        let value = bce_with_logits_into(&z, &y, &loss, &grad);
        assert_close(&[value, loss.item()], &[50.2831353233385; 2], 1e-14, "loss");
        let want = [0.25, -0.25, -0.10638937079708524, 0.020453056957958474];
        assert_close(&f64s(&grad), &want, 1e-14, "grad");
        // The core the module's forward_backward calls, and the tape, run
        // the same kernel.
        let opts = super::super::BceWithLogitsOptions::default();
        let (l, g) =
            super::super::bce_logits_loss_core(&z, &y, &opts, true, Some(Seed::One)).unwrap();
        let (l, g) = (l.unwrap(), g.unwrap());
        assert_close(&[l.item()], &[50.2831353233385], 1e-14, "module loss");
        assert_close(&f64s(&g), &want, 1e-14, "module grad");
        let zl = z.detach().requires_grad_(true);
        super::super::binary_cross_entropy_with_logits(&zl, &y, &opts)
            .unwrap()
            .backward();
        assert_close(&f64s(&zl.grad().unwrap()), &want, 1e-14, "tape grad");
    }

    #[test]
    fn fused_and_composed_paths_agree_on_sum_and_seeded_gradients() {
        let x = Tensor::from_vec(vec![0.2f64, -1.0, 3.0, 0.5, 0.5, -2.0], [2, 3]);
        let t = Tensor::from_vec(vec![2i64, 0], [2]);
        let g = Tensor::full_opts([], 0.7, &TensorOptions::new().dtype(DType::F64));
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let opts = super::super::CrossEntropyOptions {
                reduction,
                ..Default::default()
            };
            let (l, d) = cross_entropy("cross_entropy", &x, &t, &opts, true, Some(Seed::Times(&g)))
                .unwrap()
                .expect("the fused case");
            // The composed formula: -log_softmax picked, reduced; its gradient
            // (softmax - onehot)·g (/N for the mean).
            let lp = x.log_softmax(1);
            let picked = -(lp.gather(1, &t.reshape([2, 1])));
            let k = if reduction == Reduction::Mean {
                0.5
            } else {
                1.0
            };
            let want_l = picked.sum().item() * k;
            let onehot = Tensor::from_vec(vec![0., 0., 1., 1., 0., 0.0f64], [2, 3]);
            let want_d = (x.softmax(1) - onehot) * (0.7 * k);
            assert_close(&[l.unwrap().item()], &[want_l], 1e-14, "loss");
            assert_close(&f64s(&d.unwrap()), &f64s(&want_d), 1e-14, "grad");
        }
    }
}
