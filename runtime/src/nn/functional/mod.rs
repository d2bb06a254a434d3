//! The functional forms of the layers (`torch.nn.functional`), on the tape.

mod attention;
mod norm;

use crate::autograd::apply;
use crate::ops::{self, reduce::Dims};
use crate::tensor::{DType, Tensor};

/// The rows of `weight` (`[num_embeddings, embedding_dim]`) named by the
/// i64 `input` of any shape (`F.embedding(input, weight)`): the result has
/// shape `input.shape + [embedding_dim]`, and its gradient flows to
/// `weight` (the rows looked up more than once add up).
///
/// ```
/// use deriv_runtime::nn::functional as F;
/// use deriv_runtime::{tensor, Tensor};
/// let w = tensor![[0., 0.], [1., 2.], [3., 4.]];
/// let y = F::embedding(&Tensor::from_vec(vec![2i64, 1, 2], [3]), &w);
/// assert_eq!(y.to_vec::<f32>(), vec![3., 4., 1., 2., 3., 4.]);
/// ```
#[track_caller]
pub fn embedding(input: &Tensor, weight: &Tensor) -> Tensor {
    embedding_with(input, weight, &ops::EmbeddingOptions::new())
}

/// [`embedding`] with PyTorch's `padding_idx` (that row gets no gradient),
/// `max_norm` (the rows looked up are first rescaled in place to that
/// `norm_type`-norm at most, as PyTorch does) and `norm_type`.
#[track_caller]
pub fn embedding_with(input: &Tensor, weight: &Tensor, opts: &ops::EmbeddingOptions) -> Tensor {
    crate::error::OrPanic::or_panic(try_embedding_with(input, weight, opts))
}

/// Fallible [`embedding_with`]: a wrong dtype or shape, an index out of
/// range or a padding_idx outside the weight is an `Err`.
pub fn try_embedding_with(
    input: &Tensor,
    weight: &Tensor,
    opts: &ops::EmbeddingOptions,
) -> Result<Tensor> {
    ops::shape::try_embedding(input, weight, opts)
}

/// 2-D convolution (`F.conv2d(input, weight, bias, stride, padding,
/// dilation, groups)`) of an `[N, C, H, W]` input with an
/// `[O, C/groups, kh, kw]` weight, giving `[N, O, Ho, Wo]`; the options
/// (`Conv2dOptions`) have PyTorch's defaults, and the padding may be
/// `"same"` or `"valid"`.
///
/// ```
/// use deriv_runtime::nn::{functional as F, Conv2dOptions};
/// use deriv_runtime::Tensor;
/// let x = Tensor::ones([1, 1, 3, 3]);
/// let w = Tensor::ones([1, 1, 2, 2]);
/// let y = F::conv2d(&x, &w, None, &Conv2dOptions::new());
/// assert_eq!(y.to_vec::<f32>(), vec![4.0; 4]);
/// ```
#[track_caller]
pub fn conv2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &ops::Conv2dOptions,
) -> Tensor {
    crate::error::OrPanic::or_panic(try_conv2d(input, weight, bias, options))
}

/// 1-D convolution (`F.conv1d(input, weight, bias, stride, padding,
/// dilation, groups)`) of an `[N, C, L]` input with an `[O, C/groups, k]`
/// weight, giving `[N, O, L_out]`: the 2-D convolution of one row.
///
/// ```
/// use deriv_runtime::nn::{functional as F, Conv1dOptions};
/// use deriv_runtime::Tensor;
/// let y = F::conv1d(&Tensor::ones([1, 1, 5]), &Tensor::ones([1, 1, 3]), None, &Conv1dOptions::new());
/// assert_eq!(y.to_vec::<f32>(), vec![3.0; 3]);
/// ```
#[track_caller]
pub fn conv1d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &ops::Conv1dOptions,
) -> Tensor {
    crate::error::OrPanic::or_panic(try_conv1d(input, weight, bias, options))
}

/// Fallible [`conv1d`].
pub fn try_conv1d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &ops::Conv1dOptions,
) -> Result<Tensor> {
    ops::conv::try_conv1d(input, weight, bias, options)
}

