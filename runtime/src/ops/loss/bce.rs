use super::*;
use crate::autograd::{try_apply, GradSlot, Op, Out, Spec};

// ---------------------------------------------------------------- binary_cross_entropy

/// Checks of `binary_cross_entropy`: float probabilities in [0, 1], a target of
/// the same dtype and shape, a weight that broadcasts to it.
pub(super) fn check_bce(
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

pub(super) fn bce_target_grad(
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

/// `binary_cross_entropy(input, target, weight)` on the tape: inputs
/// `[input, target]`, the weight (which takes no gradient) held by the op.
#[derive(Clone, Debug)]
pub struct BceLoss {
    /// Each element's weight, broadcast to the input.
    pub weight: Option<Tensor>,
    /// Mean, sum or none.
    pub reduction: Reduction,
}

impl BceLoss {
    /// The weight broadcast and cast to the input (checked by `spec`).
    fn weight_for(&self, input: &Tensor) -> Option<Tensor> {
        let op = "binary_cross_entropy";
        broadcast_weight(op, "weight", self.weight.as_ref(), input, input.dtype())
            .expect("checked by spec")
    }
}

impl Op for BceLoss {
    const NAME: &'static str = "BinaryCrossEntropyBackward";
    const OP: &'static str = "binary_cross_entropy";
    /// The input, the target and the broadcast weight.
    type Saved = (Tensor, Tensor, Option<Tensor>);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (input, target) = (x[0], x[1]);
        let op = "binary_cross_entropy";
        check_bce(op, input, target, self.weight.as_ref())?;
        check_weight_no_grad(op, "weight", self.weight.as_ref())?;
        Ok(Spec {
            shape: loss_shape(self.reduction, input.shape()).into(),
            dtype: input.dtype(),
            device: input.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let w = self.weight_for(x[0]);
        let (loss, _) = bce_core(x[0], x[1], w.as_ref(), self.reduction, true, None);
        out.set(loss.expect("asked for the loss"))
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].clone(), x[1].clone(), self.weight_for(x[0]))
    }

    fn backward(&self, (x, y, w): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let w = w.as_ref();
        if grads[0].needed() {
            let (_, dx) = bce_core(x, y, w, self.reduction, false, Some(Seed::Times(g)));
            grads[0].add(dx.expect("asked for the gradient"));
        }
        if grads[1].needed() {
            grads[1].add(bce_target_grad(x, w, g, self.reduction));
        }
    }
}

/// `binary_cross_entropy` on the tape.
pub(crate) fn binary_cross_entropy(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    let op = BceLoss {
        weight: weight.cloned(),
        reduction,
    };
    try_apply(op, &[input, target])
}

// ---------------------------------------------------------------- binary_cross_entropy_with_logits

/// `weight` and `pos_weight` checked and in the computation's dtype.
#[doc(hidden)]
pub struct BceLogitsWeights {
    weight: Option<Tensor>,
    pos_weight: Option<Tensor>,
}

pub(super) fn check_bce_logits(
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
    if w.weight.is_none()
        && w.pos_weight.is_none()
        && let Some(fused) = super::fused::bce_logits(z, y, reduction, want_loss, seed)
    {
        return fused;
    }
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

pub(super) fn bce_logits_target_grad(
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

impl crate::autograd::Saved for BceLogitsWeights {
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        self.weight.visit_mut(f);
        self.pos_weight.visit_mut(f);
    }
}

/// `binary_cross_entropy_with_logits(input, target, opts)` on the tape:
/// inputs `[input, target]`, the weights (which take no gradient) in the
/// options the op holds.
#[derive(Clone, Debug)]
pub struct BceWithLogitsLoss {
    /// Reduction, `weight` and `pos_weight`.
    pub opts: BceWithLogitsOptions,
}

impl BceWithLogitsLoss {
    /// The weights checked, broadcast and cast (checked by `spec`).
    fn weights(&self, input: &Tensor, target: &Tensor) -> BceLogitsWeights {
        let op = "binary_cross_entropy_with_logits";
        check_bce_logits(op, input, target, &self.opts).expect("checked by spec")
    }
}

impl Op for BceWithLogitsLoss {
    const NAME: &'static str = "BinaryCrossEntropyWithLogitsBackward";
    const OP: &'static str = "binary_cross_entropy_with_logits";
    /// The input, the target and the weights.
    type Saved = (Tensor, Tensor, BceLogitsWeights);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (input, target) = (x[0], x[1]);
        let op = "binary_cross_entropy_with_logits";
        check_bce_logits(op, input, target, &self.opts)?;
        check_weight_no_grad(op, "weight", self.opts.weight.as_ref())?;
        check_weight_no_grad(op, "pos_weight", self.opts.pos_weight.as_ref())?;
        Ok(Spec {
            shape: loss_shape(self.opts.reduction, input.shape()).into(),
            dtype: DType::promote(input.dtype(), target.dtype()),
            device: input.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let w = self.weights(x[0], x[1]);
        let (loss, _) = bce_logits_core(x[0], x[1], &w, self.opts.reduction, true, None);
        out.set(loss.expect("asked for the loss"))
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].clone(), x[1].clone(), self.weights(x[0], x[1]))
    }

    fn backward(&self, (z, y, w): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let reduction = self.opts.reduction;
        if grads[0].needed() {
            let (_, dz) = bce_logits_core(z, y, w, reduction, false, Some(Seed::Times(g)));
            grads[0].add(dz.expect("asked for the gradient"));
        }
        if grads[1].needed() {
            grads[1].add(bce_logits_target_grad(z, y.dtype(), w, g, reduction));
        }
    }
}

/// `binary_cross_entropy_with_logits` on the tape.
pub(crate) fn binary_cross_entropy_with_logits(
    input: &Tensor,
    target: &Tensor,
    opts: &BceWithLogitsOptions,
) -> Result<Tensor> {
    let op = BceWithLogitsLoss { opts: opts.clone() };
    try_apply(op, &[input, target])
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
