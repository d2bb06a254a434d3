//! Support for the code `network!` and `#[derive(Module)]` generate; not a
//! user-facing API.

use crate::tensor::Tensor;

/// Adds an adjoint contribution into a slot: where a value fans out, its
/// gradients add.
#[inline]
pub fn acc(slot: &mut Option<Tensor>, g: Option<Tensor>) {
    if let Some(g) = g {
        *slot = Some(match slot.take() {
            Some(prev) => &prev + &g,
            None => g,
        });
    }
}

// ----- the buffer-reusing path (`TrainStep`): workspace slots and the ops
// `network!` runs on them. Each op writes into the buffer in its slot when it
// fits (allocating one on the first step or after a shape change), and falls
// back to the allocating op otherwise.

use crate::autograd::Out;
use crate::backend::Device;
use crate::tensor::DType;

/// The buffer kept in `slot` when it fits (contiguous, of `shape`, `dtype`,
/// `device`) and shares no storage with any of `inputs`; otherwise a new
/// zeroed one is stored there first (the first step, a new batch size).
pub(crate) fn slot<'s>(
    slot: &'s mut Option<Tensor>,
    shape: &[usize],
    dtype: DType,
    device: Device,
    inputs: &[&Tensor],
) -> &'s Tensor {
    let spec = crate::autograd::Spec {
        shape: crate::autograd::Shape::from_slice(shape),
        dtype,
        device,
    };
    // The same test `forward_into` applies to an op's workspace slot.
    let reuse = slot
        .as_ref()
        .is_some_and(|t| spec.fits(t) && inputs.iter().all(|i| !i.shares_storage(t)));
    if !reuse {
        let opts = crate::tensor::TensorOptions::new()
            .dtype(dtype)
            .device(&device);
        *slot = Some(crate::autograd::no_grad(|| {
            Tensor::zeros_opts(shape, &opts)
        }));
    }
    slot.as_ref().expect("the slot was filled above")
}

/// The tensor in a slot the generated `forward_train_ws` filled.
#[inline]
#[track_caller]
pub fn get(slot: &Option<Tensor>) -> &Tensor {
    slot.as_ref()
        .expect("backward_ws: the workspace is empty; call forward_train_ws first")
}

/// What an op kept for backward in its workspace slot.
#[inline]
#[track_caller]
pub fn get_saved<S>(slot: &Option<S>) -> &S {
    slot.as_ref()
        .expect("backward_ws: the workspace is empty; call forward_train_ws first")
}

/// Keeps a handle to `t` in `slot` (no copy) and returns it.
#[inline]
pub fn keep<'s>(slot: &'s mut Option<Tensor>, t: &Tensor) -> &'s Tensor {
    slot.insert(t.clone())
}

/// Stores an allocating op's result in `slot` and returns it.
#[inline]
pub fn store(slot: &mut Option<Tensor>, t: Tensor) -> &Tensor {
    slot.insert(t)
}

fn float_cpu(t: &Tensor) -> bool {
    t.dtype().is_float() && t.device().is_cpu()
}

/// Adds a gradient contribution `g` into the adjoint `d` of a value whose
/// sum buffer is `buf`: the first contribution is kept as a handle (no
/// copy); a second one sums into `buf` in place.
pub fn acc_ws(d: &mut Option<Tensor>, buf: &mut Option<Tensor>, g: Option<&Tensor>) {
    let Some(g) = g else { return };
    match d {
        None => *d = Some(g.clone()),
        Some(prev) => {
            let fits = crate::tensor::same_shape(prev.shape(), g.shape())
                && prev.dtype() == g.dtype()
                && float_cpu(g)
                && float_cpu(prev);
            if !fits {
                let sum = crate::no_grad(|| &*prev + g);
                *d = Some(sum);
                return;
            }
            let owned = buf.as_ref().is_some_and(|b| b.shares_storage(prev));
            if !owned {
                let b = slot(buf, g.shape(), g.dtype(), g.device(), &[prev, g]);
                Out::into(b, false).copy_from(prev);
            }
            let b = get(buf);
            Out::into(b, true).copy_from(g);
            *d = Some(b.clone());
        }
    }
}

/// Plain SGD without allocating: `p -= lr · p.grad()` for each parameter
/// that has a gradient, then that gradient is zeroed in place, with the
/// in-place kernels (`add_scaled_`, `zero_`) on any device. `optim::SGD`'s
/// `step` followed by `zero_grad_in_place` does the same.
pub fn sgd_step(params: &[Tensor], lr: f64) {
    crate::autograd::no_grad(|| {
        for p in params {
            if let Some(g) = p.grad() {
                p.add_scaled_(&g, -lr);
                g.zero_();
            }
        }
    })
}

/// Runs `f` on the elements of a contiguous host tensor (a fused
/// workspace's view of a buffer it keeps).
pub(crate) fn read_host<T: crate::backend::Host, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> R {
    let guard = t.storage().read();
    f(&T::of(&guard)[t.layout().offset..][..t.numel()])
}

/// Runs `f` on the elements of a contiguous host tensor, writable.
pub(crate) fn write_host<T: crate::backend::Host, R>(
    t: &Tensor,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let mut guard = t.storage().write();
    let off = t.layout().offset;
    f(&mut T::of_mut(&mut guard)[off..][..t.numel()])
}

/// `len` elements in `v`, reusing its capacity (zeroed only when the
/// length changes).
pub(crate) fn fit<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() != len {
        v.clear();
        v.resize(len, T::default());
    }
}
