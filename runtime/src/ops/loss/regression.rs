use super::*;
use crate::autograd::{try_apply, GradSlot, Op, Out, Spec};

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

/// Which regression loss.
#[derive(Clone, Copy, Debug)]
pub enum Regression {
    /// `mse_loss`.
    Mse,
    /// `l1_loss`.
    L1,
    /// `huber_loss` with its `delta`.
    Huber {
        /// Where the loss turns from quadratic to linear.
        delta: f64,
    },
    /// `smooth_l1_loss` with its `beta`.
    SmoothL1 {
        /// Where the loss turns from quadratic to linear.
        beta: f64,
    },
}

/// `mse_loss`, `l1_loss` or `huber_loss` on the tape: inputs `[input,
/// target]`; the input's gradient from the loss's core, the target's its
/// negation.
#[derive(Clone, Copy, Debug)]
pub struct RegressionLoss {
    /// Which loss.
    pub kind: Regression,
    /// Mean, sum or none.
    pub reduction: Reduction,
}

impl RegressionLoss {
    fn op(&self) -> &'static str {
        match self.kind {
            Regression::Mse => "mse_loss",
            Regression::L1 => "l1_loss",
            Regression::Huber { .. } => "huber_loss",
            Regression::SmoothL1 { .. } => "smooth_l1_loss",
        }
    }

    fn core(
        &self,
        input: &Tensor,
        target: &Tensor,
        want_loss: bool,
        seed: Option<Seed>,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        match self.kind {
            Regression::Huber { delta } => {
                huber_loss_core(input, target, self.reduction, delta, want_loss, seed)
            }
            Regression::SmoothL1 { beta } => {
                smooth_l1_loss_core(input, target, self.reduction, beta, want_loss, seed)
            }
            _ => regression_core(self.op(), input, target, self.reduction, want_loss, seed),
        }
    }
}

impl Op for RegressionLoss {
    const NAME: &'static str = "MseLossBackward";
    const OP: &'static str = "mse_loss";
    /// The input and the target.
    type Saved = (Tensor, Tensor);

    fn name(&self, _: &[&Tensor]) -> &'static str {
        match self.kind {
            Regression::Mse => Self::NAME,
            Regression::L1 => "L1LossBackward",
            Regression::Huber { .. } => "HuberLossBackward",
            Regression::SmoothL1 { .. } => "SmoothL1LossBackward",
        }
    }

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (input, target) = (x[0], x[1]);
        match self.kind {
            Regression::Huber { delta } => check_huber(self.op(), input, target, delta)?,
            Regression::SmoothL1 { beta } => check_smooth_l1(self.op(), input, target, beta)?,
            _ => check_regression(self.op(), input, target)?,
        }
        Ok(Spec {
            shape: loss_shape(self.reduction, input.shape()).into(),
            dtype: crate::ops::result_type(input, target),
            device: input.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        match self.core(x[0], x[1], true, None) {
            Ok((loss, _)) => out.set(loss.expect("asked for the loss")),
            Err(e) => out.fail(e),
        }
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].clone(), x[1].clone())
    }

    fn backward(&self, (input, target): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let dx = self
            .core(input, target, false, Some(Seed::Times(g)))
            .or_panic()
            .1
            .expect("asked for the gradient");
        if grads[1].needed() {
            grads[1].add(in_dtype(-&dx, target.dtype()));
        }
        if grads[0].needed() {
            grads[0].add(dx);
        }
    }
}

/// `mse_loss` or `l1_loss` on the tape.
pub(crate) fn regression_loss(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
) -> Result<Tensor> {
    let kind = if op == "mse_loss" {
        Regression::Mse
    } else {
        Regression::L1
    };
    try_apply(RegressionLoss { kind, reduction }, &[input, target])
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
    let kind = Regression::Huber { delta };
    try_apply(RegressionLoss { kind, reduction }, &[input, target])
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

// ---------------------------------------------------------------- smooth_l1_loss

/// Checks of `smooth_l1_loss`: those of the other regression losses, and
/// `beta >= 0` (0 makes it the L1 loss, as in PyTorch).
pub(super) fn check_smooth_l1(
    op: &'static str,
    input: &Tensor,
    target: &Tensor,
    beta: f64,
) -> Result<()> {
    check_regression(op, input, target)?;
    if beta >= 0.0 {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{op}: beta must not be negative, got {beta} (PyTorch: smooth_l1_loss does not \
             support negative values for beta); use beta = 0 for the L1 loss"
        )))
    }
}

/// The loss and/or input gradient of `smooth_l1_loss` (validated): with
/// `d = input - target`, `0.5·d²/beta` where `|d| < beta` and
/// `|d| - beta/2` elsewhere, which is the Huber loss with `delta = beta`
/// divided by `beta` (and the L1 loss when `beta` is 0).
pub(crate) fn smooth_l1_loss_core(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    beta: f64,
    want_loss: bool,
    seed: Option<Seed>,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    check_smooth_l1("smooth_l1_loss", input, target, beta)?;
    if beta == 0.0 {
        return Ok(l1_core(input, target, reduction, want_loss, seed));
    }
    let (loss, grad) = huber_core(input, target, reduction, beta, want_loss, seed);
    let scale = |t: Tensor| no_grad(|| t * (1.0 / beta));
    Ok((loss.map(scale), grad.map(scale)))
}

/// dL/d(input) of `smooth_l1_loss`: `clamp((input - target)/beta, -1, 1)·grad_out`
/// (the sign when `beta` is 0; divided by the element count for the mean).
/// The target's gradient is its negation.
#[track_caller]
pub fn smooth_l1_loss_backward(
    input: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    reduction: Reduction,
    beta: f64,
) -> Tensor {
    check_grad_out(
        "smooth_l1_loss_backward",
        grad_out,
        reduction,
        input.shape(),
    )
    .or_panic();
    smooth_l1_loss_core(
        input,
        target,
        reduction,
        beta,
        false,
        Some(Seed::Times(grad_out)),
    )
    .or_panic()
    .1
    .expect("asked for the gradient")
}

/// `smooth_l1_loss` on the tape.
pub(crate) fn smooth_l1_loss(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    beta: f64,
) -> Result<Tensor> {
    let kind = Regression::SmoothL1 { beta };
    try_apply(RegressionLoss { kind, reduction }, &[input, target])
}
