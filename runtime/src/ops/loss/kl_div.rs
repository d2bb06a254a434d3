//! `kl_div`: the Kullback-Leibler divergence of a target distribution from
//! the input's, PyTorch's pointwise form: the input holds log-probabilities,
//! the target probabilities (or log-probabilities with `log_target`), and
//! the loss is `target·(log target - input)` elementwise (0 where the target
//! is 0), reduced. Composed of tensor ops, so it runs on any device.

use super::*;
use crate::autograd::{try_apply, GradSlot, Op, Out, Spec};

/// How `kl_div` combines its per-element values: PyTorch's `reduction=`,
/// with `BatchMean` (the sum over the batch size, `input.shape[0]`), the
/// divergence's true value per sample. `Mean` (PyTorch's default) divides
/// by every element.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KlDivReduction {
    /// One value per element.
    None,
    /// The mean over all elements (the default, as in PyTorch).
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// The sum divided by the batch size.
    BatchMean,
}

/// Options of `kl_div` (PyTorch's keyword arguments and defaults).
///
/// ```
/// use deriv_runtime::nn::{KlDivOptions, KlDivReduction};
/// let o = KlDivOptions { reduction: KlDivReduction::BatchMean, ..Default::default() };
/// assert!(!o.log_target);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KlDivOptions {
    /// How the per-element values combine.
    pub reduction: KlDivReduction,
    /// Whether the target holds log-probabilities.
    pub log_target: bool,
}

/// `kl_div` on the tape: inputs `[input, target]`, both differentiable.
#[derive(Clone, Copy, Debug, Default)]
pub struct KlDivLoss {
    /// The reduction and the target's form.
    pub options: KlDivOptions,
}

fn check_kl_div(input: &Tensor, target: &Tensor) -> Result<()> {
    check_float("kl_div", "input", input)?;
    check_float("kl_div", "target", target)?;
    check_same_shape("kl_div", input, target)?;
    crate::ops::same_device("kl_div", input, target)
}

impl KlDivOptions {
    /// The divisor of the sum (1 for `Sum` and `None`).
    fn divisor(&self, input: &Tensor) -> f64 {
        match self.reduction {
            KlDivReduction::Mean => input.numel() as f64,
            KlDivReduction::BatchMean => input.shape().first().copied().unwrap_or(1) as f64,
            _ => 1.0,
        }
    }

    fn loss_shape(&self, input: &Tensor) -> Vec<usize> {
        match self.reduction {
            KlDivReduction::None => input.shape().to_vec(),
            _ => vec![],
        }
    }

    /// The loss, and the input's and target's gradients times `grad_out`
    /// (the loss's shape) when one is given.
    fn core(
        &self,
        input: &Tensor,
        target: &Tensor,
        grad_out: Option<&Tensor>,
    ) -> (Tensor, Option<(Tensor, Tensor)>) {
        no_grad(|| {
            let (pointwise, weight) = if self.log_target {
                // e^t·(t - x)
                let p = target.exp();
                ((target - input) * &p, p)
            } else {
                // xlogy(t, t) - t·x: 0 where t is 0.
                let tlogt = Tensor::where_cond(
                    &target.eq_scalar(0.0),
                    &target.zeros_like(),
                    &(target * &target.log()),
                );
                (tlogt - target * input, target.clone())
            };
            let k = 1.0 / self.divisor(input);
            let loss = match self.reduction {
                KlDivReduction::None => pointwise.clone(),
                _ => pointwise.sum() * k,
            };
            let grads = grad_out.map(|g| {
                let g = g * k;
                let dx = -&weight * &g;
                // d/dt: e^t·(t - x + 1) with a log target; log t + t/t - x
                // otherwise (t/t: NaN at t = 0, as PyTorch's xlogy gives).
                let dt = if self.log_target {
                    (&pointwise + &weight) * &g
                } else {
                    #[allow(clippy::eq_op)] // t/t is 1, or NaN at 0: wanted
                    let one_or_nan = target / target;
                    (target.log() + one_or_nan - input) * &g
                };
                (dx, dt)
            });
            (loss, grads)
        })
    }
}

impl Op for KlDivLoss {
    const NAME: &'static str = "KlDivBackward";
    const OP: &'static str = "kl_div";
    /// The input and the target.
    type Saved = (Tensor, Tensor);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        check_kl_div(x[0], x[1])?;
        Ok(Spec {
            shape: self.options.loss_shape(x[0]).into(),
            dtype: crate::ops::result_type(x[0], x[1]),
            device: x[0].device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        out.set(self.options.core(x[0], x[1], None).0)
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].clone(), x[1].clone())
    }

    fn backward(&self, (input, target): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let (_, d) = self.options.core(input, target, Some(g));
        let (dx, dt) = d.expect("asked for the gradients");
        if grads[0].needed() {
            grads[0].add(in_dtype(dx, input.dtype()));
        }
        if grads[1].needed() {
            grads[1].add(in_dtype(dt, target.dtype()));
        }
    }
}

/// `kl_div` on the tape.
pub(crate) fn kl_div(input: &Tensor, target: &Tensor, options: &KlDivOptions) -> Result<Tensor> {
    try_apply(KlDivLoss { options: *options }, &[input, target])
}

/// The loss and the input's gradient with `grad_out` (the loss's shape;
/// ones when `None`), without recording.
pub(crate) fn kl_div_core(
    input: &Tensor,
    target: &Tensor,
    options: &KlDivOptions,
    grad_out: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    check_kl_div(input, target)?;
    let shape = options.loss_shape(input);
    let ones;
    let g = match grad_out {
        Some(g) if g.shape() != shape.as_slice() => {
            return Err(Error::shape(
                "kl_div_backward",
                format!(
                    "grad_out must have the loss's shape {shape:?} (reduction {:?}), got {:?}",
                    options.reduction,
                    g.shape()
                ),
            ));
        }
        Some(g) => g,
        None => {
            ones = Tensor::ones_opts(&shape, &input.options());
            &ones
        }
    };
    let (loss, d) = options.core(input, target, Some(g));
    let (dx, _) = d.expect("asked for the gradients");
    Ok((loss, in_dtype(dx, input.dtype())))
}

/// dL/d(input) of `kl_div` times `grad_out` (the loss's shape):
/// `-target·grad_out` (`-e^target·grad_out` with a log target), divided by
/// the reduction's count.
#[track_caller]
pub fn kl_div_backward(
    input: &Tensor,
    target: &Tensor,
    grad_out: &Tensor,
    options: &KlDivOptions,
) -> Tensor {
    kl_div_core(input, target, options, Some(grad_out))
        .or_panic()
        .1
}
