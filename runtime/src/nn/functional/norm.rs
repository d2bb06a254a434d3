//! The normalisations: `layer_norm`, `group_norm`, `batch_norm`.

use crate::autograd::no_grad;
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

/// Layer normalisation (`F.layer_norm(input, normalized_shape, weight,
/// bias, eps)`): each sample's trailing `normalized_shape` dimensions
/// normalised to mean 0 and variance 1 (biased variance, `eps` added; PyTorch
/// uses 1e-5), then scaled by `weight` and shifted by `bias` when given.
///
/// ```
/// use deriv_runtime::nn::functional as F;
/// use deriv_runtime::tensor;
/// let y = F::layer_norm(&tensor![[1., 3.]], &[2], None, None, 0.0);
/// assert_eq!(y.to_vec::<f32>(), vec![-1.0, 1.0]);
/// ```
#[track_caller]
pub fn layer_norm(
    input: &Tensor,
    normalized_shape: &[usize],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Tensor {
    crate::error::OrPanic::or_panic(try_layer_norm(input, normalized_shape, weight, bias, eps))
}

/// Fallible [`layer_norm`]: an input whose trailing dimensions are not
/// `normalized_shape`, or a weight or bias of another shape, is an `Err`.
pub fn try_layer_norm(
    input: &Tensor,
    normalized_shape: &[usize],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    crate::nn::norm::check_normalized_shape(input, normalized_shape)?;
    let op = ops::LayerNorm {
        dims: normalized_shape.len(),
        eps,
    };
    match (weight, bias) {
        // A weight alone needs no stand-in bias.
        (Some(w), None) => crate::autograd::try_apply(op, &[input, w]),
        _ => with_affine(weight, bias, |params| {
            let inputs: Vec<&Tensor> = std::iter::once(input)
                .chain(params.iter().copied())
                .collect();
            crate::autograd::try_apply(op, &inputs)
        }),
    }
}

/// Group normalisation (`F.group_norm(input, num_groups, weight, bias,
/// eps)`): the channels of each sample of `[N, C, *]` in `num_groups`
/// groups, each normalised over its channels and positions (biased
/// variance, `eps` added; PyTorch uses 1e-5), then each channel scaled by
/// `weight` and shifted by `bias` (`[C]`) when given.
///
/// ```
/// use deriv_runtime::nn::functional as F;
/// use deriv_runtime::tensor;
/// let y = F::group_norm(&tensor![[1., 3., 0., 4.]], 2, None, None, 0.0);
/// assert_eq!(y.to_vec::<f32>(), vec![-1.0, 1.0, -1.0, 1.0]);
/// ```
#[track_caller]
pub fn group_norm(
    input: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Tensor {
    crate::error::OrPanic::or_panic(try_group_norm(input, num_groups, weight, bias, eps))
}

/// Fallible [`group_norm`]: an input that is not `[N, C, *]` with `C`
/// divisible by `num_groups`, or a weight or bias not of shape `[C]`, is an
/// `Err`.
pub fn try_group_norm(
    input: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let op = ops::GroupNorm {
        groups: num_groups,
        eps,
    };
    with_affine(weight, bias, |params| {
        let inputs: Vec<&Tensor> = std::iter::once(input)
            .chain(params.iter().copied())
            .collect();
        crate::autograd::try_apply(op, &inputs)
    })
}

/// Calls `f` with a norm op's parameters as its positional inputs: both,
/// neither, or the given one beside a stand-in for the other (a unit weight
/// or a zero bias, which need no gradient).
fn with_affine<R>(
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    f: impl FnOnce(&[&Tensor]) -> R,
) -> R {
    match (weight, bias) {
        (Some(w), Some(b)) => f(&[w, b]),
        (None, None) => f(&[]),
        (Some(w), None) => f(&[w, &no_grad(|| w.zeros_like())]),
        (None, Some(b)) => f(&[&no_grad(|| b.ones_like()), b]),
    }
}

/// Batch normalisation (`F.batch_norm(input, running_mean, running_var,
/// weight, bias, training, momentum, eps)`) over the channels (dim 1) of
/// `[N, C, *]`. With `training`, each channel is normalised with the
/// batch's mean and biased variance and the running statistics, when given,
/// move towards the batch's by `momentum` (the variance unbiased), in place;
/// otherwise the running statistics are used. Then each channel is scaled
/// by `weight` and shifted by `bias` when given.
///
/// ```
/// use deriv_runtime::nn::functional as F;
/// use deriv_runtime::{tensor, Tensor};
/// let (m, v) = (Tensor::zeros([1]), Tensor::ones([1]));
/// let y = F::batch_norm(&tensor![[1.], [3.]], Some(&m), Some(&v), None, None, true, 0.1, 0.0);
/// assert_eq!(y.to_vec::<f32>(), vec![-1.0, 1.0]);
/// assert_eq!(m.to_vec::<f32>(), [0.2]);
/// ```
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn batch_norm(
    input: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Tensor {
    let y = try_batch_norm(
        input,
        running_mean,
        running_var,
        weight,
        bias,
        training,
        momentum,
        eps,
    );
    crate::error::OrPanic::or_panic(y)
}

/// Fallible [`batch_norm`]: an input that is not `[N, C, *]`, parameters or
/// statistics not of shape `[C]`, a training batch with one value per
/// channel, or evaluation without running statistics, is an `Err` (and
/// nothing is updated).
#[allow(clippy::too_many_arguments)]
pub fn try_batch_norm(
    input: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    let stats = match (running_mean, running_var) {
        (Some(m), Some(v)) => Some((m, v)),
        (None, None) => None,
        _ => {
            return Err(crate::Error::Invalid(
                "batch_norm: running_mean and running_var come together; pass both or neither"
                    .into(),
            ))
        }
    };
    if !training && stats.is_none() {
        return Err(crate::Error::Invalid(
            "batch_norm: running_mean and running_var must be defined in evaluation mode; \
             pass them, or training = true to use the batch's statistics"
                .into(),
        ));
    }
    let op = ops::BatchNorm {
        eps,
        affine: weight.is_some() || bias.is_some(),
        running: !training,
    };
    let y = with_affine(weight, bias, |params| {
        let mut inputs: Vec<&Tensor> = vec![input];
        inputs.extend(params);
        if let (false, Some((m, v))) = (training, stats) {
            inputs.extend([m, v]);
        }
        crate::autograd::try_apply(op, &inputs)
    })?;
    if let (true, Some((m, v))) = (training, stats) {
        ops::update_running_stats_(input, m, v, momentum)?;
    }
    Ok(y)
}