/// Transposed 2-D convolution (`F.conv_transpose2d(input, weight, bias,
/// stride, padding, output_padding, groups, dilation)`): the adjoint of
/// `conv2d`, an `[N, C_in, H, W]` input and a `[C_in, C_out/groups, kh, kw]`
/// weight giving `[N, C_out, H_out, W_out]`.
///
/// ```
/// use deriv_runtime::nn::{functional as F, ConvTranspose2dOptions};
/// use deriv_runtime::Tensor;
/// let y = F::conv_transpose2d(&Tensor::ones([1, 1, 2, 2]), &Tensor::ones([1, 1, 2, 2]), None, &ConvTranspose2dOptions::new());
/// assert_eq!(y.to_vec::<f32>(), vec![1., 2., 1., 2., 4., 2., 1., 2., 1.]);
/// ```
#[track_caller]
pub fn conv_transpose2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &ops::ConvTranspose2dOptions,
) -> Tensor {
    crate::error::OrPanic::or_panic(try_conv_transpose2d(input, weight, bias, options))
}

/// Fallible [`conv_transpose2d`]: a wrong rank, channel count, group split,
/// dtype or output padding is an `Err`.
pub fn try_conv_transpose2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &ops::ConvTranspose2dOptions,
) -> Result<Tensor> {
    ops::conv::try_conv_transpose2d(input, weight, bias, options)
}

/// Fallible [`conv2d`]: a wrong rank, channel count, group split or dtype,
/// a kernel larger than the padded input, or `"same"` padding with a
/// stride is an `Err`.
pub fn try_conv2d(
    input: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: &ops::Conv2dOptions,
) -> Result<Tensor> {
    ops::conv::try_conv2d(input, weight, bias, options)
}

/// Max pooling with `kernel_size` windows that far apart, no padding
/// (`F.max_pool2d(x, kernel_size)`), over the last two dims of a 3-D or
/// 4-D input.
#[track_caller]
pub fn max_pool2d(input: &Tensor, kernel_size: impl ops::Pair + Copy) -> Tensor {
    max_pool2d_with(input, kernel_size, kernel_size, 0)
}

/// [`max_pool2d`] with a stride and padding (at most half the kernel).
#[track_caller]
pub fn max_pool2d_with(
    input: &Tensor,
    kernel_size: impl ops::Pair,
    stride: impl ops::Pair,
    padding: impl ops::Pair,
) -> Tensor {
    apply(ops::Pool2d::max(kernel_size, stride, padding), &[input])
}

/// [`max_pool2d_with`] that also returns where each maximum came from
/// (`F.max_pool2d(.., return_indices=True)`): the flat index within its
/// `H·W` plane, i64, in the output's shape.
///
/// ```
/// use deriv_runtime::nn::functional as F;
/// use deriv_runtime::Tensor;
/// let x = Tensor::from_vec(vec![1.0f32, 5.0, 2.0, 0.0, 3.0, 4.0, 9.0, 8.0], [1, 1, 2, 4]);
/// let (y, idx) = F::max_pool2d_with_indices(&x, 2, 2, 0);
/// assert_eq!(y.to_vec::<f32>(), vec![5.0, 9.0]);
/// assert_eq!(idx.to_vec::<i64>(), vec![1, 6]);
/// ```
#[track_caller]
pub fn max_pool2d_with_indices(
    input: &Tensor,
    kernel_size: impl ops::Pair,
    stride: impl ops::Pair,
    padding: impl ops::Pair,
) -> (Tensor, Tensor) {
    let op = ops::Pool2d::max(kernel_size, stride, padding);
    let y = apply(op, &[input]);
    let idx = crate::error::OrPanic::or_panic(op.max_indices(input));
    (y, idx)
}

/// Average pooling with `kernel_size` windows that far apart, no padding
/// (`F.avg_pool2d(x, kernel_size)`).
#[track_caller]
pub fn avg_pool2d(input: &Tensor, kernel_size: impl ops::Pair + Copy) -> Tensor {
    avg_pool2d_with(input, kernel_size, kernel_size, 0, true)
}

