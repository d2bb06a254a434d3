//! `TransformerEncoderLayer`: self-attention and a feed-forward block, each
//! with dropout, a residual connection and a `LayerNorm`, on the tape and on
//! the compile-time path (the sub-layers' own forward and backward, chained).

use super::attention::{AttendOptions, MultiheadAttentionSaved};
use super::module::join_name;
use super::{
    Differentiable, Dropout, Forward, LayerNorm, LayerNormOptions, LayerNormWorkspace,
    LayerWorkspace, Linear, LinearWorkspace, Module, MultiheadAttention, MultiheadAttentionOptions,
    MultiheadAttentionWorkspace, ReLU, TrainStep, GELU,
};
use crate::autograd::{forward_into, no_grad, NoGradGuard};
use crate::backend::Device;
use crate::error::{OrPanic, Result};
use crate::ops;
use crate::tensor::Tensor;

/// The feed-forward activation of a [`TransformerEncoderLayer`]
/// (`activation="relu"` or `"gelu"`).
pub enum Activation {
    /// `relu` (PyTorch's default).
    ReLU(ReLU),
    /// `gelu` (exact).
    GELU(GELU),
}

/// What an [`Activation`]'s backward needs.
pub enum ActivationSaved {
    /// ReLU's.
    ReLU(<ReLU as Differentiable>::Saved),
    /// GELU's.
    GELU(<GELU as Differentiable>::Saved),
}

impl Activation {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Activation::ReLU(a) => a.forward(x),
            Activation::GELU(a) => a.forward(x),
        }
    }

    fn forward_train(&self, x: &Tensor) -> (Tensor, ActivationSaved) {
        match self {
            Activation::ReLU(a) => {
                let (y, s) = a.forward_train(x);
                (y, ActivationSaved::ReLU(s))
            }
            Activation::GELU(a) => {
                let (y, s) = a.forward_train(x);
                (y, ActivationSaved::GELU(s))
            }
        }
    }

    fn backward(&self, saved: ActivationSaved, g: &Tensor) -> Tensor {
        let dx = match (self, saved) {
            (Activation::ReLU(a), ActivationSaved::ReLU(s)) => a.backward(s, g, true),
            (Activation::GELU(a), ActivationSaved::GELU(s)) => a.backward(s, g, true),
            _ => unreachable!("saved by this activation"),
        };
        dx.expect("asked for")
    }
}

/// Which feed-forward activation (`activation=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ActivationKind {
    /// `"relu"`.
    #[default]
    Relu,
    /// `"gelu"`.
    Gelu,
}

/// `nn.TransformerEncoderLayer`'s options beyond the sizes, with PyTorch's
/// defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransformerEncoderLayerOptions {
    /// The feed-forward width (2048).
    pub dim_feedforward: usize,
    /// Dropout after attention, in the feed-forward block and after it (0.1).
    pub dropout: f64,
    /// The feed-forward activation (relu).
    pub activation: ActivationKind,
    /// The norms' `eps` (1e-5).
    pub layer_norm_eps: f64,
    /// Whether inputs are `[N, L, E]` (false).
    pub batch_first: bool,
    /// Whether each block normalises its input (pre-norm) rather than its
    /// residual sum (false: post-norm).
    pub norm_first: bool,
    /// Whether the linear layers and norms have biases (true).
    pub bias: bool,
}

impl Default for TransformerEncoderLayerOptions {
    fn default() -> Self {
        TransformerEncoderLayerOptions {
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: ActivationKind::Relu,
            layer_norm_eps: 1e-5,
            batch_first: false,
            norm_first: false,
            bias: true,
        }
    }
}

/// A transformer encoder layer (`nn.TransformerEncoderLayer(d_model,
/// nhead)`): self-attention and a feed-forward block
/// (`linear2(dropout(activation(linear1(x))))`), each with dropout, a
/// residual connection and a `LayerNorm` (after the sum, or before the
/// block with `norm_first`). Parameter names as PyTorch's
/// (`self_attn.in_proj_weight`, `linear1.weight`, `norm1.weight`, ...). In
/// `network!`, `TransformerEncoderLayer(d, h)` expects and produces `d`.
///
/// ```
/// use deriv_runtime::nn::{Forward, TransformerEncoderLayer, TransformerEncoderLayerOptions};
/// use deriv_runtime::{Device, Tensor};
/// let opts = TransformerEncoderLayerOptions { dim_feedforward: 32, batch_first: true, ..Default::default() };
/// let layer = TransformerEncoderLayer::with_options(16, 4, &opts, &Device::Cpu);
/// assert_eq!(layer.forward(&Tensor::randn([2, 10, 16])).shape(), &[2, 10, 16]);
/// ```
pub struct TransformerEncoderLayer {
    /// The self-attention.
    pub self_attn: MultiheadAttention,
    /// `d_model → dim_feedforward`.
    pub linear1: Linear,
    /// Inside the feed-forward block.
    pub dropout: Dropout,
    /// `dim_feedforward → d_model`.
    pub linear2: Linear,
    /// The attention block's norm.
    pub norm1: LayerNorm,
    /// The feed-forward block's norm.
    pub norm2: LayerNorm,
    /// After the attention.
    pub dropout1: Dropout,
    /// After the feed-forward block.
    pub dropout2: Dropout,
    /// The feed-forward activation.
    pub activation: Activation,
    /// Pre-norm (true) or post-norm.
    pub norm_first: bool,
}

