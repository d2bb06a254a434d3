//! The per-element updates: one function per optimizer, one pass over
//! contiguous slices of the parameter, its gradient and its state buffers,
//! generic over f32 and f64.
//!
//! This file is the whole numerical content of the optimizers; everything
//! else is bookkeeping. The GPU's kernel for each optimizer
//! (`backend/cuda/optim.rs`) takes the same hyperparameter struct
//! (`backend/step.rs`).
//!
//! The arithmetic follows PyTorch's single-tensor CPU implementation op by op
//! (`lerp` for the first moment, `addcmul`/`addcdiv` evaluated as
//! `self + value * a * b` / `self + value * a / b`, hyperparameters combined
//! in f64 and then rounded to the element type), so f64 results agree with
//! PyTorch to rounding.
//!
//! Each kernel turns its boolean options into const generic arguments of
//! its loop (`with_flags!`), so the loop that runs has no branches on
//! options, and runs it compiled for AVX2 when the CPU has it.

use crate::backend::cpu::vectorized;
pub(crate) use crate::backend::step::{AdagradParams, AdamParams, RmspropParams, SgdParams};
use crate::tensor::Float;

/// Calls `$f::<F, flags..>(args..)`, each runtime bool of the second list
/// becoming a `true`/`false` const generic argument.
macro_rules! with_flags {
    ($f:ident [$($done:tt),*] [] ($($arg:expr),*)) => {
        $f::<F, $($done),*>($($arg),*)
    };
    ($f:ident [$($done:tt),*] [$b:expr $(, $rest:expr)*] ($($arg:expr),*)) => {
        if $b {
            with_flags!($f [$($done,)* true] [$($rest),*] ($($arg),*))
        } else {
            with_flags!($f [$($done,)* false] [$($rest),*] ($($arg),*))
        }
    };
}

#[inline(always)]
fn c<F: Float>(x: f64) -> F {
    F::from_f64(x)
}

/// PyTorch's `torch.lerp(a, b, w)` as its CPU kernel evaluates it.
#[inline(always)]
fn lerp<F: Float>(a: F, b: F, w: F) -> F {
    if w.abs() < c(0.5) {
        a + w * (b - a)
    } else {
        b - (b - a) * (F::ONE - w)
    }
}

/// SGD: `buf` is empty when momentum is 0.
///
/// ```text
/// d = ±g (+ weight_decay * p)
/// buf = d on the first step, else momentum * buf + (1 - dampening) * d
/// d = d + momentum * buf (nesterov) or buf
/// p = p - lr * d
/// ```
pub(crate) fn sgd<F: Float>(p: &mut [F], g: &[F], buf: &mut [F], h: &SgdParams) {
    let k = [
        c::<F>(-h.lr),
        c(h.weight_decay),
        c(h.momentum),
        c(1.0 - h.dampening),
    ];
    let momentum = h.momentum != 0.0;
    vectorized(|| {
        with_flags!(sgd_loop [] [h.maximize, h.weight_decay != 0.0, momentum, h.first, h.nesterov]
            (p, g, buf, k))
    })
}

#[inline(always)]
fn sgd_loop<
    F: Float,
    const MAXIMIZE: bool,
    const DECAY: bool,
    const MOMENTUM: bool,
    const FIRST: bool,
    const NESTEROV: bool,
>(
    p: &mut [F],
    g: &[F],
    buf: &mut [F],
    [neg_lr, wd, mom, damp]: [F; 4],
) {
    let n = p.len();
    let g = &g[..n];
    let buf = if MOMENTUM { &mut buf[..n] } else { buf };
    for i in 0..n {
        let mut d = if MAXIMIZE { -g[i] } else { g[i] };
        if DECAY {
            d += wd * p[i];
        }
        if MOMENTUM {
            let b = if FIRST { d } else { buf[i] * mom + damp * d };
            buf[i] = b;
            d = if NESTEROV { d + mom * b } else { b };
        }
        p[i] += neg_lr * d;
    }
}

/// Adam / AdamW: `vmax` is empty unless amsgrad.
///
/// ```text
/// d = ±g; AdamW: p = p * (1 - lr * weight_decay); Adam: d = d + weight_decay * p
/// m = lerp(m, d, 1 - beta1);  v = beta2 * v + (1 - beta2) * d * d
/// vmax = max(vmax, v) (amsgrad)
/// p = p - lr / (1 - beta1^t) * m / (sqrt(v or vmax) / sqrt(1 - beta2^t) + eps)
/// ```
pub(crate) fn adam<F: Float>(
    p: &mut [F],
    g: &[F],
    m: &mut [F],
    v: &mut [F],
    vmax: &mut [F],
    h: &AdamParams,
) {
    let t = h.step as f64;
    let bias_correction1 = 1.0 - h.beta1.powf(t);
    let bias_correction2 = 1.0 - h.beta2.powf(t);
    let k = [
        c::<F>(-(h.lr / bias_correction1)),
        c(bias_correction2.powf(0.5)),
        c(h.eps),
        c(1.0 - h.beta1),
        c(h.beta2),
        c(1.0 - h.beta2),
        c(h.weight_decay),
        c(1.0 - h.lr * h.weight_decay),
    ];
    let decay = h.weight_decay != 0.0;
    vectorized(|| {
        with_flags!(adam_loop [] [h.maximize, decay && !h.decoupled, decay && h.decoupled, h.amsgrad]
            (p, g, m, v, vmax, k))
    })
}

