//! The buffer-reusing training step (`TrainStep`) makes no heap allocation
//! in steady state, and computes what the allocating compile-time path and
//! the tape compute.
//!
//! A counting global allocator counts the allocations (alloc, alloc_zeroed,
//! realloc) made by the test's own thread while a flag is set: other tests
//! run on other threads, and the matrix products' helper threads take their
//! parts without allocating (their mailboxes are fixed: `ops/into.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use deriv::nn::{Module, TrainStep};
use deriv::{manual_seed, DType, Generator, Tensor};

#[path = "common/workloads.rs"]
mod workloads;
use workloads::*;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.try_with(|c| c.get()).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Tests that seed the global generator run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The number of allocations this thread makes in `f`.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn the_counter_sees_allocations() {
    // The instrument itself: a Vec and a tensor op do allocate.
    let n = allocations_in(|| {
        let v: Vec<u8> = Vec::with_capacity(10);
        std::hint::black_box(v);
    });
    assert_eq!(n, 1);
    let x = Tensor::ones([4]);
    let n = allocations_in(|| {
        std::hint::black_box(&x + &x);
    });
    assert!(n >= 3, "an allocating op made {n} allocations");
}

/// Warm-up steps, then 100 steps that must not allocate.
fn assert_steady_state_allocates_nothing<M: TrainStep>(
    label: &str,
    trainer: &mut WsTrainer<M>,
    batches: &[(Tensor, Tensor)],
) {
    for (x, t) in batches.iter().cycle().take(3) {
        trainer.step(x, t);
    }
    let mut losses = [0.0f64; 100];
    let n = allocations_in(|| {
        for (i, (x, t)) in batches.iter().cycle().take(100).enumerate() {
            losses[i] = trainer.step(x, t);
        }
    });
    assert_eq!(n, 0, "{label}: {n} allocations in 100 steady-state steps");
    assert!(losses.iter().all(|l| l.is_finite()), "{label}: {losses:?}");
    // It trains: the loss on the first batch went down.
    let (x, t) = &batches[0];
    let first = losses[0];
    let last = losses[100 - batches.len()];
    assert!(last < first, "{label}: loss {first} -> {last} on batch 0");
    let _ = (x, t);
}

#[test]
fn w3_steady_state_step_allocates_nothing() {
    let _serial = serial();
    manual_seed(0);
    let mut gen = Generator::new(3);
    let batches: Vec<_> = (0..4).map(|_| w3_batch(&mut gen, DType::F32)).collect();
    let mut trainer = WsTrainer::new(W3::default(), LossKind::Bce, W3_LR);
    assert_steady_state_allocates_nothing("W3", &mut trainer, &batches);
}

#[test]
fn w4_steady_state_step_allocates_nothing() {
    let _serial = serial();
    manual_seed(0);
    let mut gen = Generator::new(4);
    let batches: Vec<_> = (0..4).map(|_| w4_batch(&mut gen, DType::F32)).collect();
    let mut trainer = WsTrainer::new(W4::default(), LossKind::CrossEntropy, W4_LR);
    assert_steady_state_allocates_nothing("W4", &mut trainer, &batches);
}

/// Every parameter (and gradient, when `grads`) of `a` equals `b`'s within `tol`.
fn assert_same_params(label: &str, a: &impl Module, b: &impl Module, grads: bool, tol: f64) {
    for ((name, pa), (_, pb)) in a.named_parameters().into_iter().zip(b.named_parameters()) {
        let pairs = if grads {
            let (ga, gb) = (pa.grad(), pb.grad());
            let (ga, gb) = (
                ga.unwrap_or_else(|| panic!("{label}: {name} has no grad")),
                gb.unwrap_or_else(|| panic!("{label}: {name} has no grad (reference)")),
            );
            (ga.to_vec::<f64>(), gb.to_vec::<f64>())
        } else {
            (pa.to_vec::<f64>(), pb.to_vec::<f64>())
        };
        assert_eq!(pairs.0.len(), pairs.1.len());
        for (i, (x, y)) in pairs.0.iter().zip(&pairs.1).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{label}: {name}{} [{i}]: {x} vs {y}",
                if grads { ".grad" } else { "" }
            );
        }
    }
}

/// Three models from one seed in f64: after the same steps on the three
/// paths, the parameters agree; then one more forward/backward gives the
/// same gradients.
fn paths_agree<M, F>(label: &str, make: F, loss: LossKind, lr: f64, batches: &[(Tensor, Tensor)])
where
    M: TrainStep,
    F: Fn() -> M,
{
    let build = || {
        manual_seed(7);
        let mut m = make();
        m.to_dtype(DType::F64);
        m
    };
    let mut ws = WsTrainer::new(build(), loss, lr);
    let compiled = build();
    let tape = build();
    assert_same_params(label, &ws.model, &compiled, false, 0.0);
    for (x, t) in batches {
        ws.step(x, t);
        compile_time_step(&compiled, x, t, loss, lr);
        tape_step(&tape, x, t, loss, lr);
    }
    assert_same_params(
        &format!("{label} params vs compile-time"),
        &ws.model,
        &compiled,
        false,
        1e-10,
    );
    assert_same_params(
        &format!("{label} params vs tape"),
        &ws.model,
        &tape,
        false,
        1e-10,
    );
    // One more step's gradients (not applied).
    let (x, t) = &batches[0];
    let l_ws = ws.forward_backward(x, t);
    let (y, saved) = deriv::nn::Differentiable::forward_train(&compiled, x);
    let g = loss.grad_alloc(&y, t);
    deriv::nn::Differentiable::backward(&compiled, saved, &g, false);
    let l_tape = loss.tape(&deriv::nn::Forward::forward(&tape, x), t);
    l_tape.backward();
    assert!(
        (l_ws - l_tape.item()).abs() <= 1e-10 * (1.0 + l_tape.item().abs()),
        "{label}: loss {l_ws} vs {}",
        l_tape.item()
    );
    assert_same_params(
        &format!("{label} grads vs compile-time"),
        &ws.model,
        &compiled,
        true,
        1e-10,
    );
    assert_same_params(
        &format!("{label} grads vs tape"),
        &ws.model,
        &tape,
        true,
        1e-10,
    );
}

#[test]
fn w3_paths_agree_in_f64() {
    let _serial = serial();
    let mut gen = Generator::new(5);
    let batches: Vec<_> = (0..3).map(|_| w3_batch(&mut gen, DType::F64)).collect();
    paths_agree("W3", W3::default, LossKind::Bce, W3_LR, &batches);
}

#[test]
fn w4_paths_agree_in_f64() {
    let _serial = serial();
    let mut gen = Generator::new(6);
    let batches: Vec<_> = (0..3).map(|_| w4_batch(&mut gen, DType::F64)).collect();
    paths_agree("W4", W4::default, LossKind::CrossEntropy, W4_LR, &batches);
}