impl TransformerEncoderLayer {
    /// A layer with PyTorch's defaults, its parameters on `device`.
    pub fn new(d_model: usize, nhead: usize, device: &Device) -> Self {
        Self::with_options(
            d_model,
            nhead,
            &TransformerEncoderLayerOptions::default(),
            device,
        )
    }

    /// A layer with other widths, dropout, activation, layout or norm order.
    pub fn with_options(
        d_model: usize,
        nhead: usize,
        options: &TransformerEncoderLayerOptions,
        device: &Device,
    ) -> Self {
        let attn = MultiheadAttentionOptions {
            dropout: options.dropout,
            bias: options.bias,
            batch_first: options.batch_first,
        };
        let linear = |i: usize, o: usize| Linear::with_bias(i, o, options.bias, device);
        let norm = || {
            let opts = LayerNormOptions {
                eps: options.layer_norm_eps,
                bias: options.bias,
                ..Default::default()
            };
            LayerNorm::with_options(d_model, &opts, device)
        };
        TransformerEncoderLayer {
            self_attn: MultiheadAttention::with_options(d_model, nhead, &attn, device),
            linear1: linear(d_model, options.dim_feedforward),
            dropout: Dropout::new(options.dropout, device),
            linear2: linear(options.dim_feedforward, d_model),
            norm1: norm(),
            norm2: norm(),
            dropout1: Dropout::new(options.dropout, device),
            dropout2: Dropout::new(options.dropout, device),
            activation: match options.activation {
                ActivationKind::Relu => Activation::ReLU(ReLU::new(device)),
                ActivationKind::Gelu => Activation::GELU(GELU::new(device)),
            },
            norm_first: options.norm_first,
        }
    }

    /// The feed-forward block on the tape.
    fn feed_forward(&self, x: &Tensor) -> Tensor {
        let h = self
            .dropout
            .forward(&self.activation.forward(&self.linear1.forward(x)));
        self.dropout2.forward(&self.linear2.forward(&h))
    }

    /// The attention block on the tape, with the masks of `masks`.
    fn attention(&self, x: &Tensor, masks: &EncoderMasks<'_>) -> Result<Tensor> {
        let options = AttendOptions {
            need_weights: false,
            attn_mask: masks.src_mask,
            key_padding_mask: masks.src_key_padding_mask,
            is_causal: masks.is_causal,
            ..Default::default()
        };
        let (y, _) = self.self_attn.try_attend(x, x, x, &options)?;
        Ok(self.dropout1.forward(&y))
    }

    /// PyTorch's `forward(src, src_mask, src_key_padding_mask, is_causal)`:
    /// the layer with its self-attention masked, e.g. to ignore padding
    /// tokens or to let each position see only earlier ones. (On the tape;
    /// [`Forward::forward`] is the unmasked layer.)
    ///
    /// ```
    /// use deriv_runtime::nn::{EncoderMasks, TransformerEncoderLayer, TransformerEncoderLayerOptions};
    /// use deriv_runtime::{Device, Tensor};
    /// let opts = TransformerEncoderLayerOptions { dim_feedforward: 32, batch_first: true, ..Default::default() };
    /// let layer = TransformerEncoderLayer::with_options(16, 4, &opts, &Device::Cpu);
    /// // Two sequences of 5 tokens; the second's last two are padding.
    /// let pad = Tensor::from_vec(vec![false, false, false, false, false, false, false, false, true, true], [2, 5]);
    /// let masks = EncoderMasks { src_key_padding_mask: Some(&pad), ..Default::default() };
    /// let y = layer.forward_masked(&Tensor::randn([2, 5, 16]), &masks);
    /// assert_eq!(y.shape(), &[2, 5, 16]);
    /// ```
    #[track_caller]
    pub fn forward_masked(&self, src: &Tensor, masks: &EncoderMasks<'_>) -> Tensor {
        self.try_forward_masked(src, masks).or_panic()
    }

