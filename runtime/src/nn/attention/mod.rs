//! `MultiheadAttention`, with PyTorch's parameter names (`in_proj_weight`,
//! `out_proj.weight`), initialisation and defaults: `ops::Linear`
//! projections around `ops::Attention`. On the tape these record as usual;
//! the compile-time path runs the same ops' forward and backward.

mod fused;

pub use fused::MultiheadAttentionWorkspace;

use super::functional::{self as F, attention_bias, causal_mask, dropout_mask};
use super::linear::backward_params;
use super::module::join_name;
use super::{init, Differentiable, Forward, Linear, Module};
use crate::autograd::{forward_saving, no_grad, try_apply, GradSlot, Op};
use crate::backend::Device;
use crate::error::{Error, OrPanic, Result};
use crate::ops::{self, Attention};
use crate::tensor::{Tensor, TensorOptions};

/// `nn.MultiheadAttention`'s options beyond the sizes, with PyTorch's
/// defaults: no dropout on the attention weights, biases, `[L, N, E]`
/// inputs (`batch_first` false).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MultiheadAttentionOptions {
    /// Dropout on the attention probabilities while training.
    pub dropout: f64,
    /// Whether the projections have biases.
    pub bias: bool,
    /// Whether inputs and outputs are `[N, L, E]`.
    pub batch_first: bool,
}

impl Default for MultiheadAttentionOptions {
    fn default() -> Self {
        MultiheadAttentionOptions {
            dropout: 0.0,
            bias: true,
            batch_first: false,
        }
    }
}

/// The optional arguments of [`MultiheadAttention::attend`], PyTorch's
/// `forward` arguments with its defaults (weights returned, averaged over
/// heads).
#[derive(Clone, Copy, Debug)]
pub struct AttendOptions<'a> {
    /// `[N, S]` (or `[S]` unbatched): true (or a float added) for keys to
    /// ignore.
    pub key_padding_mask: Option<&'a Tensor>,
    /// Whether to return the attention weights.
    pub need_weights: bool,
    /// `[L, S]` or `[N·num_heads, L, S]`: true where attending is not
    /// allowed, or a float added to the scores.
    pub attn_mask: Option<&'a Tensor>,
    /// Whether the returned weights are averaged over the heads.
    pub average_attn_weights: bool,
    /// A causal mask (query `i` sees keys `0..=i`), when `attn_mask` is `None`.
    pub is_causal: bool,
}

impl Default for AttendOptions<'_> {
    fn default() -> Self {
        AttendOptions {
            key_padding_mask: None,
            need_weights: true,
            attn_mask: None,
            average_attn_weights: true,
            is_causal: false,
        }
    }
}

/// Multi-head attention (`nn.MultiheadAttention(embed_dim, num_heads)`):
/// queries, keys and values projected by `in_proj_weight` (`[3E, E]`,
/// Xavier-uniform) and `in_proj_bias` (zeros), split into `num_heads`
/// heads, scaled dot-product attention per head, the heads concatenated
/// and projected by `out_proj` (a `Linear(E, E)` with a zero bias).
/// [`attend`](Self::attend) is PyTorch's `forward(query, key, value, ..)`;
/// [`Forward::forward`] is self-attention (`x` as query, key and value)
/// returning the output only, so in `network!` `MultiheadAttention(64, 4)`
/// expects and produces 64 features.
///
/// ```
/// use deriv_runtime::nn::{AttendOptions, MultiheadAttention, MultiheadAttentionOptions};
/// use deriv_runtime::{Device, Tensor};
/// let opts = MultiheadAttentionOptions { batch_first: true, ..Default::default() };
/// let mha = MultiheadAttention::with_options(8, 2, &opts, &Device::Cpu);
/// let (q, kv) = (Tensor::randn([3, 5, 8]), Tensor::randn([3, 7, 8]));
/// let (out, weights) = mha.attend(&q, &kv, &kv, &AttendOptions::default());
/// assert_eq!(out.shape(), &[3, 5, 8]);
/// let w = weights.unwrap(); // [N, L, S], averaged over the heads
/// assert_eq!(w.shape(), &[3, 5, 7]);
/// assert!((w.sum_dim(-1, false).to_vec::<f32>()[0] - 1.0).abs() < 1e-5);
/// ```
pub struct MultiheadAttention {
    /// `[3·E, E]`: the query, key and value projections stacked.
    pub in_proj_weight: Tensor,
    /// `[3·E]`, when the layer has biases.
    pub in_proj_bias: Option<Tensor>,
    /// The output projection.
    pub out_proj: Linear,
    /// `E`.
    pub embed_dim: usize,
    /// The heads `E` is split into.
    pub num_heads: usize,
    /// Dropout on the attention probabilities while training.
    pub dropout: f64,
    /// Whether inputs and outputs are `[N, L, E]`.
    pub batch_first: bool,
    training: bool,
}

