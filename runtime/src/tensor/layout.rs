//! Shape, strides and offset: how a tensor views its storage.

use crate::error::{Error, Result};

/// A view into storage: element `[i0, i1, ..]` lives at
/// `offset + i0 * strides[0] + i1 * strides[1] + ..`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: Vec<usize>,
    pub(crate) offset: usize,
}

/// Row-major (C-order) strides of `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for d in (0..shape.len()).rev() {
        strides[d] = acc;
        acc *= shape[d];
    }
    strides
}

impl Layout {
    pub(crate) fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }
    pub(crate) fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub(crate) fn ndim(&self) -> usize {
        self.shape.len()
    }
    /// Row-major with no gaps (size-1 dimensions may have any stride).
    pub(crate) fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for d in (0..self.shape.len()).rev() {
            if self.shape[d] != 1 && self.strides[d] != acc {
                return false;
            }
            acc *= self.shape[d];
        }
        true
    }
    /// This view broadcast to `shape` (which must be broadcast-compatible):
    /// new and stretched dimensions get stride 0.
    pub(crate) fn broadcast_to(&self, shape: &[usize]) -> Layout {
        let extra = shape.len() - self.shape.len();
        let mut strides = vec![0; shape.len()];
        for d in 0..self.shape.len() {
            strides[d + extra] = if self.shape[d] == 1 && shape[d + extra] != 1 {
                0
            } else {
                self.strides[d]
            };
        }
        Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        }
    }
    /// The strides a reshape to `shape` would have without copying, if any
    /// (the same test PyTorch's `view` applies).
    pub(crate) fn view_strides(&self, shape: &[usize]) -> Option<Vec<usize>> {
        if self.is_contiguous() || self.numel() == 0 {
            return Some(contiguous_strides(shape));
        }
        // Group old dims into runs that are contiguous among themselves, and
        // map each run onto a run of new dims of the same total size.
        let old: Vec<(usize, usize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(&s, _)| s != 1)
            .map(|(&s, &t)| (s, t))
            .collect();
        let mut new_strides = vec![0usize; shape.len()];
        let mut oi = 0;
        let mut ni = 0;
        while ni < shape.len() || oi < old.len() {
            // Skip size-1 new dims.
            if ni < shape.len() && shape[ni] == 1 {
                new_strides[ni] = 1;
                ni += 1;
                continue;
            }
            if oi >= old.len() || ni >= shape.len() {
                return None;
            }
            // Take a run of old dims that chain contiguously.
            let mut run_size = old[oi].0;
            while oi + 1 < old.len() && old[oi].1 == old[oi + 1].0 * old[oi + 1].1 {
                oi += 1;
                run_size *= old[oi].0;
            }
            let inner_stride = old[oi].1;
            oi += 1;
            // Consume new dims covering run_size.
            let mut covered = 1;
            let first_new = ni;
            while ni < shape.len() && covered < run_size {
                covered *= shape[ni];
                ni += 1;
            }
            if covered != run_size {
                return None;
            }
            let mut acc = inner_stride;
            for d in (first_new..ni).rev() {
                new_strides[d] = acc;
                acc *= shape[d];
            }
        }
        Some(new_strides)
    }
}

/// The broadcast of two shapes (NumPy rules), or an error naming both.
pub(crate) fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    if a == b {
        return Ok(a.to_vec());
    }
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::shape(
                op,
                format!(
                    "shapes {a:?} and {b:?} cannot be broadcast together: dimension {i} of the \
                     broadcast result is {da} in one and {db} in the other, and neither is 1. \
                     Reshape one operand (unsqueeze a size-1 dimension, or transpose) so that \
                     trailing dimensions match or are 1"
                ),
            ));
        };
    }
    Ok(out)
}

/// Normalises a possibly negative dimension index for a tensor of rank `ndim`.
pub(crate) fn norm_dim(op: &'static str, dim: isize, ndim: usize) -> Result<usize> {
    let n = ndim as isize;
    // A 0-d tensor accepts dims 0 and -1, as in PyTorch (and as the message says).
    let d = if dim < 0 { dim + n.max(1) } else { dim };
    if d < 0 || d >= n.max(1) || (ndim == 0 && d != 0) {
        return Err(Error::Invalid(format!(
            "{op}: dimension {dim} is out of range for a tensor of rank {ndim} \
             (expected a dimension in [{}, {}])",
            -(n.max(1)),
            n.max(1) - 1
        )));
    }
    Ok(d as usize)
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    /// Every reshape of every permuted/sliced view must read the same elements
    /// as reshaping a contiguous copy, whether it ends up a view or a copy.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "slow under Miri and runs no unsafe code of its own; unsafe_paths::strided_walks_visit_the_defined_offsets walks strided layouts"
    )]
    fn reshape_of_strided_views_matches_contiguous_copy() {
        let base = Tensor::arange(0., 120., 1.).reshape([2, 3, 4, 5]);
        let perms: [[usize; 4]; 4] = [[0, 1, 2, 3], [1, 0, 2, 3], [0, 1, 3, 2], [3, 2, 1, 0]];
        let mut views_taken = 0;
        for p in perms {
            let v = base.permute(&p);
            for view in [v.clone(), v.narrow(0, 0, 1), v.slice_step(1, .., 2)] {
                let n = view.numel();
                let expected = view.contiguous().to_vec::<f32>();
                // Try every factorisation of n into up to three sizes.
                for a in 1..=n {
                    if n % a != 0 {
                        continue;
                    }
                    for b in 1..=n / a {
                        if (n / a) % b != 0 {
                            continue;
                        }
                        let shape = [a, b, n / a / b];
                        let r = view.reshape(shape);
                        assert_eq!(
                            r.to_vec::<f32>(),
                            expected,
                            "{:?} -> {shape:?}",
                            view.shape()
                        );
                        if r.shares_storage(&view) {
                            views_taken += 1;
                        }
                    }
                }
            }
        }
        // Some of those must have been served as views, not copies.
        assert!(views_taken > 50, "only {views_taken} reshapes were views");
    }

    #[test]
    fn view_strides_of_merged_and_split_dims() {
        // A transposed matrix cannot be flattened without a copy...
        let t = Tensor::arange(0., 6., 1.).reshape([2, 3]).t();
        assert!(t.layout().view_strides(&[6]).is_none());
        // ...but splitting one of its dims can.
        assert_eq!(t.layout().view_strides(&[3, 2, 1]), Some(vec![1, 3, 1]));
        // Size-1 dims in the source are ignored.
        let u = Tensor::zeros([4, 1, 5]).permute(&[2, 1, 0]);
        assert_eq!(u.layout().view_strides(&[5, 4]), Some(vec![1, 5]));
    }
}
