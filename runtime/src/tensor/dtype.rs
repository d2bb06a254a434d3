//! Element types: the runtime `DType` tag and the compile-time `Element` / `Float` traits.

use std::fmt;

use super::math::Math;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float, the default (as in PyTorch).
    F32,
    /// 64-bit float: gradient checks and precision work.
    F64,
    /// 64-bit signed integer: labels and indices.
    I64,
    /// Booleans: masks from comparisons.
    Bool,
}

impl DType {
    /// Whether this is a floating-point type (the only ones that carry gradients).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::Bool => 1,
        }
    }
    /// The type two operands are computed in (PyTorch's promotion for tensors of
    /// the same category order bool < i64 < f32 < f64).
    pub fn promote(a: DType, b: DType) -> DType {
        fn rank(d: DType) -> u8 {
            match d {
                DType::Bool => 0,
                DType::I64 => 1,
                DType::F32 => 2,
                DType::F64 => 3,
            }
        }
        if rank(a) >= rank(b) {
            a
        } else {
            b
        }
    }
    /// PyTorch's spelling, used by `Display` (`torch.float64` becomes `f64`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that can be stored in a tensor.
pub trait Element: Copy + Send + Sync + PartialOrd + Default + fmt::Debug + 'static {
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// Converts to f64 (for printing, promotion and gradient checks).
    fn to_f64(self) -> f64;
    /// Converts from f64 (rounding or truncating as `as` does).
    fn from_f64(v: f64) -> Self;
    /// Converts from i64 as `as` does (exact for i64 itself, where a hop
    /// through f64 would round past 2^53).
    fn from_i64(v: i64) -> Self {
        Self::from_f64(v as f64)
    }
}

macro_rules! impl_element {
    ($t:ty, $d:ident, $to:expr, $from:expr, $from_i64:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                #[allow(clippy::redundant_closure_call)]
                ($to)(self)
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                #[allow(clippy::redundant_closure_call)]
                ($from)(v)
            }
            #[inline(always)]
            fn from_i64(v: i64) -> Self {
                #[allow(clippy::redundant_closure_call)]
                ($from_i64)(v)
            }
        }
    };
}
impl_element!(f32, F32, |x: f32| x as f64, |v: f64| v as f32, |v: i64| v
    as f32);
impl_element!(f64, F64, |x: f64| x, |v: f64| v, |v: i64| v as f64);
impl_element!(i64, I64, |x: i64| x as f64, |v: f64| v as i64, |v: i64| v);
impl_element!(
    bool,
    Bool,
    |x: bool| if x { 1.0 } else { 0.0 },
    |v: f64| v != 0.0,
    |v: i64| v != 0
);

/// Floating-point elements (f32, f64): the scalar [`Math`] every kernel is
/// written in, plus what only concrete numbers have. The one float trait of
/// the crate.
pub trait Float: Element + Math<Mask = bool> + std::ops::AddAssign + std::iter::Sum {
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// self^e for a float exponent.
    fn powf(self, e: Self) -> Self;
    /// self^n for an integer exponent.
    fn powi(self, n: i32) -> Self;
}

macro_rules! impl_float {
    ($t:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline(always)]
            fn powi(self, n: i32) -> Self {
                <$t>::powi(self, n)
            }
        }
    };
}
impl_float!(f32);
impl_float!(f64);
