//! Optimizers and learning-rate schedulers against reference trajectories.
//!
//! The test problem has two f64 parameters, `w` (4 elements) and `m` (2x3), and
//!
//! ```text
//! L = 0.5 Σ q w² + 0.25 Σ w⁴ - Σ c w + 1.5 Σ (m - t)² + Σ m³ / 3
//! ∂L/∂w = q w + w³ - c        ∂L/∂m = 3 (m - t) + m²
//! ```
//!
//! deriv's side takes its gradients from the tape; the references below are
//! PyTorch's documented update rules (the torch.optim pseudo-code) written
//! as plain f64 loops over the analytic gradient, independently of the
//! library's kernels. A second set of checks compares with numbers PyTorch
//! 2.15 printed for the same problem (the scripts are in comments).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use deriv::optim::lr_scheduler::{
    CosineAnnealingLR, ExponentialLR, LinearLR, LrScheduler, SequentialLR, StepLR,
};
use deriv::optim::{Adagrad, Adam, AdamW, Optimizer, OptimizerState, ParamGroup, RMSprop, SGD};
use deriv::{DType, Tensor};

// ------------------------------------------------------------ allocation counter

/// Counts this thread's heap allocations, so a test can check that a
/// steady-state optimizer step allocates nothing.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator; counting touches only a
// thread-local Cell, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// ------------------------------------------------------------------ the problem

const W0: [f64; 4] = [0.5, -1.0, 1.5, 2.0];
const M0: [f64; 6] = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6];
const Q: [f64; 4] = [1.0, 2.0, 0.5, 3.0];
const C: [f64; 4] = [1.0, -1.0, 0.5, 2.0];
const T: [f64; 6] = [1.0, 0.0, -1.0, 0.5, 0.5, 0.0];
const STEPS: usize = 6;

fn params(dtype: DType) -> (Tensor, Tensor) {
    let w = Tensor::from_vec(W0.to_vec(), [4])
        .to_dtype(dtype)
        .requires_grad_(true);
    let m = Tensor::from_vec(M0.to_vec(), [2, 3])
        .to_dtype(dtype)
        .requires_grad_(true);
    (w, m)
}

fn loss(w: &Tensor, m: &Tensor) -> Tensor {
    let dt = w.dtype();
    let q = Tensor::from_vec(Q.to_vec(), [4]).to_dtype(dt);
    let c = Tensor::from_vec(C.to_vec(), [4]).to_dtype(dt);
    let t = Tensor::from_vec(T.to_vec(), [2, 3]).to_dtype(dt);
    (&q * w * w).sum() * 0.5 + w.pow(4.0).sum() * 0.25 - (&c * w).sum()
        + (m - &t).square().sum() * 1.5
        + m.pow(3.0).sum() / 3.0
}

/// The analytic gradient at the flattened parameters `[w, m]`.
fn grad_ref(x: &[f64]) -> Vec<f64> {
    let mut g = vec![0.0; 10];
    for i in 0..4 {
        g[i] = Q[i] * x[i] + x[i].powi(3) - C[i];
    }
    for j in 0..6 {
        let v = x[4 + j];
        g[4 + j] = 3.0 * (v - T[j]) + v * v;
    }
    g
}

fn flat(w: &Tensor, m: &Tensor) -> Vec<f64> {
    let mut v = w.to_vec::<f64>();
    v.extend(m.to_vec::<f64>());
    v
}

/// `steps` training steps: zero_grad, loss, backward, step.
fn train(opt: &mut dyn Optimizer, w: &Tensor, m: &Tensor, steps: usize) {
    for _ in 0..steps {
        opt.zero_grad();
        loss(w, m).backward();
        opt.step();
    }
}

/// Runs `make`'s optimizer for `STEPS` steps on the problem (f64).
fn run_deriv<O: Optimizer>(make: impl FnOnce(Vec<Tensor>) -> O) -> Vec<f64> {
    let (w, m) = params(DType::F64);
    let mut opt = make(vec![w.clone(), m.clone()]);
    train(&mut opt, &w, &m, STEPS);
    flat(&w, &m)
}

/// Runs a reference update for `STEPS` steps from the starting point.
fn run_ref(mut update: impl FnMut(&mut [f64], &[f64], u64)) -> Vec<f64> {
    let mut x: Vec<f64> = W0.iter().chain(&M0).copied().collect();
    for t in 1..=STEPS as u64 {
        let g = grad_ref(&x);
        update(&mut x, &g, t);
    }
    x
}

#[track_caller]
fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(a.is_finite(), "element {i} is {a}");
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "element {i}: got {a}, want {b} (diff {:e})\n got {got:?}\nwant {want:?}",
            (a - b).abs()
        );
    }
}

// ------------------------------------------------ references (docs pseudo-code)

/// torch.optim.SGD's algorithm. `maximize` negates the gradient first, as the
/// implementation does (so weight decay still pulls towards zero).
#[derive(Clone, Default)]
struct RefSgd {
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    maximize: bool,
    buf: Vec<f64>,
}

impl RefSgd {
    fn new(lr: f64) -> Self {
        RefSgd {
            lr,
            ..Default::default()
        }
    }
    fn step(&mut self, x: &mut [f64], g: &[f64], t: u64) {
        self.buf.resize(x.len(), 0.0);
        for i in 0..x.len() {
            let mut gi = if self.maximize { -g[i] } else { g[i] };
            gi += self.weight_decay * x[i];
            if self.momentum != 0.0 {
                self.buf[i] = if t > 1 {
                    self.momentum * self.buf[i] + (1.0 - self.dampening) * gi
                } else {
                    gi
                };
                gi = if self.nesterov {
                    gi + self.momentum * self.buf[i]
                } else {
                    self.buf[i]
                };
            }
            x[i] -= self.lr * gi;
        }
    }
}

/// torch.optim.Adam's / AdamW's algorithm (AMSGrad keeps the largest raw
/// second moment and bias-corrects it with the current step).
#[derive(Clone, Default)]
struct RefAdam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    amsgrad: bool,
    maximize: bool,
    m: Vec<f64>,
    v: Vec<f64>,
    vmax: Vec<f64>,
}

impl RefAdam {
    fn new(lr: f64) -> Self {
        RefAdam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            ..Default::default()
        }
    }
    fn adamw(lr: f64) -> Self {
        RefAdam {
            decoupled: true,
            weight_decay: 0.01,
            ..RefAdam::new(lr)
        }
    }
    fn step(&mut self, x: &mut [f64], g: &[f64], t: u64) {
        let n = x.len();
        self.m.resize(n, 0.0);
        self.v.resize(n, 0.0);
        self.vmax.resize(n, 0.0);
        let t = t as i32;
        for i in 0..n {
            let mut gi = if self.maximize { -g[i] } else { g[i] };
            if self.decoupled {
                x[i] -= self.lr * self.weight_decay * x[i];
            } else {
                gi += self.weight_decay * x[i];
            }
            self.m[i] = self.beta1 * self.m[i] + (1.0 - self.beta1) * gi;
            self.v[i] = self.beta2 * self.v[i] + (1.0 - self.beta2) * gi * gi;
            let m_hat = self.m[i] / (1.0 - self.beta1.powi(t));
            let v = if self.amsgrad {
                self.vmax[i] = self.vmax[i].max(self.v[i]);
                self.vmax[i]
            } else {
                self.v[i]
            };
            let v_hat = v / (1.0 - self.beta2.powi(t));
            x[i] -= self.lr * m_hat / (v_hat.sqrt() + self.eps);
        }
    }
}

