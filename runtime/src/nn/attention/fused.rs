//! [`MultiheadAttention`]'s buffer-reusing training step ([`TrainStep`]):
//! the input and output projections are the Linear op's workspaces (its
//! kernels, its gradients added into `.grad()` in place), and between them
//! self-attention runs head by head on the slices the workspace keeps, with
//! the matrix-product and softmax row kernels the ops use. The
//! probabilities are kept for backward (the allocating op recomputes
//! them), so backward does no product twice. A steady-state step allocates
//! nothing. What it does not cover goes through the allocating path
//! ([`Fallback`]): a GPU tensor, a dtype other than f32/f64, dropout on the
//! attention weights while training (its masks are that path's draws), an
//! empty sequence or batch.

use super::MultiheadAttention;
use crate::backend::cpu::gemm::{Gemm, Mat};
use crate::backend::cpu::{par_parts, pool, SharedPtr, TileSplit};
use crate::backend::Host;
use crate::nn::dsl::{fit, read_host, slot, write_host};
use crate::nn::{Fallback, LinearWorkspace, TrainStep};
use crate::ops::softmax::{softmax_rows_backward_serial, softmax_rows_serial};
use crate::ops::{self};
use crate::tensor::{assert_matrix_within, DType, Tensor};
use crate::Device;

/// The op name in internal errors.
const OP: &str = "MultiheadAttention";

/// The sizes of one pass and where a token's row lies in the caller's
/// layout (`[N, L, ..]` batch-major, or `[L, N, ..]`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Dims {
    batch: usize,
    len: usize,
    embed: usize,
    heads: usize,
    batch_major: bool,
}

impl Dims {
    fn head_dim(&self) -> usize {
        self.embed / self.heads
    }
    /// `(batch, head)` pairs.
    fn pairs(&self) -> usize {
        self.batch * self.heads
    }
    /// The row of batch `n`'s first token, and the rows between its tokens.
    fn rows_of(&self, n: usize) -> (usize, usize) {
        if self.batch_major {
            (n * self.len, 1)
        } else {
            (n, self.batch)
        }
    }
    /// Head `h` of batch `n` in a matrix of rows `width` wide whose
    /// `part`-th `E` columns hold the heads: its offset and row stride.
    fn block(&self, n: usize, h: usize, width: usize, part: usize) -> (usize, usize) {
        let (row, step) = self.rows_of(n);
        (
            row * width + part * self.embed + h * self.head_dim(),
            step * width,
        )
    }
}

/// `c = a·b` on the calling thread, `c` the `m x n` block at `c_off` of a
/// buffer of `c_len` elements with row stride `ldc`; every operand's
/// bounds checked first.
///
/// # Safety
/// `c` points at a buffer of `c_len` elements whose block nothing else
/// touches during the call; `a` and `b` view live buffers.
#[allow(clippy::too_many_arguments)]
unsafe fn product<T: Gemm>(
    (m, n, k): (usize, usize, usize),
    a: Mat<T>,
    b: Mat<T>,
    c: SharedPtr<T>,
    c_len: usize,
    c_off: usize,
    ldc: usize,
) {
    a.assert_within(OP, m, k);
    b.assert_within(OP, k, n);
    assert_matrix_within(OP, c_off, (m, n), (ldc, 1), c_len);
    // SAFETY: bounds checked above; exclusivity from the caller.
    unsafe { T::gemm(m, n, k, a, b, c.get().add(c_off), ldc, false) }
}

/// One dtype's buffers: the probabilities of every `(batch, head)` pair
/// (`[N, heads, L, L]`) and two `L x L` scratch matrices per parallel part.
#[derive(Default)]
struct Buffers<T> {
    probs: Vec<T>,
    scratch: Vec<T>,
}

/// Attention of fewer multiply-adds than this runs on one thread. (Under
/// Miri, small: its test takes the split.)
const PAR_WORK: usize = if cfg!(miri) { 1 << 4 } else { 1 << 16 };

/// The split of the pairs over the helper pool, and each part's scratch
/// length: one part for a product too small to be worth a hand-off.
fn split(d: Dims) -> (TileSplit, usize) {
    let work = d.pairs() * d.len * d.len * d.head_dim();
    let width = if work < PAR_WORK {
        1
    } else {
        2 * pool::par_width()
    };
    (TileSplit::new(d.pairs(), width, 1), 2 * d.len * d.len)
}

