//! Elementwise functions of two broadcast tensors, each defined once by its
//! formula and the formulas of its two partial derivatives over [`Math`]
//! (or, for `+` and `-`, by the signs with which `g` passes through): the
//! CPU kernels instantiate them for f32 and f64 and the CUDA kernels trace
//! them into PTX; [`binary_op!`](crate::binary_op) gives each its [`Op`](crate::autograd::Op).
//!
//! Operands are promoted as PyTorch does (`result_type`); integer operands
//! compute exactly in i64 (`int`) and are not differentiable.

mod arith;
mod extremum;
mod pow;

pub use arith::{Add, Div, Mul, Sub};
pub use extremum::{Maximum, Minimum};
pub use pow::{pow_scalar_backward, Pow, PowSaved, PowTensor};

use crate::autograd::{GradSlot, Out, Spec};
use crate::backend::{cpu, Host};
use crate::error::Result;
use crate::ops::{broadcast_pair, result_type, sum_to};
use crate::tensor::{broadcast_shapes, same_shape, DType, Math, Tensor};

/// An elementwise function of two tensors with broadcasting.
pub trait Binary: Send + Sync + 'static {
    /// The tape node's name.
    const GRAD_FN: &'static str;
    /// The op's name in messages and GPU kernels (unique among all ops).
    const KERNEL: &'static str;
    /// For `+` and `-`: each input's gradient is `g` times this sign (summed
    /// to its shape), with no formula run and nothing saved.
    const SIGNS: Option<[f64; 2]> = None;
    /// Whether integer operands compute in f32 (true division).
    const FLOAT: bool = false;
    /// c = f(a, b) on floats.
    fn f<M: Math>(a: M, b: M) -> M;
    /// The same on integers (wrapping, as PyTorch's int64 arithmetic).
    fn int(a: i64, b: i64) -> i64;
    /// dL/da from `g` and both operands.
    fn da<M: Math>(g: M, a: M, b: M) -> M;
    /// dL/db from `g` and both operands.
    fn db<M: Math>(g: M, a: M, b: M) -> M;
}

/// Implements [`Op`](crate::ops::Op) for [`Binary`] types.
#[macro_export]
macro_rules! binary_op {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::ops::Op for $t {
            const NAME: &'static str = <$t as $crate::ops::binary::Binary>::GRAD_FN;
            const OP: &'static str = <$t as $crate::ops::binary::Binary>::KERNEL;
            type Saved = $crate::ops::binary::SavedOperands;
            fn spec(&self, x: &[&$crate::Tensor]) -> $crate::Result<$crate::ops::Spec> {
                $crate::ops::binary::spec::<$t>(x)
            }
            fn forward(&self, x: &[&$crate::Tensor], out: &mut $crate::ops::Out<'_>) {
                $crate::ops::binary::forward::<$t>(x, out)
            }
            fn save(
                &self,
                x: &[&$crate::Tensor],
                _y: &$crate::Tensor,
                need: &[bool],
            ) -> $crate::ops::binary::SavedOperands {
                $crate::ops::binary::save::<$t>(x, need)
            }
            fn backward(
                &self,
                s: &$crate::ops::binary::SavedOperands,
                g: &$crate::Tensor,
                grads: &mut [$crate::ops::GradSlot<'_>],
            ) {
                $crate::ops::binary::backward::<$t>(s, g, grads)
            }
        }
    )*};
}

/// What a binary op's backward reads: both operands (when a formula needs
/// them) and their shapes (to sum broadcast gradients back).
#[doc(hidden)]
pub struct SavedOperands {
    a: Option<Tensor>,
    b: Option<Tensor>,
    /// The operands' shapes when one was broadcast (`None`: both have the
    /// output's shape, and saving costs no allocation).
    shapes: Option<[Vec<usize>; 2]>,
}

impl SavedOperands {
    fn shape(&self, i: usize, g: &Tensor) -> Vec<usize> {
        match &self.shapes {
            Some(s) => s[i].clone(),
            None => g.shape().to_vec(),
        }
    }
    fn broadcast(&self, i: usize, g: &Tensor) -> bool {
        self.shapes
            .as_ref()
            .is_some_and(|s| !same_shape(&s[i], g.shape()))
    }
}

impl crate::autograd::Saved for SavedOperands {
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        self.a.visit_mut(f);
        self.b.visit_mut(f);
    }
}

