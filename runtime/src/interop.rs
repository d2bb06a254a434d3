//! Conversions between [`Tensor`] and [`ndarray`] arrays (the `ndarray` feature).
//!
//! An array of any element type that [`Element`] covers (`f32`, `f64`, `i64`,
//! `bool`) and any dimensionality becomes a tensor with `Tensor::from(array)`
//! (or `(&array).into()`), and a tensor comes back with
//! [`Tensor::to_ndarray`]. Both directions copy the elements in row-major
//! (logical) order, so transposed or sliced arrays and tensors convert by
//! their logical indices, whatever their memory layout.
//!
//! ```
//! use deriv_runtime::{DType, Tensor};
//! use ndarray::{array, Ix2};
//!
//! let a = array![[1.0f32, 2., 3.], [4., 5., 6.]];
//! let t = Tensor::from(a.t()); // a transposed (non-contiguous) view
//! assert_eq!(t.shape(), &[3, 2]);
//! assert_eq!(t.dtype(), DType::F32);
//! assert_eq!(t.to_vec::<f32>(), vec![1., 4., 2., 5., 3., 6.]);
//!
//! let back = (t.matmul(&Tensor::from(&a))).to_ndarray::<f64>();
//! let back = back.into_dimensionality::<Ix2>().unwrap();
//! assert_eq!(back.dim(), (3, 3));
//! assert_eq!(back[[0, 0]], 17.0); // 1*1 + 4*4
//! ```

use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn};

use crate::tensor::{Element, Tensor};

/// Copies the elements of `a` in logical row-major order.
fn row_major<T: Element, S: Data<Elem = T>, D: Dimension>(a: &ArrayBase<S, D>) -> Vec<T> {
    match a.as_slice() {
        // Standard layout: one memcpy-like copy.
        Some(s) => s.to_vec(),
        // Any other layout (transposed, sliced, negative strides): `iter`
        // visits elements in logical order.
        None => a.iter().copied().collect(),
    }
}

impl<T: Element, S: Data<Elem = T>, D: Dimension> From<ArrayBase<S, D>> for Tensor {
    /// A tensor with the array's shape and elements (dtype `T`'s), copied in
    /// logical row-major order, so non-contiguous arrays work too.
    fn from(a: ArrayBase<S, D>) -> Tensor {
        Tensor::from(&a)
    }
}

impl<T: Element, S: Data<Elem = T>, D: Dimension> From<&ArrayBase<S, D>> for Tensor {
    /// A tensor with the array's shape and elements (dtype `T`'s), copied in
    /// logical row-major order, so non-contiguous arrays work too.
    fn from(a: &ArrayBase<S, D>) -> Tensor {
        Tensor::from_vec(row_major(a), a.shape())
    }
}

impl Tensor {
    /// A copy of the elements as an [`ndarray::ArrayD`] of `T`, with this
    /// tensor's shape, converting the dtype as [`to_vec`](Tensor::to_vec) does
    /// (floats to integers truncate, nonzero to `true`).
    ///
    /// Use `into_dimensionality::<Ix2>()` (etc.) on the result for a
    /// fixed-rank array.
    ///
    /// ```
    /// use deriv_runtime::tensor;
    /// let a = tensor![[1, 2, 3], [4, 5, 6]].t().to_ndarray::<f32>();
    /// assert_eq!(a.shape(), &[3, 2]);
    /// assert_eq!(a[[2, 0]], 3.0);
    /// ```
    pub fn to_ndarray<T: Element>(&self) -> ArrayD<T> {
        ArrayD::from_shape_vec(IxDyn(self.shape()), self.to_vec::<T>())
            .expect("to_ndarray: to_vec returns exactly numel elements in row-major order")
    }
}