impl<T: Gemm + Host + Default> Buffers<T> {
    /// `merged = softmax(Q·Kᵀ·scale)·V` per head, from `qkv` (`[.., 3E]`,
    /// the input projection) into `merged` (`[.., E]`), keeping the
    /// probabilities.
    fn forward(&mut self, d: Dims, qkv: &[T], merged: &mut [T]) {
        let (l, dh) = (d.len, d.head_dim());
        let (split, per) = split(d);
        fit(&mut self.probs, d.pairs() * l * l);
        fit(&mut self.scratch, split.parts * per);
        let scale = T::from_f64(1.0 / (dh as f64).sqrt());
        let (probs, scratch) = (
            SharedPtr::new(self.probs.as_mut_ptr()),
            SharedPtr::new(self.scratch.as_mut_ptr()),
        );
        let out_len = merged.len();
        let out = SharedPtr::new(merged.as_mut_ptr());
        par_parts(split.parts, |p| {
            let (start, count) = split.block(p);
            // SAFETY: part `p` owns its scratch and its pairs' rows of `probs`.
            let s = unsafe { std::slice::from_raw_parts_mut(scratch.get().add(p * per), l * l) };
            for pair in start..start + count {
                let (n, h) = (pair / d.heads, pair % d.heads);
                let (q, rs) = d.block(n, h, 3 * d.embed, 0);
                let (k, v) = (q + d.embed, q + 2 * d.embed);
                // SAFETY: as above.
                let pr =
                    unsafe { std::slice::from_raw_parts_mut(probs.get().add(pair * l * l), l * l) };
                // SAFETY: `s` is this part's; the operands are live slices.
                unsafe {
                    let (qm, km) = (Mat::new(qkv, q, rs, 1), Mat::new(qkv, k, rs, 1).t());
                    product(
                        (l, l, dh),
                        qm,
                        km,
                        SharedPtr::new(s.as_mut_ptr()),
                        l * l,
                        0,
                        l,
                    );
                }
                s.iter_mut().for_each(|v| *v = *v * scale);
                softmax_rows_serial(s, pr, l);
                let (o, ldo) = d.block(n, h, d.embed, 0);
                // SAFETY: this pair's head columns of `merged` are its own.
                unsafe {
                    let (pm, vm) = (Mat::new(pr, 0, l, 1), Mat::new(qkv, v, rs, 1));
                    product((l, dh, l), pm, vm, out, out_len, o, ldo);
                }
            }
        });
    }

    /// The gradient of [`forward`](Self::forward): from `dmerged` (`[.., E]`)
    /// into `dqkv` (`[.., 3E]`, every element written).
    fn backward(&mut self, d: Dims, qkv: &[T], dmerged: &[T], dqkv: &mut [T]) {
        let (l, dh) = (d.len, d.head_dim());
        let (split, per) = split(d);
        let scale = T::from_f64(1.0 / (dh as f64).sqrt());
        let probs = &self.probs;
        let scratch = SharedPtr::new(self.scratch.as_mut_ptr());
        let grad_len = dqkv.len();
        let grad = SharedPtr::new(dqkv.as_mut_ptr());
        par_parts(split.parts, |p| {
            let (start, count) = split.block(p);
            // SAFETY: part `p` owns its scratch.
            let s = unsafe { std::slice::from_raw_parts_mut(scratch.get().add(p * per), per) };
            let (dp, ds) = s.split_at_mut(l * l);
            for pair in start..start + count {
                let (n, h) = (pair / d.heads, pair % d.heads);
                let (q, rs) = d.block(n, h, 3 * d.embed, 0);
                let (k, v) = (q + d.embed, q + 2 * d.embed);
                let (o, ldo) = d.block(n, h, d.embed, 0);
                let pr = &probs[pair * l * l..][..l * l];
                let dout = Mat::new(dmerged, o, ldo, 1);
                // SAFETY (each product): the operands are live slices; `dp`
                // and `ds` are this part's; this pair's head columns of
                // `dqkv` are its own.
                unsafe {
                    // dV = Pᵀ·dO; dP = dO·Vᵀ.
                    product(
                        (l, dh, l),
                        Mat::new(pr, 0, l, 1).t(),
                        dout,
                        grad,
                        grad_len,
                        v,
                        rs,
                    );
                    let vt = Mat::new(qkv, v, rs, 1).t();
                    product(
                        (l, l, dh),
                        dout,
                        vt,
                        SharedPtr::new(dp.as_mut_ptr()),
                        l * l,
                        0,
                        l,
                    );
                }
                // dS = softmax′(dP)·scale.
                softmax_rows_backward_serial(pr, dp, ds, l);
                ds.iter_mut().for_each(|v| *v = *v * scale);
                // SAFETY: as above.
                unsafe {
                    let dsm = Mat::new(ds, 0, l, 1);
                    product(
                        (l, dh, l),
                        dsm,
                        Mat::new(qkv, k, rs, 1),
                        grad,
                        grad_len,
                        q,
                        rs,
                    );
                    product(
                        (l, dh, l),
                        dsm.t(),
                        Mat::new(qkv, q, rs, 1),
                        grad,
                        grad_len,
                        k,
                        rs,
                    );
                }
            }
        });
    }
}

