//! Shape, strides and offset: how a tensor views its storage.
//!
//! Every count here is computed with checked arithmetic. A shape whose
//! element count overflows is refused by [`checked_numel`] (the one count
//! that every op building or changing a shape goes through), and a view that
//! would reach past its buffer is refused by [`Layout::assert_within`], which
//! every kernel taking raw pointers or strides calls once per call.

use std::fmt;

use crate::error::{Error, Result};

/// The most elements a tensor may have, and the furthest storage element a
/// view may reach: `isize::MAX`, the bound Rust puts on every allocation and
/// pointer offset (and on the signed strides faer takes), as PyTorch's int64
/// sizes bound its tensors.
pub(crate) const MAX_NUMEL: usize = isize::MAX as usize;

/// Whether two shapes are equal, compared element by element. Slice `==`
/// calls `memcmp`, which glibc's AVX-512 version serves for an empty slice
/// (every 0-d tensor) with a masked load that costs about 80 ns on these
/// VMs' CPUs, against about 1 ns here; the ops compare shapes several times
/// per call.
#[inline]
pub(crate) fn same_shape(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// The number of elements of `shape`: the product of its sizes, computed
/// with checked multiplication.
///
/// This is the one element count that every op building or changing a
/// shape uses (creation, `from_vec`, reshape/view, expand, broadcasting,
/// cat/stack, matmul's output, index_select, safetensors headers through
/// `try_from_vec`), and every [`Layout`] constructor. The product of the
/// non-zero sizes must not exceed [`MAX_NUMEL`], even when a zero size makes
/// the count 0: then every partial product of a valid shape (the strides of
/// a contiguous layout, the rows of a reduction) fits too, and the rule does
/// not depend on where the zero is.
///
/// Errors are `Error::Shape` naming `op` and the shape; the panicking ops
/// print the same message.
pub(crate) fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    let mut nonzero = 1usize;
    let mut empty = false;
    for &d in shape {
        if d == 0 {
            empty = true;
            continue;
        }
        match nonzero.checked_mul(d) {
            Some(p) if p <= MAX_NUMEL => nonzero = p,
            _ => return Err(too_many_elements(op, shape)),
        }
    }
    Ok(if empty { 0 } else { nonzero })
}

/// The error of a shape whose element count overflows.
fn too_many_elements(op: &'static str, shape: &[usize]) -> Error {
    // The exact product where u128 holds it, for the message.
    let product = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
        .map_or_else(|| "more than 2^128".to_string(), |p| p.to_string());
    Error::shape(
        op,
        format!(
            "shape {shape:?} has too many elements: the product of its sizes is {product}, \
             more than the {MAX_NUMEL} (isize::MAX) a tensor can hold (zero sizes aside); \
             check the sizes, which may come from a corrupt file or a miscomputed dimension"
        ),
    )
}

/// One past the furthest storage element that a view of `shape` with
/// `strides` from `offset` reaches: `offset + Σ (shape[d] - 1)·strides[d] + 1`,
/// or 0 for an empty view (it reads nothing, whatever its offset); `None`
/// when that overflows `usize`. The one definition of a view's extent, for
/// layouts and for the matrices the GEMM kernels take.
pub(crate) fn extent_of(offset: usize, shape: &[usize], strides: &[usize]) -> Option<usize> {
    if shape.len() != strides.len() {
        return None;
    }
    if shape.contains(&0) {
        return Some(0);
    }
    let mut last = offset;
    for (&n, &s) in shape.iter().zip(strides) {
        last = last.checked_add((n - 1).checked_mul(s)?)?;
    }
    last.checked_add(1)
}

/// Panics, in release builds too, unless a `rows` x `cols` matrix with row
/// and column strides `rs`, `cs` from element `offset` lies inside a buffer
/// of `len` elements (its extent is [`extent_of`]'s): the bounds check that
/// the matrix kernels taking raw pointers (faer, the sgemm micro-kernel)
/// make once per call, naming `op`.
#[track_caller]
pub(crate) fn assert_matrix_within(
    op: &str,
    offset: usize,
    (rows, cols): (usize, usize),
    (rs, cs): (usize, usize),
    len: usize,
) {
    let extent = extent_of(offset, &[rows, cols], &[rs, cs]);
    assert!(
        extent.is_some_and(|e| e <= len),
        "{op}: internal error: a {rows} x {cols} matrix with strides ({rs}, {cs}) from \
         offset {offset} reaches past the {len} elements of its buffer; this is a bug in \
         deriv, please report it"
    );
}

