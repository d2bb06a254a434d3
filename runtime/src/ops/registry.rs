//! The op registry: one line per op. It lists every op type by family, which
//! is what the GPU kernel check (`scripts/check-ptx.sh`, through
//! `cuda_modules`, with the `cuda` feature) and the op test table's coverage check ([`NAMES`])
//! enumerate. An op missing here still works; it is just not checked.

use super::binary::{Add, Div, Maximum, Minimum, Mul, PowTensor, Sub};
use super::unary::{
    Abs, AddScalar, Clamp, DivScalar, Elu, Exp, GeluErf, GeluTanh, Hardtanh, LeakyRelu, Log,
    Logsigmoid, Mish, MulScalar, Neg, RDivScalar, RSubScalar, Relu, Sigmoid, Silu, Softplus, Sqrt,
    Square, SubScalar, Tanh,
};

macro_rules! registry {
    (unary: [$($u:ident),* $(,)?], binary: [$($b:ident),* $(,)?] $(,)?) => {
        /// The kernel names of every registered elementwise op.
        pub const NAMES: &[&str] = &[
            $(<$u as super::Unary>::KERNEL,)*
            $(<$b as super::Binary>::KERNEL,)*
        ];

        /// Every elementwise op's traced GPU formulas against its CPU kernel,
        /// through the PTX interpreter of the tracer's tests.
        #[cfg(all(test, feature = "cuda"))]
        #[test]
        fn traced_kernels_compute_what_the_cpu_computes() {
            use crate::backend::cuda::trace::{assert_traced_matches, body};
            use crate::tensor::DType;
            let xs: Vec<f32> = [
                -30.0, -9.5, -4.0, -2.0, -1.0, -0.7, -0.4, -0.1, -1e-3, -1e-6, 0.0, 1e-6, 1e-3,
                0.1, 0.4, 0.7, 1.0, 1.5, 2.0, 4.0, 9.5, 25.0, f32::NAN,
            ]
            .to_vec();
            let grid1: Vec<[f32; 1]> = xs.iter().map(|&x| [x]).collect();
            let grid2: Vec<[f32; 2]> = xs.iter().flat_map(|&a| [[a, 0.75], [a, -1.5], [0.3, a]]).collect();
            let grid3: Vec<[f32; 3]> = grid2.iter().map(|&[a, b]| [0.6, a, b]).collect();
            $({
                let op = <$u>::default_for_test();
                let p = super::Unary::params(&op).map(|v| v as f32);
                let f = body::<1>(DType::F32, |[x], q| <$u as super::Unary>::f(x, q)).expect("f32");
                assert_traced_matches(stringify!($u), &f, p, &grid1, 2e-6, |[x]| <$u as super::Unary>::f(x, p));
                let df = body::<2>(DType::F32, |[g, s], q| <$u as super::Unary>::df(g, s, q)).expect("f32");
                assert_traced_matches(concat!(stringify!($u), "'"), &df, p, &grid2, 2e-6, |[g, s]| <$u as super::Unary>::df(g, s, p));
            })*
            $({
                // Arithmetic is exact; pow's 2^(b·log2 a) loses the f32
                // rounding of log2 a times b (1e-6 relative where |b·log2 a| ~ 50).
                let tol = if <$b as super::Binary>::KERNEL == "pow" { 1e-5 } else { 0.0 };
                let f = body::<2>(DType::F32, |[a, b], _| <$b as super::Binary>::f(a, b)).expect("f32");
                assert_traced_matches(stringify!($b), &f, [0.0; 2], &grid2, tol, |[a, b]| <$b as super::Binary>::f(a, b));
                let da = body::<3>(DType::F32, |[g, a, b], _| <$b as super::Binary>::da(g, a, b)).expect("f32");
                assert_traced_matches(concat!(stringify!($b), " da"), &da, [0.0; 2], &grid3, tol, |[g, a, b]| <$b as super::Binary>::da(g, a, b));
                let db = body::<3>(DType::F32, |[g, a, b], _| <$b as super::Binary>::db(g, a, b)).expect("f32");
                assert_traced_matches(concat!(stringify!($b), " db"), &db, [0.0; 2], &grid3, tol, |[g, a, b]| <$b as super::Binary>::db(g, a, b));
            })*
        }

        /// Every registered op's GPU module: its key and PTX text.
        #[cfg(feature = "cuda")]
        pub fn cuda_modules() -> Vec<(&'static str, String)> {
            vec![
                $({
                    let m = super::unary::cuda::module::<$u>();
                    (m.key(), m.source().to_string())
                },)*
                $({
                    let m = super::binary::cuda::module::<$b>();
                    (m.key(), m.source().to_string())
                },)*
            ]
        }
    };
}

registry! {
    unary: [
        Relu, Sigmoid, Tanh, Silu, LeakyRelu, Elu, Hardtanh, GeluErf, GeluTanh, Softplus, Mish,
        Logsigmoid, Exp, Log, Sqrt, AddScalar, SubScalar, RSubScalar, MulScalar, DivScalar,
        RDivScalar, Neg, Square, Abs, Clamp,
    ],
    binary: [Add, Sub, Mul, Div, Maximum, Minimum, PowTensor],
}

/// A representative instance of each op for the registry's tests: the
/// defaults, or a number that exercises the parameter.
#[cfg(all(test, feature = "cuda"))]
trait DefaultForTest {
    fn default_for_test() -> Self;
}

#[cfg(all(test, feature = "cuda"))]
mod defaults {
    use super::*;
    macro_rules! defaults {
        ($($t:ident => $e:expr),* $(,)?) => {$(
            impl DefaultForTest for $t {
                fn default_for_test() -> Self {
                    $e
                }
            }
        )*};
    }
    defaults! {
        Relu => Relu, Sigmoid => Sigmoid, Tanh => Tanh, Silu => Silu,
        LeakyRelu => LeakyRelu::new(0.2), Elu => Elu::new(1.5),
        Hardtanh => Hardtanh::new(-0.5, 2.0), GeluErf => GeluErf, GeluTanh => GeluTanh,
        Softplus => Softplus::new(2.0, 5.0), Mish => Mish, Logsigmoid => Logsigmoid,
        Exp => Exp, Log => Log, Sqrt => Sqrt, AddScalar => AddScalar(1.5),
        SubScalar => SubScalar(1.5), RSubScalar => RSubScalar(1.5), MulScalar => MulScalar(-2.5),
        DivScalar => DivScalar(4.0), RDivScalar => RDivScalar(3.0), Neg => Neg, Square => Square,
        Abs => Abs, Clamp => Clamp::new(-0.5, 2.0),
    }
}
