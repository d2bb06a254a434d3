//! Attention: `scaled_dot_product_attention` and its masks.

use super::dropout_mask;
use crate::error::{Error, Result};
use crate::ops::Attention;
use crate::tensor::{DType, Tensor};

/// Scaled dot-product attention (`F.scaled_dot_product_attention(query,
/// key, value, attn_mask, dropout_p, is_causal, scale)`):
/// `softmax(q·kᵀ·scale + mask)·v` over the last two dims, any leading ones
/// (batch, heads) shared. `attn_mask` is a bool mask (true: take part) or a
/// float one added to the scores, broadcasting to `[.., L, S]`; `is_causal`
/// lets query `i` see keys `0..=i`; `scale` defaults to `1/√E`; with
/// `dropout_p` the probabilities are dropped out (as in PyTorch, whatever
/// the mode: pass 0 to evaluate).
///
/// ```
/// use deriv_runtime::nn::functional as F;
/// use deriv_runtime::Tensor;
/// let (q, k, v) = (Tensor::randn([2, 4, 8]), Tensor::randn([2, 6, 8]), Tensor::randn([2, 6, 3]));
/// let y = F::scaled_dot_product_attention(&q, &k, &v, None, 0.0, false, None);
/// assert_eq!(y.shape(), &[2, 4, 3]);
/// // Causal with one key per query: each query sees key 0 only.
/// let y = F::scaled_dot_product_attention(&q, &k, &v, None, 0.0, true, None);
/// assert!((&y.select(1, 0) - &v.select(1, 0)).abs().max().item() < 1e-6);
/// ```
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn scaled_dot_product_attention(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    attn_mask: Option<&Tensor>,
    dropout_p: f64,
    is_causal: bool,
    scale: Option<f64>,
) -> Tensor {
    let y =
        try_scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale);
    crate::error::OrPanic::or_panic(y)
}

/// Fallible [`scaled_dot_product_attention`]: shapes that do not fit, a
/// mask of another dtype, or a mask together with `is_causal`, are an `Err`.
#[allow(clippy::too_many_arguments)]
pub fn try_scaled_dot_product_attention(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    attn_mask: Option<&Tensor>,
    dropout_p: f64,
    is_causal: bool,
    scale: Option<f64>,
) -> Result<Tensor> {
    let nd = query.ndim();
    if nd < 2 || key.ndim() < 2 {
        return Err(Error::shape(
            "scaled_dot_product_attention",
            format!(
                "expected query [.., L, E] and key [.., S, E], got shapes {:?} and {:?}",
                query.shape(),
                key.shape()
            ),
        ));
    }
    let (l, s) = (query.shape()[nd - 2], key.shape()[key.ndim() - 2]);
    let bias = match (attn_mask, is_causal) {
        (Some(_), true) => {
            return Err(Error::Invalid(
                "scaled_dot_product_attention: an explicit attn_mask should not be set when \
                 is_causal=True; pass one or the other"
                    .into(),
            ))
        }
        (Some(m), false) => Some(attention_bias(m, query)?),
        (None, true) => Some(attention_bias(&causal_mask(l, s, query), query)?),
        (None, false) => None,
    };
    let keep = (dropout_p > 0.0).then(|| {
        let mut shape = query.shape()[..nd - 2].to_vec();
        shape.extend([l, s]);
        dropout_mask(&Tensor::zeros_opts(&shape, &query.options()), dropout_p)
    });
    let op = Attention {
        scale: scale.unwrap_or(1.0 / (query.shape()[nd - 1] as f64).sqrt()),
        has_bias: bias.is_some(),
        has_dropout: keep.is_some(),
    };
    let mut inputs = vec![query, key, value];
    inputs.extend(bias.as_ref());
    inputs.extend(keep.as_ref());
    crate::autograd::try_apply(op, &inputs)
}

/// `[L, S]`, true where key `j` may be seen by query `i` (`j <= i`): a
/// causal mask, on `like`'s device.
pub(crate) fn causal_mask(l: usize, s: usize, like: &Tensor) -> Tensor {
    let opts = crate::TensorOptions::new().device(&like.device());
    let rows = Tensor::arange_opts(0.0, l as f64, 1.0, &opts).unsqueeze(1);
    let cols = Tensor::arange_opts(0.0, s as f64, 1.0, &opts).unsqueeze(0);
    cols.le(&rows)
}

/// The additive float bias of an attention mask in `like`'s dtype: a bool
/// mask (true: take part) becomes 0 and -inf; a float one is added as is.
pub(crate) fn attention_bias(mask: &Tensor, like: &Tensor) -> Result<Tensor> {
    match mask.dtype() {
        DType::Bool => {
            let opts = like.options();
            let zero = Tensor::zeros_opts([1], &opts);
            let blocked = Tensor::full_opts([1], f64::NEG_INFINITY, &opts);
            Ok(Tensor::where_cond(
                &mask.to(&like.device()),
                &zero,
                &blocked,
            ))
        }
        d if d == like.dtype() => Ok(mask.clone()),
        d => Err(Error::dtype(
            "scaled_dot_product_attention",
            format!(
                "the attention mask is {d} but the query is {}; pass a bool mask, or convert it \
                 with .to_dtype(DType::{:?})",
                like.dtype(),
                like.dtype()
            ),
        )),
    }
}
