//! Loss functions: forward kernels, backward rules and tape nodes.
//!
//! Everything here is written with tensor ops (no buffer access), so the
//! losses run on whatever device their inputs live on. Each loss has one
//! "core" that computes the loss value, the input gradient, or both from shared
//! intermediates: the tape's forward asks for the value, the tape node and
//! [`crate::vjp`] for the gradient, and [`crate::nn::Loss::forward_backward`]
//! for both in one pass (cross-entropy: one softmax, gradient
//! `(softmax - onehot) / N` written into the softmax's own buffer).

use crate::autograd::{is_grad_enabled, no_grad, record, Backward, SavedTensor};
use crate::error::{Error, OrPanic, Result};
use crate::nn::{BceWithLogitsOptions, CrossEntropyOptions, NllLossOptions, Reduction};
use crate::tensor::{DType, Tensor};

// ---------------------------------------------------------------- shared plumbing

/// The incoming gradient of a loss: 1 (`forward_backward`) or a tensor of the
/// loss's shape.
#[derive(Clone, Copy)]
pub(crate) enum Seed<'a> {
    One,
    Times(&'a Tensor),
}

/// The shape of a loss with `reduction` whose unreduced form has `elem_shape`.
fn loss_shape(reduction: Reduction, elem_shape: &[usize]) -> Vec<usize> {
    match reduction {
        Reduction::None => elem_shape.to_vec(),
        Reduction::Mean | Reduction::Sum => vec![],
    }
}

/// Fails unless `grad_out` has the loss's shape.
fn check_grad_out(
    op: &'static str,
    grad_out: &Tensor,
    reduction: Reduction,
    elem_shape: &[usize],
) -> Result<()> {
    let want = loss_shape(reduction, elem_shape);
    if grad_out.shape() != want.as_slice() {
        return Err(Error::shape(
            op,
            format!(
                "grad_out must have the loss's shape {want:?} (reduction {reduction:?}), got {:?}",
                grad_out.shape()
            ),
        ));
    }
    Ok(())
}

/// Fails unless `t` is a float tensor.
fn check_float(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::dtype(
            op,
            format!(
                "expected a float {what}, got {} of shape {:?}; convert with .to_dtype(DType::F32)",
                t.dtype(),
                t.shape()
            ),
        ))
    }
}

/// Fails unless input and target have the same shape (the losses do not broadcast).
fn check_same_shape(op: &'static str, input: &Tensor, target: &Tensor) -> Result<()> {
    if input.shape() != target.shape() {
        return Err(Error::shape(
            op,
            format!(
                "target of shape {:?} must have the input's shape {:?}; reshape the target \
                 (e.g. .reshape(..) or .unsqueeze(..)) so the two match",
                target.shape(),
                input.shape()
            ),
        ));
    }
    Ok(())
}

/// Fails when a weight tensor would need a gradient: like PyTorch, the losses
/// are not differentiable with respect to their weights.
fn check_weight_no_grad(op: &'static str, name: &str, w: Option<&Tensor>) -> Result<()> {
    if let Some(w) = w {
        if w.requires_grad() && is_grad_enabled() {
            return Err(Error::Autograd(format!(
                "{op}: the loss is not differentiable with respect to `{name}`, which requires \
                 grad; pass `{name}.detach()` (as in PyTorch, this input cannot require grad)"
            )));
        }
    }
    Ok(())
}

/// Fails unless `w` broadcasts to `shape` without growing it; returns it in `dtype`.
fn broadcast_weight(
    op: &'static str,
    name: &str,
    w: Option<&Tensor>,
    input: &Tensor,
    dtype: DType,
) -> Result<Option<Tensor>> {
    let Some(w) = w else { return Ok(None) };
    let shape = input.shape();
    let fits = w.ndim() <= shape.len()
        && w.shape()
            .iter()
            .rev()
            .zip(shape.iter().rev())
            .all(|(&a, &b)| a == b || a == 1);
    if !fits {
        return Err(Error::shape(
            op,
            format!(
                "{name} of shape {:?} must broadcast to the input's shape {shape:?}",
                w.shape()
            ),
        ));
    }
    crate::ops::same_device(op, input, w)?;
    Ok(Some(w.detach().to_dtype(dtype)))
}

/// A gradient in its input's dtype (the math may have run in a promoted one).
fn in_dtype(g: Tensor, dtype: DType) -> Tensor {
    if g.dtype() == dtype {
        g
    } else {
        g.to_dtype(dtype)
    }
}

/// `d *= seed * scale` in place (`d` is a fresh buffer this module owns).
fn apply_seed(d: Tensor, seed: Seed, scale: f64) -> Tensor {
    match seed {
        Seed::One => {
            if scale != 1.0 {
                d.mul_(scale);
            }
        }
        Seed::Times(g) => {
            if scale != 1.0 {
                d.mul_(&(g * scale));
            } else {
                d.mul_(g);
            }
        }
    }
    d
}

/// The mean's `1/n` (1 for the other reductions).
fn mean_scale(reduction: Reduction, n: usize) -> f64 {
    match reduction {
        Reduction::Mean => 1.0 / n as f64,
        _ => 1.0,
    }
}

/// Sums or averages an elementwise loss.
fn reduce(l: Tensor, reduction: Reduction) -> Tensor {
    match reduction {
        Reduction::None => l,
        Reduction::Sum => l.sum(),
        Reduction::Mean => l.mean(),
    }
}

/// `log(1 + u)`, accurate for tiny `u` as well (Goldberg's trick: with
/// `w = 1 + u` rounded, `log(w)·u/(w - 1)` cancels the rounding; where `w`
/// rounds to 1, `u` itself). Composed from tensor ops so it runs on any device.
fn log1p(u: &Tensor) -> Tensor {
    let w = u + 1.0;
    let wm1 = &w - 1.0;
    let r = w.log() * u / &wm1;
    Tensor::where_cond(&wm1.eq_scalar(0.0), u, &r)
}

/// `softplus(-z) = log(1 + e^-z) = -log σ(z)`, stable for any `z`:
/// `max(-z, 0) + log1p(e^-|z|)`.
fn softplus_neg(z: &Tensor) -> Tensor {
    let e = (-&z.abs()).exp();
    (-z).relu() + log1p(&e)
}

// ---------------------------------------------------------------- mse_loss and l1_loss

/// Checks shared by the elementwise regression losses.
fn check_regression(op: &'static str, input: &Tensor, target: &Tensor) -> Result<()> {
    check_float(op, "input", input)?;
    if target.dtype() == DType::Bool {
        return Err(Error::dtype(
            op,
            "target must be numeric, got bool; convert with .to_dtype(DType::F32)",
        ));
    }
    check_same_shape(op, input, target)?;
    crate::ops::same_device(op, input, target)
}

