//! `F.group_norm`: the channels of each sample split into `groups` groups,
//! each group (its channels and every spatial position) normalised to mean 0
//! and variance 1, then each channel scaled and shifted by its weight and
//! bias element.

use super::{check_params, Dims, Groups, Norm, NormSaved};
use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Group normalisation of `[N, C, *]` in `groups` groups of `C / groups`
/// channels, inputs `[x, weight, bias]` (weight and bias optional, of shape
/// `[C]`; a bias needs a weight).
#[derive(Clone, Copy, Debug)]
pub struct GroupNorm {
    /// The number of groups the channels are split into.
    pub groups: usize,
    /// Added to the variance.
    pub eps: f64,
}

impl GroupNorm {
    /// The call on `x`.
    pub(crate) fn norm<'a>(
        &self,
        x: &'a Tensor,
        weight: Option<&'a Tensor>,
        bias: Option<&'a Tensor>,
    ) -> Norm<'a> {
        let (n, c, s) = batch_channels_spatial(x);
        let nd = x.ndim() as isize;
        Norm {
            x,
            weight,
            bias,
            stats: None,
            groups: Groups::channel_groups(n, c, s, self.groups),
            eps: self.eps,
            view: Dims::from_slice(&[n, self.groups, c.checked_div(self.groups).unwrap_or(0) * s]),
            dims: Dims::from_slice(&[2]),
            param: Dims::from_slice(&[c]),
            param_shape: per_channel(x),
            param_reduce: std::iter::once(0).chain(2..nd).collect(),
        }
    }
}

/// `[N, C, *]`'s batch size, channels and spatial size (the product of the
/// rest, 1 for `[N, C]`).
pub(crate) fn batch_channels_spatial(x: &Tensor) -> (usize, usize, usize) {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    (n, c, x.shape()[2..].iter().product())
}

/// `[C, 1, ..]`: a per-channel tensor's shape broadcast against `x`.
pub(crate) fn per_channel(x: &Tensor) -> Dims<usize> {
    std::iter::once(x.shape()[1])
        .chain(std::iter::repeat_n(1, x.ndim() - 2))
        .collect()
}

impl Op for GroupNorm {
    const NAME: &'static str = "NativeGroupNormBackward";
    const OP: &'static str = "group_norm";
    const SIZE: crate::size::SizeRule = crate::size::SizeRule::Same;
    /// The input, and the weight when the input needs a gradient.
    type Saved = NormSaved;

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let input = x[0];
        if input.ndim() < 2 {
            return Err(Error::shape(
                "group_norm",
                format!(
                    "Expected at least 2 dimensions for input tensor but received {}; \
                     group_norm takes [N, C, *]",
                    input.ndim()
                ),
            ));
        }
        let c = input.shape()[1];
        if self.groups == 0 || !c.is_multiple_of(self.groups) {
            return Err(Error::shape(
                "group_norm",
                format!(
                    "Expected number of channels in input to be divisible by num_groups, but \
                     got input of shape {:?} and num_groups={}",
                    input.shape(),
                    self.groups
                ),
            ));
        }
        let params = [("weight", x.get(1).copied()), ("bias", x.get(2).copied())];
        check_params("group_norm", input, &params, &[c], "the channels' shape")?;
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
    /// (both run here on the CPU), on `[N, C, H, W]` and `[N, C]`.
    #[test]
    fn composed_path_matches_the_kernels() {
        let mut rng = crate::Generator::new(4);
        let x = Tensor::randn_with([3, 6, 2, 3], &mut rng).to_dtype(DType::F64);
        let w = Tensor::randn_with([6], &mut rng).to_dtype(DType::F64);
        let b = Tensor::randn_with([6], &mut rng).to_dtype(DType::F64);
        let op = GroupNorm {
            groups: 3,
            eps: 1e-5,
        };
        let norm = op.norm(&x, Some(&w), Some(&b));
        super::super::assert_composed_matches_kernels(op, &[&x, &w, &b], &norm);
        let x2 = Tensor::randn_with([4, 6], &mut rng).to_dtype(DType::F64);
        let op = GroupNorm {
            groups: 2,
            eps: 1e-3,
        };
        super::super::assert_composed_matches_kernels(op, &[&x2], &op.norm(&x2, None, None));
        // Enough groups to split across the pool, channels of 37 elements.
        let n = if cfg!(miri) { 1 } else { 60 };
        let x = Tensor::randn_with([n, 6, 37], &mut rng).to_dtype(DType::F64);
        let op = GroupNorm {
            groups: 3,
            eps: 1e-5,
        };
        let norm = op.norm(&x, Some(&w), Some(&b));
        super::super::assert_composed_matches_kernels(op, &[&x, &w, &b], &norm);
    }
}
