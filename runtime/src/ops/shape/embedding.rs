//! `F.embedding(input, weight)`: the rows of a `[num_embeddings, dim]`
//! weight picked by an i64 tensor of indices of any shape, as one op. The
//! CPU kernels copy rows forward and add gradient rows back into the
//! weight's gradient (skipping `padding_idx`, whose row gets no gradient, as
//! in PyTorch); on the GPU the op runs the gather and scatter-add kernels.

use super::gather::{checked_indices, index_select_backward};
use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::backend::{Buffer, Host};
use crate::error::{Error, Result};
use crate::tensor::{checked_numel, DType, Float, Tensor};

/// The embedding lookup, inputs `[weight, indices]`: `weight` is
/// `[num_embeddings, embedding_dim]` (float), `indices` an i64 tensor of
/// any shape; the output has shape `indices.shape + [embedding_dim]`.
/// `padding_idx` (a row number, already resolved from a negative one) gets
/// no gradient.
#[derive(Clone, Copy, Debug, Default)]
pub struct Embedding {
    /// The row that receives no gradient.
    pub padding_idx: Option<usize>,
}

/// The table must be a 2-D float tensor.
pub(crate) fn check_weight(op: &'static str, weight: &Tensor) -> Result<()> {
    if weight.ndim() == 2 && weight.dtype().is_float() {
        return Ok(());
    }
    Err(Error::shape(
        op,
        format!(
            "the weight must be a 2-D float tensor [num_embeddings, embedding_dim], got a {} \
             tensor of shape {:?}",
            weight.dtype(),
            weight.shape()
        ),
    ))
}

/// Checks every index against `rows`, reading the index buffer directly
/// (no copy): the error names the first one out of range.
fn check_range(index: &[i64], rows: usize) -> Result<()> {
    match index.iter().find(|&&i| i < 0 || i >= rows as i64) {
        None => Ok(()),
        Some(&i) => Err(Error::Invalid(format!(
            "embedding: index {i} is out of range for an embedding of {rows} rows (indices \
             must lie in 0..{rows}; PyTorch: \"index out of range in self\")"
        ))),
    }
}

impl Op for Embedding {
    const NAME: &'static str = "EmbeddingBackward";
    const OP: &'static str = "embedding";
    /// The weight's row count and the indices.
    type Saved = (usize, Tensor);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (weight, index) = (x[0], x[1]);
        check_weight("embedding", weight)?;
        if index.dtype() != DType::I64 {
            return Err(Error::dtype(
                "embedding",
                format!(
                    "the indices must be an i64 tensor, got {}; convert them with \
                     .to_dtype(DType::I64)",
                    index.dtype()
                ),
            ));
        }
        crate::ops::same_device("embedding", weight, index)?;
        let mut shape = crate::autograd::Shape::from_slice(index.shape());
        shape.push(weight.shape()[1]);
        checked_numel("embedding", &shape)?;
        Ok(Spec {
            shape,
            dtype: weight.dtype(),
            device: weight.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (weight, index) = (x[0], x[1]);
        if weight.device().is_cuda() {
            return match forward_composed(weight, index) {
                Ok(y) => out.set(y),
                Err(e) => out.fail(e),
            };
        }
        let (w, i) = (weight.contiguous(), index.contiguous());
        let r = match weight.dtype() {
            DType::F32 => forward_cpu::<f32>(&w, &i, out),
            _ => forward_cpu::<f64>(&w, &i, out),
        };
        if let Err(e) = r {
            out.fail(e);
        }
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].shape()[0], x[1].clone())
    }

    fn backward(&self, (rows, index): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let dim = g.shape()[g.ndim() - 1];
        let shape = [*rows, dim];
        let spec = Spec {
            shape: crate::autograd::Shape::from_slice(&shape),
            dtype: g.dtype(),
            device: g.device(),
        };
        if g.device().is_cuda() {
            return grads[0].add(self.backward_composed(*rows, index, g));
        }
        let (g, index) = (g.contiguous(), index.contiguous());
        let pad = self.padding_idx;
        grads[0].add_into(spec, |out| match g.dtype() {
            DType::F32 => backward_cpu::<f32>(&g, &index, dim, pad, out),
            _ => backward_cpu::<f64>(&g, &index, dim, pad, out),
        });
    }
}