/// The broadcast shape, promoted dtype and device of `x[0] op x[1]`.
#[doc(hidden)]
pub fn spec<B: Binary>(x: &[&Tensor]) -> Result<Spec> {
    let (a, b) = (x[0], x[1]);
    crate::ops::same_device(B::KERNEL, a, b)?;
    let shape = if same_shape(a.shape(), b.shape()) {
        crate::autograd::Shape::from_slice(a.shape())
    } else {
        broadcast_shapes(B::KERNEL, a.shape(), b.shape())?.into()
    };
    let mut dtype = result_type(a, b);
    if B::FLOAT && !dtype.is_float() {
        dtype = DType::F32;
    } else if dtype == DType::Bool {
        dtype = DType::I64;
    }
    Ok(Spec {
        shape,
        dtype,
        device: crate::ops::op_device(a, b),
    })
}

/// `out <- f(a, b)` with broadcasting.
#[doc(hidden)]
pub fn forward<B: Binary>(x: &[&Tensor], out: &mut Out<'_>) {
    let dt = out.spec().dtype;
    let direct = same_shape(x[0].shape(), x[1].shape())
        && x[0].dtype() == dt
        && x[1].dtype() == dt
        && x[0].device() == x[1].device();
    let owned;
    let (a, la, b, lb) = if direct {
        // Same shape, dtype and device (the usual case): no copies, no allocation.
        (x[0], x[0].layout(), x[1], x[1].layout())
    } else {
        owned = crate::error::OrPanic::or_panic(broadcast_pair(B::KERNEL, x[0], x[1], dt));
        let (_, a, la, b, lb) = &owned;
        (a, la, b, lb)
    };
    #[cfg(feature = "cuda")]
    if out.spec().device.is_cuda() {
        return cuda::forward::<B>(a, la, b, lb, out);
    }
    match dt {
        DType::F32 => out.host::<f32, 2>([a, b], |[ga, gb], o| {
            cpu::zip_to(B::KERNEL, o, f32::of(ga), la, f32::of(gb), lb, |x, y| {
                B::f(x, y)
            })
        }),
        DType::F64 => out.host::<f64, 2>([a, b], |[ga, gb], o| {
            cpu::zip_to(B::KERNEL, o, f64::of(ga), la, f64::of(gb), lb, |x, y| {
                B::f(x, y)
            })
        }),
        DType::I64 => out.host::<i64, 2>([a, b], |[ga, gb], o| {
            cpu::zip_to(B::KERNEL, o, i64::of(ga), la, i64::of(gb), lb, |x, y| {
                B::int(x, y)
            })
        }),
        DType::Bool => unreachable!("bool operands compute in i64"),
    }
}

#[doc(hidden)]
pub fn save<B: Binary>(x: &[&Tensor], need: &[bool]) -> SavedOperands {
    let formulas = B::SIGNS.is_none() && need.iter().any(|&n| n);
    let same = same_shape(x[0].shape(), x[1].shape());
    SavedOperands {
        a: formulas.then(|| x[0].clone()),
        b: formulas.then(|| x[1].clone()),
        shapes: (!same).then(|| [x[0].shape().to_vec(), x[1].shape().to_vec()]),
    }
}