/// The loss and/or the input gradient of `mse_loss`.
pub(crate) fn mse_core(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    want_loss: bool,
    seed: Option<Seed>,
) -> (Option<Tensor>, Option<Tensor>) {
    no_grad(|| {
        let d = input - target;
        let n = d.numel();
        let loss = want_loss.then(|| match reduction {
            Reduction::None => &d * &d,
            // One pass, no n-sized temporary: Σ d² as a dot product.
            Reduction::Sum | Reduction::Mean => {
                let flat = d.reshape([-1i64]);
                flat.dot(&flat) * mean_scale(reduction, n)
            }
        });
        // d/dx (x - y)² = 2(x - y), written into d's own buffer.
        let grad = seed.map(|s| {
            in_dtype(
                apply_seed(d, s, 2.0 * mean_scale(reduction, n)),
                input.dtype(),
            )
        });
        (loss, grad)
    })
}

/// dL/d(input) of `mse_loss`: `2·(input - target)·grad_out` (divided by the
/// element count for the mean). The target's gradient is its negation.
#[track_caller]
pub fn mse_loss_backward(
    input: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    reduction: Reduction,
) -> Tensor {
    check_regression("mse_loss_backward", input, target).or_panic();
    check_grad_out("mse_loss_backward", grad_out, reduction, input.shape()).or_panic();
    mse_core(input, target, reduction, false, Some(Seed::Times(grad_out)))
        .1
        .expect("asked for the gradient")
}

/// The loss and/or the input gradient of `l1_loss`.
pub(crate) fn l1_core(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    want_loss: bool,
    seed: Option<Seed>,
) -> (Option<Tensor>, Option<Tensor>) {
    no_grad(|| {
        let d = input - target;
        let loss = want_loss.then(|| reduce(d.abs(), reduction));
        let grad = seed.map(|s| {
            // sign(d), 0 at 0 (PyTorch's sgn): (d > 0) - (d < 0).
            let sign = d.gt_scalar(0.0).to_dtype(d.dtype());
            sign.sub_(d.lt_scalar(0.0));
            in_dtype(
                apply_seed(sign, s, mean_scale(reduction, d.numel())),
                input.dtype(),
            )
        });
        (loss, grad)
    })
}

/// dL/d(input) of `l1_loss`: `sign(input - target)·grad_out` (0 where they are
/// equal; divided by the element count for the mean). The target's gradient is
/// its negation.
#[track_caller]
pub fn l1_loss_backward(
    input: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    reduction: Reduction,
) -> Tensor {
    check_regression("l1_loss_backward", input, target).or_panic();
    check_grad_out("l1_loss_backward", grad_out, reduction, input.shape()).or_panic();
    l1_core(input, target, reduction, false, Some(Seed::Times(grad_out)))
        .1
        .expect("asked for the gradient")
}

/// `mse_loss_backward`, `l1_loss_backward` or `huber_loss_backward` (the
/// last argument is Huber's `delta`; the others ignore it).
type RegressionRule = fn(&Tensor, &Tensor, &Tensor, Reduction, f64) -> Tensor;

/// The tape node of `mse_loss`, `l1_loss` and `huber_loss`: input gradient
/// from the shared rule, the target's is its negation.
struct RegressionBackward {
    input: SavedTensor,
    target: SavedTensor,
    reduction: Reduction,
    delta: f64,
    rule: RegressionRule,
    need: [bool; 2],
}
impl Backward for RegressionBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let (input, target) = (self.input.get(), self.target.get());
        let dx = (self.rule)(input, target, g, self.reduction, self.delta);
        let dy = self.need[1].then(|| in_dtype(-&dx, target.dtype()));
        vec![self.need[0].then_some(dx), dy]
    }
}

/// Records a regression loss's node (see [`RegressionBackward`]).
fn record_regression(
    name: &'static str,
    input: &Tensor,
    target: &Tensor,
    loss: Tensor,
    reduction: Reduction,
    delta: f64,
    rule: RegressionRule,
) -> Tensor {
    record(name, &[input, target], loss, || RegressionBackward {
        input: SavedTensor::new(input),
        target: SavedTensor::new(target),
        reduction,
        delta,
        rule,
        need: [input.requires_grad(), target.requires_grad()],
    })
}

/// `mse_loss` or `l1_loss` on the tape.
pub(crate) fn regression_loss(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
) -> Result<Tensor> {
    let loss = regression_core(op, input, target, reduction, true, None)?
        .0
        .expect("asked for the loss");
    let (name, rule): (_, RegressionRule) = if op == "mse_loss" {
        ("MseLossBackward", |x, t, g, r, _| {
            mse_loss_backward(x, t, g, r)
        })
    } else {
        ("L1LossBackward", |x, t, g, r, _| {
            l1_loss_backward(x, t, g, r)
        })
    };
    Ok(record_regression(
        name, input, target, loss, reduction, 0.0, rule,
    ))
}

// ---------------------------------------------------------------- huber_loss

/// Checks of `huber_loss`: those of the other regression losses, and a
/// positive `delta` (PyTorch refuses 0 and negatives).
fn check_huber(op: &'static str, input: &Tensor, target: &Tensor, delta: f64) -> Result<()> {
    check_regression(op, input, target)?;
    if delta > 0.0 {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{op}: delta must be positive, got {delta} (PyTorch: huber_loss does not support \
             non-positive values for delta)"
        )))
    }
}

/// The loss and/or the input gradient of `huber_loss`: with `d = input -
/// target`, `0.5·d²` where `|d| < delta` and `delta·(|d| - delta/2)` elsewhere.
pub(crate) fn huber_core(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    delta: f64,
    want_loss: bool,
    seed: Option<Seed>,
) -> (Option<Tensor>, Option<Tensor>) {
    no_grad(|| {
        let d = input - target;
        let loss = want_loss.then(|| {
            // With c = min(|d|, delta): 0.5·c² + delta·(|d| - c), both pieces at once.
            let a = d.abs();
            let c = a.clamp_max(delta);
            reduce((&c * &c) * 0.5 + (a - &c) * delta, reduction)
        });
        // d clamped to [-delta, delta] (PyTorch's rule, the edges included).
        let grad = seed.map(|s| {
            let g = d.clamp(Some(-delta), Some(delta));
            in_dtype(
                apply_seed(g, s, mean_scale(reduction, d.numel())),
                input.dtype(),
            )
        });
        (loss, grad)
    })
}

/// dL/d(input) of `huber_loss`: `clamp(input - target, -delta, delta)·grad_out`
/// (divided by the element count for the mean). The target's gradient is its
/// negation.
#[track_caller]
pub fn huber_loss_backward(
    input: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    reduction: Reduction,
    delta: f64,
) -> Tensor {
    check_huber("huber_loss_backward", input, target, delta).or_panic();
    check_grad_out("huber_loss_backward", grad_out, reduction, input.shape()).or_panic();
    huber_core(
        input,
        target,
        reduction,
        delta,
        false,
        Some(Seed::Times(grad_out)),
    )
    .1
    .expect("asked for the gradient")
}

/// `huber_loss` on the tape.
pub(crate) fn huber_loss(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    delta: f64,
) -> Result<Tensor> {
    let loss = huber_loss_core(input, target, reduction, delta, true, None)?
        .0
        .expect("asked for the loss");
    Ok(record_regression(
        "HuberLossBackward",
        input,
        target,
        loss,
        reduction,
        delta,
        huber_loss_backward,
    ))
}