impl<T: Gemm + Host + Default> Buffers<T> {
    /// [`forward`](Self::forward) on the tensors' elements.
    fn forward_on(&mut self, d: Dims, qkv: &Tensor, merged: &Tensor) {
        read_host(qkv, |qs| write_host(merged, |ms| self.forward(d, qs, ms)))
    }

    /// [`backward`](Self::backward) on the tensors' elements.
    fn backward_on(&mut self, d: Dims, qkv: &Tensor, dmerged: &Tensor, dqkv: &Tensor) {
        read_host(qkv, |qs| {
            read_host(dmerged, |gs| {
                write_host(dqkv, |ds| self.backward(d, qs, gs, ds))
            })
        })
    }
}

/// [`MultiheadAttention`]'s [`TrainStep`] workspace: the projections'
/// workspaces, the heads' merged output and the projected input's
/// gradient, the probabilities per dtype, and the allocating path's results
/// for the inputs the fused step does not cover.
#[derive(Default)]
pub struct MultiheadAttentionWorkspace {
    fallback: Fallback<MultiheadAttention>,
    in_proj: LinearWorkspace,
    out_proj: LinearWorkspace,
    merged: Option<Tensor>,
    dqkv: Option<Tensor>,
    f32: Buffers<f32>,
    f64: Buffers<f64>,
    /// The last forward's sizes and dtype (`None`: the allocating path).
    fused: Option<(Dims, DType)>,
}

impl MultiheadAttention {
    /// The sizes of a self-attention pass over `x` on the fused kernels, or
    /// `None` where the allocating path runs it (see the module's comment;
    /// an invalid input goes there too, for its error).
    fn fused_dims(&self, x: &Tensor) -> Option<Dims> {
        let dtype = x.dtype();
        let host = |t: &Tensor| !t.device().is_cuda() && t.dtype() == dtype;
        let params = [Some(&self.in_proj_weight), self.in_proj_bias.as_ref()]
            .into_iter()
            .chain([Some(&self.out_proj.weight), self.out_proj.bias.as_ref()])
            .flatten();
        let ok = matches!(dtype, DType::F32 | DType::F64)
            && host(x)
            && params.into_iter().all(|p| host(p) && p.is_contiguous())
            && matches!(x.ndim(), 2 | 3)
            && x.shape()[x.ndim() - 1] == self.embed_dim
            && !(self.training && self.dropout > 0.0);
        if !ok {
            return None;
        }
        let s = x.shape();
        let (batch, len) = match (x.ndim(), self.batch_first) {
            (2, _) => (1, s[0]),
            (_, true) => (s[0], s[1]),
            _ => (s[1], s[0]),
        };
        (batch > 0 && len > 0 && self.embed_dim > 0).then_some(Dims {
            batch,
            len,
            embed: self.embed_dim,
            heads: self.num_heads,
            batch_major: x.ndim() == 2 || self.batch_first,
        })
    }
}

/// `t`'s elements in `dtype` on the host, contiguous: `t` itself when it
/// is so (else a copy: that step allocates).
fn host_contiguous(t: &Tensor, dtype: DType) -> std::borrow::Cow<'_, Tensor> {
    if t.is_contiguous() && t.dtype() == dtype && !t.device().is_cuda() {
        std::borrow::Cow::Borrowed(t)
    } else {
        std::borrow::Cow::Owned(t.to(&Device::Cpu).to_dtype(dtype).contiguous())
    }
}

impl TrainStep for MultiheadAttention {
    type Workspace = MultiheadAttentionWorkspace;

