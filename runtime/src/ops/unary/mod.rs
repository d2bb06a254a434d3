//! Elementwise functions of one tensor, each defined once by its formula and
//! its derivative over [`Math`]: the CPU kernels instantiate the formulas for
//! f32 and f64, the CUDA kernels trace them into PTX, and one blanket
//! [`Op`](crate::autograd::Op) implementation gives every such function its tape node, its
//! compile-time forward and backward, and its buffer-reusing kernels.
//!
//! Adding one: a file here with a type implementing [`Unary`] and its
//! `Tensor` method or `nn::functional` function, a line in [`crate::ops::registry`],
//! and its rows in the op test table (docs/ARCHITECTURE.md, "Adding an op").

mod activations;
mod gelu;
mod math;
mod scalar;
mod softplus;

pub use activations::{Elu, Hardtanh, LeakyRelu, Relu, Sigmoid, Silu, Tanh};
pub use gelu::{Gelu, GeluErf, GeluTanh};
pub use math::{Abs, Clamp, Exp, Log, Sqrt};
pub use scalar::{AddScalar, DivScalar, MulScalar, Neg, RDivScalar, RSubScalar, Square, SubScalar};
pub use softplus::{Logsigmoid, Mish, Softplus};

use crate::autograd::{GradSlot, Out, Spec};
use crate::backend::{cpu, Host};
use crate::error::Result;
use crate::tensor::{DType, Math, Tensor};

/// Which value a [`Unary`] function's derivative reads besides dL/dy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// The input `x`.
    Input,
    /// The output `y` (cheaper where the derivative is a function of y: exp, tanh).
    Output,
    /// Neither: the derivative is a function of `g` alone (`x + c`, `-x`);
    /// `df` is then called with `s = g`.
    Nothing,
}

/// An elementwise function of one float tensor, defined by its formula and
/// derivative written once over [`Math`] (so they run on every device).
///
/// Integer and bool inputs are computed in f32, as PyTorch's float math does.
///
/// ```
/// use deriv_runtime::ops::{Reads, Unary};
/// use deriv_runtime::{autograd::apply, tensor, Math};
///
/// /// softsign(x) = x / (1 + |x|)
/// #[derive(Clone, Copy)]
/// struct Softsign;
/// impl Unary for Softsign {
///     const GRAD_FN: &'static str = "SoftsignBackward";
///     const KERNEL: &'static str = "my_softsign";
///     const READS: Reads = Reads::Input;
///     fn f<M: Math>(x: M, _: [M; 2]) -> M {
///         x / (M::k(1.0) + x.abs())
///     }
///     fn df<M: Math>(g: M, x: M, _: [M; 2]) -> M {
///         g / (M::k(1.0) + x.abs()).square()
///     }
/// }
/// deriv_runtime::unary_op!(Softsign);
/// let x = tensor![-1.0, 3.0].requires_grad_(true);
/// let y = apply(Softsign, &[&x]);
/// assert_eq!(y.to_vec::<f32>(), vec![-0.5, 0.75]);
/// y.sum().backward();
/// assert_eq!(x.grad().unwrap().to_vec::<f32>(), vec![0.25, 0.0625]);
/// ```
pub trait Unary: Send + Sync + 'static {
    /// The tape node's name (`grad_fn`).
    const GRAD_FN: &'static str;
    /// A name unique among all ops, for its GPU kernels.
    const KERNEL: &'static str;
    /// What the derivative reads.
    const READS: Reads;
    /// With [`Reads::Nothing`]: the derivative is `g` itself, passed on
    /// without a kernel (`x + c`).
    const GRAD_IS_G: bool = false;
    /// Up to two numbers the formulas take as `p` (a slope, bounds).
    fn params(&self) -> [f64; 2] {
        [0.0; 2]
    }
    /// y = f(x).
    fn f<M: Math>(x: M, p: [M; 2]) -> M;
    /// dL/dx from `g` = dL/dy and `s`, the input or the output as [`READS`](Self::READS) says.
    fn df<M: Math>(g: M, s: M, p: [M; 2]) -> M;
}

/// The float dtype an elementwise function of `t` computes in.
fn float_dtype(t: &Tensor) -> DType {
    if t.dtype().is_float() {
        t.dtype()
    } else {
        DType::F32
    }
}