/// [`avg_pool2d`] with a stride, padding and `count_include_pad`.
#[track_caller]
pub fn avg_pool2d_with(
    input: &Tensor,
    kernel_size: impl ops::Pair,
    stride: impl ops::Pair,
    padding: impl ops::Pair,
    count_include_pad: bool,
) -> Tensor {
    apply(
        ops::Pool2d::avg(kernel_size, stride, padding, count_include_pad),
        &[input],
    )
}

/// Average pooling to `output_size` (`F.adaptive_avg_pool2d`).
#[track_caller]
pub fn adaptive_avg_pool2d(input: &Tensor, output_size: impl ops::Pair) -> Tensor {
    apply(ops::Pool2d::adaptive_avg(output_size), &[input])
}

pub(crate) use attention::{attention_bias, causal_mask};
pub use attention::{scaled_dot_product_attention, try_scaled_dot_product_attention};
pub use norm::{
    batch_norm, group_norm, layer_norm, try_batch_norm, try_group_norm, try_layer_norm,
};

/// `max(x, 0)` elementwise.
pub fn relu(x: &Tensor) -> Tensor {
    x.relu()
}

/// The logistic function elementwise.
pub fn sigmoid(x: &Tensor) -> Tensor {
    x.sigmoid()
}

/// Hyperbolic tangent elementwise.
pub fn tanh(x: &Tensor) -> Tensor {
    x.tanh()
}

/// Softmax along `dim`.
pub fn softmax(x: &Tensor, dim: isize) -> Tensor {
    x.softmax(dim)
}

/// Log-softmax along `dim`.
pub fn log_softmax(x: &Tensor, dim: isize) -> Tensor {
    x.log_softmax(dim)
}

/// GELU, `x·Φ(x)` (`F.gelu`): `approximate` is `"none"` (exact, with erf) or
/// `"tanh"`, as in PyTorch.
///
/// ```
/// use deriv_runtime::{nn::functional as F, tensor};
/// let y = F::gelu(&tensor![-1.0, 0.0, 1.0], "none").to_vec::<f32>();
/// assert!((y[2] - 0.841_344_7).abs() < 1e-6 && y[1] == 0.0);
/// ```
#[track_caller]
pub fn gelu(x: &Tensor, approximate: &str) -> Tensor {
    apply(ops::Gelu::new(approximate), &[x])
}

/// SiLU (swish), `x·sigmoid(x)` (`F.silu`).
pub fn silu(x: &Tensor) -> Tensor {
    apply(ops::Silu, &[x])
}

/// `x` where positive, `negative_slope·x` elsewhere (`F.leaky_relu`; PyTorch's
/// default slope is 0.01).
pub fn leaky_relu(x: &Tensor, negative_slope: f64) -> Tensor {
    apply(ops::LeakyRelu::new(negative_slope), &[x])
}

/// ELU, `x` where positive and `alpha·(e^x - 1)` elsewhere (`F.elu`; PyTorch's
/// default alpha is 1).
pub fn elu(x: &Tensor, alpha: f64) -> Tensor {
    apply(ops::Elu::new(alpha), &[x])
}

/// `log(1 + e^(βx))/β`, the identity where `βx > threshold` (`F.softplus`;
/// PyTorch's defaults are β = 1, threshold = 20).
pub fn softplus(x: &Tensor, beta: f64, threshold: f64) -> Tensor {
    apply(ops::Softplus::new(beta, threshold), &[x])
}

/// Mish, `x·tanh(softplus(x))` (`F.mish`).
pub fn mish(x: &Tensor) -> Tensor {
    apply(ops::Mish, &[x])
}

/// `x` clamped into `[min_val, max_val]` (`F.hardtanh`; PyTorch's defaults
/// are -1 and 1).
pub fn hardtanh(x: &Tensor, min_val: f64, max_val: f64) -> Tensor {
    apply(ops::Hardtanh::new(min_val, max_val), &[x])
}

/// `log(sigmoid(x))`, computed stably (`F.logsigmoid`).
pub fn logsigmoid(x: &Tensor) -> Tensor {
    apply(ops::Logsigmoid, &[x])
}

