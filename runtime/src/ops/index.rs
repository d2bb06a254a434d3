//! Python-style indexing: the ranges [`Tensor::slice`] takes ([`SliceRange`])
//! and `x[0, 1:3, ..., -1]` as [`Tensor::i`] (views, like `slice`/`select`).

use std::ops::{Bound, Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};

use crate::error::{Error, OrPanic, Result};
use crate::tensor::Tensor;

/// A range of positions along one dimension, as Python's `a:b`: any of
/// `a..b`, `a..`, `..b`, `a..=b`, `..=b` and `..` with `usize`, `isize`,
/// `i32` or `i64` bounds. Negative bounds count from the end (`-1` is the
/// last position) and bounds past either end are clipped, as in Python.
///
/// ```
/// use deriv_runtime::Tensor;
/// let x = Tensor::arange(0, 6, 1);
/// let n: usize = x.shape()[0];
/// assert_eq!(x.slice(0, 1..n).to_vec::<i64>(), vec![1, 2, 3, 4, 5]);
/// assert_eq!(x.slice(0, ..-2).to_vec::<i64>(), vec![0, 1, 2, 3]);
/// assert_eq!(x.slice(0, 2..=-1).to_vec::<i64>(), vec![2, 3, 4, 5]);
/// assert_eq!(x.slice(0, 4i64..100).to_vec::<i64>(), vec![4, 5]);
/// ```
pub trait SliceRange {
    /// The start and end bounds, in positions that may be negative.
    fn bounds(&self) -> (Bound<i64>, Bound<i64>);
}

macro_rules! impl_slice_range {
    ($($t:ty),*) => {$(
        impl SliceRange for Range<$t> {
            fn bounds(&self) -> (Bound<i64>, Bound<i64>) {
                (Bound::Included(self.start as i64), Bound::Excluded(self.end as i64))
            }
        }
        impl SliceRange for RangeFrom<$t> {
            fn bounds(&self) -> (Bound<i64>, Bound<i64>) {
                (Bound::Included(self.start as i64), Bound::Unbounded)
            }
        }
        impl SliceRange for RangeTo<$t> {
            fn bounds(&self) -> (Bound<i64>, Bound<i64>) {
                (Bound::Unbounded, Bound::Excluded(self.end as i64))
            }
        }
        impl SliceRange for RangeInclusive<$t> {
            fn bounds(&self) -> (Bound<i64>, Bound<i64>) {
                (Bound::Included(*self.start() as i64), Bound::Included(*self.end() as i64))
            }
        }
        impl SliceRange for RangeToInclusive<$t> {
            fn bounds(&self) -> (Bound<i64>, Bound<i64>) {
                (Bound::Unbounded, Bound::Included(self.end as i64))
            }
        }
    )*};
}
impl_slice_range!(usize, isize, i32, i64);

impl SliceRange for RangeFull {
    fn bounds(&self) -> (Bound<i64>, Bound<i64>) {
        (Bound::Unbounded, Bound::Unbounded)
    }
}

/// An integer that names a dimension or a position (`usize`, `isize`, `i32`
/// or `i64`; negative counts from the end): what
/// [`Tensor::permute`](crate::Tensor::permute) takes a slice of.
pub trait DimIndex: Copy {
    /// The value as an `isize`.
    fn to_isize(self) -> isize;
}

macro_rules! impl_dim_index {
    ($($t:ty),*) => {$(
        impl DimIndex for $t {
            fn to_isize(self) -> isize {
                self as isize
            }
        }
    )*};
}
impl_dim_index!(usize, isize, i32, i64);

/// The first position and the length that `bounds` select from a dimension
/// of `size`: negative positions count from the end, an inclusive end takes
/// its position too (so `..=-1` reaches the last), and everything is clipped
/// to `0..=size`.
pub(crate) fn resolve_range(bounds: (Bound<i64>, Bound<i64>), size: usize) -> (usize, usize) {
    let n = size as i64;
    let at = |v: i64| if v < 0 { v + n } else { v };
    let clip = |v: i64| v.clamp(0, n);
    let start = match bounds.0 {
        Bound::Included(s) => clip(at(s)),
        Bound::Excluded(s) => clip(at(s).saturating_add(1)),
        Bound::Unbounded => 0,
    };
    let end = match bounds.1 {
        Bound::Included(e) => clip(at(e).saturating_add(1)),
        Bound::Excluded(e) => clip(at(e)),
        Bound::Unbounded => n,
    };
    (start as usize, (end - start).max(0) as usize)
}

/// `...` in an index ([`Tensor::i`]): as many full slices (`:`) as the
/// dimensions the other entries leave unnamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ellipsis;

/// One entry of an index: a position (removes its dimension), a range (keeps
/// it), or [`Ellipsis`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorIndexer {
    /// `x[i]`: one position (negative from the end); the dimension goes away.
    Select(i64),
    /// `x[a:b]`: a range of positions; the dimension stays.
    Slice(Bound<i64>, Bound<i64>),
    /// `x[...]`: the dimensions no other entry names.
    Ellipsis,
}