    /// Fallible [`forward_masked`](Self::forward_masked): an input or mask
    /// of the wrong shape is an `Err` naming the attention layer.
    pub fn try_forward_masked(&self, src: &Tensor, masks: &EncoderMasks<'_>) -> Result<Tensor> {
        let x = src;
        Ok(if self.norm_first {
            let x = x + &self.attention(&self.norm1.try_forward(x)?, masks)?;
            &x + &self.feed_forward(&self.norm2.try_forward(&x)?)
        } else {
            let x = self.norm1.try_forward(&(x + &self.attention(x, masks)?))?;
            self.norm2.try_forward(&(&x + &self.feed_forward(&x)))?
        })
    }
}

/// The masks of [`TransformerEncoderLayer::forward_masked`], PyTorch's
/// `forward` arguments (all off by default).
#[derive(Clone, Copy, Debug, Default)]
pub struct EncoderMasks<'a> {
    /// `[S, S]` or `[N·nhead, S, S]`: true where a position may not attend,
    /// or a float added to the scores.
    pub src_mask: Option<&'a Tensor>,
    /// `[N, S]`: true for the padding tokens no position attends to.
    pub src_key_padding_mask: Option<&'a Tensor>,
    /// Position `i` attends to `0..=i` only (when `src_mask` is `None`).
    pub is_causal: bool,
}

impl Module for TransformerEncoderLayer {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor)) {
        let p = |name: &str| join_name(prefix, name);
        self.self_attn.visit_parameters(&p("self_attn"), f);
        self.linear1.visit_parameters(&p("linear1"), f);
        self.linear2.visit_parameters(&p("linear2"), f);
        self.norm1.visit_parameters(&p("norm1"), f);
        self.norm2.visit_parameters(&p("norm2"), f);
    }

    fn visit_parameters_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        let p = |name: &str| join_name(prefix, name);
        self.self_attn.visit_parameters_mut(&p("self_attn"), f);
        self.linear1.visit_parameters_mut(&p("linear1"), f);
        self.linear2.visit_parameters_mut(&p("linear2"), f);
        self.norm1.visit_parameters_mut(&p("norm1"), f);
        self.norm2.visit_parameters_mut(&p("norm2"), f);
    }

    fn set_training(&mut self, training: bool) {
        self.self_attn.set_training(training);
        for d in [&mut self.dropout, &mut self.dropout1, &mut self.dropout2] {
            d.set_training(training);
        }
    }

    fn visit_training(&self, f: &mut dyn FnMut(bool)) {
        self.self_attn.visit_training(f);
        for d in [&self.dropout, &self.dropout1, &self.dropout2] {
            d.visit_training(f);
        }
    }
}

impl Forward for TransformerEncoderLayer {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_masked(x, &EncoderMasks::default())
    }
}

/// What [`TransformerEncoderLayer`]'s compile-time backward needs: each
/// sub-layer's saved values.
pub struct TransformerEncoderLayerSaved {
    attn: MultiheadAttentionSaved,
    dropout1: <Dropout as Differentiable>::Saved,
    norm1: <LayerNorm as Differentiable>::Saved,
    linear1: <Linear as Differentiable>::Saved,
    activation: ActivationSaved,
    dropout: <Dropout as Differentiable>::Saved,
    linear2: <Linear as Differentiable>::Saved,
    dropout2: <Dropout as Differentiable>::Saved,
    norm2: <LayerNorm as Differentiable>::Saved,
}

impl Differentiable for TransformerEncoderLayer {
    /// Each sub-layer's saved values.
    type Saved = TransformerEncoderLayerSaved;
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Maps {
        input: 0,
        output: 0,
    };