/// torch.optim.RMSprop's algorithm.
#[derive(Clone, Default)]
struct RefRmsprop {
    lr: f64,
    alpha: f64,
    eps: f64,
    weight_decay: f64,
    momentum: f64,
    centered: bool,
    maximize: bool,
    v: Vec<f64>,
    g_ave: Vec<f64>,
    buf: Vec<f64>,
}

impl RefRmsprop {
    fn new(lr: f64) -> Self {
        RefRmsprop {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            ..Default::default()
        }
    }
    fn step(&mut self, x: &mut [f64], g: &[f64], _t: u64) {
        let n = x.len();
        self.v.resize(n, 0.0);
        self.g_ave.resize(n, 0.0);
        self.buf.resize(n, 0.0);
        for i in 0..n {
            let mut gi = if self.maximize { -g[i] } else { g[i] };
            gi += self.weight_decay * x[i];
            self.v[i] = self.alpha * self.v[i] + (1.0 - self.alpha) * gi * gi;
            let mut v_tilde = self.v[i];
            if self.centered {
                self.g_ave[i] = self.g_ave[i] * self.alpha + (1.0 - self.alpha) * gi;
                v_tilde -= self.g_ave[i] * self.g_ave[i];
            }
            if self.momentum > 0.0 {
                self.buf[i] = self.momentum * self.buf[i] + gi / (v_tilde.sqrt() + self.eps);
                x[i] -= self.lr * self.buf[i];
            } else {
                x[i] -= self.lr * gi / (v_tilde.sqrt() + self.eps);
            }
        }
    }
}

/// torch.optim.Adagrad's algorithm.
#[derive(Clone, Default)]
struct RefAdagrad {
    lr: f64,
    lr_decay: f64,
    weight_decay: f64,
    initial_accumulator_value: f64,
    eps: f64,
    maximize: bool,
    sum: Vec<f64>,
}

impl RefAdagrad {
    fn new(lr: f64) -> Self {
        RefAdagrad {
            lr,
            eps: 1e-10,
            ..Default::default()
        }
    }
    fn step(&mut self, x: &mut [f64], g: &[f64], t: u64) {
        let n = x.len();
        if self.sum.len() != n {
            self.sum = vec![self.initial_accumulator_value; n];
        }
        let clr = self.lr / (1.0 + (t - 1) as f64 * self.lr_decay);
        for i in 0..n {
            let mut gi = if self.maximize { -g[i] } else { g[i] };
            gi += self.weight_decay * x[i];
            self.sum[i] += gi * gi;
            x[i] -= clr * gi / (self.sum[i].sqrt() + self.eps);
        }
    }
}

const TOL: f64 = 1e-11;

// ---------------------------------------------------------------- SGD