/// A view into storage: element `[i0, i1, ..]` lives at
/// `offset + i0 * strides[0] + i1 * strides[1] + ..`.
///
/// A tensor's layout always has a checked element count and lies inside its
/// storage: `Array::new` (every tensor's data) asserts both, and the ops
/// that build a layout from user input check them first with [`Layout::new`]
/// (an `Error::Shape` naming the op).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) shape: Dims,
    pub(crate) strides: Dims,
    pub(crate) offset: usize,
}

/// A layout's sizes or strides, inline up to 4 dims: making a tensor of
/// the usual ranks allocates its buffer and its handle, not its shape. (Not
/// more: every tensor handle is built by moving its layout into the heap,
/// and 6 inline dims made that copy a measurable part of a small op, 6% of
/// the W2 step.)
pub(crate) type Dims = smallvec::SmallVec<[usize; 4]>;

/// Row-major (C-order) strides of `shape`, a shape whose count was checked
/// (every stride is then a partial product of its sizes, which fits).
pub(crate) fn contiguous_strides(shape: &[usize]) -> Dims {
    // Copied, then rewritten in place: a plain copy of the sizes is the
    // cheapest way to a vector of the right length.
    let mut strides = Dims::from_slice(shape);
    let mut acc = 1usize;
    for s in strides.iter_mut().rev() {
        let n = *s;
        *s = acc;
        // Saturating: the stride above a zero size is 0 either way, and a
        // shape that overflows here is refused by `checked_numel` first.
        acc = acc.saturating_mul(n);
    }
    strides
}

/// By copying slices: `SmallVec`'s own `clone` goes element by element,
/// and every view and saved tensor clones a layout.
impl Clone for Layout {
    fn clone(&self) -> Self {
        Layout {
            shape: Dims::from_slice(&self.shape),
            strides: Dims::from_slice(&self.strides),
            offset: self.offset,
        }
    }
}