/// The lookup with ops (the GPU's path): the gather kernel.
fn forward_composed(weight: &Tensor, index: &Tensor) -> Result<Tensor> {
    let flat = index.reshape([-1]);
    checked_indices("embedding", &flat, weight.shape()[0], 0)?;
    let mut shape = index.shape().to_vec();
    shape.push(weight.shape()[1]);
    Ok(weight.index_select(0, &flat).reshape(shape))
}

impl Embedding {
    /// The weight's gradient with ops (the GPU's path): `g`'s rows, the
    /// padding row's masked out, scatter-added into a table of `rows` rows.
    fn backward_composed(&self, rows: usize, index: &Tensor, g: &Tensor) -> Tensor {
        let dim = g.shape()[g.ndim() - 1];
        let flat = index.reshape([-1]);
        let mut grows = g.reshape([-1, dim as i64]);
        if let Some(p) = self.padding_idx {
            let keep = flat.ne_scalar(p as f64).to_dtype(g.dtype());
            grows = &grows * &keep.unsqueeze(1);
        }
        index_select_backward(&grows, &[rows, dim], 0, &flat)
    }
}

/// The i64 elements a contiguous index tensor views.
fn index_values<'b>(b: &'b Buffer, index: &Tensor) -> &'b [i64] {
    let Buffer::I64(v) = b else {
        unreachable!("checked by spec: the indices are i64")
    };
    let off = index.layout().offset;
    &v[off..off + index.numel()]
}

/// Row `index[k]` of `weight` (contiguous) to output row `k`.
fn forward_cpu<T: Float + Host>(weight: &Tensor, index: &Tensor, out: &mut Out<'_>) -> Result<()> {
    let (rows, dim) = (weight.shape()[0], weight.shape()[1]);
    let mut range = Ok(());
    out.host_slice::<T, 2>([weight, index], |[wb, ib], o, acc| {
        let idx = index_values(ib, index);
        range = check_range(idx, rows);
        if range.is_err() {
            return;
        }
        let w = &T::of(wb)[weight.layout().offset..][..rows * dim];
        for (row, &i) in o.chunks_exact_mut(dim.max(1)).zip(idx) {
            let src = &w[i as usize * dim..][..dim];
            if acc {
                row.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
            } else {
                row.copy_from_slice(src);
            }
        }
    });
    range
}

/// `out[index[k]] (+)= g[k]` for every row `k` whose index is not `pad`.
fn backward_cpu<T: Float + Host>(
    g: &Tensor,
    index: &Tensor,
    dim: usize,
    pad: Option<usize>,
    out: &mut Out<'_>,
) {
    out.host_slice::<T, 2>([g, index], |[gb, ib], o, acc| {
        if !acc {
            o.iter_mut().for_each(|v| *v = T::ZERO);
        }
        let idx = index_values(ib, index);
        let gs = &T::of(gb)[g.layout().offset..][..idx.len() * dim];
        for (k, &i) in idx.iter().enumerate() {
            if pad == Some(i as usize) {
                continue;
            }
            let dst = &mut o[i as usize * dim..][..dim];
            dst.iter_mut()
                .zip(&gs[k * dim..][..dim])
                .for_each(|(a, &b)| *a += b);
        }
    });
}

/// `F.embedding`'s options beyond the input and the weight, PyTorch's
/// defaults: no padding row, no `max_norm`, `norm_type` 2.
///
/// ```
/// use deriv_runtime::nn::EmbeddingOptions;
/// let o = EmbeddingOptions::new().padding_idx(0).max_norm(1.0);
/// assert_eq!((o.padding_idx, o.max_norm, o.norm_type), (Some(0), Some(1.0), 2.0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmbeddingOptions {
    /// The row that gets no gradient (negative counts from the end); the
    /// layer also initialises it to zeros.
    pub padding_idx: Option<i64>,
    /// Rows looked up are first rescaled in place to this norm at most.
    pub max_norm: Option<f64>,
    /// The p of the p-norm `max_norm` bounds.
    pub norm_type: f64,
}

impl Default for EmbeddingOptions {
    fn default() -> Self {
        EmbeddingOptions {
            padding_idx: None,
            max_norm: None,
            norm_type: 2.0,
        }
    }
}

impl EmbeddingOptions {
    /// PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets `padding_idx`.
    pub fn padding_idx(mut self, i: i64) -> Self {
        self.padding_idx = Some(i);
        self
    }
    /// Sets `max_norm`.
    pub fn max_norm(mut self, m: f64) -> Self {
        self.max_norm = Some(m);
        self
    }
    /// Sets `norm_type`.
    pub fn norm_type(mut self, p: f64) -> Self {
        self.norm_type = p;
        self
    }

