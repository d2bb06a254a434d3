use super::gather::split_at;
use super::*;
use crate::autograd::{GradSlot, Op, Out, Spec};

// ---------------------------------------------------------------- cat and stack

/// `Tensor::cat(&[a, b, ..], dim)` (`torch.cat`); with `stack`, the inputs
/// are the unsqueezed parts of `Tensor::stack` and only the names differ.
#[derive(Clone, Copy, Debug)]
pub struct Cat {
    /// The dim joined along.
    pub dim: isize,
    /// Named as `stack` (`StackBackward`).
    pub stack: bool,
}

impl Cat {
    fn node(&self) -> &'static str {
        if self.stack {
            "StackBackward"
        } else {
            "CatBackward"
        }
    }
}

impl Op for Cat {
    const NAME: &'static str = "CatBackward";
    const OP: &'static str = "cat";
    /// Each input's size along the joined dim.
    type Saved = Vec<usize>;

    fn name(&self, _: &[&Tensor]) -> &'static str {
        self.node()
    }

    fn spec(&self, tensors: &[&Tensor]) -> Result<Spec> {
        let name = self.node();
        let first = tensors.first().ok_or_else(|| {
            Error::Invalid(format!(
                "{}: expected a non-empty list of tensors",
                name_of(name)
            ))
        })?;
        let nd = first.ndim();
        if nd == 0 {
            return Err(Error::shape(
                "cat",
                "zero-dimensional tensor (at position 0) cannot be concatenated; use stack to \
                 join 0-d tensors into a 1-D one, or unsqueeze(0) them first",
            ));
        }
        let d = norm_dim("cat", self.dim, nd)?;
        let mut dtype = first.dtype();
        for (i, t) in tensors.iter().enumerate() {
            same_device("cat", first, t)?;
            let ok = t.ndim() == nd && (0..nd).all(|k| k == d || t.shape()[k] == first.shape()[k]);
            if !ok {
                return Err(Error::shape(
                    "cat",
                    format!(
                        "sizes of tensors must match except in dimension {d}: tensor 0 has shape \
                         {:?} but tensor {i} has shape {:?}; make the other dims agree (reshape, \
                         narrow or expand), or join along the dim where they differ",
                        first.shape(),
                        t.shape()
                    ),
                ));
            }
            dtype = DType::promote(dtype, t.dtype());
        }
        let mut shape = first.shape().to_vec();
        let op = name_of(name);
        // Checked: many large parts can add up past what a tensor can hold.
        shape[d] = tensors
            .iter()
            .try_fold(0usize, |acc, t| acc.checked_add(t.shape()[d]))
            .ok_or_else(|| {
                Error::shape(
                    op,
                    format!(
                        "the sizes of dimension {d} of the tensors add up past usize::MAX \
                         ({} tensors of shape {:?} first); join fewer or smaller tensors",
                        tensors.len(),
                        first.shape()
                    ),
                )
            })?;
        checked_numel(op, &shape)?;
        Ok(Spec {
            shape: shape.into(),
            dtype,
            device: first.device(),
        })
    }

    fn forward(&self, tensors: &[&Tensor], out: &mut Out<'_>) {
        match join(self.node(), tensors, self.dim, out.spec()) {
            Ok(t) => out.set(t),
            Err(e) => out.fail(e),
        }
    }

    fn save(&self, tensors: &[&Tensor], y: &Tensor, _: &[bool]) -> Vec<usize> {
        let d = norm_dim("cat", self.dim, y.ndim()).expect("checked by spec");
        tensors.iter().map(|t| t.shape()[d]).collect()
    }

    /// Each input gets its own stretch of `g`.
    fn backward(&self, sizes: &Vec<usize>, g: &Tensor, grads: &mut [GradSlot<'_>]) {
        let d = norm_dim("cat", self.dim, g.ndim()).expect("checked by spec");
        for (slot, part) in grads.iter_mut().zip(g.split_sizes(sizes, d as isize)) {
            if slot.needed() {
                slot.add(part);
            }
        }
    }
}