    #[track_caller]
    fn forward_train(&self, x: &Tensor) -> (Tensor, TransformerEncoderLayerSaved) {
        no_grad(|| {
            // The attention block's input is x (post-norm) or norm1(x).
            let (attn_in, norm1_pre) = if self.norm_first {
                let (n, s) = self.norm1.forward_train(x);
                (n, Some(s))
            } else {
                (x.clone(), None)
            };
            let (a, attn) = self.self_attn.forward_train(&attn_in);
            let (a, dropout1) = self.dropout1.forward_train(&a);
            let r1 = x + &a;
            let (h, norm1) = match norm1_pre {
                Some(s) => (r1, s),
                None => self.norm1.forward_train(&r1),
            };
            let (ff_in, norm2_pre) = if self.norm_first {
                let (n, s) = self.norm2.forward_train(&h);
                (n, Some(s))
            } else {
                (h.clone(), None)
            };
            let (f, linear1) = self.linear1.forward_train(&ff_in);
            let (f, activation) = self.activation.forward_train(&f);
            let (f, dropout) = self.dropout.forward_train(&f);
            let (f, linear2) = self.linear2.forward_train(&f);
            let (f, dropout2) = self.dropout2.forward_train(&f);
            let r2 = &h + &f;
            let (y, norm2) = match norm2_pre {
                Some(s) => (r2, s),
                None => self.norm2.forward_train(&r2),
            };
            let saved = TransformerEncoderLayerSaved {
                attn,
                dropout1,
                norm1,
                linear1,
                activation,
                dropout,
                linear2,
                dropout2,
                norm2,
            };
            (y, saved)
        })
    }

    fn backward(
        &self,
        s: TransformerEncoderLayerSaved,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<Tensor> {
        no_grad(|| {
            let need = |t: Option<Tensor>| t.expect("asked for");
            // The feed-forward block, from its output's gradient `g`.
            let ff = |g: &Tensor, s_l2, s_d2, s_d, s_act, s_l1| {
                let g = need(self.dropout2.backward(s_d2, g, true));
                let g = need(self.linear2.backward(s_l2, &g, true));
                let g = need(self.dropout.backward(s_d, &g, true));
                let g = self.activation.backward(s_act, &g);
                need(self.linear1.backward(s_l1, &g, true))
            };
            let attn = |g: &Tensor, s_d1, s_attn| {
                let g = need(self.dropout1.backward(s_d1, g, true));
                need(self.self_attn.backward(s_attn, &g, true))
            };
            let dx = if self.norm_first {
                // y = h + ff(norm2(h)); h = x + attn(norm1(x)).
                let d_ff = ff(
                    grad_out,
                    s.linear2,
                    s.dropout2,
                    s.dropout,
                    s.activation,
                    s.linear1,
                );
                let dh = grad_out + &need(self.norm2.backward(s.norm2, &d_ff, true));
                let d_attn = attn(&dh, s.dropout1, s.attn);
                &dh + &need(self.norm1.backward(s.norm1, &d_attn, true))
            } else {
                // y = norm2(h + ff(h)); h = norm1(x + attn(x)).
                let dr2 = need(self.norm2.backward(s.norm2, grad_out, true));
                let dh = &dr2
                    + &ff(
                        &dr2,
                        s.linear2,
                        s.dropout2,
                        s.dropout,
                        s.activation,
                        s.linear1,
                    );
                let dr1 = need(self.norm1.backward(s.norm1, &dh, true));
                &dr1 + &attn(&dr1, s.dropout1, s.attn)
            };
            input_grad.then_some(dx)
        })
    }
}

/// The feed-forward block's [`TrainStep`] buffers.
#[derive(Default)]
struct FeedForwardWorkspace {
    linear1: LinearWorkspace,
    relu: <ReLU as TrainStep>::Workspace,
    gelu: <GELU as TrainStep>::Workspace,
    dropout: LayerWorkspace,
    linear2: LinearWorkspace,
    dropout2: LayerWorkspace,
}

/// [`TransformerEncoderLayer`]'s [`TrainStep`] workspace: each sub-layer's
/// own (the attention's fused step, the Linear and LayerNorm ops'
/// buffers), and the residual sums and their gradients.
#[derive(Default)]
pub struct TransformerEncoderLayerWorkspace {
    attn: MultiheadAttentionWorkspace,
    dropout1: LayerWorkspace,
    norm1: LayerNormWorkspace,
    norm2: LayerNormWorkspace,
    ff: FeedForwardWorkspace,
    /// The attention block's residual sum, and the layer's last.
    sums: [Option<Tensor>; 2],
    /// The gradient of the first sum, and the input's.
    grads: [Option<Tensor>; 2],
}

/// `a + b` into the buffer `out` keeps (the Add op's kernel).
fn sum_into<'s>(a: &Tensor, b: &Tensor, out: &'s mut Option<Tensor>) -> &'s Tensor {
    forward_into(&ops::Add, &[a, b], &[false, false], out, None)
}

