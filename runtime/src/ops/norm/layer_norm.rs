//! `F.layer_norm`: each row of the last `dims` dimensions normalised to
//! mean 0 and variance 1 (biased variance, `eps` added), then scaled and
//! shifted elementwise by the optional weight and bias (the kernels and the
//! GPU's composed form are the norms' shared ones, in `super`).

use super::{check_params, Dims, Groups, Norm, NormSaved};
use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Layer normalisation over the last `dims` dimensions, inputs
/// `[x, weight, bias]` (weight and bias optional, of those dimensions'
/// shape; a bias needs a weight, as in `nn.LayerNorm`).
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm {
    /// How many trailing dimensions are normalised together.
    pub dims: usize,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// The call on `x` (rows of its last `dims` dimensions).
    pub(crate) fn norm<'a>(
        &self,
        x: &'a Tensor,
        weight: Option<&'a Tensor>,
        bias: Option<&'a Tensor>,
    ) -> Norm<'a> {
        let lead = x.ndim() - self.dims;
        let tail: Dims<usize> = x.shape()[lead..].into();
        let n: usize = tail.iter().product();
        Norm {
            x,
            weight,
            bias,
            stats: None,
            groups: Groups::rows(x.numel().checked_div(n).unwrap_or(0), n),
            eps: self.eps,
            view: x.shape().into(),
            dims: (1..=self.dims as isize).map(|d| -d).collect(),
            param: tail.clone(),
            param_shape: tail,
            param_reduce: (0..lead as isize).collect(),
        }
    }
}

impl Op for LayerNorm {
    const NAME: &'static str = "NativeLayerNormBackward";
    const OP: &'static str = "layer_norm";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Same;
    /// The input, and the weight when the input needs a gradient.
    type Saved = NormSaved;

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let input = x[0];
        let nd = input.ndim();
        if self.dims == 0 || self.dims > nd {
            return Err(Error::shape(
                "layer_norm",
                format!(
                    "normalising the last {} dims of an input of shape {:?}: the input needs \
                     at least that many dims",
                    self.dims,
                    input.shape()
                ),
            ));
        }
        let params = [("weight", x.get(1).copied()), ("bias", x.get(2).copied())];
        let tail = &input.shape()[nd - self.dims..];
        check_params("layer_norm", input, &params, tail, "the normalised shape")?;
        Ok(Spec::like(input))
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        self.norm(x[0], x.get(1).copied(), x.get(2).copied())
            .forward(out)
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, need: &[bool]) -> Self::Saved {
        self.norm(x[0], x.get(1).copied(), None).save(need[0])
    }

    fn backward(&self, (x, w, _): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        self.norm(x, w.as_ref(), None).backward(g, grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    /// The GPU's composed forward and backward against the CPU kernels
    /// (both run here on the CPU).
    #[test]
    fn composed_path_matches_the_kernels() {
        let mut rng = crate::Generator::new(3);
        let x = Tensor::randn_with([4, 2, 5], &mut rng).to_dtype(DType::F64);
        let w = Tensor::randn_with([2, 5], &mut rng).to_dtype(DType::F64);
        let b = Tensor::randn_with([2, 5], &mut rng).to_dtype(DType::F64);
        let op = LayerNorm { dims: 2, eps: 1e-5 };
        super::super::assert_composed_matches_kernels(
            op,
            &[&x, &w, &b],
            &op.norm(&x, Some(&w), Some(&b)),
        );
        let op = LayerNorm { dims: 1, eps: 1e-3 };
        super::super::assert_composed_matches_kernels(op, &[&x], &op.norm(&x, None, None));
        // Enough rows to split across the pool, of a length that leaves a
        // tail after the lanes.
        let rows = if cfg!(miri) { 1 } else { 150 };
        let x = Tensor::randn_with([rows, 2, 131], &mut rng).to_dtype(DType::F64);
        let w = Tensor::randn_with([131], &mut rng).to_dtype(DType::F64);
        let b = Tensor::randn_with([131], &mut rng).to_dtype(DType::F64);
        let op = LayerNorm { dims: 1, eps: 1e-5 };
        let norm = op.norm(&x, Some(&w), Some(&b));
        super::super::assert_composed_matches_kernels(op, &[&x, &w, &b], &norm);
        // A weight without a bias.
        super::super::assert_composed_matches_kernels(op, &[&x, &w], &op.norm(&x, Some(&w), None));
    }
}