impl MultiheadAttention {
    /// A layer with PyTorch's defaults, its parameters on `device`.
    pub fn new(embed_dim: usize, num_heads: usize, device: &Device) -> Self {
        Self::with_options(
            embed_dim,
            num_heads,
            &MultiheadAttentionOptions::default(),
            device,
        )
    }

    /// A layer with dropout, without biases, or batch-first.
    ///
    /// Panics when `embed_dim` is not divisible by `num_heads`.
    #[track_caller]
    pub fn with_options(
        embed_dim: usize,
        num_heads: usize,
        options: &MultiheadAttentionOptions,
        device: &Device,
    ) -> Self {
        assert!(
            num_heads > 0 && embed_dim.is_multiple_of(num_heads),
            "MultiheadAttention: embed_dim must be divisible by num_heads (got {embed_dim} and \
             {num_heads})"
        );
        let opts = TensorOptions::new().device(device);
        let in_proj_weight = Tensor::zeros_opts([3 * embed_dim, embed_dim], &opts);
        init::xavier_uniform_(&in_proj_weight);
        let out_proj = Linear::with_bias(embed_dim, embed_dim, options.bias, device);
        if let Some(b) = &out_proj.bias {
            no_grad(|| b.zero_());
        }
        MultiheadAttention {
            in_proj_weight: in_proj_weight.requires_grad_(true),
            in_proj_bias: options
                .bias
                .then(|| Tensor::zeros_opts([3 * embed_dim], &opts).requires_grad_(true)),
            out_proj,
            embed_dim,
            num_heads,
            dropout: options.dropout,
            batch_first: options.batch_first,
            training: true,
        }
    }

    fn err(&self, msg: String) -> Error {
        Error::shape(
            "forward",
            format!(
                "MultiheadAttention({}, {}): {msg}",
                self.embed_dim, self.num_heads
            ),
        )
    }

    /// `x` as `[N, L, E]` (and whether it was unbatched), checked.
    fn batch_major(&self, x: &Tensor, what: &str) -> Result<(Tensor, bool)> {
        let ok = matches!(x.ndim(), 2 | 3) && x.shape()[x.ndim() - 1] == self.embed_dim;
        if !ok {
            return Err(self.err(format!(
                "expected the {what} as [L, N, {e}] ([N, L, {e}] with batch_first, or [L, {e}] \
                 unbatched), got shape {:?}",
                x.shape(),
                e = self.embed_dim
            )));
        }
        Ok(match (x.ndim(), self.batch_first) {
            (2, _) => (x.unsqueeze(0), true),
            (_, true) => (x.clone(), false),
            _ => (x.transpose(0, 1), false),
        })
    }

    /// `[N, L, E]` back to the caller's layout.
    fn caller_layout(&self, y: Tensor, unbatched: bool) -> Tensor {
        if unbatched {
            y.squeeze_dim(0)
        } else if self.batch_first {
            y
        } else {
            y.transpose(0, 1)
        }
    }

    /// `[N, L, E]` as `[N, heads, L, E/heads]`.
    fn heads(&self, t: &Tensor) -> Tensor {
        let (n, l) = (t.shape()[0], t.shape()[1]);
        t.reshape([n, l, self.num_heads, self.embed_dim / self.num_heads])
            .transpose(1, 2)
    }

    /// The dropout multiplier for probabilities of `shape`, while training.
    fn keep(&self, like: &Tensor, shape: [usize; 4]) -> Option<Tensor> {
        (self.training && self.dropout > 0.0)
            .then(|| dropout_mask(&Tensor::zeros_opts(shape, &like.options()), self.dropout))
    }

    /// PyTorch's `forward(query, key, value, ..)`: the output
    /// (`[L, N, E]`, or as the layout says) and, when asked for, the
    /// attention weights (`[N, L, S]`, or per head `[N, heads, L, S]`).
    #[track_caller]
    pub fn attend(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        options: &AttendOptions<'_>,
    ) -> (Tensor, Option<Tensor>) {
        self.try_attend(query, key, value, options).or_panic()
    }

