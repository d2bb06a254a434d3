//! `where_cond(cond, a, b)`: `cond ? a : b` elementwise with all three
//! broadcast (`torch.where`), differentiable in `a` and `b`.

use crate::autograd::{GradSlot, Op, Out, Spec};
#[cfg(feature = "cuda")]
use crate::backend::Ew;
use crate::backend::{cpu, Buffer};
use crate::error::{OrPanic, Result};
use crate::ops::elementwise::cast;
use crate::ops::{same_device, sum_to};
use crate::tensor::{broadcast_shapes, DType, Tensor};

/// `torch.where(cond, a, b)`: the inputs are `[cond, a, b]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Where;

impl Op for Where {
    const NAME: &'static str = "WhereBackward";
    const OP: &'static str = "where";
    /// The condition and the shapes of `a` and `b`.
    type Saved = (Tensor, Vec<usize>, Vec<usize>);

    fn spec(&self, x: &[&Tensor]) -> Result<Spec> {
        let (cond, a, b) = (x[0], x[1], x[2]);
        same_device("where", cond, a)?;
        same_device("where", a, b)?;
        let shape = broadcast_shapes("where", a.shape(), b.shape())?;
        let shape = broadcast_shapes("where", cond.shape(), &shape)?;
        Ok(Spec {
            shape: shape.into(),
            dtype: crate::ops::result_type(a, b),
            device: x
                .iter()
                .map(|t| t.device())
                .find(|d| d.is_cuda())
                .unwrap_or_default(),
        })
    }

    fn forward(&self, x: &[&Tensor], out: &mut Out<'_>) {
        out.set(select(x[0], x[1], x[2], out.spec()))
    }

    fn save(&self, x: &[&Tensor], _: &Tensor, _: &[bool]) -> Self::Saved {
        (x[0].clone(), x[1].shape().to_vec(), x[2].shape().to_vec())
    }

    /// `g` where the condition holds to `a`, elsewhere to `b`, each summed
    /// back to its shape; the condition gets none.
    fn backward(
        &self,
        (cond, a_shape, b_shape): &Self::Saved,
        g: &Tensor,
        grads: &mut [GradSlot<'_>],
    ) {
        let zero = g.zeros_like();
        if grads[1].needed() {
            grads[1].add(sum_to(&Tensor::where_cond(cond, g, &zero), a_shape));
        }
        if grads[2].needed() {
            grads[2].add(sum_to(&Tensor::where_cond(cond, &zero, g), b_shape));
        }
    }
}

/// The selection itself, into a new tensor of `spec`.
fn select(cond: &Tensor, a: &Tensor, b: &Tensor, spec: &Spec) -> Tensor {
    let (shape, dt, dev) = (spec.shape.as_slice(), spec.dtype, spec.device);
    let (ca, cb, cc) = (
        cast(&crate::ops::on_device(a, dev), dt),
        cast(&crate::ops::on_device(b, dev), dt),
        cast(&crate::ops::on_device(cond, dev), DType::Bool),
    );
    let (la, lb, lc) = (
        ca.layout().broadcast_to(shape),
        cb.layout().broadcast_to(shape),
        cc.layout().broadcast_to(shape),
    );
    #[cfg(feature = "cuda")]
    if dev.is_cuda() {
        let out = crate::backend::cuda::ops::ew_new(
            Ew::Where,
            dt,
            shape,
            &[(cc.array(), &lc), (ca.array(), &la), (cb.array(), &lb)],
            0.0,
            0.0,
        );
        return Tensor::from_array(out);
    }
    let buf = {
        // Copies avoid locking one storage twice when operands alias.
        let ca = if ca.shares_storage(&cc) {
            ca.clone_data_nograd()
        } else {
            ca
        };
        let cb = if cb.shares_storage(&cc) || cb.shares_storage(&ca) {
            cb.clone_data_nograd()
        } else {
            cb
        };
        // In the global lock order (the three storages are distinct now).
        let ([gc, ga, gb], []) = crate::backend::lock_storages(
            [
                Some(&**cc.storage()),
                Some(ca.storage()),
                Some(cb.storage()),
            ],
            [],
        );
        let locked = "distinct storages are each locked";
        let (gc, ga, gb) = (gc.expect(locked), ga.expect(locked), gb.expect(locked));
        let Buffer::Bool(c) = &*gc else {
            unreachable!("cond was cast to bool")
        };
        macro_rules! sel {
            ($x:expr, $y:expr, $v:ident) => {
                Buffer::$v(
                    cpu::zip3(
                        "where",
                        c,
                        &lc,
                        $x,
                        &la,
                        $y,
                        &lb,
                        |k, p, q| {
                            if k {
                                p
                            } else {
                                q
                            }
                        },
                    )
                    .or_panic(),
                )
            };
        }
        match (&*ga, &*gb) {
            (Buffer::F32(x), Buffer::F32(y)) => sel!(x, y, F32),
            (Buffer::F64(x), Buffer::F64(y)) => sel!(x, y, F64),
            (Buffer::I64(x), Buffer::I64(y)) => sel!(x, y, I64),
            (Buffer::Bool(x), Buffer::Bool(y)) => sel!(x, y, Bool),
            _ => unreachable!("operands were cast to one dtype"),
        }
    };
    Tensor::from_buffer(buf, shape, dev)
}