/// Implements [`Op`](crate::autograd::Op) for a [`Unary`] type (the tape node, the compile-time
/// forward and backward, the buffer-reusing kernels): `deriv::unary_op!(Softsign);`.
#[macro_export]
macro_rules! unary_op {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::ops::Op for $t {
            const NAME: &'static str = <$t as $crate::ops::Unary>::GRAD_FN;
            const OP: &'static str = <$t as $crate::ops::Unary>::KERNEL;
            const SIZE: $crate::size::SizeRule = $crate::size::SizeRule::Same;
            type Saved = ::core::option::Option<$crate::Tensor>;
            fn spec(&self, x: &[&$crate::Tensor]) -> $crate::Result<$crate::ops::Spec> {
                $crate::ops::unary::spec(x)
            }
            fn forward(&self, x: &[&$crate::Tensor], out: &mut $crate::ops::Out<'_>) {
                $crate::ops::unary::forward(self, x[0], out)
            }
            fn save(
                &self,
                x: &[&$crate::Tensor],
                y: &$crate::Tensor,
                _need: &[bool],
            ) -> ::core::option::Option<$crate::Tensor> {
                $crate::ops::unary::save::<$t>(x[0], y)
            }
            fn backward(
                &self,
                s: &::core::option::Option<$crate::Tensor>,
                g: &$crate::Tensor,
                grads: &mut [$crate::ops::GradSlot<'_>],
            ) {
                $crate::ops::unary::backward(self, s.as_ref(), g, &mut grads[0])
            }
        }
    )*};
}

/// The output of an elementwise function of `x[0]`: its shape and device,
/// in its float dtype.
#[doc(hidden)]
pub fn spec(x: &[&Tensor]) -> Result<Spec> {
    Ok(Spec {
        shape: crate::autograd::Shape::from_slice(x[0].shape()),
        dtype: float_dtype(x[0]),
        device: x[0].device(),
    })
}

/// `out <- f(x)`.
#[doc(hidden)]
pub fn forward<U: Unary>(op: &U, x: &Tensor, out: &mut Out<'_>) {
    let x = crate::ops::as_float(x);
    let p = op.params();
    #[cfg(feature = "cuda")]
    if out.spec().device.is_cuda() {
        return cuda::forward::<U>(&x, p, out);
    }
    let l = x.layout();
    match out.spec().dtype {
        DType::F32 => {
            let p = [p[0] as f32, p[1] as f32];
            out.host::<f32, 1>([&x], |[xs], o| {
                cpu::map_to(
                    U::KERNEL,
                    o,
                    f32::of(xs),
                    l,
                    #[inline(always)]
                    |v| U::f(v, p),
                )
            })
        }
        DType::F64 => out.host::<f64, 1>([&x], |[xs], o| {
            cpu::map_to(
                U::KERNEL,
                o,
                f64::of(xs),
                l,
                #[inline(always)]
                |v| U::f(v, p),
            )
        }),
        d => unreachable!("{} computes in a float dtype, not {d}", U::GRAD_FN),
    }
}

/// What `U`'s derivative reads: the input, the output, or nothing.
#[doc(hidden)]
pub fn save<U: Unary>(x: &Tensor, y: &Tensor) -> Option<Tensor> {
    match U::READS {
        Reads::Input => Some(crate::ops::as_float(x)),
        Reads::Output => Some(y.clone()),
        Reads::Nothing => None,
    }
}

/// Adds `df(g, s)` into `slot`; with nothing saved the derivative is `g`
/// itself, passed on as a handle.
#[doc(hidden)]
pub fn backward<U: Unary>(op: &U, s: Option<&Tensor>, g: &Tensor, slot: &mut GradSlot<'_>) {
    let p = op.params();
    match s {
        Some(s) => slot.add_into(Spec::like(s), |out| derivative::<U>(g, s, p, out)),
        None if U::GRAD_IS_G => slot.add(g.clone()),
        None => slot.add_into(Spec::like(g), |out| derivative::<U>(g, g, p, out)),
    }
}

/// `df(g, s)` for the op `op` as a new tensor: the allocating form of its
/// derivative kernel (`vjp::relu` and friends).
pub(crate) fn derivative_of<U: Unary>(op: &U, g: &Tensor, s: &Tensor) -> Tensor {
    let mut out = Out::fresh(Spec::like(s));
    derivative::<U>(g, s, op.params(), &mut out);
    out.finish()
}