/// `log Σ exp(x)` over `dims` (`torch.logsumexp`).
#[track_caller]
pub fn logsumexp(x: &Tensor, dims: impl Dims, keepdim: bool) -> Tensor {
    x.logsumexp(dims, keepdim)
}

/// Running sums along `dim` (`torch.cumsum`).
#[track_caller]
pub fn cumsum(x: &Tensor, dim: isize) -> Tensor {
    x.cumsum(dim)
}

/// `x·Wᵀ + b` for a weight of shape `[out, in]` (`F.linear`).
///
/// ```
/// use deriv_runtime::{nn::functional::linear, tensor};
/// let y = linear(&tensor![[1., 2.]], &tensor![[1., 0.], [0., 1.], [1., 1.]], Some(&tensor![0., 0., 1.]));
/// assert_eq!(y.to_vec::<f32>(), vec![1., 2., 4.]);
/// ```
///
/// The input's last dimension must be the weight's `in` and both must have
/// one dtype, as in PyTorch; otherwise this panics with
/// [`try_linear`]'s error.
#[track_caller]
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    try_linear(x, weight, bias).or_panic()
}

/// Fallible [`linear`]: an `Err` when `x`'s last dimension is not the
/// weight's `in` (PyTorch's "mat1 and mat2 shapes cannot be multiplied")
/// or the dtypes differ ("expected both to have the same dtype").
///
/// ```
/// use deriv_runtime::{nn::functional::try_linear, DType, Tensor};
/// let w = Tensor::zeros([3, 13]);
/// let err = try_linear(&Tensor::zeros([64, 14]), &w, None).unwrap_err().to_string();
/// assert!(err.contains("mat1 and mat2 shapes cannot be multiplied (64x14 and 13x3)"), "{err}");
/// let err = try_linear(&Tensor::zeros([2, 13]).to_dtype(DType::F64), &w, None).unwrap_err();
/// assert!(err.to_string().contains("expected both to have the same dtype"), "{err}");
/// ```
pub fn try_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    ops::linear::try_linear(x, weight, bias)
}

/// The mask dropout multiplies by: 0 with probability `p`, else `1/(1-p)`,
/// drawn from the global generator (f64 for an f64 `x`, else f32).
pub fn dropout_mask(x: &Tensor, p: f64) -> Tensor {
    let dtype = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let mask = Tensor::zeros_opts(x.shape(), &crate::TensorOptions::new().dtype(dtype));
    fill_dropout_mask(&mask, p);
    mask.to(&x.device())
}

/// Draws a dropout mask into `mask` (contiguous f32/f64 in main memory) in
/// place: each element is kept (`1/(1-p)`) when a uniform draw from the
/// global generator, as `Tensor::rand` makes it, is at least `p`, and 0
/// otherwise. The one mask kernel: `dropout_mask` and the buffer-reusing
/// `Dropout` both draw through it.
pub(crate) fn fill_dropout_mask(mask: &Tensor, p: f64) {
    use crate::backend::Host;
    fn k<T: Host + crate::tensor::Float>(mask: &Tensor, p: f64) {
        let scale = T::from_f64(if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 });
        let (off, n) = (mask.layout().offset, mask.numel());
        // The generator's lock first, then the storage's, as everywhere:
        // code run under `with_global_generator` may lock storages.
        crate::random::with_global_generator(|g| {
            let mut w = mask.storage().write();
            for v in &mut T::of_mut(&mut w)[off..off + n] {
                let u = g.uniform() as f32;
                *v = if u as f64 >= p { scale } else { T::ZERO };
            }
        });
    }
    assert!(
        mask.is_contiguous() && mask.device().is_cpu(),
        "internal: a dropout mask is drawn into a contiguous buffer in main memory"
    );
    match mask.dtype() {
        DType::F64 => k::<f64>(mask, p),
        DType::F32 => k::<f32>(mask, p),
        other => panic!("internal: a {other} dropout mask; f32 or f64 only"),
    }
}