/// The loss and/or input gradient of `huber_loss` (validated).
pub(crate) fn huber_loss_core(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    delta: f64,
    want_loss: bool,
    seed: Option<Seed>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    check_huber("huber_loss", input, target, delta)?;
    Ok(huber_core(input, target, reduction, delta, want_loss, seed))
}

// ---------------------------------------------------------------- binary_cross_entropy

/// Checks of `binary_cross_entropy`: float probabilities in [0, 1], a target of
/// the same dtype and shape, a weight that broadcasts to it.
fn check_bce(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    check_float(op, "input", input)?;
    if target.dtype() != input.dtype() {
        return Err(Error::dtype(
            op,
            format!(
                "target dtype {} must match the input's {}; convert with .to_dtype(DType::{})",
                target.dtype(),
                input.dtype(),
                if input.dtype() == DType::F64 {
                    "F64"
                } else {
                    "F32"
                }
            ),
        ));
    }
    check_same_shape(op, input, target)?;
    crate::ops::same_device(op, input, target)?;
    if input.numel() > 0 {
        let (lo, hi) = no_grad(|| (input.min().item(), input.max().item()));
        if !(lo >= 0.0 && hi <= 1.0) {
            return Err(Error::Invalid(format!(
                "{op}: all elements of input should be between 0 and 1 (found values in \
                 [{lo}, {hi}]); pass probabilities (e.g. after .sigmoid()), or give the raw \
                 scores to binary_cross_entropy_with_logits, which is also numerically stabler"
            )));
        }
    }
    broadcast_weight(op, "weight", weight, input, input.dtype())
}

/// The loss and/or the input gradient of `binary_cross_entropy`; `weight` is
/// already checked and in the input's dtype.
pub(crate) fn bce_core(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
    want_loss: bool,
    seed: Option<Seed>,
) -> (Option<Tensor>, Option<Tensor>) {
    no_grad(|| {
        let loss = want_loss.then(|| {
            // PyTorch's formula, logs clamped at -100:
            // (y - 1)·max(log1p(-x), -100) - y·max(log x, -100).
            let log_x = input.log();
            log_x.clamp_(Some(-100.0), None);
            let log_1mx = log1p(&-input);
            log_1mx.clamp_(Some(-100.0), None);
            let l = (target - 1.0) * &log_1mx - target * &log_x;
            let l = match weight {
                Some(w) => l * w,
                None => l,
            };
            reduce(l, reduction)
        });
        let grad = seed.map(|s| {
            // (x - y) / max((1 - x)·x, 1e-12), PyTorch's backward.
            let den = (1.0 - input) * input;
            // PyTorch's EPSILON is the f32 constant 1e-12.
            den.clamp_(Some(1e-12f32 as f64), None);
            let d = input - target;
            d.div_(&den);
            if let Some(w) = weight {
                d.mul_(w);
            }
            apply_seed(d, s, mean_scale(reduction, input.numel()))
        });
        (loss, grad)
    })
}

/// dL/d(input) of `binary_cross_entropy`:
/// `weight·(x - y) / max((1 - x)·x, 1e-12)·grad_out` (divided by the element
/// count for the mean), as PyTorch computes it.
#[track_caller]
pub fn binary_cross_entropy_backward(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    grad_out: &Tensor,
    reduction: Reduction,
) -> Tensor {
    let op = "binary_cross_entropy_backward";
    let w = check_bce(op, input, target, weight).or_panic();
    check_grad_out(op, grad_out, reduction, input.shape()).or_panic();
    bce_core(
        input,
        target,
        w.as_ref(),
        reduction,
        false,
        Some(Seed::Times(grad_out)),
    )
    .1
    .expect("asked for the gradient")
}

/// dL/d(target) of `binary_cross_entropy`: `weight·(log(1 - x) - log x)·grad_out`
/// (`-logit(x)`, unclamped as in PyTorch; divided by the element count for the mean).
#[track_caller]
pub fn binary_cross_entropy_target_backward(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    grad_out: &Tensor,
    reduction: Reduction,
) -> Tensor {
    let op = "binary_cross_entropy_target_backward";
    let w = check_bce(op, input, target, weight).or_panic();
    check_grad_out(op, grad_out, reduction, input.shape()).or_panic();
    bce_target_grad(input, w.as_ref(), grad_out, reduction)
}

fn bce_target_grad(
    input: &Tensor,
    weight: Option<&Tensor>,
    grad_out: &Tensor,
    reduction: Reduction,
) -> Tensor {
    no_grad(|| {
        let d = (input / &(1.0 - input)).log();
        d.mul_(-1.0);
        if let Some(w) = weight {
            d.mul_(w);
        }
        apply_seed(
            d,
            Seed::Times(grad_out),
            mean_scale(reduction, input.numel()),
        )
    })
}

struct BceBackward {
    input: SavedTensor,
    target: SavedTensor,
    weight: Option<Tensor>,
    reduction: Reduction,
    need: [bool; 2],
}
impl Backward for BceBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let (x, y) = (self.input.get(), self.target.get());
        let w = self.weight.as_ref();
        let dx = self.need[0].then(|| {
            bce_core(x, y, w, self.reduction, false, Some(Seed::Times(g)))
                .1
                .expect("asked for the gradient")
        });
        let dy = self.need[1].then(|| bce_target_grad(x, w, g, self.reduction));
        vec![dx, dy]
    }
}

/// `binary_cross_entropy` on the tape.
pub(crate) fn binary_cross_entropy(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    let op = "binary_cross_entropy";
    let w = check_bce(op, input, target, weight)?;
    check_weight_no_grad(op, "weight", weight)?;
    let loss = bce_core(input, target, w.as_ref(), reduction, true, None)
        .0
        .expect("asked for the loss");
    Ok(record(
        "BinaryCrossEntropyBackward",
        &[input, target],
        loss,
        || BceBackward {
            input: SavedTensor::new(input),
            target: SavedTensor::new(target),
            weight: w,
            reduction,
            need: [input.requires_grad(), target.requires_grad()],
        },
    ))
}

// ---------------------------------------------------------------- binary_cross_entropy_with_logits

/// `weight` and `pos_weight` checked and in the computation's dtype.
pub(crate) struct BceLogitsWeights {
    weight: Option<Tensor>,
    pos_weight: Option<Tensor>,
}

fn check_bce_logits(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    opts: &BceWithLogitsOptions,
) -> Result<BceLogitsWeights> {
    check_float(op, "input (logits)", input)?;
    check_float(op, "target", target)?;
    check_same_shape(op, input, target)?;
    crate::ops::same_device(op, input, target)?;
    let dt = DType::promote(input.dtype(), target.dtype());
    Ok(BceLogitsWeights {
        weight: broadcast_weight(op, "weight", opts.weight.as_ref(), input, dt)?,
        pos_weight: broadcast_weight(op, "pos_weight", opts.pos_weight.as_ref(), input, dt)?,
    })
}