/// `out <- df(g, s)` elementwise (`g` converted to `s`'s dtype).
fn derivative<U: Unary>(g: &Tensor, s: &Tensor, p: [f64; 2], out: &mut Out<'_>) {
    let g = if g.dtype() == s.dtype() {
        g.clone()
    } else {
        crate::autograd::no_grad(|| g.to_dtype(s.dtype()))
    };
    #[cfg(feature = "cuda")]
    if out.spec().device.is_cuda() {
        return cuda::backward::<U>(&g, s, p, out);
    }
    // Same shape (the usual case): the layout as it is, no copy.
    let lg = if crate::tensor::same_shape(g.shape(), s.shape()) {
        std::borrow::Cow::Borrowed(g.layout())
    } else {
        std::borrow::Cow::Owned(g.layout().broadcast_to(s.shape()))
    };
    let lg = &*lg;
    let ls = s.layout();
    match s.dtype() {
        DType::F32 => {
            let p = [p[0] as f32, p[1] as f32];
            out.host::<f32, 2>([&g, s], |[gb, sb], o| {
                cpu::zip_to(
                    U::KERNEL,
                    o,
                    f32::of(gb),
                    lg,
                    f32::of(sb),
                    ls,
                    #[inline(always)]
                    |g, s| U::df(g, s, p),
                )
            })
        }
        DType::F64 => out.host::<f64, 2>([&g, s], |[gb, sb], o| {
            cpu::zip_to(
                U::KERNEL,
                o,
                f64::of(gb),
                lg,
                f64::of(sb),
                ls,
                #[inline(always)]
                |g, s| U::df(g, s, p),
            )
        }),
        d => unreachable!("{} computes in a float dtype, not {d}", U::GRAD_FN),
    }
}

#[cfg(feature = "cuda")]
pub(crate) mod cuda {
    //! The GPU kernels of a [`Unary`]: traced from the same formulas.

    use super::{Out, Tensor, Unary};
    use crate::backend::cuda::{self as be, trace, ElementwiseModule};
    use crate::tensor::{DType, Layout};

    /// The PTX of `U`'s kernels: forward `un_<kernel>_<dtype>_<c|s>` (one
    /// input) and derivative `un_<kernel>_bwd_<dtype>_<c|s>` (g, s), for the
    /// float dtypes the tracer can write.
    pub(crate) fn module<U: Unary>() -> ElementwiseModule {
        let mut m = ElementwiseModule::new(U::KERNEL);
        for d in [DType::F32, DType::F64] {
            m.add(
                &format!("un_{}", U::KERNEL),
                d,
                trace::body::<1>(d, |[x], p| U::f(x, p)),
            );
            m.add(
                &format!("un_{}_bwd", U::KERNEL),
                d,
                trace::body::<2>(d, |[g, s], p| U::df(g, s, p)),
            );
        }
        m
    }

    /// Runs the traced kernel `stem` of the module `build` (key `key`) into
    /// `out` from `ins` (views broadcast to the output's shape, of its dtype).
    /// An accumulating destination gets the result through a temporary.
    pub(crate) fn launch(
        key: &'static str,
        build: fn() -> ElementwiseModule,
        stem: &str,
        out: &mut Out<'_>,
        ins: &[(&Tensor, &Layout)],
        p: [f64; 2],
    ) {
        let (dst, acc) = out.device_target();
        let target = if acc {
            Tensor::from_array(be::ops::empty(
                be::ops::buf(dst.array()).ctx(),
                dst.dtype(),
                dst.shape(),
            ))
        } else {
            dst.clone()
        };
        let bufs: Vec<_> = ins
            .iter()
            .map(|(t, l)| (be::ops::buf(t.array()), *l))
            .collect();
        be::ops::ew_module(
            key,
            build,
            stem,
            (be::ops::buf(target.array()), target.layout()),
            &bufs,
            p,
        );
        if acc {
            crate::autograd::no_grad(|| dst.add_(&target));
        }
    }

    pub(super) fn forward<U: Unary>(x: &Tensor, p: [f64; 2], out: &mut Out<'_>) {
        let name = format!("un_{}", U::KERNEL);
        launch(U::KERNEL, module::<U>, &name, out, &[(x, x.layout())], p);
    }

    pub(super) fn backward<U: Unary>(g: &Tensor, s: &Tensor, p: [f64; 2], out: &mut Out<'_>) {
        let name = format!("un_{}_bwd", U::KERNEL);
        let lg = g.layout().broadcast_to(s.shape());
        launch(
            U::KERNEL,
            module::<U>,
            &name,
            out,
            &[(g, &lg), (s, s.layout())],
            p,
        );
    }
}