#[inline(always)]
fn adam_loop<
    F: Float,
    const MAXIMIZE: bool,
    const L2: bool,
    const DECOUPLED: bool,
    const AMSGRAD: bool,
>(
    p: &mut [F],
    g: &[F],
    m: &mut [F],
    v: &mut [F],
    vmax: &mut [F],
    [neg_step_size, bc2_sqrt, eps, w1, beta2, one_minus_beta2, wd, shrink]: [F; 8],
) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    let vmax = if AMSGRAD { &mut vmax[..n] } else { vmax };
    for i in 0..n {
        let mut d = if MAXIMIZE { -g[i] } else { g[i] };
        if DECOUPLED {
            p[i] = p[i] * shrink;
        }
        if L2 {
            d += wd * p[i];
        }
        let mi = lerp(m[i], d, w1);
        m[i] = mi;
        let vi = v[i] * beta2 + one_minus_beta2 * d * d;
        v[i] = vi;
        let second = if AMSGRAD {
            let x = vmax[i].max_nan(vi);
            vmax[i] = x;
            x
        } else {
            vi
        };
        let denom = second.sqrt() / bc2_sqrt + eps;
        p[i] += neg_step_size * mi / denom;
    }
}

/// RMSprop: `buf` is empty unless momentum > 0, `grad_avg` unless centered.
///
/// ```text
/// d = ±g (+ weight_decay * p)
/// sq = alpha * sq + (1 - alpha) * d * d
/// avg = sqrt(sq) + eps, or centered: ga = lerp(ga, d, 1 - alpha), avg = sqrt(sq - ga * ga) + eps
/// momentum: buf = momentum * buf + d / avg, p = p - lr * buf; else p = p - lr * d / avg
/// ```
pub(crate) fn rmsprop<F: Float>(
    p: &mut [F],
    g: &[F],
    square_avg: &mut [F],
    buf: &mut [F],
    grad_avg: &mut [F],
    h: &RmspropParams,
) {
    let k = [
        c::<F>(-h.lr),
        c(h.alpha),
        c(1.0 - h.alpha),
        c(h.eps),
        c(h.weight_decay),
        c(h.momentum),
    ];
    vectorized(|| {
        with_flags!(rmsprop_loop [] [h.maximize, h.weight_decay != 0.0, h.centered, h.momentum > 0.0]
            (p, g, square_avg, buf, grad_avg, k))
    })
}

#[inline(always)]
fn rmsprop_loop<
    F: Float,
    const MAXIMIZE: bool,
    const DECAY: bool,
    const CENTERED: bool,
    const MOMENTUM: bool,
>(
    p: &mut [F],
    g: &[F],
    square_avg: &mut [F],
    buf: &mut [F],
    grad_avg: &mut [F],
    [neg_lr, alpha, one_minus_alpha, eps, wd, mom]: [F; 6],
) {
    let n = p.len();
    let (g, square_avg) = (&g[..n], &mut square_avg[..n]);
    let buf = if MOMENTUM { &mut buf[..n] } else { buf };
    let grad_avg = if CENTERED {
        &mut grad_avg[..n]
    } else {
        grad_avg
    };
    let minus_one = c::<F>(-1.0);
    for i in 0..n {
        let mut d = if MAXIMIZE { -g[i] } else { g[i] };
        if DECAY {
            d += wd * p[i];
        }
        let sq = square_avg[i] * alpha + one_minus_alpha * d * d;
        square_avg[i] = sq;
        let avg = if CENTERED {
            let ga = lerp(grad_avg[i], d, one_minus_alpha);
            grad_avg[i] = ga;
            (sq + minus_one * ga * ga).sqrt()
        } else {
            sq.sqrt()
        } + eps;
        if MOMENTUM {
            let b = buf[i] * mom + d / avg;
            buf[i] = b;
            p[i] += neg_lr * b;
        } else {
            p[i] += neg_lr * d / avg;
        }
    }
}

/// Adagrad.
///
/// ```text
/// d = ±g (+ weight_decay * p)
/// sum = sum + d * d
/// p = p - lr / (1 + (t - 1) * lr_decay) * d / (sqrt(sum) + eps)
/// ```
pub(crate) fn adagrad<F: Float>(p: &mut [F], g: &[F], sum: &mut [F], h: &AdagradParams) {
    let clr = h.lr / (1.0 + (h.step as f64 - 1.0) * h.lr_decay);
    let k = [c::<F>(-clr), c(h.eps), c(h.weight_decay)];
    vectorized(|| with_flags!(adagrad_loop [] [h.maximize, h.weight_decay != 0.0] (p, g, sum, k)))
}

#[inline(always)]
fn adagrad_loop<F: Float, const MAXIMIZE: bool, const DECAY: bool>(
    p: &mut [F],
    g: &[F],
    sum: &mut [F],
    [neg_clr, eps, wd]: [F; 3],
) {
    let n = p.len();
    let (g, sum) = (&g[..n], &mut sum[..n]);
    for i in 0..n {
        let mut d = if MAXIMIZE { -g[i] } else { g[i] };
        if DECAY {
            d += wd * p[i];
        }
        let s = sum[i] + d * d;
        sum[i] = s;
        let std = s.sqrt() + eps;
        p[i] += neg_clr * d / std;
    }
}