impl Layout {
    /// A layout from its parts, checked: the shape's element count (see
    /// [`checked_numel`]) and the view's extent must fit in [`MAX_NUMEL`].
    /// Whether it fits a particular buffer is checked where it meets one.
    pub(crate) fn new(
        op: &'static str,
        shape: impl Into<Dims>,
        strides: impl Into<Dims>,
        offset: usize,
    ) -> Result<Layout> {
        let (shape, strides) = (shape.into(), strides.into());
        assert_eq!(
            shape.len(),
            strides.len(),
            "{op}: internal error: a layout needs one stride per dim"
        );
        checked_numel(op, &shape)?;
        match extent_of(offset, &shape, &strides) {
            Some(e) if e <= MAX_NUMEL => Ok(Layout {
                shape,
                strides,
                offset,
            }),
            _ => Err(Error::shape(
                op,
                format!(
                    "a view of shape {shape:?} with strides {strides:?} from offset {offset} \
                     reaches past the largest buffer a tensor can have ({MAX_NUMEL} elements)"
                ),
            )),
        }
    }
    /// The row-major layout of `shape`, for a shape already checked (the
    /// shape of an existing tensor, or one an op validated); panics with the
    /// checked count's message otherwise.
    #[track_caller]
    pub(crate) fn contiguous(shape: &[usize]) -> Self {
        if let Err(e) = checked_numel("layout", shape) {
            panic!("{e}");
        }
        Self::contiguous_of_checked(shape)
    }
    /// The row-major layout of a shape whose count the caller checked.
    #[inline]
    pub(crate) fn contiguous_of_checked(shape: &[usize]) -> Self {
        Layout {
            shape: Dims::from_slice(shape),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }
    /// The number of elements. Checked: a layout whose count overflows (which
    /// no constructor makes) panics instead of returning a wrapped count.
    pub(crate) fn numel(&self) -> usize {
        match self
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        {
            Some(n) => n,
            None if self.shape.contains(&0) => 0,
            None => panic!(
                "internal error: a layout of shape {:?} has an element count that overflows",
                self.shape
            ),
        }
    }
    pub(crate) fn ndim(&self) -> usize {
        self.shape.len()
    }
    /// One past the furthest storage element this view reaches (0 when it is
    /// empty), or `None` when that overflows: see [`extent_of`].
    pub(crate) fn extent(&self) -> Option<usize> {
        extent_of(self.offset, &self.shape, &self.strides)
    }
    /// Panics, in release builds too, unless this view lies inside a buffer
    /// of `len` elements: the check every kernel that walks a layout with
    /// raw pointers or unchecked offsets makes once per call, so a wrong
    /// layout from any bug fails loudly, naming `op`, instead of reading or
    /// writing out of bounds.
    #[track_caller]
    #[inline]
    pub(crate) fn assert_within(&self, op: impl fmt::Display, len: usize) {
        match self.extent() {
            Some(e) if e <= len => {}
            e => panic!(
                "{op}: internal error: a view of shape {:?} with strides {:?} from offset {} \
                 reaches {} of a buffer of {len} elements; this is a bug in deriv, please \
                 report it",
                self.shape,
                self.strides,
                self.offset,
                match e {
                    Some(e) => format!("element {}", e - 1),
                    None => "past usize::MAX".to_string(),
                }
            ),
        }
    }
    /// Row-major with no gaps (size-1 dimensions may have any stride).
    pub(crate) fn is_contiguous(&self) -> bool {
        // Over plain slices: indexing the inline vectors re-checks where
        // they live at every step, and this runs several times per op.
        let (shape, strides) = (self.shape.as_slice(), self.strides.as_slice());
        let mut acc = 1usize;
        for (&n, &s) in shape.iter().zip(strides).rev() {
            if n != 1 && s != acc {
                return false;
            }
            acc = acc.saturating_mul(n);
        }
        true
    }
    /// This view broadcast to `shape` (which must be broadcast-compatible):
    /// new and stretched dimensions get stride 0.
    pub(crate) fn broadcast_to(&self, shape: &[usize]) -> Layout {
        let extra = shape.len() - self.shape.len();
        let mut strides: Dims = smallvec::smallvec![0; shape.len()];
        for d in 0..self.shape.len() {
            strides[d + extra] = if self.shape[d] == 1 && shape[d + extra] != 1 {
                0
            } else {
                self.strides[d]
            };
        }
        Layout {
            shape: Dims::from_slice(shape),
            strides,
            offset: self.offset,
        }
    }
    /// The strides a reshape to `shape` would have without copying, if any
    /// (the same test PyTorch's `view` applies).
    pub(crate) fn view_strides(&self, shape: &[usize]) -> Option<Dims> {
        if self.is_contiguous() || self.numel() == 0 {
            return Some(contiguous_strides(shape));
        }
        // Group old dims into runs that are contiguous among themselves, and
        // map each run onto a run of new dims of the same total size.
        let old: Vec<(usize, usize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|&(&s, _)| s != 1)
            .map(|(&s, &t)| (s, t))
            .collect();
        let mut new_strides: Dims = smallvec::smallvec![0usize; shape.len()];
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

/// The broadcast of two shapes (NumPy rules), or an error naming both; its
/// element count is checked too.
pub(crate) fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let out = broadcast_dims(op, a, b)?;
    // Two valid shapes can broadcast to one whose count overflows ([2^32, 1]
    // with [1, 2^32]).
    if !same_shape(a, b) {
        checked_numel(op, &out)?;
    }
    Ok(out)
}

/// The broadcast of two shapes, with no count check (the caller checks the
/// count of the shape it builds from it).
pub(crate) fn broadcast_dims(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    if same_shape(a, b) {
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
    use super::{assert_matrix_within, checked_numel, extent_of, Layout, MAX_NUMEL};
    use crate::error::Error;
    use crate::Tensor;

    /// The panic message of `f`, which must panic.
    fn panic_message(f: impl FnOnce()) -> String {
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("a panic");
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn checked_numel_refuses_every_overflowing_product() {
        assert_eq!(checked_numel("t", &[]), Ok(1));
        assert_eq!(checked_numel("t", &[2, 3, 4]), Ok(24));
        assert_eq!(checked_numel("t", &[5, 0, 7]), Ok(0));
        assert_eq!(checked_numel("t", &[MAX_NUMEL]), Ok(MAX_NUMEL));
        assert_eq!(checked_numel("t", &[1, MAX_NUMEL, 1]), Ok(MAX_NUMEL));
        for shape in [
            &[MAX_NUMEL + 1][..],
            &[usize::MAX],
            &[1 << 32, 1 << 32],        // wraps to 0
            &[(1 << 62) + 1, 4],        // wraps to 4
            &[1 << 62, 2],              // 2^63: one past isize::MAX
            &[0, 1 << 40, 1 << 40],     // a zero does not hide the overflow,
            &[1 << 40, 1 << 40, 0],     // wherever it is
            &[3, 5, 1 << 60, 7, 0, 11], // many small overflowing factors
        ] {
            match checked_numel("zeros", shape) {
                Err(Error::Shape { op: "zeros", msg }) => {
                    assert!(msg.contains(&format!("{shape:?}")), "{msg}");
                    assert!(msg.contains("too many elements"), "{msg}");
                }
                other => panic!("{shape:?}: {other:?}"),
            }
        }
        let e = checked_numel("t", &[1 << 32, 1 << 32]).unwrap_err();
        assert!(
            e.to_string().contains("is 18446744073709551616, more than"),
            "{e}"
        );
        let e = checked_numel("t", &[usize::MAX; 3]).unwrap_err();
        assert!(e.to_string().contains("is more than 2^128"), "{e}");
    }

    #[test]
    fn extents_are_checked_and_empty_views_reach_nothing() {
        assert_eq!(extent_of(0, &[], &[]), Some(1));
        assert_eq!(extent_of(5, &[], &[]), Some(6));
        assert_eq!(extent_of(0, &[2, 3], &[3, 1]), Some(6));
        assert_eq!(extent_of(2, &[3, 2], &[1, 3]), Some(8));
        assert_eq!(extent_of(7, &[4, 0], &[9, 9]), Some(0));
        assert_eq!(extent_of(0, &[1 << 40], &[0]), Some(1));
        assert_eq!(extent_of(0, &[3], &[usize::MAX]), None);
        assert_eq!(extent_of(usize::MAX, &[2], &[1]), None);
        assert_eq!(extent_of(0, &[2, 3], &[1]), None);
        let l = Layout::new("view", vec![2, 3], vec![3, 1], 4).unwrap();
        assert_eq!(l.extent(), Some(10));
        l.assert_within("view", 10);
        let msg = panic_message(|| l.assert_within("exp", 9));
        assert!(
            msg.starts_with("exp: internal error: a view of shape [2, 3]"),
            "{msg}"
        );
        assert!(
            msg.contains("reaches element 9 of a buffer of 9 elements"),
            "{msg}"
        );
        let msg = panic_message(|| assert_matrix_within("linear", 1, (2, 3), (3, 1), 6));
        assert!(
            msg.starts_with("linear: internal error: a 2 x 3 matrix"),
            "{msg}"
        );
        assert_matrix_within("linear", 0, (2, 3), (3, 1), 6);
        assert_matrix_within("linear", 99, (0, 3), (3, 1), 6);
        // Layout::new refuses counts and extents past isize::MAX.
        assert!(Layout::new("view", vec![1 << 32, 1 << 32], vec![0, 0], 0).is_err());
        assert!(Layout::new("view", vec![2], vec![MAX_NUMEL], 0).is_err());
        assert!(std::panic::catch_unwind(|| Layout::contiguous(&[1 << 62, 2])).is_err());
    }

    /// A layout reaching past its storage never becomes a tensor: the
    /// invariant every kernel relies on is asserted where tensors are made.
    #[test]
    fn a_view_past_its_storage_is_refused() {
        let t = Tensor::zeros([2, 3]);
        let bad = Layout {
            shape: smallvec::smallvec![3, 3],
            strides: smallvec::smallvec![3, 1],
            offset: 0,
        };
        let msg = panic_message(|| drop(t.with_layout(bad)));
        assert!(msg.contains("tensor: internal error"), "{msg}");
        let wrapped = Layout {
            shape: smallvec::smallvec![(1 << 62) + 1, 4],
            strides: smallvec::smallvec![0, 1],
            offset: 0,
        };
        let msg = panic_message(|| drop(t.with_layout(wrapped)));
        assert!(msg.contains("too many elements"), "{msg}");
        let msg = panic_message(|| {
            drop(Tensor::from_buffer(
                crate::backend::Buffer::F32(vec![0.0; 5]),
                &[2, 3],
                crate::Device::Cpu,
            ))
        });
        assert!(
            msg.contains("a buffer of 5 elements for a tensor of shape [2, 3]"),
            "{msg}"
        );
    }

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
        assert_eq!(
            t.layout().view_strides(&[3, 2, 1]).as_deref(),
            Some(&[1, 3, 1][..])
        );
        // Size-1 dims in the source are ignored.
        let u = Tensor::zeros([4, 1, 5]).permute(&[2, 1, 0]);
        assert_eq!(
            u.layout().view_strides(&[5, 4]).as_deref(),
            Some(&[1, 5][..])
        );
    }
}