/// Dropout (`F.dropout`): the identity unless `training`.
pub fn dropout(x: &Tensor, p: f64, training: bool) -> Tensor {
    if !training || p == 0.0 {
        return x.clone();
    }
    x * &dropout_mask(x, p)
}

// ---------------------------------------------------------------- losses

pub use super::loss::{BceWithLogitsOptions, CrossEntropyOptions, NllLossOptions, Reduction};
use crate::error::{OrPanic, Result};
use crate::ops::loss as L;

/// Mean squared error, `mean((input - target)²)` (`F.mse_loss`). The target
/// must have the input's shape (any numeric dtype; the math runs in the
/// promoted float dtype). One `MseLossBackward` node on the tape.
///
/// ```
/// use deriv_runtime::{nn::functional as F, tensor};
/// assert_eq!(F::mse_loss(&tensor![1., 3.], &tensor![0., 0.]).item(), 5.0);
/// ```
#[track_caller]
pub fn mse_loss(input: &Tensor, target: &Tensor) -> Tensor {
    mse_loss_with(input, target, Reduction::Mean)
}

/// [`mse_loss`] with a [`Reduction`].
#[track_caller]
pub fn mse_loss_with(input: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    try_mse_loss_with(input, target, reduction).or_panic()
}

/// Fallible [`mse_loss_with`]: an error names a non-float input, a bool target
/// or mismatched shapes.
pub fn try_mse_loss_with(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    L::regression_loss("mse_loss", input, target, reduction)
}

/// Mean absolute error, `mean(|input - target|)` (`F.l1_loss`); the gradient
/// at `input == target` is 0, as in PyTorch. One `L1LossBackward` node.
#[track_caller]
pub fn l1_loss(input: &Tensor, target: &Tensor) -> Tensor {
    l1_loss_with(input, target, Reduction::Mean)
}

/// [`l1_loss`] with a [`Reduction`].
#[track_caller]
pub fn l1_loss_with(input: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    try_l1_loss_with(input, target, reduction).or_panic()
}

/// Fallible [`l1_loss_with`].
pub fn try_l1_loss_with(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    L::regression_loss("l1_loss", input, target, reduction)
}

/// The Huber loss with `delta = 1` and the mean (`F.huber_loss`): with
/// `d = input - target`, `0.5·d²` where `|d| < delta`, `delta·(|d| - delta/2)`
/// elsewhere: squared error near the target, absolute error (robust to
/// outliers) far from it. One `HuberLossBackward` node on the tape.
///
/// ```
/// use deriv_runtime::{nn::functional as F, tensor};
/// // 0.5·0.5² = 0.125 and 1·(3 - 0.5) = 2.5, averaged.
/// assert_eq!(F::huber_loss(&tensor![0.5, 3.], &tensor![0., 0.]).item(), 1.3125);
/// ```
#[track_caller]
pub fn huber_loss(input: &Tensor, target: &Tensor) -> Tensor {
    huber_loss_with(input, target, Reduction::Mean, 1.0)
}

/// [`huber_loss`] with a [`Reduction`] and a `delta` (> 0).
#[track_caller]
pub fn huber_loss_with(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    delta: f64,
) -> Tensor {
    try_huber_loss_with(input, target, reduction, delta).or_panic()
}

/// Fallible [`huber_loss_with`]: an error names a non-float input, a bool
/// target, mismatched shapes or a `delta` that is not positive.
pub fn try_huber_loss_with(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    delta: f64,
) -> Result<Tensor> {
    L::huber_loss(input, target, reduction, delta)
}

/// The smooth L1 loss with `beta = 1` and the mean (`F.smooth_l1_loss`):
/// with `d = input - target`, `0.5·d²/beta` where `|d| < beta`,
/// `|d| - beta/2` elsewhere. One `SmoothL1LossBackward` node on the tape.
///
/// ```
/// use deriv_runtime::{nn::functional as F, tensor};
/// // 0.5·0.5² = 0.125 and 3 - 0.5 = 2.5, averaged.
/// assert_eq!(F::smooth_l1_loss(&tensor![0.5, 3.], &tensor![0., 0.]).item(), 1.3125);
/// ```
#[track_caller]
pub fn smooth_l1_loss(input: &Tensor, target: &Tensor) -> Tensor {
    smooth_l1_loss_with(input, target, Reduction::Mean, 1.0)
}