    #[track_caller]
    fn forward_train_ws<'w>(
        &self,
        x: &Tensor,
        ws: &'w mut MultiheadAttentionWorkspace,
    ) -> &'w Tensor {
        let Some(d) = self.fused_dims(x) else {
            ws.fused = None;
            return ws.fallback.forward_train(self, x);
        };
        let _guard = crate::autograd::NoGradGuard::new();
        let dtype = x.dtype();
        let mut inputs = [x, &self.in_proj_weight, x];
        let n = match &self.in_proj_bias {
            Some(b) => {
                inputs[2] = b;
                3
            }
            None => 2,
        };
        let qkv = ws.in_proj.forward(&ops::Linear, &inputs[..n]);
        let merged = slot(&mut ws.merged, x.shape(), dtype, Device::Cpu, &[]);
        match dtype {
            DType::F32 => ws.f32.forward_on(d, qkv, merged),
            _ => ws.f64.forward_on(d, qkv, merged),
        }
        ws.fused = Some((d, dtype));
        let inputs = [merged, &self.out_proj.weight];
        match &self.out_proj.bias {
            Some(b) => ws
                .out_proj
                .forward(&ops::Linear, &[inputs[0], inputs[1], b]),
            None => ws.out_proj.forward(&ops::Linear, &inputs),
        }
    }

    fn backward_ws<'w>(
        &self,
        ws: &'w mut MultiheadAttentionWorkspace,
        grad_out: &Tensor,
        input_grad: bool,
    ) -> Option<&'w Tensor> {
        let Some((d, dtype)) = ws.fused else {
            return ws.fallback.backward(self, grad_out, input_grad);
        };
        let _guard = crate::autograd::NoGradGuard::new();
        let params = [Some(&self.out_proj.weight), self.out_proj.bias.as_ref()];
        let dmerged = ws
            .out_proj
            .backward(&ops::Linear, params, grad_out, true)
            .expect("asked for");
        let dmerged = host_contiguous(dmerged, dtype);
        let qkv = ws.in_proj.output().expect("a forward ran");
        let dqkv = slot(&mut ws.dqkv, qkv.shape(), dtype, Device::Cpu, &[]);
        match dtype {
            DType::F32 => ws.f32.backward_on(d, qkv, &dmerged, dqkv),
            _ => ws.f64.backward_on(d, qkv, &dmerged, dqkv),
        }
        let params = [Some(&self.in_proj_weight), self.in_proj_bias.as_ref()];
        ws.in_proj.backward(&ops::Linear, params, dqkv, input_grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Module, MultiheadAttentionOptions};

    /// The fused step against the allocating path, in `x`'s dtype.
    fn assert_fused_matches(m: &MultiheadAttention, x: &Tensor, tol: f64) {
        let dtype = x.dtype();
        crate::test_util::assert_step_matches_allocating(m, x, tol, "MultiheadAttention", |ws| {
            ws.fused.map(|f| f.1) == Some(dtype)
        });
    }

    #[test]
    fn fused_step_matches_the_allocating_path() {
        // Under Miri (~50x slower): one small f32 case.
        let cases: &[(DType, f64, bool, bool, &[usize])] = if cfg!(miri) {
            &[(DType::F32, 1e-5, true, true, &[2, 3, 4])]
        } else {
            &[
                (DType::F32, 1e-5, true, true, &[3, 5, 8]),
                (DType::F64, 1e-12, true, true, &[3, 5, 8]),
                (DType::F64, 1e-12, false, true, &[5, 3, 8]),
                (DType::F64, 1e-12, false, false, &[4, 8]),
                (DType::F32, 1e-5, false, false, &[6, 2, 8]),
            ]
        };
        for &(dtype, tol, batch_first, bias, shape) in cases {
            let opts = MultiheadAttentionOptions {
                batch_first,
                bias,
                ..Default::default()
            };
            let mut m =
                MultiheadAttention::with_options(shape[shape.len() - 1], 2, &opts, &Device::Cpu);
            m.to_dtype(dtype);
            if let Some(b) = &m.in_proj_bias {
                // Non-zero biases, so their gradients and effect are checked.
                crate::autograd::no_grad(|| b.copy_(&Tensor::randn(b.shape()).to_dtype(dtype)));
            }
            let x = Tensor::randn_with(shape, &mut crate::Generator::new(3)).to_dtype(dtype);
            assert_fused_matches(&m, &x, tol);
        }
    }

    /// Dropout on the weights while training draws its masks on the
    /// allocating path; in eval mode the fused step runs.
    #[test]
    fn dropout_while_training_takes_the_allocating_path() {
        let opts = MultiheadAttentionOptions {
            dropout: 0.5,
            ..Default::default()
        };
        let mut m = MultiheadAttention::with_options(4, 2, &opts, &Device::Cpu);
        let x = Tensor::randn([3, 1, 4]);
        let mut ws = m.workspace();
        m.forward_train_ws(&x, &mut ws);
        assert!(ws.fused.is_none());
        m.set_training(false);
        m.forward_train_ws(&x, &mut ws);
        assert_eq!(ws.fused.map(|f| f.1), Some(DType::F32));
    }
}
