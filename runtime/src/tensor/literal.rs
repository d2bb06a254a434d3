//! Tensors from Rust literals: the `tensor!` macro and scalar conversions.

use super::DType;

/// A Rust scalar that maps to a tensor dtype the way Python numbers map in
/// PyTorch: float literals give f32 (the default dtype), integer literals i64,
/// `bool` a mask.
pub trait Scalar: Copy {
    /// The dtype a tensor made from this scalar gets.
    const DTYPE: DType;
    /// The value as f64.
    fn to_f64(self) -> f64;
}

macro_rules! impl_scalar {
    ($($t:ty => $d:ident),*) => {$(
        impl Scalar for $t {
            const DTYPE: DType = DType::$d;
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
impl_scalar!(f32 => F32, f64 => F32, i32 => I64, i64 => I64, u8 => I64, usize => I64);

impl Scalar for bool {
    const DTYPE: DType = DType::Bool;
    fn to_f64(self) -> f64 {
        if self {
            1.0
        } else {
            0.0
        }
    }
}

/// A (possibly nested) array literal that can become a tensor; see [`tensor!`](crate::tensor!).
pub trait TensorLiteral {
    /// The dtype of the leaves.
    const DTYPE: DType;
    /// Appends this literal's dimensions (outermost first).
    fn push_shape(&self, shape: &mut Vec<usize>);
    /// Appends the leaves in row-major order.
    fn push_values(&self, out: &mut Vec<f64>);
}

impl<S: Scalar> TensorLiteral for S {
    const DTYPE: DType = S::DTYPE;
    fn push_shape(&self, _shape: &mut Vec<usize>) {}
    fn push_values(&self, out: &mut Vec<f64>) {
        out.push(self.to_f64());
    }
}

impl<L: TensorLiteral, const N: usize> TensorLiteral for [L; N] {
    const DTYPE: DType = L::DTYPE;
    fn push_shape(&self, shape: &mut Vec<usize>) {
        shape.push(N);
        if let Some(first) = self.first() {
            first.push_shape(shape);
        }
    }
    fn push_values(&self, out: &mut Vec<f64>) {
        for x in self {
            x.push_values(out);
        }
    }
}

/// Builds a tensor from nested array literals, like `torch.tensor`.
///
/// Float literals give an f32 tensor, integer literals an i64 one and bools a
/// mask; `; dtype = DType::F64` picks the dtype explicitly (without rounding
/// through f32).
///
/// ```
/// use deriv_runtime::{tensor, DType};
/// let a = tensor![[1., 2.], [3., 4.]];
/// assert_eq!(a.shape(), &[2, 2]);
/// assert_eq!(a.dtype(), DType::F32);
/// assert_eq!(tensor![1, 2, 3].dtype(), DType::I64);
/// assert_eq!(tensor![0.1, 0.2; dtype = DType::F64].to_vec::<f64>(), vec![0.1, 0.2]);
/// ```
#[macro_export]
macro_rules! tensor {
    ($($e:expr),+ $(,)? ; dtype = $d:expr) => {
        $crate::Tensor::from_literal_dtype(&[$($e),+], $d)
    };
    ($($e:expr),+ $(,)?) => {
        $crate::Tensor::from_literal(&[$($e),+])
    };
}