    /// `padding_idx` as a row of an embedding of `rows` rows, or PyTorch's
    /// error when it lies outside.
    pub(crate) fn padding_row(&self, rows: usize) -> Result<Option<usize>> {
        let Some(p) = self.padding_idx else {
            return Ok(None);
        };
        let n = rows as i64;
        if p >= n || p < -n {
            return Err(Error::Invalid(format!(
                "embedding: padding_idx {p} must be within num_embeddings ({rows}): use a value \
                 in -{rows}..{rows}"
            )));
        }
        Ok(Some(if p < 0 { (n + p) as usize } else { p as usize }))
    }
}

/// `F.embedding(input, weight, ..)` on the tape, or the op's error (a
/// wrong dtype, shape or device, an index out of range, a padding_idx
/// outside the weight).
pub(crate) fn try_embedding(
    input: &Tensor,
    weight: &Tensor,
    opts: &EmbeddingOptions,
) -> Result<Tensor> {
    let op = Embedding {
        padding_idx: opts.padding_row(weight.shape().first().copied().unwrap_or(0))?,
    };
    renorm_for_lookup(&op, input, weight, opts)?;
    crate::autograd::try_apply(op, &[weight, input])
}

/// With `max_norm` set, rescales the rows `input` names in place (PyTorch
/// does it in every forward), after checking what the lookup checks: the
/// renorm must not run on indices the lookup refuses.
pub(crate) fn renorm_for_lookup(
    op: &Embedding,
    input: &Tensor,
    weight: &Tensor,
    opts: &EmbeddingOptions,
) -> Result<()> {
    if let Some(m) = opts.max_norm {
        op.spec(&[weight, input])?;
        checked_indices("embedding", &input.reshape([-1]), weight.shape()[0], 0)?;
        renorm_rows_(weight, input, m, opts.norm_type);
    }
    Ok(())
}

/// PyTorch's `embedding_renorm_`: each row of `weight` that `index` names
/// is rescaled in place to a `norm_type`-norm of at most `max_norm`
/// (by `max_norm / (norm + 1e-7)`), without recording.
fn renorm_rows_(weight: &Tensor, index: &Tensor, max_norm: f64, norm_type: f64) {
    crate::autograd::no_grad(|| {
        let rows = weight.shape()[0];
        let flat = index.reshape([-1]).to(&weight.device());
        let used = Tensor::zeros_opts([rows], &weight.options()).scatter_add(
            0,
            &flat,
            &Tensor::ones_opts([flat.numel()], &weight.options()),
        );
        let norms = weight
            .abs()
            .pow(norm_type)
            .sum_dim(1, false)
            .pow(1.0 / norm_type);
        let one = norms.ones_like();
        let shrink = max_norm / &(&norms + 1e-7);
        let scale = Tensor::where_cond(
            &used.gt_scalar(0.0),
            &Tensor::where_cond(&norms.gt_scalar(max_norm), &shrink, &one),
            &one,
        );
        weight.mul_(scale.unsqueeze(1));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{apply, no_grad};

    /// The GPU's composed lookup and gradient against the CPU kernels (both
    /// run here on the CPU), with repeated indices and a padding row.
    #[test]
    fn composed_path_matches_the_kernels() {
        let mut rng = crate::Generator::new(5);
        let w = Tensor::randn_with([7, 3], &mut rng).to_dtype(DType::F64);
        let idx = Tensor::from_vec(vec![6i64, 2, 2, 0, 5, 2], [3, 2]);
        let g = Tensor::randn_with([3, 2, 3], &mut rng).to_dtype(DType::F64);
        let op = Embedding {
            padding_idx: Some(2),
        };
        let y = apply(op, &[&w, &idx]);
        let yc = forward_composed(&w, &idx).expect("indices in range");
        assert_eq!(yc.to_vec::<f64>(), y.to_vec::<f64>());
        let mut sum = None;
        no_grad(|| {
            op.backward(&(7, idx.clone()), &g, &mut [GradSlot::new(&mut sum, true)]);
        });
        let kernel = sum.expect("needed").to_vec::<f64>();
        let composed = no_grad(|| op.backward_composed(7, &idx, &g)).to_vec::<f64>();
        crate::test_util::assert_close(&composed, &kernel, 1e-12, "weight gradient");
        assert!(forward_composed(&w, &Tensor::from_vec(vec![7i64], [1])).is_err());
    }
}