/// The loss and/or the input gradient of `binary_cross_entropy_with_logits`.
pub(crate) fn bce_logits_core(
    z: &Tensor,
    y: &Tensor,
    w: &BceLogitsWeights,
    reduction: Reduction,
    want_loss: bool,
    seed: Option<Seed>,
) -> (Option<Tensor>, Option<Tensor>) {
    no_grad(|| {
        let loss = want_loss.then(|| {
            // (1 - y)·z + lw·softplus(-z), lw = 1 + (pos_weight - 1)·y: finite
            // for any z, since softplus(-z) = max(-z, 0) + log1p(e^-|z|).
            let sp = softplus_neg(z);
            let sp = match &w.pos_weight {
                Some(pw) => &(&(pw - 1.0) * y + 1.0) * &sp,
                None => sp,
            };
            let l = &(1.0 - y) * z + &sp;
            let l = match &w.weight {
                Some(wt) => l * wt,
                None => l,
            };
            reduce(l, reduction)
        });
        let grad = seed.map(|s| {
            // σ(z) - y, or (pos_weight·y + 1 - y)·σ(z) - pos_weight·y.
            let sig = z.sigmoid();
            let d = match &w.pos_weight {
                Some(pw) => {
                    let pwy = pw * y;
                    let d = &(&pwy + 1.0) - y;
                    d.mul_(&sig);
                    d.sub_(&pwy);
                    d
                }
                None => {
                    let d = if sig.dtype() == y.dtype() {
                        sig
                    } else {
                        sig.to_dtype(DType::promote(sig.dtype(), y.dtype()))
                    };
                    d.sub_(y);
                    d
                }
            };
            if let Some(wt) = &w.weight {
                d.mul_(wt);
            }
            in_dtype(
                apply_seed(d, s, mean_scale(reduction, z.numel())),
                z.dtype(),
            )
        });
        (loss, grad)
    })
}

fn bce_logits_target_grad(
    z: &Tensor,
    y_dtype: DType,
    w: &BceLogitsWeights,
    grad_out: &Tensor,
    reduction: Reduction,
) -> Tensor {
    no_grad(|| {
        // d/dy = -z + (pos_weight - 1)·softplus(-z); without pos_weight, -z.
        let d = match &w.pos_weight {
            Some(pw) => &(pw - 1.0) * &softplus_neg(z) - z,
            None => -z,
        };
        if let Some(wt) = &w.weight {
            d.mul_(wt);
        }
        in_dtype(
            apply_seed(d, Seed::Times(grad_out), mean_scale(reduction, z.numel())),
            y_dtype,
        )
    })
}

/// dL/d(input) of `binary_cross_entropy_with_logits`: `weight·(σ(z) - y)·grad_out`,
/// or with `pos_weight`, `weight·((pos_weight·y + 1 - y)·σ(z) - pos_weight·y)·grad_out`
/// (divided by the element count for the mean). Finite for any `z`.
#[track_caller]
pub fn binary_cross_entropy_with_logits_backward(
    input: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    opts: &BceWithLogitsOptions,
) -> Tensor {
    let op = "binary_cross_entropy_with_logits_backward";
    let w = check_bce_logits(op, input, target, opts).or_panic();
    check_grad_out(op, grad_out, opts.reduction, input.shape()).or_panic();
    bce_logits_core(
        input,
        target,
        &w,
        opts.reduction,
        false,
        Some(Seed::Times(grad_out)),
    )
    .1
    .expect("asked for the gradient")
}

/// dL/d(target) of `binary_cross_entropy_with_logits`: `-weight·z·grad_out`, or
/// with `pos_weight`, `weight·((pos_weight - 1)·softplus(-z) - z)·grad_out`
/// (divided by the element count for the mean).
#[track_caller]
pub fn binary_cross_entropy_with_logits_target_backward(
    input: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    opts: &BceWithLogitsOptions,
) -> Tensor {
    let op = "binary_cross_entropy_with_logits_target_backward";
    let w = check_bce_logits(op, input, target, opts).or_panic();
    check_grad_out(op, grad_out, opts.reduction, input.shape()).or_panic();
    bce_logits_target_grad(input, target.dtype(), &w, grad_out, opts.reduction)
}

struct BceLogitsBackward {
    input: SavedTensor,
    target: SavedTensor,
    weights: BceLogitsWeights,
    reduction: Reduction,
    need: [bool; 2],
}
impl Backward for BceLogitsBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let (z, y) = (self.input.get(), self.target.get());
        let dz = self.need[0].then(|| {
            bce_logits_core(
                z,
                y,
                &self.weights,
                self.reduction,
                false,
                Some(Seed::Times(g)),
            )
            .1
            .expect("asked for the gradient")
        });
        let dy = self.need[1]
            .then(|| bce_logits_target_grad(z, y.dtype(), &self.weights, g, self.reduction));
        vec![dz, dy]
    }
}

/// `binary_cross_entropy_with_logits` on the tape.
pub(crate) fn binary_cross_entropy_with_logits(
    input: &Tensor,
    target: &Tensor,
    opts: &BceWithLogitsOptions,
) -> Result<Tensor> {
    let op = "binary_cross_entropy_with_logits";
    let w = check_bce_logits(op, input, target, opts)?;
    check_weight_no_grad(op, "weight", opts.weight.as_ref())?;
    check_weight_no_grad(op, "pos_weight", opts.pos_weight.as_ref())?;
    let loss = bce_logits_core(input, target, &w, opts.reduction, true, None)
        .0
        .expect("asked for the loss");
    Ok(record(
        "BinaryCrossEntropyWithLogitsBackward",
        &[input, target],
        loss,
        || BceLogitsBackward {
            input: SavedTensor::new(input),
            target: SavedTensor::new(target),
            weights: w,
            reduction: opts.reduction,
            need: [input.requires_grad(), target.requires_grad()],
        },
    ))
}

// ---------------------------------------------------------------- class targets: nll_loss, cross_entropy

/// Class-index targets checked and prepared against an input of shape
/// `[N, C, d1..]` (a `[C]` input is handled as `[1, C]`).
pub(crate) struct ClassTargets {
    /// Whether the input had a batch dim (`[C]` inputs get one of size 1).
    batched: bool,
    /// The input's shape and dtype as given.
    input_shape: Vec<usize>,
    dtype: DType,
    n_classes: usize,
    /// `[N, 1, d1..]` i64: the targets, ignored entries replaced by class 0.
    idx: Tensor,
    /// `[N, d1..]` bool: the entries not equal to `ignore_index`.
    valid: Tensor,
    /// `[N, d1..]` float: the class weight of each target, 0 where ignored
    /// (without class weights: `valid` as a float mask).
    wt: Tensor,
    /// `[1, C, 1..]` class weights in the input's dtype.
    wb: Option<Tensor>,
    /// 0-d: Σ of the class weights, for label smoothing (`None` without
    /// weights: C).
    wsum: Option<Tensor>,
}

