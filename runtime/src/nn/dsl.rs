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

use crate::ops::into::{self, Act};

/// The tensor in a slot the generated `forward_train_ws` filled.
#[inline]
#[track_caller]
pub fn get(slot: &Option<Tensor>) -> &Tensor {
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

fn act_alloc(act: Act, x: &Tensor) -> Tensor {
    crate::no_grad(|| match act {
        Act::Relu => x.relu(),
        Act::Sigmoid => x.sigmoid(),
        Act::Tanh => x.tanh(),
    })
}

fn act_ws<'s>(act: Act, slot: &'s mut Option<Tensor>, x: &Tensor) -> &'s Tensor {
    if !float_cpu(x) {
        return store(slot, act_alloc(act, x));
    }
    let out = into::slot(slot, x.shape(), x.dtype(), x.device(), &[x]);
    into::act_into(act, out, x);
    out
}

/// `relu(x)` into `slot`.
pub fn relu_ws<'s>(slot: &'s mut Option<Tensor>, x: &Tensor) -> &'s Tensor {
    act_ws(Act::Relu, slot, x)
}

/// `sigmoid(x)` into `slot`.
pub fn sigmoid_ws<'s>(slot: &'s mut Option<Tensor>, x: &Tensor) -> &'s Tensor {
    act_ws(Act::Sigmoid, slot, x)
}

/// `tanh(x)` into `slot`.
pub fn tanh_ws<'s>(slot: &'s mut Option<Tensor>, x: &Tensor) -> &'s Tensor {
    act_ws(Act::Tanh, slot, x)
}

/// `a + b` into `slot` when the shapes and dtypes agree (else the
/// broadcasting op, allocating).
pub fn add_ws<'s>(slot: &'s mut Option<Tensor>, a: &Tensor, b: &Tensor) -> &'s Tensor {
    if a.shape() != b.shape() || a.dtype() != b.dtype() || !float_cpu(a) || !float_cpu(b) {
        return store(slot, crate::no_grad(|| a + b));
    }
    let out = into::slot(slot, a.shape(), a.dtype(), a.device(), &[a, b]);
    into::sum2_into(out, a, b);
    out
}

/// Adds a gradient contribution `g` into the adjoint `d` of a value whose
/// sum buffer is `buf`: the first contribution is kept as a handle (no
/// copy); a second one sums into `buf` in place.
pub fn acc_ws(d: &mut Option<Tensor>, buf: &mut Option<Tensor>, g: Option<&Tensor>) {
    let Some(g) = g else { return };
    match d {
        None => *d = Some(g.clone()),
        Some(prev) => {
            let fits = prev.shape() == g.shape()
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
                let b = into::slot(buf, g.shape(), g.dtype(), g.device(), &[prev, g]);
                into::copy_into(b, prev);
            }
            let b = get(buf);
            into::add_into(b, g, true);
            *d = Some(b.clone());
        }
    }
}

/// The activation's input gradient `act'(y)·g` added into the adjoint `d`
/// (sum buffer `buf`), computed straight into `buf`.
fn acc_act(act: Act, d: &mut Option<Tensor>, buf: &mut Option<Tensor>, y: &Tensor, g: &Tensor) {
    let ok = y.shape() == g.shape() && y.dtype() == g.dtype() && float_cpu(y) && float_cpu(g);
    if !ok {
        let r = crate::no_grad(|| match act {
            Act::Relu => crate::vjp::relu(y, g),
            Act::Sigmoid => crate::vjp::sigmoid(y, g),
            Act::Tanh => crate::vjp::tanh(y, g),
        });
        return acc_ws(d, buf, Some(&r));
    }
    let owned = match (d.as_ref(), buf.as_ref()) {
        (Some(prev), Some(b)) => b.shares_storage(prev),
        _ => false,
    };
    match d.take() {
        None => {
            let b = into::slot(buf, y.shape(), y.dtype(), y.device(), &[y, g]);
            into::act_backward_into(act, b, y, g, false);
        }
        Some(prev) if owned => {
            into::act_backward_into(act, get(buf), y, g, true);
            drop(prev);
        }
        Some(prev) => {
            let b = into::slot(buf, y.shape(), y.dtype(), y.device(), &[y, g, &prev]);
            into::copy_into(b, &prev);
            into::act_backward_into(act, b, y, g, true);
        }
    }
    *d = buf.clone();
}

/// relu's rule into the adjoint `d` (see [`acc_ws`]).
pub fn acc_relu(d: &mut Option<Tensor>, buf: &mut Option<Tensor>, y: &Tensor, g: &Tensor) {
    acc_act(Act::Relu, d, buf, y, g)
}

/// sigmoid's rule into the adjoint `d` (see [`acc_ws`]).
pub fn acc_sigmoid(d: &mut Option<Tensor>, buf: &mut Option<Tensor>, y: &Tensor, g: &Tensor) {
    acc_act(Act::Sigmoid, d, buf, y, g)
}

/// tanh's rule into the adjoint `d` (see [`acc_ws`]).
pub fn acc_tanh(d: &mut Option<Tensor>, buf: &mut Option<Tensor>, y: &Tensor, g: &Tensor) {
    acc_act(Act::Tanh, d, buf, y, g)
}

/// Plain SGD in one pass, without allocating: `p -= lr · p.grad()` for each
/// parameter that has a gradient, then that gradient is zeroed in place.
/// `optim::SGD`'s `step` followed by `zero_grad_in_place` does the same
/// (in two passes) and allocates nothing either.
pub fn sgd_step(params: &[Tensor], lr: f64) {
    for p in params {
        if let Some(g) = p.grad() {
            into::sgd_update_(p, &g, lr, true);
        }
    }
}