/// The inputs joined along `dim` into a new tensor of `spec` (checked).
fn join(name: &'static str, tensors: &[&Tensor], dim: isize, spec: &Spec) -> Result<Tensor> {
    let first = tensors[0];
    let d = norm_dim("cat", dim, first.ndim())?;
    let (shape, dtype) = (spec.shape.as_slice(), spec.dtype);
    let n = checked_numel(name_of(name), shape)?;
    // Made after the output's count (and on the CPU its buffer) is checked:
    // copying huge expanded parts first would fail with a less useful error.
    let make_parts = || -> Vec<Tensor> {
        tensors
            .iter()
            .map(|t| t.to_dtype(dtype).contiguous())
            .collect()
    };
    let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[d]).collect();
    let op = name_of(name);
    #[cfg(feature = "cuda")]
    if first.device().is_cuda() {
        let parts = make_parts();
        let c = crate::backend::cuda::ops::buf(parts[0].array())
            .ctx()
            .clone();
        let out = Tensor::from_array(crate::backend::cuda::ops::empty(&c, dtype, shape));
        let mut start = 0;
        for (p, &size) in parts.iter().zip(&sizes) {
            let view = out
                .with_layout(out.layout().clone())
                .narrow(d as isize, start, size);
            crate::backend::cuda::ops::copy_into(view.array(), p.array(), p.layout());
            start += size;
        }
        return Ok(out);
    }
    let (outer, _, inner) = split_at(shape, d);
    let mut buf = match dtype {
        DType::F32 => Buffer::F32(memory::try_alloc(op, shape, n)?),
        DType::F64 => Buffer::F64(memory::try_alloc(op, shape, n)?),
        DType::I64 => Buffer::I64(memory::try_alloc(op, shape, n)?),
        DType::Bool => Buffer::Bool(memory::try_alloc(op, shape, n)?),
    };
    let parts = make_parts();
    // In the global lock order, each storage once (`cat([x, x])`).
    let storages: Vec<&crate::backend::Storage> = parts.iter().map(|p| &**p.storage()).collect();
    let locked = crate::backend::read_storages(&storages);
    let guards: Vec<&Buffer> = (0..parts.len())
        .map(|i| crate::backend::ReadLocked::buffer(&locked, i))
        .collect();
    macro_rules! join {
        ($out:expr, $variant:ident) => {{
            let slices: Vec<&[_]> = guards
                .iter()
                .zip(&parts)
                .map(|(g, p)| match *g {
                    Buffer::$variant(v) => &v[p.layout().offset..p.layout().offset + p.numel()],
                    _ => unreachable!("parts were cast to one dtype"),
                })
                .collect();
            for o in 0..outer {
                for (s, &size) in slices.iter().zip(&sizes) {
                    $out.extend_from_slice(&s[o * size * inner..(o + 1) * size * inner]);
                }
            }
        }};
    }
    match &mut buf {
        Buffer::F32(out) => join!(out, F32),
        Buffer::F64(out) => join!(out, F64),
        Buffer::I64(out) => join!(out, I64),
        Buffer::Bool(out) => join!(out, Bool),
    }
    drop(guards);
    Ok(Tensor::from_buffer(buf, shape, first.device()))
}

pub(super) fn name_of(node: &'static str) -> &'static str {
    if node == "StackBackward" {
        "stack"
    } else {
        "cat"
    }
}

impl Tensor {
    /// Joins tensors along an existing `dim` (`torch.cat`).
    ///
    /// ```
    /// use deriv_runtime::{tensor, Tensor};
    /// let c = Tensor::cat(&[tensor![[1., 2.]], tensor![[3., 4.]]], 0);
    /// assert_eq!(c.shape(), &[2, 2]);
    /// ```
    #[track_caller]
    pub fn cat(tensors: &[Tensor], dim: isize) -> Tensor {
        Self::try_cat(tensors, dim).or_panic()
    }

    /// Fallible [`cat`](Self::cat).
    pub fn try_cat(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let refs: Vec<&Tensor> = tensors.iter().collect();
        try_apply(Cat { dim, stack: false }, &refs)
    }

    /// Joins same-shaped tensors along a new `dim` (`torch.stack`).
    #[track_caller]
    pub fn stack(tensors: &[Tensor], dim: isize) -> Tensor {
        Self::try_stack(tensors, dim).or_panic()
    }

    /// Fallible [`stack`](Self::stack).
    pub fn try_stack(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::Invalid("stack: expected a non-empty list of tensors".into()))?;
        for (i, t) in tensors.iter().enumerate() {
            if t.shape() != first.shape() {
                return Err(Error::shape(
                    "stack",
                    format!(
                        "stack expects each tensor to be equal size, but got {:?} at entry 0 \
                         and {:?} at entry {i}; make the shapes equal, or use cat to join \
                         along an existing dim",
                        first.shape(),
                        t.shape()
                    ),
                ));
            }
        }
        let d = norm_dim("stack", dim, first.ndim() + 1)? as isize;
        let parts: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(d)).collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        try_apply(
            Cat {
                dim: d,
                stack: true,
            },
            &refs,
        )
    }
}