impl ClassTargets {
    /// The unreduced loss's shape: the target's.
    fn elem_shape(&self) -> Vec<usize> {
        if self.batched {
            self.valid.shape().to_vec()
        } else {
            vec![]
        }
    }

    /// The per-element loss in the target's shape: masked, then reduced.
    fn finish(&self, terms: Tensor, reduction: Reduction) -> Tensor {
        // where, not a product: an ignored entry's -inf log-prob must not give NaN.
        let l = Tensor::where_cond(&self.valid, &-&terms, &terms.zeros_like());
        match reduction {
            Reduction::None => {
                if self.batched {
                    l
                } else {
                    l.reshape(Vec::<usize>::new())
                }
            }
            Reduction::Sum => l.sum(),
            Reduction::Mean => l.sum() / &self.wt.sum(),
        }
    }

    /// `t · Σ_c w_c`.
    fn times_wsum(&self, t: &Tensor) -> Tensor {
        match &self.wsum {
            Some(s) => t * s,
            None => t * self.n_classes as f64,
        }
    }

    /// `seed / denominator` per element, 0 where ignored: `[N, d1..]`.
    fn coef(&self, seed: Seed, reduction: Reduction) -> Tensor {
        let valid = self.valid.to_dtype(self.wt.dtype());
        match (reduction, seed) {
            (Reduction::Mean, Seed::One) => valid / &self.wt.sum(),
            (Reduction::Mean, Seed::Times(g)) => valid * &(g / &self.wt.sum()),
            (_, Seed::One) => valid,
            (Reduction::Sum, Seed::Times(g)) => valid * g,
            (Reduction::None, Seed::Times(g)) => {
                let g = if self.batched {
                    g.clone()
                } else {
                    g.reshape([1usize])
                };
                valid * &g
            }
        }
    }
}

/// Checks the input and class-index target of `op` and prepares them.
fn class_targets(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: i64,
) -> Result<ClassTargets> {
    check_float(op, "input", input)?;
    if input.ndim() == 0 {
        return Err(Error::shape(
            op,
            "expected an input of shape [C], [N, C] or [N, C, d1, ...], got a 0-d tensor",
        ));
    }
    crate::ops::same_device(op, input, target)?;
    if target.dtype() != DType::I64 {
        return Err(Error::dtype(
            op,
            format!(
                "expected an i64 target of class indices, got {} of shape {:?}; convert with \
                 .to_dtype(DType::I64){}",
                target.dtype(),
                target.shape(),
                if op == "cross_entropy" {
                    format!(
                        ", or pass class probabilities as a float target of the input's shape {:?}",
                        input.shape()
                    )
                } else {
                    String::new()
                }
            ),
        ));
    }
    let batched = input.ndim() > 1;
    let want: Vec<usize> = input
        .shape()
        .iter()
        .enumerate()
        .filter(|&(d, _)| d != if batched { 1 } else { 0 })
        .map(|(_, &s)| s)
        .collect();
    if target.shape() != want.as_slice() {
        return Err(Error::shape(
            op,
            format!(
                "expected a target of shape {want:?} for an input of shape {:?} (the input \
                 without its class dim {}), got {:?}",
                input.shape(),
                if batched { 1 } else { 0 },
                target.shape()
            ),
        ));
    }
    let n_classes = input.shape()[if batched { 1 } else { 0 }];
    let dt = input.dtype();
    let wb = match weight {
        None => None,
        Some(w) => {
            if w.ndim() != 1 || w.numel() != n_classes {
                return Err(Error::shape(
                    op,
                    format!(
                        "weight tensor should be defined either for all {n_classes} classes \
                         or no classes but got weight tensor of shape: {:?}",
                        w.shape()
                    ),
                ));
            }
            crate::ops::same_device(op, input, w)?;
            Some(w.detach().to_dtype(dt))
        }
    };
    no_grad(|| {
        let t = if batched {
            target.clone()
        } else {
            target.reshape([1usize])
        };
        let valid = t.ne_scalar(ignore_index as f64);
        let safe = &t * &valid;
        if safe.numel() > 0 {
            let (lo, hi) = (safe.min().item(), safe.max().item());
            if lo < 0.0 || hi >= n_classes as f64 {
                let bad = if lo < 0.0 { lo } else { hi };
                return Err(Error::Invalid(format!(
                    "{op}: target {bad} is out of bounds: class indices must be in [0, {}) \
                     for {n_classes} classes (or equal ignore_index {ignore_index})",
                    n_classes
                )));
            }
        }
        let (wt, wsum, wb) = match wb {
            None => (valid.to_dtype(dt), None, None),
            Some(w) => {
                let wt = w
                    .index_select(0, &safe.reshape([-1i64]))
                    .reshape(safe.shape());
                wt.mul_(&valid);
                let mut shape = vec![1; t.ndim() + 1];
                shape[1] = n_classes;
                (wt, Some(w.sum()), Some(w.reshape(shape)))
            }
        };
        Ok(ClassTargets {
            batched,
            input_shape: input.shape().to_vec(),
            dtype: dt,
            n_classes,
            idx: safe.unsqueeze(1),
            valid,
            wt,
            wb,
            wsum,
        })
    })
}

/// Fails unless `0 <= label_smoothing <= 1`.
fn check_smoothing(op: &'static str, eps: f64) -> Result<()> {
    if (0.0..=1.0).contains(&eps) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{op}: label_smoothing must be between 0.0 and 1.0, got {eps}"
        )))
    }
}

/// The input viewed as `[N, C, d1..]`.
fn batched_view(x: &Tensor, batched: bool) -> Tensor {
    if batched {
        x.clone()
    } else {
        x.unsqueeze(0)
    }
}

/// A gradient back in the input's shape (and dtype).
fn unbatched(g: Tensor, ct: &ClassTargets) -> Tensor {
    let g = in_dtype(g, ct.dtype);
    if ct.batched {
        g
    } else {
        g.reshape(ct.input_shape.clone())
    }
}

/// The loss of log-probabilities `lp` against class indices, with label smoothing `eps`.
fn class_lp_loss(lp: &Tensor, ct: &ClassTargets, eps: f64, reduction: Reduction) -> Tensor {
    no_grad(|| {
        let lp = batched_view(lp, ct.batched);
        let picked = lp.gather(1, &ct.idx).squeeze_dim(1);
        // Σ over the targets' weights: w_t·lp_t (wt is 0 where ignored; `finish` masks anyway).
        let mut terms = match &ct.wb {
            Some(_) => picked * &ct.wt,
            None => picked,
        };
        if eps > 0.0 {
            let smooth = match &ct.wb {
                Some(wb) => (&lp * wb).sum_dim(1, false),
                None => lp.sum_dim(1, false),
            };
            terms = terms * (1.0 - eps) + smooth * (eps / ct.n_classes as f64);
        }
        ct.finish(terms, reduction)
    })
}

