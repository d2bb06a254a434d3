//! The per-element updates: one function per optimizer, one pass over
//! contiguous slices of the parameter, its gradient and its state buffers,
//! generic over f32 and f64.
//!
//! This file is the whole numerical content of the optimizers; everything
//! else is bookkeeping. A device backend adds its kernel beside each function
//! with the same arguments (the hyperparameter structs are plain numbers).
//!
//! The arithmetic follows PyTorch's single-tensor CPU implementation op by op
//! (`lerp` for the first moment, `addcmul`/`addcdiv` evaluated as
//! `self + value * a * b` / `self + value * a / b`, hyperparameters combined
//! in f64 and then rounded to the element type), so f64 results agree with
//! PyTorch to rounding.

use crate::tensor::Float;

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

/// SGD's options for one update.
pub(crate) struct SgdParams {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub maximize: bool,
    /// The momentum buffer was just created: it takes the gradient as is.
    pub first: bool,
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
    let n = p.len();
    let g = &g[..n];
    let neg_lr = c::<F>(-h.lr);
    let wd = c::<F>(h.weight_decay);
    let mom = c::<F>(h.momentum);
    let damp = c::<F>(1.0 - h.dampening);
    let use_momentum = h.momentum != 0.0;
    let buf = if use_momentum { &mut buf[..n] } else { buf };
    for i in 0..n {
        let mut d = if h.maximize { -g[i] } else { g[i] };
        if h.weight_decay != 0.0 {
            d = d + wd * p[i];
        }
        if use_momentum {
            let b = if h.first { d } else { buf[i] * mom + damp * d };
            buf[i] = b;
            d = if h.nesterov { d + mom * b } else { b };
        }
        p[i] = p[i] + neg_lr * d;
    }
}

/// Adam's and AdamW's options for one update.
pub(crate) struct AdamParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW: decay the weights instead of adding to the gradient.
    pub decoupled: bool,
    pub amsgrad: bool,
    pub maximize: bool,
    /// This step's count, 1 on the first.
    pub step: u64,
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
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    let vmax = if h.amsgrad { &mut vmax[..n] } else { vmax };
    let t = h.step as f64;
    let bias_correction1 = 1.0 - h.beta1.powf(t);
    let bias_correction2 = 1.0 - h.beta2.powf(t);
    let neg_step_size = c::<F>(-(h.lr / bias_correction1));
    let bc2_sqrt = c::<F>(bias_correction2.powf(0.5));
    let eps = c::<F>(h.eps);
    let w1 = c::<F>(1.0 - h.beta1);
    let beta2 = c::<F>(h.beta2);
    let one_minus_beta2 = c::<F>(1.0 - h.beta2);
    let wd = c::<F>(h.weight_decay);
    let decay = c::<F>(1.0 - h.lr * h.weight_decay);
    for i in 0..n {
        let mut d = if h.maximize { -g[i] } else { g[i] };
        if h.weight_decay != 0.0 {
            if h.decoupled {
                p[i] = p[i] * decay;
            } else {
                d = d + wd * p[i];
            }
        }
        let mi = lerp(m[i], d, w1);
        m[i] = mi;
        let vi = v[i] * beta2 + one_minus_beta2 * d * d;
        v[i] = vi;
        let second = if h.amsgrad {
            let x = vmax[i].max_nan(vi);
            vmax[i] = x;
            x
        } else {
            vi
        };
        let denom = second.sqrt() / bc2_sqrt + eps;
        p[i] = p[i] + neg_step_size * mi / denom;
    }
}

/// RMSprop's options for one update.
pub(crate) struct RmspropParams {
    pub lr: f64,
    pub alpha: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub centered: bool,
    pub maximize: bool,
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
    let n = p.len();
    let (g, square_avg) = (&g[..n], &mut square_avg[..n]);
    let use_momentum = h.momentum > 0.0;
    let buf = if use_momentum { &mut buf[..n] } else { buf };
    let grad_avg = if h.centered {
        &mut grad_avg[..n]
    } else {
        grad_avg
    };
    let neg_lr = c::<F>(-h.lr);
    let alpha = c::<F>(h.alpha);
    let one_minus_alpha = c::<F>(1.0 - h.alpha);
    let eps = c::<F>(h.eps);
    let wd = c::<F>(h.weight_decay);
    let mom = c::<F>(h.momentum);
    let minus_one = c::<F>(-1.0);
    for i in 0..n {
        let mut d = if h.maximize { -g[i] } else { g[i] };
        if h.weight_decay != 0.0 {
            d = d + wd * p[i];
        }
        let sq = square_avg[i] * alpha + one_minus_alpha * d * d;
        square_avg[i] = sq;
        let avg = if h.centered {
            let ga = lerp(grad_avg[i], d, one_minus_alpha);
            grad_avg[i] = ga;
            (sq + minus_one * ga * ga).sqrt()
        } else {
            sq.sqrt()
        } + eps;
        if use_momentum {
            let b = buf[i] * mom + d / avg;
            buf[i] = b;
            p[i] = p[i] + neg_lr * b;
        } else {
            p[i] = p[i] + neg_lr * d / avg;
        }
    }
}

/// Adagrad's options for one update.
pub(crate) struct AdagradParams {
    pub lr: f64,
    pub lr_decay: f64,
    pub weight_decay: f64,
    pub eps: f64,
    pub maximize: bool,
    /// This step's count, 1 on the first.
    pub step: u64,
}

/// Adagrad.
///
/// ```text
/// d = ±g (+ weight_decay * p)
/// sum = sum + d * d
/// p = p - lr / (1 + (t - 1) * lr_decay) * d / (sqrt(sum) + eps)
/// ```
pub(crate) fn adagrad<F: Float>(p: &mut [F], g: &[F], sum: &mut [F], h: &AdagradParams) {
    let n = p.len();
    let (g, sum) = (&g[..n], &mut sum[..n]);
    let clr = h.lr / (1.0 + (h.step as f64 - 1.0) * h.lr_decay);
    let neg_clr = c::<F>(-clr);
    let eps = c::<F>(h.eps);
    let wd = c::<F>(h.weight_decay);
    for i in 0..n {
        let mut d = if h.maximize { -g[i] } else { g[i] };
        if h.weight_decay != 0.0 {
            d = d + wd * p[i];
        }
        let s = sum[i] + d * d;
        sum[i] = s;
        let std = s.sqrt() + eps;
        p[i] = p[i] + neg_clr * d / std;
    }
}