#[test]
fn sgd_plain_matches_reference() {
    let got = run_deriv(|p| SGD::new(p, 0.05));
    let mut r = RefSgd::new(0.05);
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn sgd_momentum_matches_reference() {
    let got = run_deriv(|p| SGD::new(p, 0.05).momentum(0.9));
    let mut r = RefSgd {
        momentum: 0.9,
        ..RefSgd::new(0.05)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn sgd_dampening_and_weight_decay_match_reference() {
    let got = run_deriv(|p| {
        SGD::new(p, 0.05)
            .momentum(0.8)
            .dampening(0.3)
            .weight_decay(0.2)
    });
    let mut r = RefSgd {
        momentum: 0.8,
        dampening: 0.3,
        weight_decay: 0.2,
        ..RefSgd::new(0.05)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn sgd_nesterov_matches_reference() {
    let got = run_deriv(|p| {
        SGD::new(p, 0.05)
            .momentum(0.9)
            .nesterov(true)
            .weight_decay(0.01)
    });
    let mut r = RefSgd {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.01,
        ..RefSgd::new(0.05)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn sgd_maximize_matches_reference() {
    let got = run_deriv(|p| {
        SGD::new(p, 0.01)
            .momentum(0.5)
            .dampening(0.3)
            .weight_decay(0.1)
            .maximize(true)
    });
    let mut r = RefSgd {
        momentum: 0.5,
        dampening: 0.3,
        weight_decay: 0.1,
        maximize: true,
        ..RefSgd::new(0.01)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn sgd_without_momentum_keeps_no_state() {
    let (w, m) = params(DType::F64);
    let mut opt = SGD::new(vec![w.clone(), m.clone()], 0.1);
    train(&mut opt, &w, &m, 2);
    let s = opt.state_dict();
    assert!(s.tensors.is_empty());
    assert!(s
        .scalars
        .iter()
        .all(|(k, _)| k.starts_with("param_groups.")));
}

// ---------------------------------------------------------------- Adam / AdamW

#[test]
fn adam_default_matches_reference() {
    let got = run_deriv(|p| Adam::new(p, 0.1));
    let mut r = RefAdam::new(0.1);
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn adam_betas_eps_weight_decay_match_reference() {
    let got = run_deriv(|p| {
        Adam::new(p, 0.05)
            .betas(0.8, 0.9)
            .eps(1e-3)
            .weight_decay(0.1)
    });
    let mut r = RefAdam {
        beta1: 0.8,
        beta2: 0.9,
        eps: 1e-3,
        weight_decay: 0.1,
        ..RefAdam::new(0.05)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn adam_amsgrad_matches_reference() {
    // Large steps with beta2 = 0.6 make the second moment fall, so the running
    // maximum differs from it (checked below): amsgrad is exercised.
    let got = run_deriv(|p| Adam::new(p, 0.3).betas(0.5, 0.6).amsgrad(true));
    let mut r = RefAdam {
        beta1: 0.5,
        beta2: 0.6,
        amsgrad: true,
        ..RefAdam::new(0.3)
    };
    let want = run_ref(|x, g, t| r.step(x, g, t));
    assert_close(&got, &want, TOL);
    assert!(r.vmax.iter().zip(&r.v).any(|(a, b)| a > &(b * 1.5)));
    let plain = run_deriv(|p| Adam::new(p, 0.3).betas(0.5, 0.6));
    assert!(plain.iter().zip(&got).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn adam_maximize_matches_reference() {
    let got = run_deriv(|p| Adam::new(p, 0.01).maximize(true).weight_decay(0.1));
    let mut r = RefAdam {
        maximize: true,
        weight_decay: 0.1,
        ..RefAdam::new(0.01)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn adamw_default_decays_weights_decoupled() {
    let got = run_deriv(|p| AdamW::new(p, 0.1));
    let mut r = RefAdam::adamw(0.1);
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
    // Not the same as Adam's coupled L2 penalty.
    let coupled = run_deriv(|p| Adam::new(p, 0.1).weight_decay(0.01));
    assert!(coupled.iter().zip(&got).any(|(a, b)| (a - b).abs() > 1e-4));
}

#[test]
fn adamw_options_match_reference() {
    let got = run_deriv(|p| {
        AdamW::new(p, 0.05)
            .weight_decay(0.3)
            .betas(0.7, 0.95)
            .amsgrad(true)
            .maximize(true)
    });
    let mut r = RefAdam {
        weight_decay: 0.3,
        beta1: 0.7,
        beta2: 0.95,
        amsgrad: true,
        maximize: true,
        ..RefAdam::adamw(0.05)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

// ---------------------------------------------------------------- RMSprop

#[test]
fn rmsprop_default_matches_reference() {
    let got = run_deriv(|p| RMSprop::new(p, 0.01));
    let mut r = RefRmsprop::new(0.01);
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn rmsprop_centered_matches_reference() {
    let got = run_deriv(|p| RMSprop::new(p, 0.01).alpha(0.9).centered(true));
    let mut r = RefRmsprop {
        alpha: 0.9,
        centered: true,
        ..RefRmsprop::new(0.01)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn rmsprop_momentum_weight_decay_matches_reference() {
    let got = run_deriv(|p| {
        RMSprop::new(p, 0.01)
            .momentum(0.5)
            .weight_decay(0.1)
            .eps(1e-4)
    });
    let mut r = RefRmsprop {
        momentum: 0.5,
        weight_decay: 0.1,
        eps: 1e-4,
        ..RefRmsprop::new(0.01)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn rmsprop_centered_momentum_maximize_matches_reference() {
    let got = run_deriv(|p| {
        RMSprop::new(p, 0.005)
            .alpha(0.8)
            .centered(true)
            .momentum(0.3)
            .maximize(true)
    });
    let mut r = RefRmsprop {
        alpha: 0.8,
        centered: true,
        momentum: 0.3,
        maximize: true,
        ..RefRmsprop::new(0.005)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

// ---------------------------------------------------------------- Adagrad

#[test]
fn adagrad_default_matches_reference() {
    let got = run_deriv(|p| Adagrad::new(p, 0.1));
    let mut r = RefAdagrad::new(0.1);
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn adagrad_lr_decay_matches_reference() {
    let got = run_deriv(|p| Adagrad::new(p, 0.1).lr_decay(0.2));
    let mut r = RefAdagrad {
        lr_decay: 0.2,
        ..RefAdagrad::new(0.1)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn adagrad_accumulator_weight_decay_eps_maximize_match_reference() {
    let got = run_deriv(|p| {
        Adagrad::new(p, 0.02)
            .initial_accumulator_value(0.5)
            .weight_decay(0.1)
            .eps(1e-3)
            .maximize(true)
    });
    let mut r = RefAdagrad {
        initial_accumulator_value: 0.5,
        weight_decay: 0.1,
        eps: 1e-3,
        maximize: true,
        ..RefAdagrad::new(0.02)
    };
    assert_close(&got, &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

// ---------------------------------------------------------------- PyTorch's own numbers

// Printed by PyTorch 2.15 (CPU, float64) with this script:
//
// import torch
// torch.set_default_dtype(torch.float64)
// q = torch.tensor([1.0, 2.0, 0.5, 3.0]); c = torch.tensor([1.0, -1.0, 0.5, 2.0])
// t = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
// def run(make, steps=6):
//     w = torch.tensor([0.5, -1.0, 1.5, 2.0], requires_grad=True)
//     m = torch.tensor([[0.1, -0.2, 0.3], [0.4, -0.5, 0.6]], requires_grad=True)
//     opt = make(w, m)
//     for _ in range(steps):
//         opt.zero_grad()
//         loss = 0.5 * (q * w * w).sum() + 0.25 * w.pow(4).sum() - (c * w).sum() \
//             + 1.5 * (m - t).square().sum() + m.pow(3).sum() / 3
//         loss.backward()
//         opt.step()
//     print(", ".join(repr(x) for x in torch.cat([w.detach().flatten(), m.detach().flatten()]).tolist()))
// O = torch.optim
// run(lambda w, m: O.Adam([w, m], lr=0.1))
// run(lambda w, m: O.Adam([w, m], lr=0.05, betas=(0.8, 0.9), weight_decay=0.1, amsgrad=True))
// run(lambda w, m: O.AdamW([w, m], lr=0.1, weight_decay=0.1))
// run(lambda w, m: O.SGD([w, m], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01))
// run(lambda w, m: O.SGD([w, m], lr=0.01, momentum=0.5, dampening=0.3, weight_decay=0.1, maximize=True))
// run(lambda w, m: O.RMSprop([w, m], lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1))
// run(lambda w, m: O.Adagrad([w, m], lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.2))
// run(lambda w, m: O.Adam([{"params": [w]}, {"params": [m], "lr": 0.01, "betas": (0.5, 0.6)}], lr=0.1))
const TORCH_ADAM: [f64; 10] = [
    0.7472958977596639,
    -0.4540990900339915,
    0.932421951824242,
    1.4159741340966527,
    0.6765485976578621,
    0.0946234385689664,
    -0.28990251371650344,
    0.42230675424496167,
    0.08862623883854362,
    0.04089909949701667,
];
const TORCH_ADAM_AMSGRAD: [f64; 10] = [
    0.7108587975464562,
    -0.7089577952504835,
    1.2060724326442984,
    1.703328704790627,
    0.3959727561253009,
    0.04575076352352855,
    0.00231933494793201,
    0.42279119564852075,
    -0.20216262463141027,
    0.30680578595853486,
];
const TORCH_ADAMW: [f64; 10] = [
    0.7381979196394955,
    -0.41860124451050956,
    0.8662117102275568,
    1.318058142052113,
    0.6572535180134291,
    0.09059525815559565,
    -0.2925510240091511,
    0.42822274621459677,
    0.10246448042621795,
    0.023857053124050537,
];
const TORCH_SGD_NESTEROV: [f64; 10] = [
    0.7313545034698482,
    -0.19707738026103302,
    0.11844569460410895,
    -0.11070041150944873,
    1.0243287179898626,
    0.07806382645232268,
    -2.1073887341241457,
    0.4496249657507484,
    0.7825325090322931,
    -0.27179068876725804,
];
const TORCH_SGD_MAXIMIZE: [f64; 10] = [
    0.46638574397030297,
    -1.1631978106121545,
    1.8178535755902783,
    3.381334237451473,
    -0.1204685155692552,
    -0.24357342602728882,
    0.6285769896225224,
    0.3850571779847771,
    -0.7143650335968702,
    0.7763705537043546,
];
const TORCH_RMSPROP_CENTERED: [f64; 10] = [
    0.6625288639137079,
    -0.7781749485214963,
    1.2728944417892316,
    1.7663552140832364,
    0.33228642014696463,
    -0.015254838644537392,
    0.06352027030949971,
    0.42826067890216085,
    -0.26281302541783064,
    0.3740334621714601,
];
const TORCH_ADAGRAD: [f64; 10] = [
    0.6412380098157154,
    -0.7230070030931534,
    1.2080290531045366,
    1.6922241787130772,
    0.40056162238019466,
    -0.018842861728990377,
    -0.013335349915508998,
    0.4254714971791801,
    -0.18728992344057288,
    0.3141623816980745,
];
const TORCH_ADAM_GROUPS: [f64; 10] = [
    0.7472958977596639,
    -0.4540990900339915,
    0.932421951824242,
    1.4159741340966527,
    0.15988923420645582,
    -0.14053861901153342,
    0.24008028339639326,
    0.4422895459441356,
    -0.4400664694336314,
    0.5401842518239784,
];

/// Agreement with PyTorch's printed values; deriv follows its op order, so
/// f64 results agree to a few ulps.
const TORCH_TOL: f64 = 1e-13;

#[test]
fn adam_matches_pytorch() {
    let got = run_deriv(|p| Adam::new(p, 0.1));
    assert_close(&got, &TORCH_ADAM, TORCH_TOL);
    let got = run_deriv(|p| {
        Adam::new(p, 0.05)
            .betas(0.8, 0.9)
            .weight_decay(0.1)
            .amsgrad(true)
    });
    assert_close(&got, &TORCH_ADAM_AMSGRAD, TORCH_TOL);
}

#[test]
fn adamw_matches_pytorch() {
    let got = run_deriv(|p| AdamW::new(p, 0.1).weight_decay(0.1));
    assert_close(&got, &TORCH_ADAMW, TORCH_TOL);
}

#[test]
fn sgd_nesterov_and_maximize_match_pytorch() {
    let got = run_deriv(|p| {
        SGD::new(p, 0.05)
            .momentum(0.9)
            .nesterov(true)
            .weight_decay(0.01)
    });
    assert_close(&got, &TORCH_SGD_NESTEROV, TORCH_TOL);
    let got = run_deriv(|p| {
        SGD::new(p, 0.01)
            .momentum(0.5)
            .dampening(0.3)
            .weight_decay(0.1)
            .maximize(true)
    });
    assert_close(&got, &TORCH_SGD_MAXIMIZE, TORCH_TOL);
}

#[test]
fn rmsprop_centered_matches_pytorch() {
    let got = run_deriv(|p| {
        RMSprop::new(p, 0.01)
            .alpha(0.9)
            .centered(true)
            .momentum(0.5)
            .weight_decay(0.1)
    });
    assert_close(&got, &TORCH_RMSPROP_CENTERED, TORCH_TOL);
}

#[test]
fn adagrad_matches_pytorch() {
    let got = run_deriv(|p| {
        Adagrad::new(p, 0.1)
            .lr_decay(0.05)
            .weight_decay(0.1)
            .initial_accumulator_value(0.2)
    });
    assert_close(&got, &TORCH_ADAGRAD, TORCH_TOL);
}

#[test]
fn param_groups_with_own_options_match_pytorch() {
    let (w, m) = params(DType::F64);
    let mut opt = Adam::with_groups(
        vec![
            ParamGroup::new(vec![w.clone()]),
            ParamGroup::new(vec![m.clone()]).lr(0.01).betas(0.5, 0.6),
        ],
        0.1,
    );
    train(&mut opt, &w, &m, STEPS);
    assert_close(&flat(&w, &m), &TORCH_ADAM_GROUPS, TORCH_TOL);
}

// ---------------------------------------------------------------- param groups

#[test]
fn param_groups_with_different_lrs_match_reference() {
    let (w, m) = params(DType::F64);
    let mut opt = SGD::new(vec![w.clone()], 0.05).momentum(0.9);
    opt.add_param_group(ParamGroup::new(vec![m.clone()]).lr(0.01));
    assert_eq!(opt.param_groups().len(), 2);
    assert_eq!(opt.param_groups()[1].lr, 0.01);
    assert_eq!(opt.param_groups()[1].momentum, 0.9, "inherited default");
    assert_eq!(opt.lr(), 0.05);
    train(&mut opt, &w, &m, STEPS);

    let mut rw = RefSgd {
        momentum: 0.9,
        ..RefSgd::new(0.05)
    };
    let mut rm = RefSgd {
        momentum: 0.9,
        ..RefSgd::new(0.01)
    };
    let want = run_ref(|x, g, t| {
        let (xw, xm) = x.split_at_mut(4);
        rw.step(xw, &g[..4], t);
        rm.step(xm, &g[4..], t);
    });
    assert_close(&flat(&w, &m), &want, TOL);
}

#[test]
fn builder_defaults_reach_groups_that_did_not_set_them() {
    let a = Tensor::zeros([2]).requires_grad_(true);
    let b = Tensor::zeros([2]).requires_grad_(true);
    let opt = RMSprop::with_groups(
        vec![
            ParamGroup::new(vec![a]),
            ParamGroup::new(vec![b]).alpha(0.5).lr(0.3),
        ],
        0.01,
    )
    .alpha(0.9)
    .centered(true);
    let g = opt.param_groups();
    assert_eq!((g[0].lr, g[0].alpha, g[0].centered), (0.01, 0.9, true));
    assert_eq!((g[1].lr, g[1].alpha, g[1].centered), (0.3, 0.5, true));
    assert_eq!(g[0].eps, 1e-8);
}

#[test]
fn set_lr_sets_every_group() {
    let a = Tensor::zeros([2]).requires_grad_(true);
    let b = Tensor::zeros([2]).requires_grad_(true);
    let mut opt = Adam::new(vec![a], 0.1);
    opt.add_param_group(ParamGroup::new(vec![b]).lr(0.5));
    opt.set_lr(0.02);
    assert!(opt.param_groups().iter().all(|g| g.lr == 0.02));
    assert_eq!(opt.lr(), 0.02);
    opt.param_groups_mut()[1].lr = 0.7;
    assert_eq!(opt.param_groups()[1].lr, 0.7);
    assert_eq!(opt.lr(), 0.02);
}

#[test]
fn defaults_are_pytorchs() {
    let p = || vec![Tensor::zeros([1]).requires_grad_(true)];
    let g = SGD::new(p(), 0.1).param_groups()[0].clone();
    assert_eq!(
        (
            g.momentum,
            g.dampening,
            g.weight_decay,
            g.nesterov,
            g.maximize
        ),
        (0.0, 0.0, 0.0, false, false)
    );
    let g = Adam::new(p(), 0.1).param_groups()[0].clone();
    assert_eq!(
        (g.betas, g.eps, g.weight_decay, g.amsgrad),
        ((0.9, 0.999), 1e-8, 0.0, false)
    );
    let g = AdamW::new(p(), 0.1).param_groups()[0].clone();
    assert_eq!((g.betas, g.eps, g.weight_decay), ((0.9, 0.999), 1e-8, 0.01));
    let g = RMSprop::new(p(), 0.1).param_groups()[0].clone();
    assert_eq!(
        (g.alpha, g.eps, g.weight_decay, g.momentum, g.centered),
        (0.99, 1e-8, 0.0, 0.0, false)
    );
    let g = Adagrad::new(p(), 0.1).param_groups()[0].clone();
    assert_eq!(
        (
            g.lr_decay,
            g.weight_decay,
            g.initial_accumulator_value,
            g.eps
        ),
        (0.0, 0.0, 0.0, 1e-10)
    );
}

#[test]
#[should_panic(expected = "SGD: the parameter group sets betas, which SGD does not have")]
fn group_option_of_another_optimizer_panics() {
    let a = Tensor::zeros([2]).requires_grad_(true);
    let b = Tensor::zeros([2]).requires_grad_(true);
    let mut opt = SGD::new(vec![a], 0.1);
    opt.add_param_group(ParamGroup::new(vec![b]).betas(0.9, 0.99));
}

#[test]
#[should_panic(expected = "appears more than once")]
fn parameter_in_two_groups_panics() {
    let a = Tensor::zeros([2]).requires_grad_(true);
    let mut opt = SGD::new(vec![a.clone()], 0.1);
    opt.add_param_group(ParamGroup::new(vec![a]));
}

// ---------------------------------------------------------------- validation

#[test]
#[should_panic(expected = "SGD: Invalid learning rate: -0.1")]
fn negative_lr_panics() {
    SGD::new(vec![Tensor::zeros([1]).requires_grad_(true)], -0.1);
}

#[test]
#[should_panic(expected = "Nesterov momentum requires a momentum and zero dampening")]
fn nesterov_without_momentum_panics() {
    let w = Tensor::ones([1]).requires_grad_(true);
    let mut opt = SGD::new(vec![w.clone()], 0.1).nesterov(true);
    w.sum().backward();
    opt.step();
}

#[test]
#[should_panic(expected = "Nesterov momentum requires a momentum and zero dampening")]
fn nesterov_with_dampening_panics() {
    let a = Tensor::zeros([1]).requires_grad_(true);
    let b = Tensor::zeros([1]).requires_grad_(true);
    // Checked when a group is added, too.
    let mut opt = SGD::new(vec![a], 0.1).momentum(0.9).nesterov(true);
    opt.add_param_group(ParamGroup::new(vec![b]).dampening(0.1));
}

#[test]
#[should_panic(expected = "Adam: Invalid beta parameter at index 1: 1")]
fn beta_of_one_panics() {
    Adam::new(vec![Tensor::zeros([1]).requires_grad_(true)], 0.1).betas(0.9, 1.0);
}

#[test]
#[should_panic(expected = "RMSprop: Invalid epsilon value: -1")]
fn negative_eps_panics() {
    RMSprop::new(vec![Tensor::zeros([1]).requires_grad_(true)], 0.1).eps(-1.0);
}

#[test]
#[should_panic(expected = "Adagrad: Invalid lr_decay value: -0.5")]
fn negative_lr_decay_panics() {
    Adagrad::new(vec![Tensor::zeros([1]).requires_grad_(true)], 0.1).lr_decay(-0.5);
}

#[test]
#[should_panic(expected = "AdamW: Invalid weight_decay value: -0.01")]
fn negative_weight_decay_panics() {
    AdamW::new(vec![Tensor::zeros([1]).requires_grad_(true)], 0.1).weight_decay(-0.01);
}

#[test]
#[should_panic(expected = "optimizer got an empty parameter list")]
fn empty_parameter_list_panics() {
    Adam::new(vec![], 0.1);
}

#[test]
#[should_panic(expected = "can't optimize a non-leaf tensor")]
fn non_leaf_parameter_panics() {
    let w = Tensor::ones([2]).requires_grad_(true);
    SGD::new(vec![&w * 2.0], 0.1);
}

#[test]
#[should_panic(expected = "parameter group 0: Invalid learning rate: -1")]
fn invalid_lr_set_on_a_group_panics_at_step() {
    let w = Tensor::ones([1]).requires_grad_(true);
    let mut opt = SGD::new(vec![w.clone()], 0.1);
    opt.param_groups_mut()[0].lr = -1.0;
    w.sum().backward();
    opt.step();
}

#[test]
#[should_panic(expected = "but its grad is f64")]
fn grad_of_another_dtype_panics() {
    let w = Tensor::ones([2]).requires_grad_(true);
    let mut opt = SGD::new(vec![w.clone()], 0.1);
    w.set_grad(Some(Tensor::ones([2]).to_dtype(DType::F64)));
    opt.step();
}

// ---------------------------------------------------------------- semantics

#[test]
fn zero_grad_sets_grads_to_none() {
    let (w, m) = params(DType::F64);
    let mut opt = Adam::new(vec![w.clone(), m.clone()], 0.1);
    loss(&w, &m).backward();
    assert!(w.grad().is_some() && m.grad().is_some());
    opt.zero_grad();
    assert!(w.grad().is_none() && m.grad().is_none());
}

#[test]
fn zero_grad_in_place_keeps_the_buffers() {
    let (w, m) = params(DType::F64);
    let mut opt = Adam::new(vec![w.clone(), m.clone()], 0.1);
    loss(&w, &m).backward();
    let before = w.grad().unwrap();
    opt.zero_grad_in_place();
    let after = w.grad().unwrap();
    assert!(after.shares_storage(&before), "same allocation");
    assert_eq!(after.to_vec::<f64>(), vec![0.0; 4]);
    assert_eq!(m.grad().unwrap().to_vec::<f64>(), vec![0.0; 6]);
    // The next backward accumulates into the same buffer.
    loss(&w, &m).backward();
    assert!(w.grad().unwrap().shares_storage(&before));
    let g = grad_ref(&flat(&w, &m));
    assert_close(&w.grad().unwrap().to_vec::<f64>(), &g[..4], 1e-14);
}

#[test]
fn parameters_without_grad_are_skipped() {
    let (w, m) = params(DType::F64);
    let frozen = Tensor::from_vec(vec![1.0, 2.0], [2]).requires_grad_(true);
    let mut opt = Adam::new(vec![w.clone(), frozen.clone(), m.clone()], 0.1);
    train(&mut opt, &w, &m, STEPS);
    assert_eq!(frozen.to_vec::<f64>(), vec![1.0, 2.0]);
    let s = opt.state_dict();
    assert!(s.scalar("state.0.step").is_some());
    assert!(
        s.scalar("state.1.step").is_none(),
        "no state for the frozen one"
    );
    assert!(s.tensor("state.1.exp_avg").is_none());
    assert_eq!(s.scalar("state.2.step"), Some(STEPS as f64));
    // The others followed the plain trajectory.
    let mut r = RefAdam::new(0.1);
    assert_close(&flat(&w, &m), &run_ref(|x, g, t| r.step(x, g, t)), TOL);
}

#[test]
fn step_records_nothing_and_bumps_the_version() {
    let w = Tensor::from_vec(vec![1.0, 2.0], [2]).requires_grad_(true);
    let mut opt = SGD::new(vec![w.clone()], 0.1);
    (&w * &w).sum().backward();
    let y = (&w * &w).sum(); // saves w
    opt.step();
    assert!(w.is_leaf() && w.requires_grad() && w.grad_fn().is_none());
    assert_eq!(w.to_vec::<f64>(), vec![0.8, 1.6]);
    // The in-place update is visible to autograd's saved-tensor check.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| y.backward()));
    assert!(
        r.is_err(),
        "backward through a tensor saved before the update must refuse"
    );
}

#[test]
fn f32_parameters_follow_the_f64_reference() {
    let (w, m) = params(DType::F32);
    let mut opt = Adam::new(vec![w.clone(), m.clone()], 0.1).amsgrad(true);
    train(&mut opt, &w, &m, STEPS);
    assert_eq!(w.dtype(), DType::F32);
    let mut r = RefAdam {
        amsgrad: true,
        ..RefAdam::new(0.1)
    };
    assert_close(&flat(&w, &m), &run_ref(|x, g, t| r.step(x, g, t)), 2e-5);
    assert_eq!(
        opt.state_dict().tensor("state.0.exp_avg").unwrap().dtype(),
        DType::F32
    );
}

#[test]
fn every_optimizer_runs_in_f32_close_to_f64() {
    type Make = fn(Vec<Tensor>) -> Box<dyn Optimizer>;
    let makers: [Make; 5] = [
        |p| {
            Box::new(
                SGD::new(p, 0.02)
                    .momentum(0.9)
                    .nesterov(true)
                    .weight_decay(0.1),
            )
        },
        |p| Box::new(Adam::new(p, 0.05).weight_decay(0.1).maximize(true)),
        |p| Box::new(AdamW::new(p, 0.05).amsgrad(true)),
        |p| Box::new(RMSprop::new(p, 0.01).centered(true).momentum(0.5)),
        |p| {
            Box::new(
                Adagrad::new(p, 0.1)
                    .lr_decay(0.1)
                    .initial_accumulator_value(0.1),
            )
        },
    ];
    for (i, make) in makers.iter().enumerate() {
        let run = |dtype: DType| {
            let (w, m) = params(dtype);
            let mut opt = make(vec![w.clone(), m.clone()]);
            train(&mut *opt, &w, &m, STEPS);
            assert_eq!(w.dtype(), dtype);
            flat(&w, &m)
        };
        let (single, double) = (run(DType::F32), run(DType::F64));
        assert!(
            single != double,
            "optimizer {i}: f32 must round differently"
        );
        for (a, b) in single.iter().zip(&double) {
            assert!((a - b).abs() < 1e-4, "optimizer {i}: f32 {a} vs f64 {b}");
        }
    }
}

#[test]
fn non_contiguous_grad_and_parameter() {
    // The same 3x4 update four ways: contiguous everything, a transposed
    // grad, a transposed (strided) parameter, and both.
    let p0: Vec<f64> = (0..12).map(|i| 0.1 * i as f64 - 0.4).collect();
    let g0: Vec<f64> = (0..12).map(|i| ((i * 7) % 5) as f64 * 0.3 - 0.5).collect();
    let transpose = |v: &[f64]| -> Vec<f64> {
        let mut t = vec![0.0; 12];
        for r in 0..3 {
            for c in 0..4 {
                t[c * 3 + r] = v[r * 4 + c];
            }
        }
        t
    };
    let run = |strided_param: bool, strided_grad: bool| -> Vec<f64> {
        let p = if strided_param {
            // A 3x4 leaf viewing a 4x3 buffer through its transpose.
            Tensor::from_vec(transpose(&p0), [4, 3]).t()
        } else {
            Tensor::from_vec(p0.clone(), [3, 4])
        };
        assert_eq!(p.is_contiguous(), !strided_param);
        let p = p.requires_grad_(true);
        let mut opt = Adam::new(vec![p.clone()], 0.1).weight_decay(0.1);
        for _ in 0..3 {
            let g = if strided_grad {
                Tensor::from_vec(transpose(&g0), [4, 3]).t()
            } else {
                Tensor::from_vec(g0.clone(), [3, 4])
            };
            assert_eq!(g.is_contiguous(), !strided_grad);
            p.set_grad(Some(g));
            opt.step();
        }
        p.to_vec::<f64>()
    };
    let plain = run(false, false);
    let mut r = RefAdam {
        weight_decay: 0.1,
        ..RefAdam::new(0.1)
    };
    let mut x = p0.clone();
    for t in 1..=3 {
        r.step(&mut x, &g0, t);
    }
    assert_close(&plain, &x, TOL);
    assert_eq!(run(false, true), plain);
    assert_eq!(run(true, false), plain);
    assert_eq!(run(true, true), plain);
}

#[test]
fn large_parameters_split_across_threads_match_small_ones() {
    // 200k elements: above the parallel threshold. Each element's update is
    // independent, so the result must equal updating it in small pieces.
    let n = 200_000;
    let p0: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) * 0.01).collect();
    let g0: Vec<f32> = (0..n).map(|i| ((i % 89) as f32 - 44.0) * 0.02).collect();
    let big = Tensor::from_vec(p0.clone(), [n]).requires_grad_(true);
    let pieces: Vec<Tensor> = p0
        .chunks(1000)
        .map(|c| Tensor::from_vec(c.to_vec(), [c.len()]).requires_grad_(true))
        .collect();
    let mut opt_big = RMSprop::new(vec![big.clone()], 0.01)
        .centered(true)
        .momentum(0.9);
    let mut opt_small = RMSprop::new(pieces.clone(), 0.01)
        .centered(true)
        .momentum(0.9);
    for _ in 0..3 {
        big.set_grad(Some(Tensor::from_vec(g0.clone(), [n])));
        for (p, g) in pieces.iter().zip(g0.chunks(1000)) {
            p.set_grad(Some(Tensor::from_vec(g.to_vec(), [g.len()])));
        }
        opt_big.step();
        opt_small.step();
    }
    let small: Vec<f32> = pieces.iter().flat_map(|p| p.to_vec::<f32>()).collect();
    assert_eq!(big.to_vec::<f32>(), small);
    assert_ne!(big.to_vec::<f32>(), p0);
}

#[test]
fn steady_state_steps_do_not_allocate() {
    let (w, m) = params(DType::F32);
    let mut opts: Vec<Box<dyn Optimizer>> = vec![
        Box::new(
            SGD::new(vec![w.clone(), m.clone()], 0.01)
                .momentum(0.9)
                .nesterov(true),
        ),
        Box::new(Adam::new(vec![w.clone(), m.clone()], 0.01).amsgrad(true)),
        Box::new(AdamW::new(vec![w.clone(), m.clone()], 0.01)),
        Box::new(
            RMSprop::new(vec![w.clone(), m.clone()], 0.01)
                .centered(true)
                .momentum(0.5),
        ),
        Box::new(Adagrad::new(vec![w.clone(), m.clone()], 0.01)),
    ];
    loss(&w, &m).backward();
    for (i, opt) in opts.iter_mut().enumerate() {
        opt.step(); // allocates the state
        let before = allocations();
        for _ in 0..3 {
            opt.step();
            opt.zero_grad_in_place();
        }
        assert_eq!(allocations() - before, 0, "optimizer {i} allocated");
    }
}

// ---------------------------------------------------------------- state dict

/// N steps in one go equal k steps, save, load into a fresh optimizer, N - k
/// steps, bit for bit.
fn assert_resumes_exactly<O: Optimizer>(make: impl Fn(Vec<Tensor>) -> O) {
    let (n, k) = (8, 3);
    let (w, m) = params(DType::F64);
    let mut opt = make(vec![w.clone(), m.clone()]);
    train(&mut opt, &w, &m, n);
    let straight = flat(&w, &m);

    let (w, m) = params(DType::F64);
    let mut opt = make(vec![w.clone(), m.clone()]);
    train(&mut opt, &w, &m, k);
    let saved = opt.state_dict();
    let values = flat(&w, &m);
    train(&mut opt, &w, &m, 1); // later steps must not change the saved state
    drop(opt);

    let w = Tensor::from_vec(values[..4].to_vec(), [4]).requires_grad_(true);
    let m = Tensor::from_vec(values[4..].to_vec(), [2, 3]).requires_grad_(true);
    let mut fresh = make(vec![w.clone(), m.clone()]);
    fresh.load_state_dict(&saved).expect("loads");
    train(&mut fresh, &w, &m, n - k);
    assert_eq!(flat(&w, &m), straight);
}

#[test]
fn state_dict_round_trip_resumes_bit_identically() {
    assert_resumes_exactly(|p| SGD::new(p, 0.02).momentum(0.9).dampening(0.1));
    assert_resumes_exactly(|p| Adam::new(p, 0.05).amsgrad(true));
    assert_resumes_exactly(|p| AdamW::new(p, 0.05).weight_decay(0.1));
    assert_resumes_exactly(|p| {
        RMSprop::new(p, 0.01)
            .centered(true)
            .momentum(0.5)
            .weight_decay(0.1)
    });
    assert_resumes_exactly(|p| {
        Adagrad::new(p, 0.1)
            .lr_decay(0.1)
            .initial_accumulator_value(0.3)
    });
}

#[test]
fn state_dict_uses_pytorchs_names() {
    let (w, m) = params(DType::F64);
    let mut opt = Adam::new(vec![w.clone()], 0.1).amsgrad(true);
    opt.add_param_group(ParamGroup::new(vec![m.clone()]).lr(0.01));
    train(&mut opt, &w, &m, 2);
    let s = opt.state_dict();
    let mut tensors: Vec<&str> = s.tensors.iter().map(|(n, _)| n.as_str()).collect();
    tensors.sort();
    assert_eq!(
        tensors,
        [
            "state.0.exp_avg",
            "state.0.exp_avg_sq",
            "state.0.max_exp_avg_sq",
            "state.1.exp_avg",
            "state.1.exp_avg_sq",
            "state.1.max_exp_avg_sq"
        ]
    );
    assert_eq!(s.tensor("state.1.exp_avg").unwrap().shape(), &[2, 3]);
    assert_eq!(s.scalar("state.0.step"), Some(2.0));
    assert_eq!(s.scalar("param_groups.0.lr"), Some(0.1));
    assert_eq!(s.scalar("param_groups.1.lr"), Some(0.01));
    assert_eq!(s.scalar("param_groups.1.betas.1"), Some(0.999));
    assert_eq!(s.scalar("param_groups.0.amsgrad"), Some(1.0));
    assert_eq!(s.scalar("param_groups.0.num_params"), Some(1.0));
    // exp_avg after two steps of the reference.
    let mut r = RefAdam {
        amsgrad: true,
        ..RefAdam::new(0.1)
    };
    let mut x: Vec<f64> = W0.to_vec();
    for t in 1..=2 {
        let g = grad_ref(&[x.clone(), M0.to_vec()].concat());
        r.step(&mut x, &g[..4], t);
    }
    assert_close(
        &s.tensor("state.0.exp_avg").unwrap().to_vec::<f64>(),
        &r.m,
        TOL,
    );
}

#[test]
fn load_state_dict_restores_group_options() {
    let (w, m) = params(DType::F64);
    let mut opt = SGD::new(vec![w.clone(), m.clone()], 0.1).momentum(0.9);
    opt.set_lr(0.003);
    let s = opt.state_dict();
    let mut fresh = SGD::new(vec![w, m], 0.1);
    fresh.load_state_dict(&s).unwrap();
    assert_eq!(fresh.lr(), 0.003);
    assert_eq!(fresh.param_groups()[0].momentum, 0.9);
}

fn trained_adam_state() -> (OptimizerState, Adam) {
    let (w, m) = params(DType::F64);
    let mut opt = Adam::new(vec![w.clone(), m.clone()], 0.1);
    train(&mut opt, &w, &m, 2);
    let (w2, m2) = params(DType::F64);
    (opt.state_dict(), Adam::new(vec![w2, m2], 0.5))
}

fn load_err(opt: &mut dyn Optimizer, s: &OptimizerState) -> String {
    let before = opt.state_dict();
    let e = opt.load_state_dict(s).expect_err("must refuse").to_string();
    // A refused load changes nothing.
    let after = opt.state_dict();
    assert_eq!(before.scalars, after.scalars);
    assert_eq!(before.tensors.len(), after.tensors.len());
    e
}

#[test]
fn load_state_dict_names_a_missing_buffer() {
    let (mut s, mut fresh) = trained_adam_state();
    s.tensors.retain(|(n, _)| n != "state.1.exp_avg_sq");
    let e = load_err(&mut fresh, &s);
    assert!(e.contains("missing `state.1.exp_avg_sq`"), "{e}");
}

#[test]
fn load_state_dict_names_a_missing_step_and_option() {
    let (mut s, mut fresh) = trained_adam_state();
    s.scalars.retain(|(n, _)| n != "state.0.step");
    let e = load_err(&mut fresh, &s);
    assert!(e.contains("missing `state.0.step`"), "{e}");

    let (mut s, mut fresh) = trained_adam_state();
    s.scalars.retain(|(n, _)| n != "param_groups.0.eps");
    let e = load_err(&mut fresh, &s);
    assert!(e.contains("missing `param_groups.0.eps`"), "{e}");
}

#[test]
fn load_state_dict_names_a_misshaped_buffer() {
    let (mut s, mut fresh) = trained_adam_state();
    for (n, t) in &mut s.tensors {
        if n == "state.1.exp_avg" {
            *t = Tensor::zeros([3, 2]).to_dtype(DType::F64);
        }
    }
    let e = load_err(&mut fresh, &s);
    assert!(
        e.contains("`state.1.exp_avg` has shape [3, 2] but parameter 1 has shape [2, 3]"),
        "{e}"
    );
}

#[test]
fn load_state_dict_refuses_other_groups_and_optimizers() {
    // Different group layout.
    let (s, _) = trained_adam_state();
    let (w, m) = params(DType::F64);
    let mut one_group = Adam::new(vec![w], 0.1);
    one_group.add_param_group(ParamGroup::new(vec![m]));
    let e = load_err(&mut one_group, &s);
    assert!(
        e.contains("parameter group 0 has 1 parameters but the saved group had 2"),
        "{e}"
    );
    // Another optimizer's state.
    let (w, m) = params(DType::F64);
    let mut sgd = SGD::new(vec![w, m], 0.1).momentum(0.9);
    let e = load_err(&mut sgd, &s);
    assert!(e.contains("SGD.load_state_dict: unexpected entry"), "{e}");
}

#[test]
fn loaded_state_is_a_private_copy() {
    let (s, mut fresh) = trained_adam_state();
    fresh.load_state_dict(&s).unwrap();
    let before = s.tensor("state.0.exp_avg").unwrap().to_vec::<f64>();
    let w = fresh.param_groups()[0].params[0].clone();
    w.set_grad(Some(Tensor::ones([4]).to_dtype(DType::F64)));
    fresh.step();
    assert_eq!(s.tensor("state.0.exp_avg").unwrap().to_vec::<f64>(), before);
}

// ---------------------------------------------------------------- schedulers

/// An SGD over two groups with lrs 0.1 and 0.02, as in the PyTorch script below.
fn two_group_sgd() -> SGD {
    let a = Tensor::zeros([1]).requires_grad_(true);
    let b = Tensor::zeros([1]).requires_grad_(true);
    let mut opt = SGD::new(vec![a], 0.1);
    opt.add_param_group(ParamGroup::new(vec![b]).lr(0.02));
    opt
}

/// The lrs after construction and after each of `steps` steps, checking
/// that the optimizer's groups hold what `get_last_lr` reports.
fn lrs(opt: &mut SGD, sched: &mut dyn LrScheduler, steps: usize) -> Vec<[f64; 2]> {
    let mut out = Vec::new();
    for i in 0..=steps {
        if i > 0 {
            sched.step(opt);
        }
        assert_eq!(sched.last_epoch(), i);
        let last = sched.get_last_lr();
        let groups: Vec<f64> = opt.param_groups().iter().map(|g| g.lr).collect();
        assert_eq!(last, groups);
        out.push([last[0], last[1]]);
    }
    out
}

#[track_caller]
fn assert_lrs(got: &[[f64; 2]], want: &[[f64; 2]]) {
    assert_eq!(got.len(), want.len());
    for (e, (a, b)) in got.iter().zip(want).enumerate() {
        for g in 0..2 {
            assert!(
                (a[g] - b[g]).abs() < 1e-14,
                "epoch {e} group {g}: got {}, want {}",
                a[g],
                b[g]
            );
        }
    }
}

// The expected lrs below were printed by PyTorch 2.15 with:
//
// import torch
// from torch.optim import SGD, lr_scheduler as L
// def lrs(make, steps):
//     opt = SGD([{"params": [torch.zeros(1, requires_grad=True)]},
//                {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.02}], lr=0.1)
//     s = make(opt)
//     out = [s.get_last_lr()]
//     for _ in range(steps):
//         opt.step(); s.step(); out.append(s.get_last_lr())
//     print(", ".join("[%r, %r]" % tuple(x) for x in out))
// lrs(lambda o: L.StepLR(o, step_size=3, gamma=0.5), 10)
// lrs(lambda o: L.ExponentialLR(o, gamma=0.9), 10)
// lrs(lambda o: L.CosineAnnealingLR(o, T_max=6, eta_min=0.001), 14)
// lrs(lambda o: L.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=4), 8)
// lrs(lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=3),
//                                  L.CosineAnnealingLR(o, T_max=7, eta_min=0.001)], milestones=[3]), 12)

#[test]
fn step_lr_matches_pytorch() {
    let mut opt = two_group_sgd();
    let mut s = StepLR::new(&mut opt, 3, 0.5);
    let want = [
        [0.1, 0.02],
        [0.1, 0.02],
        [0.1, 0.02],
        [0.05, 0.01],
        [0.05, 0.01],
        [0.05, 0.01],
        [0.025, 0.005],
        [0.025, 0.005],
        [0.025, 0.005],
        [0.0125, 0.0025],
        [0.0125, 0.0025],
    ];
    assert_lrs(&lrs(&mut opt, &mut s, 10), &want);
}

#[test]
fn exponential_lr_matches_pytorch() {
    let mut opt = two_group_sgd();
    let mut s = ExponentialLR::new(&mut opt, 0.9);
    let want = [
        [0.1, 0.02],
        [0.09000000000000001, 0.018000000000000002],
        [0.08100000000000002, 0.016200000000000003],
        [0.07290000000000002, 0.014580000000000003],
        [0.06561000000000002, 0.013122000000000003],
        [0.05904900000000002, 0.011809800000000004],
        [0.05314410000000002, 0.010628820000000004],
        [0.04782969000000002, 0.009565938000000005],
        [0.043046721000000024, 0.008609344200000004],
        [0.03874204890000002, 0.007748409780000004],
        [0.03486784401000002, 0.006973568802000004],
    ];
    assert_lrs(&lrs(&mut opt, &mut s, 10), &want);
}

#[test]
fn cosine_annealing_lr_matches_pytorch() {
    let mut opt = two_group_sgd();
    let mut s = CosineAnnealingLR::new(&mut opt, 6, 0.001);
    let want = [
        [0.1, 0.02],
        [0.09336825748732973, 0.018727241335952168],
        [0.07525000000000001, 0.01525],
        [0.0505, 0.010499999999999999],
        [0.025750000000000012, 0.005750000000000001],
        [0.007631742512670284, 0.002272758664047832],
        [0.001, 0.001],
        [0.007631742512670284, 0.002272758664047832],
        [0.025750000000000002, 0.005749999999999999],
        [0.05050000000000004, 0.010500000000000006],
        [0.07525000000000008, 0.01525000000000001],
        [0.0933682574873298, 0.018727241335952178],
        [0.1000000000000001, 0.020000000000000014],
        [0.09336825748732981, 0.01872724133595218],
        [0.07525000000000011, 0.015250000000000017],
    ];
    assert_lrs(&lrs(&mut opt, &mut s, 14), &want);
}

#[test]
fn linear_lr_matches_pytorch() {
    let mut opt = two_group_sgd();
    let mut s = LinearLR::new(&mut opt, 0.25, 1.0, 4);
    // Construction already set epoch 0's rate, as in PyTorch.
    assert_eq!(opt.lr(), 0.025);
    let want = [
        [0.025, 0.005],
        [0.043750000000000004, 0.00875],
        [0.06250000000000001, 0.0125],
        [0.08125000000000002, 0.01625],
        [0.10000000000000002, 0.02],
        [0.10000000000000002, 0.02],
        [0.10000000000000002, 0.02],
        [0.10000000000000002, 0.02],
        [0.10000000000000002, 0.02],
    ];
    assert_lrs(&lrs(&mut opt, &mut s, 8), &want);
}

const TORCH_WARMUP_COSINE: [[f64; 2]; 13] = [
    [0.010000000000000002, 0.002],
    [0.04, 0.007999999999999998],
    [0.07, 0.013999999999999997],
    [0.1, 0.02],
    [0.09509795896116975, 0.019059204245072982],
    [0.08136274519200731, 0.01642315311765797],
    [0.061514786230837566, 0.012613948872584987],
    [0.03948521376916245, 0.008386051127415015],
    [0.019637254807992697, 0.004576846882342032],
    [0.005902041038830259, 0.001940795754927019],
    [0.001, 0.001],
    [0.005902041038830253, 0.001940795754927018],
    [0.019637254807992683, 0.004576846882342029],
];

#[test]
fn sequential_warmup_then_cosine_matches_pytorch() {
    let mut opt = two_group_sgd();
    let warmup = LinearLR::new(&mut opt, 0.1, 1.0, 3);
    let cosine = CosineAnnealingLR::new(&mut opt, 7, 0.001);
    let mut s = SequentialLR::new(&mut opt, vec![Box::new(warmup), Box::new(cosine)], vec![3]);
    assert_lrs(&lrs(&mut opt, &mut s, 12), &TORCH_WARMUP_COSINE);

    let mut opt = two_group_sgd();
    let mut s = SequentialLR::warmup_cosine(&mut opt, 0.1, 3, 10, 0.001);
    assert_lrs(&lrs(&mut opt, &mut s, 12), &TORCH_WARMUP_COSINE);
}

#[test]
fn schedulers_follow_their_closed_forms() {
    let pi = std::f64::consts::PI;
    let mut opt = two_group_sgd();
    let s = CosineAnnealingLR::new(&mut opt, 10, 0.005);
    for e in 0..25 {
        let want = 0.005 + (0.02 - 0.005) * (1.0 + (pi * e as f64 / 10.0).cos()) / 2.0;
        assert!((s.lr_at(e)[1] - want).abs() < 1e-15);
    }
    let mut opt = two_group_sgd();
    let s = StepLR::new(&mut opt, 4, 0.3);
    assert!((s.lr_at(9)[0] - 0.1 * 0.3 * 0.3).abs() < 1e-16);
}

#[test]
fn scheduler_state_round_trip() {
    let mut opt = two_group_sgd();
    let mut s = SequentialLR::warmup_cosine(&mut opt, 0.1, 3, 10, 0.001);
    for _ in 0..5 {
        s.step(&mut opt);
    }
    let saved_sched = s.state_dict();
    let saved_opt = opt.state_dict();
    assert!(saved_sched
        .iter()
        .any(|(k, v)| k == "last_epoch" && *v == 5.0));
    assert!(saved_sched.iter().any(|(k, _)| k == "schedulers.1.T_max"));
    s.step(&mut opt);
    let next = opt.lr();

    // Resume: a fresh optimizer and scheduler built the same way.
    let mut opt2 = two_group_sgd();
    let mut s2 = SequentialLR::warmup_cosine(&mut opt2, 0.1, 3, 10, 0.001);
    opt2.load_state_dict(&saved_opt).unwrap();
    s2.load_state_dict(&saved_sched).unwrap();
    assert_eq!(s2.last_epoch(), 5);
    assert_eq!(opt2.lr(), TORCH_WARMUP_COSINE[5][0]);
    s2.step(&mut opt2);
    assert_eq!(opt2.lr(), next);

    let mut opt3 = two_group_sgd();
    let mut step = StepLR::new(&mut opt3, 2, 0.5);
    step.step(&mut opt3);
    let mut saved = step.state_dict();
    let mut other = StepLR::new(&mut two_group_sgd(), 7, 0.9);
    other.load_state_dict(&saved).unwrap();
    assert_eq!(other.last_epoch(), 1);
    assert_eq!(other.lr_at(2), vec![0.05, 0.01]);
    saved.retain(|(k, _)| k != "gamma");
    let e = other.load_state_dict(&saved).unwrap_err().to_string();
    assert!(e.contains("StepLR.load_state_dict: missing `gamma`"), "{e}");
}

#[test]
#[should_panic(
    expected = "the optimizer has 1 parameter groups but the scheduler was built on one with 2"
)]
fn scheduler_on_another_optimizer_panics() {
    let mut opt = two_group_sgd();
    let mut s = ExponentialLR::new(&mut opt, 0.9);
    let mut other = SGD::new(vec![Tensor::zeros([1]).requires_grad_(true)], 0.1);
    s.step(&mut other);
}

#[test]
#[should_panic(expected = "Starting multiplicative factor expected to be greater than 0")]
fn linear_lr_zero_start_factor_panics() {
    LinearLR::new(&mut two_group_sgd(), 0.0, 1.0, 4);
}

#[test]
fn scheduler_drives_training_lr() {
    // The optimizer uses the lr the scheduler set: two SGD steps with a
    // StepLR halving every step move w by lr * g then lr / 2 * g.
    let w = Tensor::from_vec(vec![1.0f64], [1]).requires_grad_(true);
    let mut opt = SGD::new(vec![w.clone()], 0.1);
    let mut s = StepLR::new(&mut opt, 1, 0.5);
    for _ in 0..2 {
        opt.zero_grad();
        (&w * 4.0).sum().backward();
        opt.step();
        s.step(&mut opt);
    }
    assert!((w.to_vec::<f64>()[0] - (1.0 - 0.4 - 0.2)).abs() < 1e-15);
}