macro_rules! impl_select_from {
    ($($t:ty),*) => {$(
        impl From<$t> for TensorIndexer {
            fn from(i: $t) -> Self {
                TensorIndexer::Select(i as i64)
            }
        }
    )*};
}
impl_select_from!(usize, isize, i32, i64);

impl<R: SliceRange> From<R> for TensorIndexer {
    fn from(range: R) -> Self {
        let (start, end) = range.bounds();
        TensorIndexer::Slice(start, end)
    }
}

impl From<Ellipsis> for TensorIndexer {
    fn from(_: Ellipsis) -> Self {
        TensorIndexer::Ellipsis
    }
}

/// What [`Tensor::i`] takes: one entry (`0`, `1..3`, `..`, [`Ellipsis`]) or
/// a tuple of up to six, one per dimension from the first.
pub trait TensorIndex {
    /// The entries, in order.
    fn indexers(self) -> Vec<TensorIndexer>;
}

impl<T: Into<TensorIndexer>> TensorIndex for T {
    fn indexers(self) -> Vec<TensorIndexer> {
        vec![self.into()]
    }
}

macro_rules! impl_index_tuple {
    ($($name:ident),+) => {
        impl<$($name: Into<TensorIndexer>),+> TensorIndex for ($($name,)+) {
            #[allow(non_snake_case)]
            fn indexers(self) -> Vec<TensorIndexer> {
                let ($($name,)+) = self;
                vec![$($name.into()),+]
            }
        }
    };
}
impl_index_tuple!(A);
impl_index_tuple!(A, B);
impl_index_tuple!(A, B, C);
impl_index_tuple!(A, B, C, D);
impl_index_tuple!(A, B, C, D, E);
impl_index_tuple!(A, B, C, D, E, F);

impl Tensor {
    /// Python-style indexing (a view): `x.i(0)` is `x[0]`, `x.i((.., 1..3))`
    /// is `x[:, 1:3]`, `x.i((Ellipsis, -1))` is `x[..., -1]`. A position
    /// removes its dimension, a range keeps it (negative values count from
    /// the end, ranges are clipped as in Python), [`Ellipsis`] stands for the
    /// dimensions the other entries leave out, and dimensions past the last
    /// entry are kept whole. Differentiable, like `slice` and `select`.
    ///
    /// Panics (with the message of [`try_i`](Self::try_i)'s error) on a
    /// position out of range, more entries than dimensions, or two `Ellipsis`.
    ///
    /// ```
    /// use deriv_runtime::{tensor, Ellipsis};
    /// let x = tensor![[1, 2, 3], [4, 5, 6]];
    /// assert_eq!(x.i(0).to_vec::<i64>(), vec![1, 2, 3]);
    /// assert_eq!(x.i((.., 1..3)).to_vec::<i64>(), vec![2, 3, 5, 6]);
    /// assert_eq!(x.i((Ellipsis, -1)).to_vec::<i64>(), vec![3, 6]);
    /// assert_eq!(x.i((1, ..=1)).to_vec::<i64>(), vec![4, 5]);
    /// ```
    #[track_caller]
    pub fn i(&self, index: impl TensorIndex) -> Tensor {
        self.try_i(index).or_panic()
    }

    /// Fallible [`i`](Self::i).
    pub fn try_i(&self, index: impl TensorIndex) -> Result<Tensor> {
        let items = index.indexers();
        let nd = self.ndim();
        let ellipses = items
            .iter()
            .filter(|t| matches!(t, TensorIndexer::Ellipsis))
            .count();
        let named = items.len() - ellipses;
        let invalid = |msg: String| Err(Error::Invalid(format!("index: {msg}")));
        if ellipses > 1 {
            return invalid(format!(
                "an index can only have a single Ellipsis, got {ellipses} in {items:?}"
            ));
        }
        if named > nd {
            return invalid(format!(
                "too many indices for a tensor of {nd} dimensions (shape {:?}): {named} \
                 were given",
                self.shape()
            ));
        }
        let mut out = self.clone();
        // The dimension of `out` the next entry applies to, and how many
        // dimensions earlier positions removed (for messages in `self`'s terms).
        let mut dim = 0usize;
        let mut removed = 0usize;
        for item in items {
            match item {
                TensorIndexer::Ellipsis => dim += nd - named,
                TensorIndexer::Slice(start, end) => {
                    let (first, len) = resolve_range((start, end), out.shape()[dim]);
                    out = out.narrow(dim as isize, first, len);
                    dim += 1;
                }
                TensorIndexer::Select(i) => {
                    let size = out.shape()[dim] as i64;
                    let at = if i < 0 { i + size } else { i };
                    if !(0..size).contains(&at) {
                        return invalid(format!(
                            "index {i} is out of bounds for dimension {} with size {size} \
                             (shape {:?})",
                            dim + removed,
                            self.shape()
                        ));
                    }
                    out = out.select(dim as isize, at as isize);
                    removed += 1;
                }
            }
        }
        Ok(out)
    }
}
