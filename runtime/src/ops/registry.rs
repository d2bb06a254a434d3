//! The op registry: one line per op. It lists every op type by family, which
//! is what the GPU kernel check (`scripts/check-ptx.sh`, through
//! [`cuda_modules`]) and the op test table's coverage check ([`NAMES`])
//! enumerate. An op missing here still works; it is just not checked.

use super::binary::{Add, Div, Mul, Sub};
use super::unary::{
    AddScalar, DivScalar, Elu, Exp, GeluErf, GeluTanh, Hardtanh, LeakyRelu, Log, Logsigmoid, Mish,
    MulScalar, Neg, RDivScalar, RSubScalar, Relu, Sigmoid, Silu, Softplus, Sqrt, Square, SubScalar,
    Tanh,
};

macro_rules! registry {
    (unary: [$($u:ident),* $(,)?], binary: [$($b:ident),* $(,)?] $(,)?) => {
        /// The kernel names of every registered elementwise op.
        pub const NAMES: &[&str] = &[
            $(<$u as super::Unary>::KERNEL,)*
            $(<$b as super::Binary>::KERNEL,)*
        ];

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
        RDivScalar, Neg, Square,
    ],
    binary: [Add, Sub, Mul, Div],
}