/// dL/d(log-probs) of the class-index loss: the rule of the tape's
/// `NllLossBackward` node (shared by `nll_loss` and `cross_entropy`).
fn class_lp_grad(
    ct: &ClassTargets,
    eps: f64,
    reduction: Reduction,
    seed: Seed,
    dtype: DType,
) -> Tensor {
    no_grad(|| {
        let coef = ct.coef(seed, reduction);
        let mut shape = ct.idx.shape().to_vec();
        shape[1] = ct.n_classes;
        let base = if eps > 0.0 {
            // -(ε/C)·w_c·coef at every class.
            let c = (&coef * (-eps / ct.n_classes as f64)).unsqueeze(1);
            let b = match &ct.wb {
                Some(wb) => &c * wb,
                None => c.expand(&shape).contiguous(),
            };
            b.to_dtype(dtype)
        } else {
            Tensor::zeros_opts(&shape, &ct.wt.options().dtype(dtype))
        };
        // -(1 - ε)·w_t·coef at each target.
        let onehot = (&coef * &ct.wt) * (eps - 1.0);
        let g = base.scatter_add(1, &ct.idx, &onehot.unsqueeze(1));
        unbatched(g, ct)
    })
}

/// The loss and/or dL/d(logits) of cross-entropy with class indices, from one
/// softmax: the gradient is `softmax·S - coef·((1-ε)·w_t·onehot + (ε/C)·w)`,
/// `S` the row's total, written into the exponentials' buffer.
fn class_logits_core(
    x: &Tensor,
    ct: &ClassTargets,
    eps: f64,
    reduction: Reduction,
    want_loss: bool,
    seed: Option<Seed>,
) -> (Option<Tensor>, Option<Tensor>) {
    no_grad(|| {
        let x = batched_view(x, ct.batched);
        let shifted = &x - &x.max_dim(1, true).0;
        let e = shifted.exp();
        let sumexp = e.sum_dim(1, true);
        let loss = want_loss.then(|| {
            let lse = sumexp.log().squeeze_dim(1);
            let picked = &shifted.gather(1, &ct.idx).squeeze_dim(1) - &lse;
            let mut terms = match &ct.wb {
                Some(_) => picked * &ct.wt,
                None => picked,
            };
            if eps > 0.0 {
                // Σ_c w_c·lp_c = Σ_c w_c·shifted_c - lse·Σ_c w_c.
                let ws = match &ct.wb {
                    Some(wb) => (&shifted * wb).sum_dim(1, false),
                    None => shifted.sum_dim(1, false),
                };
                let smooth = ws - ct.times_wsum(&lse);
                terms = terms * (1.0 - eps) + smooth * (eps / ct.n_classes as f64);
            }
            ct.finish(terms, reduction)
        });
        let grad = seed.map(|s| {
            let coef = ct.coef(s, reduction);
            let onehot = &coef * &ct.wt;
            if eps != 0.0 {
                onehot.mul_(1.0 - eps);
            }
            // S = coef·((1-ε)·w_t + (ε/C)·Σw): the row total of -dL/dlp.
            let smooth_coef = &coef * (eps / ct.n_classes as f64);
            let total = if eps > 0.0 {
                &onehot + &ct.times_wsum(&smooth_coef)
            } else {
                onehot.clone()
            };
            e.mul_(&(total.unsqueeze(1) / &sumexp));
            if eps > 0.0 {
                match &ct.wb {
                    Some(wb) => e.sub_(&(&smooth_coef.unsqueeze(1) * wb)),
                    None => e.sub_(smooth_coef.unsqueeze(1)),
                };
            }
            onehot.mul_(-1.0);
            unbatched(e.scatter_add(1, &ct.idx, &onehot.unsqueeze(1)), ct)
        });
        (loss, grad)
    })
}

/// dL/d(log_probs) of `nll_loss`: `-weight[t]·grad_out` at each target class
/// (divided by the targets' total weight for the mean), 0 elsewhere and at
/// ignored targets.
#[track_caller]
pub fn nll_loss_backward(
    log_probs: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    opts: &NllLossOptions,
) -> Tensor {
    let op = "nll_loss_backward";
    let (weight, ignore) = (opts.weight.as_ref(), opts.ignore_index);
    class_backward(
        op,
        log_probs,
        target,
        grad_out,
        weight,
        ignore,
        opts.reduction,
        0.0,
    )
}

/// dL/d(log_softmax(logits)) of `cross_entropy` with class-index targets: the
/// rule of the `NllLossBackward` node that `cross_entropy` records after
/// `log_softmax` (label smoothing included).
#[track_caller]
pub fn cross_entropy_log_probs_backward(
    log_probs: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    opts: &CrossEntropyOptions,
) -> Tensor {
    let op = "cross_entropy_backward";
    check_smoothing(op, opts.label_smoothing).or_panic();
    let (weight, ignore) = (opts.weight.as_ref(), opts.ignore_index);
    let smoothing = opts.label_smoothing;
    class_backward(
        op,
        log_probs,
        target,
        grad_out,
        weight,
        ignore,
        opts.reduction,
        smoothing,
    )
}

/// dL/d(log_probs) for class-index targets, shared by `nll_loss` and
/// `cross_entropy` (which adds label smoothing): checks the targets and
/// `grad_out`'s shape, then `class_lp_grad`.
#[allow(clippy::too_many_arguments)]
#[track_caller]
fn class_backward(
    op: &'static str,
    log_probs: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    weight: Option<&Tensor>,
    ignore_index: i64,
    reduction: Reduction,
    smoothing: f64,
) -> Tensor {
    let ct = class_targets(op, log_probs, target, weight, ignore_index).or_panic();
    check_grad_out(op, grad_out, reduction, &ct.elem_shape()).or_panic();
    class_lp_grad(
        &ct,
        smoothing,
        reduction,
        Seed::Times(grad_out),
        log_probs.dtype(),
    )
}

struct NllLossBackward {
    ct: ClassTargets,
    eps: f64,
    reduction: Reduction,
    dtype: DType,
}
impl Backward for NllLossBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(class_lp_grad(
            &self.ct,
            self.eps,
            self.reduction,
            Seed::Times(g),
            self.dtype,
        ))]
    }
}

/// `nll_loss` on the tape (with label smoothing `eps` when it ends a cross-entropy).
fn nll_on_tape(lp: &Tensor, ct: ClassTargets, eps: f64, reduction: Reduction) -> Tensor {
    let loss = class_lp_loss(lp, &ct, eps, reduction);
    let dtype = lp.dtype();
    record("NllLossBackward", &[lp], loss, || NllLossBackward {
        ct,
        eps,
        reduction,
        dtype,
    })
}

/// `nll_loss` on the tape.
pub(crate) fn nll_loss(
    log_probs: &Tensor,
    target: &Tensor,
    opts: &NllLossOptions,
) -> Result<Tensor> {
    let op = "nll_loss";
    check_weight_no_grad(op, "weight", opts.weight.as_ref())?;
    let ct = class_targets(
        op,
        log_probs,
        target,
        opts.weight.as_ref(),
        opts.ignore_index,
    )?;
    Ok(nll_on_tape(log_probs, ct, 0.0, opts.reduction))
}