    /// Fallible [`attend`](Self::attend): inputs or masks of the wrong shape
    /// are an `Err` naming the layer.
    pub fn try_attend(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        options: &AttendOptions<'_>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (q, unbatched) = self.batch_major(query, "query")?;
        let (k, _) = self.batch_major(key, "key")?;
        let (v, _) = self.batch_major(value, "value")?;
        let (n, l, s, e) = (q.shape()[0], q.shape()[1], k.shape()[1], self.embed_dim);
        if k.shape()[0] != n || v.shape()[..2] != k.shape()[..2] {
            return Err(self.err(format!(
                "key and value must have the query's batch and one length, got query {:?}, key \
                 {:?}, value {:?}",
                query.shape(),
                key.shape(),
                value.shape()
            )));
        }
        let w = &self.in_proj_weight;
        let proj = |x: &Tensor, i: usize| {
            let b = self.in_proj_bias.as_ref().map(|b| b.narrow(0, i * e, e));
            F::try_linear(x, &w.narrow(0, i * e, e), b.as_ref())
        };
        let (qh, kh, vh) = (
            self.heads(&proj(&q, 0)?),
            self.heads(&proj(&k, 1)?),
            self.heads(&proj(&v, 2)?),
        );
        let bias = self.bias(options, n, l, s, &q, unbatched)?;
        let head_dim = e / self.num_heads;
        let op = Attention {
            scale: 1.0 / (head_dim as f64).sqrt(),
            has_bias: bias.is_some(),
            has_dropout: false,
        };
        let keep = self.keep(&q, [n, self.num_heads, l, s]);
        let op = Attention {
            has_dropout: keep.is_some(),
            ..op
        };
        let mut inputs = vec![&qh, &kh, &vh];
        inputs.extend(bias.as_ref());
        inputs.extend(keep.as_ref());
        let o = try_apply(op, &inputs)?;
        let merged = o.transpose(1, 2).reshape([n, l, e]);
        let y = self.caller_layout(self.out_proj.try_forward(&merged)?, unbatched);
        let weights = options.need_weights.then(|| {
            let p = op.probs(&qh, &kh, bias.as_ref());
            let p = match &keep {
                Some(m) => &p * m,
                None => p,
            };
            let p = if options.average_attn_weights {
                p.mean_dim(1, false)
            } else {
                p
            };
            if unbatched {
                p.squeeze_dim(0)
            } else {
                p
            }
        });
        Ok((y, weights))
    }

    /// The additive bias of the masks, broadcasting to `[N, heads, L, S]`.
    fn bias(
        &self,
        options: &AttendOptions<'_>,
        n: usize,
        l: usize,
        s: usize,
        like: &Tensor,
        unbatched: bool,
    ) -> Result<Option<Tensor>> {
        // PyTorch's masks mark what is *not* attended: invert a bool one.
        let not_attended = |m: &Tensor| {
            if m.dtype() == crate::DType::Bool {
                m.logical_not()
            } else {
                m.clone()
            }
        };
        let mut bias = None;
        if let Some(m) = options.attn_mask {
            let b = attention_bias(&not_attended(m), like)?;
            let b = match b.ndim() {
                2 if b.shape() == [l, s] => b,
                3 if b.shape() == [n * self.num_heads, l, s] => {
                    b.reshape([n, self.num_heads, l, s])
                }
                _ => {
                    return Err(self.err(format!(
                        "attn_mask must be [L, S] = [{l}, {s}] or [N·num_heads, L, S] = [{}, {l}, \
                         {s}], got {:?}",
                        n * self.num_heads,
                        m.shape()
                    )))
                }
            };
            bias = Some(b);
        } else if options.is_causal {
            bias = Some(attention_bias(&causal_mask(l, s, like), like)?);
        }
        if let Some(m) = options.key_padding_mask {
            let m = if unbatched { m.unsqueeze(0) } else { m.clone() };
            if m.shape() != [n, s] {
                return Err(self.err(format!(
                    "key_padding_mask must be [N, S] = [{n}, {s}], got {:?}",
                    m.shape()
                )));
            }
            let b = attention_bias(&not_attended(&m), like)?.reshape([n, 1, 1, s]);
            bias = Some(match bias {
                Some(a) => &a + &b,
                None => b,
            });
        }
        Ok(bias)
    }
}

impl Module for MultiheadAttention {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        f(&join_name(prefix, "in_proj_weight"), &self.in_proj_weight);
        if let Some(b) = &self.in_proj_bias {
            f(&join_name(prefix, "in_proj_bias"), b);
        }
        self.out_proj
            .visit_parameters(&join_name(prefix, "out_proj"), f);
    }

    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        f(
            &join_name(prefix, "in_proj_weight"),
            &mut self.in_proj_weight,
        );
        if let Some(b) = &mut self.in_proj_bias {
            f(&join_name(prefix, "in_proj_bias"), b);
        }
        self.out_proj
            .visit_parameters_mut(&join_name(prefix, "out_proj"), f);
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn visit_training(&self, f: &mut dyn FnMut(bool)) {
        f(self.training)
    }
}