impl TransformerEncoderLayer {
    /// The feed-forward block on `ws`'s buffers.
    fn feed_forward_ws<'w>(&self, x: &Tensor, ws: &'w mut FeedForwardWorkspace) -> &'w Tensor {
        let f = self.linear1.forward_train_ws(x, &mut ws.linear1);
        let f = match &self.activation {
            Activation::ReLU(a) => a.forward_train_ws(f, &mut ws.relu),
            Activation::GELU(a) => a.forward_train_ws(f, &mut ws.gelu),
        };
        let f = self.dropout.forward_train_ws(f, &mut ws.dropout);
        let f = self.linear2.forward_train_ws(f, &mut ws.linear2);
        self.dropout2.forward_train_ws(f, &mut ws.dropout2)
    }

    /// The feed-forward block's input gradient from its output's `g` (its
    /// parameters' added into their `.grad()`).
    fn feed_forward_backward_ws<'w>(
        &self,
        ws: &'w mut FeedForwardWorkspace,
        g: &Tensor,
    ) -> &'w Tensor {
        let need = "asked for";
        let g = self
            .dropout2
            .backward_ws(&mut ws.dropout2, g, true)
            .expect(need);
        let g = self
            .linear2
            .backward_ws(&mut ws.linear2, g, true)
            .expect(need);
        let g = self
            .dropout
            .backward_ws(&mut ws.dropout, g, true)
            .expect(need);
        let g = match &self.activation {
            Activation::ReLU(a) => a.backward_ws(&mut ws.relu, g, true),
            Activation::GELU(a) => a.backward_ws(&mut ws.gelu, g, true),
        };
        let g = g.expect(need);
        self.linear1
            .backward_ws(&mut ws.linear1, g, true)
            .expect(need)
    }
}

impl TrainStep for TransformerEncoderLayer {
    type Workspace = TransformerEncoderLayerWorkspace;

    #[track_caller]
    fn forward_train_ws<'w>(
        &self,
        x: &Tensor,
        ws: &'w mut TransformerEncoderLayerWorkspace,
    ) -> &'w Tensor {
        let _guard = NoGradGuard::new();
        let [s1, s2] = &mut ws.sums;
        if self.norm_first {
            // y = h + ff(norm2(h)); h = x + attn(norm1(x)).
            let n1 = self.norm1.forward_train_ws(x, &mut ws.norm1);
            let a = self.self_attn.forward_train_ws(n1, &mut ws.attn);
            let a = self.dropout1.forward_train_ws(a, &mut ws.dropout1);
            let h = sum_into(x, a, s1);
            let n2 = self.norm2.forward_train_ws(h, &mut ws.norm2);
            let f = self.feed_forward_ws(n2, &mut ws.ff);
            sum_into(h, f, s2)
        } else {
            // y = norm2(h + ff(h)); h = norm1(x + attn(x)).
            let a = self.self_attn.forward_train_ws(x, &mut ws.attn);
            let a = self.dropout1.forward_train_ws(a, &mut ws.dropout1);
            let h = self
                .norm1
                .forward_train_ws(sum_into(x, a, s1), &mut ws.norm1);
            let f = self.feed_forward_ws(h, &mut ws.ff);
            self.norm2
                .forward_train_ws(sum_into(h, f, s2), &mut ws.norm2)
        }
    }

    fn backward_ws<'w>(
        &self,
        ws: &'w mut TransformerEncoderLayerWorkspace,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        let _guard = NoGradGuard::new();
        let need = "asked for";
        let [dh_sum, dx_sum] = &mut ws.grads;
        if self.norm_first {
            let d_ff = self.feed_forward_backward_ws(&mut ws.ff, grad_out);
            let d_n2 = self
                .norm2
                .backward_ws(&mut ws.norm2, d_ff, true)
                .expect(need);
            let dh = sum_into(grad_out, d_n2, dh_sum);
            let da = self
                .dropout1
                .backward_ws(&mut ws.dropout1, dh, true)
                .expect(need);
            let d_n1 = self
                .self_attn
                .backward_ws(&mut ws.attn, da, true)
                .expect(need);
            let d_x1 = self.norm1.backward_ws(&mut ws.norm1, d_n1, input_grad)?;
            Some(sum_into(dh, d_x1, dx_sum))
        } else {
            let dr2 = self
                .norm2
                .backward_ws(&mut ws.norm2, grad_out, true)
                .expect(need);
            let d_ff = self.feed_forward_backward_ws(&mut ws.ff, dr2);
            let dh = sum_into(dr2, d_ff, dh_sum);
            let dr1 = self.norm1.backward_ws(&mut ws.norm1, dh, true).expect(need);
            let da = self
                .dropout1
                .backward_ws(&mut ws.dropout1, dr1, true)
                .expect(need);
            let d_xa = self.self_attn.backward_ws(&mut ws.attn, da, input_grad)?;
            Some(sum_into(dr1, d_xa, dx_sum))
        }
    }
}
