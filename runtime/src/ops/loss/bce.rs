use super::*;

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

pub(super) struct BceBackward {
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
    if w.weight.is_none() && w.pos_weight.is_none() {
        if let Some(fused) = super::fused::bce_logits(z, y, reduction, want_loss, seed) {
            return fused;
        }
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

pub(super) struct BceLogitsBackward {
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