// ----- class probabilities

/// A float target of class probabilities, checked, smoothed and weighted:
/// `tw = ((1-ε)·t + ε/C)·w` in the input's `[N, C, d1..]` layout.
struct ProbTargets {
    batched: bool,
    input_shape: Vec<usize>,
    /// The number of samples (N·d1·..): the mean's denominator.
    count: usize,
    /// `[1, C, 1..]` class weights, or `None`.
    wb: Option<Tensor>,
    /// `[N, C, d1..]`: the smoothed, weighted target.
    tw: Tensor,
}

fn prob_targets(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<ProbTargets> {
    check_float(op, "input", input)?;
    if !target.dtype().is_float() {
        return Err(Error::dtype(
            op,
            format!(
                "expected a float target of class probabilities (its shape {:?} is the \
                 input's), got {}; convert with .to_dtype(DType::F32), or pass class indices \
                 of shape {:?}",
                target.shape(),
                target.dtype(),
                input
                    .shape()
                    .iter()
                    .enumerate()
                    .filter(|&(d, _)| d != if input.ndim() > 1 { 1 } else { 0 })
                    .map(|(_, &s)| s)
                    .collect::<Vec<_>>()
            ),
        ));
    }
    if opts.ignore_index >= 0 {
        return Err(Error::Invalid(format!(
            "{op}: ignore_index ({}) is not supported for floating point targets (class \
             probabilities); leave it at its default -100",
            opts.ignore_index
        )));
    }
    check_smoothing(op, opts.label_smoothing)?;
    crate::ops::same_device(op, input, target)?;
    let batched = input.ndim() > 1;
    let n_classes = input.shape()[if batched { 1 } else { 0 }];
    let dt = DType::promote(input.dtype(), target.dtype());
    let wb = match &opts.weight {
        None => None,
        Some(w) => {
            if w.ndim() != 1 || w.numel() != n_classes {
                return Err(Error::shape(
                    op,
                    format!(
                        "weight tensor should be defined either for all {n_classes} classes \
                         or no classes but got weight tensor of shape: {:?}",
                        w.shape()
                    ),
                ));
            }
            let mut shape = vec![1; input.ndim().max(2)];
            shape[1] = n_classes;
            Some(w.detach().to_dtype(dt).reshape(shape))
        }
    };
    let tw = no_grad(|| {
        let t = batched_view(&target.to_dtype(dt), batched);
        let eps = opts.label_smoothing;
        let t = if eps > 0.0 {
            t * (1.0 - eps) + eps / n_classes as f64
        } else {
            t
        };
        match &wb {
            Some(wb) => t * wb,
            None => t,
        }
    });
    Ok(ProbTargets {
        batched,
        input_shape: input.shape().to_vec(),
        count: input.numel() / n_classes.max(1),
        wb,
        tw,
    })
}

/// A per-sample factor: a plain number (no 0-d tensor needed) or a tensor.
enum Coef {
    Number(f64),
    Tensor(Tensor),
}

impl Coef {
    fn times(&self, t: &Tensor) -> Tensor {
        match self {
            Coef::Number(s) => t * *s,
            Coef::Tensor(c) => t * c,
        }
    }
}

impl ProbTargets {
    /// `seed / count` (mean) or `seed`: a number, or `[N, 1, d1..]` / 0-d.
    fn coef(&self, seed: Seed, reduction: Reduction) -> Coef {
        let scale = match reduction {
            Reduction::Mean => 1.0 / self.count as f64,
            _ => 1.0,
        };
        match seed {
            Seed::One => Coef::Number(scale),
            Seed::Times(g) => {
                let g = g * scale;
                Coef::Tensor(match reduction {
                    Reduction::None if self.batched => g.unsqueeze(1),
                    Reduction::None => g.reshape([1usize, 1]),
                    _ => g,
                })
            }
        }
    }

    fn finish(&self, per_sample: Tensor, reduction: Reduction) -> Tensor {
        match reduction {
            Reduction::None if self.batched => per_sample,
            Reduction::None => per_sample.reshape(Vec::<usize>::new()),
            Reduction::Sum => per_sample.sum(),
            Reduction::Mean => per_sample.sum() / self.count as f64,
        }
    }

    fn unbatched(&self, g: Tensor, dtype: DType) -> Tensor {
        let g = in_dtype(g, dtype);
        if self.batched {
            g
        } else {
            g.reshape(self.input_shape.clone())
        }
    }

    fn elem_shape(&self) -> Vec<usize> {
        if self.batched {
            let mut s = self.input_shape.clone();
            s.remove(1);
            s
        } else {
            vec![]
        }
    }
}

/// The loss and/or dL/d(logits) of cross-entropy with class probabilities:
/// `-Σ_c tw_c·lp_c` per sample; gradient `coef·(softmax·Σ_c tw_c - tw)`.
fn prob_logits_core(
    x: &Tensor,
    pt: &ProbTargets,
    reduction: Reduction,
    want_loss: bool,
    seed: Option<Seed>,
) -> (Option<Tensor>, Option<Tensor>) {
    no_grad(|| {
        let x = batched_view(x, pt.batched);
        let shifted = &x - &x.max_dim(1, true).0;
        let e = shifted.exp();
        let sumexp = e.sum_dim(1, true);
        let loss = want_loss.then(|| {
            let lp = &shifted - &sumexp.log();
            pt.finish(-(&lp * &pt.tw).sum_dim(1, false), reduction)
        });
        let grad = seed.map(|s| {
            let coef = pt.coef(s, reduction);
            let total = pt.tw.sum_dim(1, true);
            let e = if e.dtype() == pt.tw.dtype() {
                e
            } else {
                e.to_dtype(pt.tw.dtype())
            };
            e.mul_(&(&coef.times(&total) / &sumexp));
            e.sub_(coef.times(&pt.tw));
            pt.unbatched(e, x.dtype())
        });
        (loss, grad)
    })
}

/// dL/d(target) of cross-entropy with class probabilities:
/// `-(1 - ε)·w·log_softmax(logits)·grad_out` (divided by N·d1·.. for the mean).
fn prob_target_grad(
    lp: &Tensor,
    target_dtype: DType,
    pt: &ProbTargets,
    eps: f64,
    reduction: Reduction,
    g: &Tensor,
) -> Tensor {
    no_grad(|| {
        let lp = batched_view(lp, pt.batched);
        let d = pt.coef(Seed::Times(g), reduction).times(&lp);
        d.mul_(eps - 1.0);
        if let Some(wb) = &pt.wb {
            d.mul_(wb);
        }
        pt.unbatched(d, target_dtype)
    })
}

struct SoftCrossEntropyBackward {
    lp: SavedTensor,
    target_dtype: DType,
    pt: ProbTargets,
    eps: f64,
    reduction: Reduction,
    need: [bool; 2],
}
impl Backward for SoftCrossEntropyBackward {
    fn backward(&self, g: &Tensor) -> Vec<Option<Tensor>> {
        let lp = self.lp.get();
        let dlp = self.need[0].then(|| {
            no_grad(|| {
                let d = self
                    .pt
                    .coef(Seed::Times(g), self.reduction)
                    .times(&self.pt.tw);
                d.mul_(-1.0);
                self.pt.unbatched(d, lp.dtype())
            })
        });
        let dt = self.need[1].then(|| {
            prob_target_grad(lp, self.target_dtype, &self.pt, self.eps, self.reduction, g)
        });
        vec![dlp, dt]
    }
}

/// How `cross_entropy` reads its target: class indices, or probabilities when
/// the target has the input's shape (PyTorch's rule).
enum CeTargets {
    Classes(ClassTargets),
    Probs(ProbTargets),
}

fn ce_targets(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<CeTargets> {
    if input.ndim() > 0 && input.shape() == target.shape() {
        Ok(CeTargets::Probs(prob_targets(op, input, target, opts)?))
    } else {
        check_smoothing(op, opts.label_smoothing)?;
        Ok(CeTargets::Classes(class_targets(
            op,
            input,
            target,
            opts.weight.as_ref(),
            opts.ignore_index,
        )?))
    }
}

/// The loss and/or dL/d(logits) of `cross_entropy` (validated); the gradient
/// is seeded by `seed`.
pub(crate) fn cross_entropy_core(
    logits: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOptions,
    want_loss: bool,
    seed: Option<Seed>,
    grad_out: Option<&Tensor>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let op = if want_loss {
        "cross_entropy"
    } else {
        "cross_entropy_backward"
    };
    let targets = ce_targets(op, logits, target, opts)?;
    if let Some(g) = grad_out {
        let shape = match &targets {
            CeTargets::Classes(ct) => ct.elem_shape(),
            CeTargets::Probs(pt) => pt.elem_shape(),
        };
        check_grad_out(op, g, opts.reduction, &shape)?;
    }
    Ok(match &targets {
        CeTargets::Classes(ct) => class_logits_core(
            logits,
            ct,
            opts.label_smoothing,
            opts.reduction,
            want_loss,
            seed,
        ),
        CeTargets::Probs(pt) => prob_logits_core(logits, pt, opts.reduction, want_loss, seed),
    })
}

/// dL/d(logits) of `cross_entropy`, fused: from one softmax,
/// `coef·(softmax·S - (1-ε)·w_t·onehot - (ε/C)·w)` for class indices
/// (`(softmax - onehot)/N` in the plain case), `coef·(softmax·Σ_c tw_c - tw)`
/// for class probabilities.
#[track_caller]
pub fn cross_entropy_backward(
    logits: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    opts: &CrossEntropyOptions,
) -> Tensor {
    cross_entropy_core(
        logits,
        target,
        opts,
        false,
        Some(Seed::Times(grad_out)),
        Some(grad_out),
    )
    .or_panic()
    .1
    .expect("asked for the gradient")
}

/// dL/d(target) of `cross_entropy` with a float target of class probabilities:
/// `-(1 - ε)·w·log_softmax(logits)·grad_out` (divided by N·d1·.. for the mean).
#[track_caller]
pub fn cross_entropy_target_backward(
    logits: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    opts: &CrossEntropyOptions,
) -> Tensor {
    let op = "cross_entropy_target_backward";
    let pt = prob_targets(op, logits, target, opts).or_panic();
    check_grad_out(op, grad_out, opts.reduction, &pt.elem_shape()).or_panic();
    let class_dim = if logits.ndim() > 1 { 1 } else { 0 };
    let lp = no_grad(|| logits.log_softmax(class_dim));
    prob_target_grad(
        &lp,
        target.dtype(),
        &pt,
        opts.label_smoothing,
        opts.reduction,
        grad_out,
    )
}

/// `cross_entropy` on the tape: `log_softmax` over the class dim, then
/// `NllLossBackward` (class indices) or `SoftCrossEntropyBackward` (class
/// probabilities).
pub(crate) fn cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<Tensor> {
    let op = "cross_entropy";
    check_weight_no_grad(op, "weight", opts.weight.as_ref())?;
    let targets = ce_targets(op, logits, target, opts)?;
    let class_dim = if logits.ndim() > 1 { 1 } else { 0 };
    let lp = logits.log_softmax(class_dim);
    Ok(match targets {
        CeTargets::Classes(ct) => nll_on_tape(&lp, ct, opts.label_smoothing, opts.reduction),
        CeTargets::Probs(pt) => {
            let loss = no_grad(|| {
                let lpb = batched_view(&lp, pt.batched);
                pt.finish(-(&lpb * &pt.tw).sum_dim(1, false), opts.reduction)
            });
            let eps = opts.label_smoothing;
            let reduction = opts.reduction;
            record("SoftCrossEntropyBackward", &[&lp, target], loss, || {
                SoftCrossEntropyBackward {
                    lp: SavedTensor::new(&lp),
                    target_dtype: target.dtype(),
                    need: [lp.requires_grad(), target.requires_grad()],
                    pt,
                    eps,
                    reduction,
                }
            })
        }
    })
}

/// The loss and/or input gradient of `nll_loss` (validated).
pub(crate) fn nll_loss_core(
    log_probs: &Tensor,
    target: &Tensor,
    opts: &NllLossOptions,
    want_loss: bool,
    seed: Option<Seed>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let ct = class_targets(
        "nll_loss",
        log_probs,
        target,
        opts.weight.as_ref(),
        opts.ignore_index,
    )?;
    let loss = want_loss.then(|| class_lp_loss(log_probs, &ct, 0.0, opts.reduction));
    let grad = seed.map(|s| class_lp_grad(&ct, 0.0, opts.reduction, s, log_probs.dtype()));
    Ok((loss, grad))
}

/// The loss and/or input gradient of `binary_cross_entropy` (validated).
pub(crate) fn bce_loss_core(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
    want_loss: bool,
    seed: Option<Seed>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let w = check_bce("binary_cross_entropy", input, target, weight)?;
    Ok(bce_core(
        input,
        target,
        w.as_ref(),
        reduction,
        want_loss,
        seed,
    ))
}

/// The loss and/or input gradient of `binary_cross_entropy_with_logits` (validated).
pub(crate) fn bce_logits_loss_core(
    input: &Tensor,
    target: &Tensor,
    opts: &BceWithLogitsOptions,
    want_loss: bool,
    seed: Option<Seed>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let w = check_bce_logits("binary_cross_entropy_with_logits", input, target, opts)?;
    Ok(bce_logits_core(
        input,
        target,
        &w,
        opts.reduction,
        want_loss,
        seed,
    ))
}

/// The loss and/or input gradient of `mse_loss` or `l1_loss` (validated).
pub(crate) fn regression_core(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    want_loss: bool,
    seed: Option<Seed>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    check_regression(op, input, target)?;
    Ok(if op == "mse_loss" {
        mse_core(input, target, reduction, want_loss, seed)
    } else {
        l1_core(input, target, reduction, want_loss, seed)
    })
}
