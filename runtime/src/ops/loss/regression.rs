use super::*;

// ---------------------------------------------------------------- mse_loss and l1_loss

/// Checks shared by the elementwise regression losses.
pub(super) fn check_regression(op: &'static str, input: &Tensor, target: &Tensor) -> Result<()> {
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
pub(super) struct RegressionBackward {
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
pub(super) fn record_regression(
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
pub(super) fn check_huber(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    delta: f64,
) -> Result<()> {
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
