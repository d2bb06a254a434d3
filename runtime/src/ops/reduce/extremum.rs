//! The tape's side of `max`/`min`: over all elements (ties share the
//! gradient evenly, as in PyTorch) and along a dim (the gradient goes to
//! the element each index chose). The reductions themselves are
//! `Tensor::extremum_dim` (values and indices, on both devices).

use super::{final_shape, keepdim_shape};
use crate::autograd::{GradSlot, Op, Out, Spec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// PyTorch's tape name for a max or a min.
fn node_name(largest: bool) -> &'static str {
    if largest {
        "MaxBackward"
    } else {
        "MinBackward"
    }
}

/// `x.max()` / `x.min()`: the extremum of all elements, a 0-d tensor.
#[derive(Clone, Copy, Debug)]
pub struct ExtremumAll {
    /// `max` (else `min`).
    pub largest: bool,
}

impl Op for ExtremumAll {
    const NAME: &'static str = "MaxBackward";
    const OP: &'static str = "max";
    /// The input and the extremum.
    type Saved = (Tensor, Tensor);

    fn name(&self, _: &[&Tensor]) -> &'static str {
        node_name(self.largest)
    }

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        if x.numel() == 0 {
            return Err(Error::shape(
                if self.largest { "max" } else { "min" },
                format!(
                    "cannot reduce an empty tensor (shape {:?}); pass a dim with \
                     max_dim/min_dim",
                    x.shape()
                ),
            ));
        }
        Ok(Spec {
            shape: crate::autograd::Shape::new(),
            dtype: x.dtype(),
            device: x.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        out.set(x[0].extremum_all_nograd(self.largest))
    }

    fn save(&self, x: &[&Tensor], y: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].clone(), y.clone())
    }

    /// `g / count` to every element equal to the extremum.
    fn backward(&self, (x, value): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let mask = x.eq(value).to_dtype(g.dtype());
        let count = mask.sum();
        grads[0].add(&(&mask * g) / &count)
    }
}

/// The values `max_dim`/`min_dim` return, on the tape: inputs `[x,
/// indices]`, the indices in `x`'s shape with `dim` of size 1; the values
/// are `x`'s elements there (`dim` dropped unless `keepdim`).
#[derive(Clone, Copy, Debug)]
pub struct ExtremumValues {
    /// The reduced dim (normalised).
    pub dim: usize,
    /// Whether it stays as size 1.
    pub keepdim: bool,
    /// `max_dim` (else `min_dim`): the tape name.
    pub largest: bool,
}

impl Op for ExtremumValues {
    const NAME: &'static str = "MaxBackward";
    const OP: &'static str = "max";
    /// The input's shape and the indices.
    type Saved = (Vec<usize>, Tensor);

    fn name(&self, _: &[&Tensor]) -> &'static str {
        node_name(self.largest)
    }

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let x = x[0];
        let dims: &[usize] = if x.ndim() == 0 { &[] } else { &[self.dim] };
        Ok(Spec {
            shape: final_shape(x.shape(), dims, self.keepdim).into(),
            dtype: x.dtype(),
            device: x.device(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        let (x, indices) = (x[0], x[1]);
        // A 0-d input is its own extremum.
        let picked = if x.ndim() == 0 {
            x.clone_data()
        } else {
            x.gather(self.dim as isize, indices)
        };
        let shape = out.spec().shape.clone();
        out.set(picked.reshape(shape.as_slice()))
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].shape().to_vec(), x[1].clone())
    }

    /// `g` to the chosen element of each slice: the gather's rule.
    fn backward(&self, (shape, indices): &Self::Saved, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        if shape.is_empty() {
            return grads[0].add(g.reshape(shape.as_slice()));
        }
        let g = g.reshape(keepdim_shape(shape, &[self.dim]));
        grads[0].add(crate::ops::shape::gather_backward(
            shape,
            self.dim as isize,
            indices,
            &g,
        ))
    }
}