#[doc(hidden)]
pub fn backward<B: Binary>(s: &SavedOperands, g: &Tensor, grads: &mut [GradSlot<'_>]) {
    if let Some(signs) = B::SIGNS {
        for (i, slot) in grads.iter_mut().enumerate() {
            if !slot.needed() {
                continue;
            }
            let gi = if s.broadcast(i, g) {
                sum_to(g, &s.shape(i, g))
            } else {
                g.clone()
            };
            if signs[i] == 1.0 {
                slot.add(gi);
            } else {
                let sign = crate::ops::unary::MulScalar(signs[i]);
                slot.add_into(Spec::like(&gi), |out| {
                    crate::ops::unary::forward(&sign, &gi, out)
                });
            }
        }
        return;
    }
    let (a, b) = (
        s.a.as_ref().expect("saved when recording"),
        s.b.as_ref().expect("saved when recording"),
    );
    for (i, slot) in grads.iter_mut().enumerate() {
        if !slot.needed() {
            continue;
        }
        let dtype = if g.dtype().is_float() {
            g.dtype()
        } else {
            DType::F32
        };
        let full = Spec {
            shape: crate::autograd::Shape::from_slice(g.shape()),
            dtype,
            device: g.device(),
        };
        if !s.broadcast(i, g) {
            slot.add_into(full, |out| partial::<B>(i, g, a, b, out));
        } else {
            // A broadcast operand: the full-size partial, summed back to its shape.
            let mut out = Out::fresh(full);
            partial::<B>(i, g, a, b, &mut out);
            slot.add(sum_to(&out.finish(), &s.shape(i, g)));
        }
    }
}

/// Both operands' gradients as new tensors (`vjp::mul`, `vjp::div`).
pub(crate) fn grads<B: Binary>(
    _op: &B,
    g: &Tensor,
    a: &Tensor,
    b: &Tensor,
    need: [bool; 2],
) -> (Option<Tensor>, Option<Tensor>) {
    let saved = save::<B>(&[a, b], &need);
    let (mut ga, mut gb) = (None, None);
    {
        let mut slots = [
            GradSlot::new(&mut ga, need[0]),
            GradSlot::new(&mut gb, need[1]),
        ];
        backward::<B>(&saved, g, &mut slots);
    }
    (ga, gb)
}

/// `out <- da(g, a, b)` (`which` 0) or `db` (1), operands broadcast to g's shape.
fn partial<B: Binary>(which: usize, g: &Tensor, a: &Tensor, b: &Tensor, out: &mut Out<'_>) {
    let dt = out.spec().dtype;
    let shape = g.shape();
    let cast =
        |t: &Tensor| crate::ops::elementwise::cast(&crate::ops::on_device(t, out_device(g)), dt);
    let (g, a, b) = (cast(g), cast(a), cast(b));
    fn view<'t>(t: &'t Tensor, shape: &[usize]) -> std::borrow::Cow<'t, crate::tensor::Layout> {
        if same_shape(t.shape(), shape) {
            std::borrow::Cow::Borrowed(t.layout())
        } else {
            std::borrow::Cow::Owned(t.layout().broadcast_to(shape))
        }
    }
    let (lg, la, lb) = (g.layout(), view(&a, shape), view(&b, shape));
    let (la, lb) = (&*la, &*lb);
    #[cfg(feature = "cuda")]
    if out.spec().device.is_cuda() {
        return cuda::partial::<B>(which, (&g, lg), (&a, la), (&b, lb), out);
    }
    macro_rules! run {
        ($t:ty) => {
            out.host::<$t, 3>([&g, &a, &b], |[rg, ra, rb], o| {
                let (gv, av, bv) = (<$t>::of(rg), <$t>::of(ra), <$t>::of(rb));
                if which == 0 {
                    cpu::zip3_to(B::KERNEL, o, gv, lg, av, la, bv, lb, |g, a, b| {
                        B::da(g, a, b)
                    })
                } else {
                    cpu::zip3_to(B::KERNEL, o, gv, lg, av, la, bv, lb, |g, a, b| {
                        B::db(g, a, b)
                    })
                }
            })
        };
    }
    match dt {
        DType::F32 => run!(f32),
        DType::F64 => run!(f64),
        d => unreachable!("gradients are float, not {d}"),
    }
}

fn out_device(g: &Tensor) -> crate::Device {
    g.device()
}

#[cfg(feature = "cuda")]
pub(crate) mod cuda {
    //! The GPU kernels of a [`Binary`]: traced from the same formulas.

    use super::{Binary, Out};
    use crate::backend::cuda::{trace, ElementwiseModule};
    use crate::tensor::{DType, Layout, Tensor};

    /// `bin_<kernel>_<dtype>` (a, b), `bin_<kernel>_da_<dtype>` and `_db_`
    /// (g, a, b), each contiguous and strided.
    pub(crate) fn module<B: Binary>() -> ElementwiseModule {
        let mut m = ElementwiseModule::new(B::KERNEL);
        for d in [DType::F32, DType::F64] {
            m.add(
                &format!("bin_{}", B::KERNEL),
                d,
                trace::body::<2>(d, |[a, b], _| B::f(a, b)),
            );
            m.add(
                &format!("bin_{}_da", B::KERNEL),
                d,
                trace::body::<3>(d, |[g, a, b], _| B::da(g, a, b)),
            );
            m.add(
                &format!("bin_{}_db", B::KERNEL),
                d,
                trace::body::<3>(d, |[g, a, b], _| B::db(g, a, b)),
            );
        }
        m
    }

    pub(super) fn forward<B: Binary>(
        a: &Tensor,
        la: &Layout,
        b: &Tensor,
        lb: &Layout,
        out: &mut Out<'_>,
    ) {
        if !out.spec().dtype.is_float() {
            // Integer arithmetic: the backend's built-in i64 kernels.
            let t = crate::backend::cuda::ops::ew_int(B::KERNEL, a.array(), la, b.array(), lb);
            return out.set(Tensor::from_array(t));
        }
        crate::ops::unary::cuda::launch(
            B::KERNEL,
            module::<B>,
            &format!("bin_{}", B::KERNEL),
            out,
            &[(a, la), (b, lb)],
            [0.0; 2],
        );
    }

    pub(super) fn partial<B: Binary>(
        which: usize,
        g: (&Tensor, &Layout),
        a: (&Tensor, &Layout),
        b: (&Tensor, &Layout),
        out: &mut Out<'_>,
    ) {
        let name = format!("bin_{}_{}", B::KERNEL, if which == 0 { "da" } else { "db" });
        crate::ops::unary::cuda::launch(B::KERNEL, module::<B>, &name, out, &[g, a, b], [0.0; 2]);
    }
}