/// [`smooth_l1_loss`] with a [`Reduction`] and a `beta` (>= 0; 0 is the
/// L1 loss).
#[track_caller]
pub fn smooth_l1_loss_with(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    beta: f64,
) -> Tensor {
    try_smooth_l1_loss_with(input, target, reduction, beta).or_panic()
}

/// Fallible [`smooth_l1_loss_with`]: an error names a non-float input, a
/// bool target, mismatched shapes or a negative `beta`.
pub fn try_smooth_l1_loss_with(
    input: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    beta: f64,
) -> Result<Tensor> {
    L::smooth_l1_loss(input, target, reduction, beta)
}

/// The Kullback-Leibler divergence with the mean over every element
/// (`F.kl_div(input, target)`): `input` holds log-probabilities, `target`
/// probabilities, and the loss is `target·(log target - input)`
/// elementwise (0 where the target is 0). One `KlDivBackward` node,
/// differentiable in both.
///
/// ```
/// use deriv_runtime::{nn::functional as F, tensor};
/// let p = tensor![[0.25, 0.75]];
/// assert!(F::kl_div(&p.log(), &p).item().abs() < 1e-7);
/// ```
#[track_caller]
pub fn kl_div(input: &Tensor, target: &Tensor) -> Tensor {
    kl_div_with(input, target, &L::KlDivOptions::default())
}

/// [`kl_div`] with PyTorch's `reduction` (`KlDivReduction::BatchMean` for
/// the divergence per sample) and `log_target`.
#[track_caller]
pub fn kl_div_with(input: &Tensor, target: &Tensor, options: &L::KlDivOptions) -> Tensor {
    try_kl_div_with(input, target, options).or_panic()
}

/// Fallible [`kl_div_with`]: an error names a non-float input or target,
/// or mismatched shapes.
pub fn try_kl_div_with(
    input: &Tensor,
    target: &Tensor,
    options: &L::KlDivOptions,
) -> Result<Tensor> {
    L::kl_div(input, target, options)
}

/// Binary cross-entropy of probabilities `input` in [0, 1] against `target`
/// (same shape and dtype): `-(y·log x + (1 - y)·log(1 - x))`, each log clamped
/// to >= -100 as in PyTorch (`F.binary_cross_entropy`). Prefer
/// [`binary_cross_entropy_with_logits`] on raw scores: it is stable.
/// One `BinaryCrossEntropyBackward` node.
///
/// ```
/// use deriv_runtime::{nn::functional as F, tensor};
/// let loss = F::binary_cross_entropy(&tensor![0.5, 1.0], &tensor![1., 0.]);
/// assert!((loss.item() - (2f64.ln() + 100.0) / 2.0).abs() < 1e-4);
/// ```
#[track_caller]
pub fn binary_cross_entropy(input: &Tensor, target: &Tensor) -> Tensor {
    binary_cross_entropy_with(input, target, None, Reduction::Mean)
}

