//! `F.scaled_dot_product_attention`: `softmax(q·kᵀ·scale + bias)·v`, over
//! any leading (batch, head) dims. One op whose forward and backward are
//! written with the matmul and softmax ops' own kernels and gradient rules
//! (`matmul_backward`, `softmax_backward`), so it runs wherever they do.
//! The probabilities are recomputed in backward, not kept (as a fused
//! attention kernel does), so the step keeps only its inputs.

use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::error::{Error, Result};
use crate::ops::matmul::matmul_backward;
use crate::ops::softmax::softmax_backward;
use crate::tensor::Tensor;

/// Attention of `q` `[.., L, E]` over `k` `[.., S, E]` and `v` `[.., S, Ev]`,
/// inputs `[q, k, v, bias, keep]`: an additive float `bias` broadcasting to
/// `[.., L, S]` when `has_bias` (masks become 0 and -inf), and a dropout
/// multiplier of the probabilities' shape when `has_dropout`.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    /// Multiplies `q·kᵀ` (PyTorch's default: `1/√E`).
    pub scale: f64,
    /// Whether an additive bias follows `v`.
    pub has_bias: bool,
    /// Whether a dropout multiplier comes last.
    pub has_dropout: bool,
}

impl Attention {
    /// The bias and dropout multiplier among `x`.
    fn extras<'a>(&self, x: &[&'a Tensor]) -> (Option<&'a Tensor>, Option<&'a Tensor>) {
        let bias = self.has_bias.then(|| x[3]);
        let keep = self.has_dropout.then(|| x[3 + self.has_bias as usize]);
        (bias, keep)
    }

    /// `softmax(q·kᵀ·scale + bias)` over the last dim.
    pub(crate) fn probs(&self, q: &Tensor, k: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let s = q.matmul(&k.transpose(-2, -1)) * self.scale;
        match bias {
            Some(b) => (&s + b).softmax(-1),
            None => s.softmax(-1),
        }
    }
}

impl Op for Attention {
    const NAME: &'static str = "ScaledDotProductAttentionBackward";
    const OP: &'static str = "scaled_dot_product_attention";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Unknown;
    /// The inputs (the probabilities are recomputed).
    type Saved = ((Tensor, Tensor, Tensor), Option<Tensor>, Option<Tensor>);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let want = 3 + self.has_bias as usize + self.has_dropout as usize;
        let bad = |msg: String| Err(Error::shape("scaled_dot_product_attention", msg));
        if x.len() != want {
            return bad(format!("expected {want} inputs, got {}", x.len()));
        }
        let (q, k, v) = (x[0], x[1], x[2]);
        let nd = q.ndim();
        if nd < 2 || k.ndim() != nd || v.ndim() != nd {
            return bad(format!(
                "query, key and value must have the same rank (2 or more), got shapes {:?}, \
                 {:?}, {:?}",
                q.shape(),
                k.shape(),
                v.shape()
            ));
        }
        let lead = &q.shape()[..nd - 2];
        if k.shape()[..nd - 2] != *lead
            || v.shape()[..nd - 2] != *lead
            || k.shape()[nd - 1] != q.shape()[nd - 1]
            || v.shape()[nd - 2] != k.shape()[nd - 2]
        {
            return bad(format!(
                "expected query [.., L, E], key [.., S, E] and value [.., S, Ev] with the same \
                 leading dims, got {:?}, {:?}, {:?}",
                q.shape(),
                k.shape(),
                v.shape()
            ));
        }
        for t in &x[1..] {
            if t.dtype() != q.dtype() || !q.dtype().is_float() {
                return Err(Error::dtype(
                    "scaled_dot_product_attention",
                    format!(
                        "expected float inputs of one dtype, got {} and {}; convert the mask \
                         with .to_dtype(..) or pass a bool mask",
                        q.dtype(),
                        t.dtype()
                    ),
                ));
            }
            crate::ops::same_device("scaled_dot_product_attention", q, t)?;
        }
        let mut shape = q.shape().to_vec();
        shape[nd - 1] = v.shape()[nd - 1];
        Ok(Spec::shaped(&shape, q))
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (bias, keep) = self.extras(x);
        let p = self.probs(x[0], x[1], bias);
        let p = match keep {
            Some(m) => &p * m,
            None => p,
        };
        out.set(p.matmul(x[2]))
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        let (bias, keep) = self.extras(x);
        (
            (x[0].clone(), x[1].clone(), x[2].clone()),
            bias.cloned(),
            keep.cloned(),
        )
    }

    /// `dv = P̃ᵀ·g`, `dP = (g·vᵀ)∘keep`, `dS = softmax′(dP)`, `dq = dS·k·scale`,
    /// `dk = dSᵀ·q·scale`, `dbias = dS` summed to the bias's shape.
    fn backward(
        &self,
        ((q, k, v), bias, keep): &Self::Saved,
        g: &Tensor,
        grads: &mut [GradSlot<'_>],
    ) {
        let needed: [bool; 4] = std::array::from_fn(|i| grads.get(i).is_some_and(|s| s.needed()));
        let need = |i: usize| needed[i];
        let p = self.probs(q, k, bias.as_ref());
        let kept = match keep {
            Some(m) => &p * m,
            None => p.clone(),
        };
        let (dkept, dv) = matmul_backward(g, &kept, v, [true, need(2)]);
        if let Some(dv) = dv {
            grads[2].add(dv);
        }
        if !(need(0) || need(1) || (self.has_bias && need(3))) {
            return;
        }
        let dkept = dkept.expect("asked for");
        let dp = match keep {
            Some(m) => &dkept * m,
            None => dkept,
        };
        let ds = softmax_backward(&p, &dp, -1);
        if let (Some(b), true) = (bias, self.has_bias && need(3)) {
            grads[3].add(ds.sum_to(b.shape()));
        }
        let ds = ds * self.scale;
        let (dq, dkt) = matmul_backward(&ds, q, &k.transpose(-2, -1), [need(0), need(1)]);
        if let Some(dq) = dq {
            grads[0].add(dq);
        }
        if let Some(dkt) = dkt {
            grads[1].add(dkt.transpose(-2, -1));
        }
    }
}