impl Forward for MultiheadAttention {
    /// Self-attention: `x` as query, key and value; the output only.
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        let options = AttendOptions {
            need_weights: false,
            ..Default::default()
        };
        self.attend(x, x, x, &options).0
    }
}

/// What [`MultiheadAttention`]'s compile-time backward needs.
pub struct MultiheadAttentionSaved {
    input_proj: <ops::Linear as Op>::Saved,
    attention: <Attention as Op>::Saved,
    output_proj: <ops::Linear as Op>::Saved,
    op: Attention,
    unbatched: bool,
}

impl Differentiable for MultiheadAttention {
    /// The projections' and the attention op's saved values.
    type Saved = MultiheadAttentionSaved;
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Maps {
        input: 0,
        output: 0,
    };

    #[track_caller]
    fn forward_train(&self, x: &Tensor) -> (Tensor, MultiheadAttentionSaved) {
        let (xb, unbatched) = self.batch_major(x, "input").or_panic();
        let (n, l, e) = (xb.shape()[0], xb.shape()[1], self.embed_dim);
        let h = self.num_heads;
        no_grad(|| {
            let x2 = xb.contiguous().reshape([n * l, e]);
            let mut inputs = vec![&x2, &self.in_proj_weight];
            inputs.extend(self.in_proj_bias.as_ref());
            let (qkv, input_proj) =
                forward_saving(&ops::Linear, &inputs, &[true; 3][..inputs.len()]);
            let parts = qkv.reshape([n, l, 3, h, e / h]).permute(&[2, 0, 3, 1, 4]);
            let [q, k, v] = [0, 1, 2].map(|i| parts.select(0, i));
            let keep = self.keep(&xb, [n, h, l, l]);
            let op = Attention {
                scale: 1.0 / ((e / h) as f64).sqrt(),
                has_bias: false,
                has_dropout: keep.is_some(),
            };
            let mut inputs = vec![&q, &k, &v];
            inputs.extend(keep.as_ref());
            let (o, attention) = forward_saving(&op, &inputs, &[true; 4][..inputs.len()]);
            let merged = o.transpose(1, 2).contiguous().reshape([n * l, e]);
            let mut inputs = vec![&merged, &self.out_proj.weight];
            inputs.extend(self.out_proj.bias.as_ref());
            let (y, output_proj) =
                forward_saving(&ops::Linear, &inputs, &[true; 3][..inputs.len()]);
            let y = self.caller_layout(y.reshape([n, l, e]), unbatched);
            let saved = MultiheadAttentionSaved {
                input_proj,
                attention,
                output_proj,
                op,
                unbatched,
            };
            (y, saved)
        })
    }

    fn backward(
        &self,
        saved: MultiheadAttentionSaved,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<Tensor> {
        no_grad(|| {
            let (g, _) = self.batch_major(grad_out, "gradient").or_panic();
            let (n, l, e) = (g.shape()[0], g.shape()[1], self.embed_dim);
            let g2 = g.contiguous().reshape([n * l, e]);
            let params = [Some(&self.out_proj.weight), self.out_proj.bias.as_ref()];
            let dmerged = backward_params(&ops::Linear, &saved.output_proj, params, &g2, true)
                .expect("asked for");
            let d_o = self.heads(&dmerged.reshape([n, l, e]));
            let mut sums = [None, None, None];
            {
                let [a, b, c] = &mut sums;
                let mut slots = [
                    GradSlot::new(a, true),
                    GradSlot::new(b, true),
                    GradSlot::new(c, true),
                ];
                saved.op.backward(&saved.attention, &d_o, &mut slots);
            }
            let parts: Vec<Tensor> = sums.into_iter().map(|s| s.expect("asked for")).collect();
            let dqkv = Tensor::stack(&parts, 0)
                .permute(&[1, 3, 0, 2, 4])
                .contiguous()
                .reshape([n * l, 3 * e]);
            let params = [Some(&self.in_proj_weight), self.in_proj_bias.as_ref()];
            let dx = backward_params(&ops::Linear, &saved.input_proj, params, &dqkv, input_grad)?;
            Some(self.caller_layout(dx.reshape([n, l, e]), saved.unbatched))
        })
    }
}