/// [`binary_cross_entropy`] with a rescaling `weight` (broadcast to the input's
/// shape; the mean still divides by the element count) and a [`Reduction`].
#[track_caller]
pub fn binary_cross_entropy_with(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Tensor {
    try_binary_cross_entropy_with(input, target, weight, reduction).or_panic()
}

/// Fallible [`binary_cross_entropy_with`]: an error names an input outside
/// [0, 1], a target of another dtype or shape, or a weight that does not broadcast.
pub fn try_binary_cross_entropy_with(
    input: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    reduction: Reduction,
) -> Result<Tensor> {
    L::binary_cross_entropy(input, target, weight, reduction)
}

/// Binary cross-entropy of logits (`F.binary_cross_entropy_with_logits`):
/// `(1 - y)·z + log(1 + e^-z)`, computed as `(1 - y)·z + max(-z, 0) +
/// log1p(e^-|z|)`, so the loss and its gradient `σ(z) - y` stay finite and
/// exact for any `z` (±100 included). The target is float, of the input's
/// shape. One `BinaryCrossEntropyWithLogitsBackward` node.
#[track_caller]
pub fn binary_cross_entropy_with_logits(logits: &Tensor, target: &Tensor) -> Tensor {
    binary_cross_entropy_with_logits_with(logits, target, &BceWithLogitsOptions::default())
}

/// [`binary_cross_entropy_with_logits`] with a `weight`, a `pos_weight`
/// (`(1 - y)·z + (1 + (pos_weight - 1)·y)·softplus(-z)`) and a [`Reduction`].
#[track_caller]
pub fn binary_cross_entropy_with_logits_with(
    logits: &Tensor,
    target: &Tensor,
    opts: &BceWithLogitsOptions,
) -> Tensor {
    try_binary_cross_entropy_with_logits_with(logits, target, opts).or_panic()
}

/// Fallible [`binary_cross_entropy_with_logits_with`].
pub fn try_binary_cross_entropy_with_logits_with(
    logits: &Tensor,
    target: &Tensor,
    opts: &BceWithLogitsOptions,
) -> Result<Tensor> {
    L::binary_cross_entropy_with_logits(logits, target, opts)
}

/// Cross-entropy of logits (`F.cross_entropy`): `log_softmax` over the class
/// dim, then [`nll_loss`], as PyTorch does (so `grad_fn` is `NllLossBackward`
/// after a `LogSoftmaxBackward`).
///
/// Logits are `[N, C]`, `[C]` or `[N, C, d1, ...]`; the target is i64 class
/// indices of shape `[N]`, `[]` or `[N, d1, ...]`, or float class
/// probabilities of the logits' own shape (then the node is
/// `SoftCrossEntropyBackward`, and the mean divides by `N·d1·...`).
///
/// ```
/// use deriv_runtime::{nn::functional as F, tensor};
/// let logits = tensor![[0., 0.], [0., 0.]];
/// let loss = F::cross_entropy(&logits, &tensor![0, 1]);
/// assert!((loss.item() - 2f64.ln()).abs() < 1e-6);
/// ```
#[track_caller]
pub fn cross_entropy(logits: &Tensor, target: &Tensor) -> Tensor {
    cross_entropy_with(logits, target, &CrossEntropyOptions::default())
}

/// [`cross_entropy`] with class weights, label smoothing, `ignore_index` and
/// a [`Reduction`], all with PyTorch's semantics: the weighted mean divides by
/// the sum of the (non-ignored) targets' weights; with label smoothing ε the
/// loss is `(1 - ε)·nll + (ε/C)·Σ_c w_c·(-log p_c)`, reduced the same way.
#[track_caller]
pub fn cross_entropy_with(logits: &Tensor, target: &Tensor, opts: &CrossEntropyOptions) -> Tensor {
    try_cross_entropy_with(logits, target, opts).or_panic()
}

/// Fallible [`cross_entropy_with`]: an error names a target of the wrong
/// dtype or shape, a class index out of range, a bad weight or smoothing.
pub fn try_cross_entropy_with(
    logits: &Tensor,
    target: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<Tensor> {
    L::cross_entropy(logits, target, opts)
}

/// Negative log-likelihood of log-probabilities (`F.nll_loss`): the mean of
/// `-log_probs[n, target[n]]`. Shapes as in [`cross_entropy`] (class
/// indices only). One `NllLossBackward` node.
#[track_caller]
pub fn nll_loss(log_probs: &Tensor, target: &Tensor) -> Tensor {
    nll_loss_with(log_probs, target, &NllLossOptions::default())
}

/// [`nll_loss`] with class weights, `ignore_index` and a [`Reduction`].
#[track_caller]
pub fn nll_loss_with(log_probs: &Tensor, target: &Tensor, opts: &NllLossOptions) -> Tensor {
    try_nll_loss_with(log_probs, target, opts).or_panic()
}

/// Fallible [`nll_loss_with`].
pub fn try_nll_loss_with(
    log_probs: &Tensor,
    target: &Tensor,
    opts: &NllLossOptions,
) -> Result<Tensor> {
    L::nll_loss(log_probs, target, opts)
}
