//! The buffer-reusing training step (`TrainStep`) makes no heap allocation
//! in steady state, and computes what the allocating compile-time path and
//! the tape compute.
//!
//! A counting global allocator counts the allocations (alloc, alloc_zeroed,
//! realloc) made by the test's own thread while a flag is set: other tests
//! run on other threads, and the matrix products' helper threads take their
//! parts without allocating (their mailboxes are fixed: `backend/cpu/pool.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use deriv::nn::{Module, TrainStep};
use deriv::{manual_seed, no_grad, DType, Generator, Tensor};

#[path = "common/workloads.rs"]
mod workloads;
use workloads::*;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

static TRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
fn note() {
    if COUNTING.try_with(|c| c.get()).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if TRACE.load(Ordering::Relaxed) && ALLOCATIONS.load(Ordering::Relaxed) % 1000 < 12 {
            COUNTING.with(|c| c.set(false));
            eprintln!("ALLOC {}", std::backtrace::Backtrace::force_capture());
            COUNTING.with(|c| c.set(true));
        }
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
    TRACE.store(
        std::env::var_os("DERIV_ALLOC_TRACE").is_some(),
        Ordering::Relaxed,
    );
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
    let user = build();
    let (mut opt_compiled, mut opt_tape) = (sgd(&compiled, lr), sgd(&tape, lr));
    let mut opt_user = sgd(&user, lr);
    assert_same_params(label, &ws.model, &compiled, false, 0.0);
    for (x, t) in batches {
        ws.step(x, t);
        compile_time_step(&compiled, x, t, loss, &mut opt_compiled);
        tape_step(&tape, x, t, loss, &mut opt_tape);
        user_step(&user, x, t, loss, &mut opt_user);
    }
    // The step as a user writes it (the loss module's forward_backward,
    // opt.step(), opt.zero_grad()) is the same step.
    assert_same_params(
        &format!("{label} params vs the user's compile-time step"),
        &ws.model,
        &user,
        false,
        1e-10,
    );
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

// ----- the class form: generated workspaces, fan-out sums, fallback ops

use deriv::network;
use deriv::nn::{
    BatchNorm1d, Conv2d, ConvTranspose2d, Differentiable, Embedding, Flatten, GroupNorm, LayerNorm,
    Linear, MaxPool2d, ReLU, Tanh, TransformerEncoderLayer, TransformerEncoderLayerOptions, GRU,
    LSTM,
};

network! {
    /// A residual block: `h` fans out into the branch and the sum; every op
    /// has a buffer-reusing form.
    pub struct Residual {
        fc1: Linear(2, 16),
        fc2: Linear(16, 16),
        fc3: Linear(16, 1),
    }
    fn forward(x) {
        let h = relu(fc1(x));
        let r = tanh(fc2(h)) + h;
        fc3(sigmoid(r))
    }
}

network! {
    /// Ops without a buffer-reusing form (they allocate) mixed with ones
    /// that have it, an input-only branch, and a value used twice by one op.
    pub struct Mixed {
        fc1: Linear(3, 8),
        fc2: Linear(8, 4),
    }
    fn forward(x) {
        let s = x.sum_dim(1, true) * 0.5;
        let h = tanh(fc1(x)) + s;
        let y = fc2(h * h);
        log_softmax(y, 1)
    }
}

#[test]
fn class_form_steady_state_step_allocates_nothing() {
    let _serial = serial();
    manual_seed(1);
    let mut gen = Generator::new(8);
    let batches: Vec<_> = (0..4).map(|_| w3_batch(&mut gen, DType::F32)).collect();
    let mut trainer = WsTrainer::new(Residual::default(), LossKind::Bce, 0.5);
    assert_steady_state_allocates_nothing("Residual", &mut trainer, &batches);
}

/// Two rounds of forward + backward (with input gradients) on the
/// workspace path and on `forward_train`/`backward`, from one seed in f64:
/// the outputs, input gradients and accumulated parameter gradients agree.
fn class_paths_agree<M: TrainStep>(label: &str, make: impl Fn() -> M, shape: [usize; 2]) {
    let build = || {
        manual_seed(11);
        let mut m = make();
        m.to_dtype(DType::F64);
        m
    };
    let (a, b) = (build(), build());
    let mut ws = a.workspace();
    let mut gen = Generator::new(12);
    for round in 0..2 {
        let x = Tensor::randn_with(shape, &mut gen).to_dtype(DType::F64);
        let y_ws = a.forward_train_ws(&x, &mut ws).clone_data();
        let (y, saved) = Differentiable::forward_train(&b, &x);
        let v = Tensor::randn_with(y.shape(), &mut gen).to_dtype(DType::F64);
        let close = |p: &Tensor, q: &Tensor, what: &str| {
            assert_eq!(p.shape(), q.shape(), "{label} round {round}: {what}");
            for (i, (s, t)) in p.to_vec::<f64>().iter().zip(q.to_vec::<f64>()).enumerate() {
                assert!(
                    (s - t).abs() <= 1e-10 * (1.0 + t.abs()),
                    "{label} round {round}: {what} [{i}]: {s} vs {t}"
                );
            }
        };
        close(&y_ws, &y, "output");
        let dx_ws = a
            .backward_ws(&mut ws, &v, true)
            .expect("input grad")
            .clone_data();
        let dx = Differentiable::backward(&b, saved, &v, true).expect("input grad");
        close(&dx_ws, &dx, "input grad");
    }
    assert_same_params(label, &a, &b, true, 1e-10);
}

#[test]
fn class_form_paths_agree_in_f64() {
    let _serial = serial();
    class_paths_agree("Residual", Residual::default, [5, 2]);
    class_paths_agree("Mixed", Mixed::default, [6, 3]);
    // Runtime layers on their own, through the sequential form's tuple.
    network! {
        struct Layers = Linear(4, 6) -> deriv::nn::Sigmoid -> deriv::nn::Dropout(0.0)
            -> deriv::nn::Identity -> Linear(6, 3) -> deriv::nn::Tanh -> deriv::nn::Softmax(1);
    }
    class_paths_agree("Layers", Layers::default, [7, 4]);
    network! {
        struct Flat = deriv::nn::Flatten -> Linear(6, 2) -> deriv::nn::LogSoftmax(1);
    }
    let build = || {
        manual_seed(3);
        let mut m = Flat::default();
        m.to_dtype(DType::F64);
        m
    };
    let (a, b) = (build(), build());
    let mut ws = a.workspace();
    let x = Tensor::randn([4, 2, 3]).to_dtype(DType::F64);
    for _ in 0..2 {
        let y = a.forward_train_ws(&x, &mut ws).clone_data();
        let (y2, saved) = Differentiable::forward_train(&b, &x);
        assert_eq!(y.to_vec::<f64>(), y2.to_vec::<f64>());
        let v = Tensor::ones([4, 2]).to_dtype(DType::F64);
        let dx = a.backward_ws(&mut ws, &v, true).unwrap().clone_data();
        let dx2 = Differentiable::backward(&b, saved, &v, true).unwrap();
        assert_eq!(dx.shape(), &[4, 2, 3]);
        for (p, q) in dx.to_vec::<f64>().iter().zip(dx2.to_vec::<f64>()) {
            assert!((p - q).abs() < 1e-12);
        }
    }
    assert_same_params("Flat", &a, &b, true, 1e-10);
}

#[test]
fn dropout_ws_draws_the_same_mask_as_forward_train() {
    let _serial = serial();
    let d = deriv::nn::Dropout::new(0.5, &deriv::Device::Cpu);
    let x = Tensor::randn([8, 32]);
    manual_seed(21);
    let (y, mask) = Differentiable::forward_train(&d, &x);
    manual_seed(21);
    let mut ws = d.workspace();
    let y_ws = d.forward_train_ws(&x, &mut ws).clone_data();
    assert_eq!(y.to_vec::<f32>(), y_ws.to_vec::<f32>());
    let g = Tensor::randn([8, 32]);
    let dx = d.backward_ws(&mut ws, &g, true).unwrap().clone_data();
    let dx2 = Differentiable::backward(&d, mask, &g, true).unwrap();
    assert_eq!(dx.to_vec::<f32>(), dx2.to_vec::<f32>());
    // Kept elements are scaled by 1/(1-p) = 2, dropped ones are 0.
    for (o, i) in y_ws.to_vec::<f32>().iter().zip(x.to_vec::<f32>()) {
        assert!(*o == 0.0 || *o == 2.0 * i);
    }
}

#[test]
fn a_batch_size_change_reallocates_and_stays_correct() {
    let _serial = serial();
    manual_seed(2);
    let (a, b) = (Linear::new(3, 2, &deriv::Device::Cpu), {
        manual_seed(2);
        Linear::new(3, 2, &deriv::Device::Cpu)
    });
    let mut ws = a.workspace();
    for rows in [4, 7, 4] {
        let x = Tensor::randn([rows, 3]);
        let y = a.forward_train_ws(&x, &mut ws).clone_data();
        assert_eq!(y.shape(), &[rows, 2]);
        let (y2, saved) = Differentiable::forward_train(&b, &x);
        for (p, q) in y.to_vec::<f32>().iter().zip(y2.to_vec::<f32>()) {
            assert!((p - q).abs() < 1e-6);
        }
        let g = Tensor::ones([rows, 2]);
        let dx = a.backward_ws(&mut ws, &g, true).unwrap().clone_data();
        let dx2 = Differentiable::backward(&b, saved, &g, true).unwrap();
        assert_eq!(dx.shape(), &[rows, 3]);
        for (p, q) in dx.to_vec::<f32>().iter().zip(dx2.to_vec::<f32>()) {
            assert!((p - q).abs() < 1e-6);
        }
    }
    // db accumulated over 4 + 7 + 4 rows of ones.
    assert_eq!(
        a.bias.as_ref().unwrap().grad().unwrap().to_vec::<f32>(),
        vec![15.0, 15.0]
    );
}

#[test]
fn linear_ws_handles_1d_and_3d_inputs_like_forward_train() {
    let _serial = serial();
    for shape in [vec![3usize], vec![2, 5, 3]] {
        manual_seed(4);
        let a = Linear::new(3, 4, &deriv::Device::Cpu);
        manual_seed(4);
        let b = Linear::new(3, 4, &deriv::Device::Cpu);
        let mut ws = a.workspace();
        let x = Tensor::randn(&shape);
        let y = a.forward_train_ws(&x, &mut ws).clone_data();
        let (y2, saved) = Differentiable::forward_train(&b, &x);
        assert_eq!(y.shape(), y2.shape());
        let g = Tensor::randn(y.shape());
        let dx = a.backward_ws(&mut ws, &g, true).unwrap().clone_data();
        let dx2 = Differentiable::backward(&b, saved, &g, true).unwrap();
        assert_eq!(dx.shape(), &shape[..]);
        for (p, q) in [(y, y2), (dx, dx2)] {
            for (s, t) in p.to_vec::<f32>().iter().zip(q.to_vec::<f32>()) {
                assert!((s - t).abs() < 1e-5, "{shape:?}: {s} vs {t}");
            }
        }
        for (pa, pb) in a.parameters().iter().zip(b.parameters()) {
            let (ga, gb) = (
                pa.grad().unwrap().to_vec::<f32>(),
                pb.grad().unwrap().to_vec::<f32>(),
            );
            for (s, t) in ga.iter().zip(gb) {
                assert!((s - t).abs() < 1e-5, "{shape:?} grads: {s} vs {t}");
            }
        }
    }
}

/// `#[module(sequential)]` on a generic struct: the `TrainStep` impl's
/// bounds are on the type parameters.
#[derive(deriv::nn::Module)]
#[module(sequential)]
struct Pair<A, B> {
    first: A,
    second: B,
}

#[test]
fn derived_sequential_generic_struct_has_the_ws_path() {
    let _serial = serial();
    let dev = deriv::Device::Cpu;
    let build = || {
        manual_seed(9);
        Pair {
            first: Linear::new(3, 5, &dev),
            second: Pair {
                first: deriv::nn::Tanh,
                second: Linear::new(5, 2, &dev),
            },
        }
    };
    let (a, b) = (build(), build());
    let mut ws = a.workspace();
    for _ in 0..2 {
        let x = Tensor::randn([4, 3]);
        let y = a.forward_train_ws(&x, &mut ws).clone_data();
        let (y2, saved) = Differentiable::forward_train(&b, &x);
        let g = Tensor::randn([4, 2]);
        let dx = a.backward_ws(&mut ws, &g, true).unwrap().clone_data();
        let dx2 = Differentiable::backward(&b, saved, &g, true).unwrap();
        for (p, q) in [(y, y2), (dx, dx2)] {
            for (s, t) in p.to_vec::<f32>().iter().zip(q.to_vec::<f32>()) {
                assert!((s - t).abs() < 1e-5, "{s} vs {t}");
            }
        }
    }
    for (pa, pb) in a.parameters().iter().zip(b.parameters()) {
        let (ga, gb) = (
            pa.grad().unwrap().to_vec::<f32>(),
            pb.grad().unwrap().to_vec::<f32>(),
        );
        for (s, t) in ga.iter().zip(gb) {
            assert!((s - t).abs() < 1e-5, "grads: {s} vs {t}");
        }
    }
}

/// What a user writes: the W4 step with the library's optimizers (not the
/// plain update above): `step` and `zero_grad_in_place` reuse their state
/// and allocate nothing in steady state, also where the update of a big
/// parameter is split across threads. So does `zero_grad()`, which sets
/// `.grad()` to `None` but leaves the dropped buffers for the next backward.
#[test]
fn w4_step_with_library_optimizers_allocates_nothing() {
    use deriv::optim::{Adam, Optimizer, SGD};
    let _serial = serial();
    let mut gen = Generator::new(5);
    let batches: Vec<_> = (0..4).map(|_| w4_batch(&mut gen, DType::F32)).collect();
    type MakeOptimizer = fn(Vec<Tensor>) -> Box<dyn Optimizer>;
    let optimizers: Vec<(&str, MakeOptimizer)> = vec![
        ("SGD", |p| Box::new(SGD::new(p, W4_LR))),
        ("SGD momentum", |p| {
            Box::new(SGD::new(p, W4_LR).momentum(0.9))
        }),
        ("Adam", |p| Box::new(Adam::new(p, 1e-3))),
    ];
    for ((label, make), set_to_none) in optimizers.into_iter().flat_map(|o| [(o, false), (o, true)])
    {
        let label = format!(
            "{label}, zero_grad{}",
            if set_to_none { "()" } else { "_in_place()" }
        );
        manual_seed(0);
        let model = W4::default();
        let mut ws = model.workspace();
        let mut opt = make(model.parameters());
        let loss = Tensor::zeros([]);
        let grad = Tensor::zeros([W4_BATCH, 10]);
        let mut step = |x: &Tensor, t: &Tensor| {
            let y = model.forward_train_ws(x, &mut ws);
            let value = deriv::vjp::cross_entropy_into(y, t, &loss, &grad);
            let _ = model.backward_ws(&mut ws, &grad, false);
            opt.step();
            if set_to_none {
                opt.zero_grad();
            } else {
                opt.zero_grad_in_place();
            }
            value
        };
        for (x, t) in batches.iter().cycle().take(3) {
            step(x, t);
        }
        let mut losses = [0.0f64; 100];
        let n = allocations_in(|| {
            for (i, (x, t)) in batches.iter().cycle().take(100).enumerate() {
                losses[i] = step(x, t);
            }
        });
        assert_eq!(n, 0, "{label}: {n} allocations in 100 steady-state steps");
        if set_to_none {
            assert!(model.parameters().iter().all(|p| p.grad().is_none()));
        }
        assert!(
            losses[100 - batches.len()] < losses[0],
            "{label}: loss {} -> {} on batch 0",
            losses[0],
            losses[100 - batches.len()]
        );
    }
}

network! {
    /// A lookup table first: its i64 input has no gradient.
    pub struct Tokens = Embedding(10, 8) -> Tanh -> Linear(8, 3);
}

#[test]
fn embedding_steady_state_step_allocates_nothing() {
    let _serial = serial();
    manual_seed(2);
    // Token k belongs to class k % 3: learnable through the table.
    let batches: Vec<_> = (0..4i64)
        .map(|b| {
            let idx: Vec<i64> = (0..16).map(|i| (i * 7 + b * 3) % 10).collect();
            let cls: Vec<i64> = idx.iter().map(|k| k % 3).collect();
            (Tensor::from_vec(idx, [16]), Tensor::from_vec(cls, [16]))
        })
        .collect();
    let mut trainer = WsTrainer::new(Tokens::default(), LossKind::CrossEntropy, 0.5);
    assert_steady_state_allocates_nothing("Tokens", &mut trainer, &batches);
}

network! {
    /// A normalisation layer between two linear ones.
    pub struct NormedMlp = Linear(2, 16) -> LayerNorm(16) -> ReLU -> Linear(16, 1);
}

#[test]
fn layer_norm_steady_state_step_allocates_nothing() {
    let _serial = serial();
    manual_seed(4);
    let mut gen = Generator::new(9);
    let batches: Vec<_> = (0..4).map(|_| w3_batch(&mut gen, DType::F32)).collect();
    let mut trainer = WsTrainer::new(NormedMlp::default(), LossKind::Bce, 0.5);
    assert_steady_state_allocates_nothing("NormedMlp", &mut trainer, &batches);
}

network! {
    /// Batch normalisation (its running statistics updated every step) and
    /// group normalisation.
    pub struct BatchNormedMlp = Linear(2, 16) -> BatchNorm1d(16) -> ReLU -> Linear(16, 8)
        -> GroupNorm(2, 8) -> Tanh -> Linear(8, 1);
}

#[test]
fn batch_norm_steady_state_step_allocates_nothing() {
    let _serial = serial();
    manual_seed(6);
    let mut gen = Generator::new(11);
    let batches: Vec<_> = (0..4).map(|_| w3_batch(&mut gen, DType::F32)).collect();
    let mut trainer = WsTrainer::new(BatchNormedMlp::default(), LossKind::Bce, 0.5);
    assert_steady_state_allocates_nothing("BatchNormedMlp", &mut trainer, &batches);
}

/// Four batches of 16 noisy 6x6 images: class k has a bright pixel at
/// (2k, 2k).
fn bright_pixel_batches(gen: &mut Generator) -> Vec<(Tensor, Tensor)> {
    (0..4)
        .map(|_| {
            let x = Tensor::randn_with([16, 1, 6, 6], gen) * 0.1;
            let cls: Vec<i64> = (0..16).map(|i| (i % 3) as i64).collect();
            no_grad(|| {
                for (i, &k) in cls.iter().enumerate() {
                    let p = 2 * k as usize;
                    x.select(0, i as isize)
                        .select(1, p as isize)
                        .select(1, p as isize)
                        .fill_(1.0);
                }
            });
            (x, Tensor::from_vec(cls, [16]))
        })
        .collect()
}

network! {
    /// Convolution and pooling before a classifier.
    pub struct TinyCnn = Conv2d(1, 4, 3) -> ReLU -> MaxPool2d(2) -> Flatten -> Linear(16, 3);
}

#[test]
fn conv_steady_state_step_allocates_nothing() {
    let _serial = serial();
    manual_seed(5);
    let mut gen = Generator::new(10);
    let batches = bright_pixel_batches(&mut gen);
    let mut trainer = WsTrainer::new(TinyCnn::default(), LossKind::CrossEntropy, 0.2);
    assert_steady_state_allocates_nothing("TinyCnn", &mut trainer, &batches);
}

network! {
    /// A transposed convolution (with its bias) back up to the input's size.
    pub struct UpCnn = Conv2d(1, 4, 3) -> ReLU -> ConvTranspose2d(4, 2, 3) -> Flatten
        -> Linear(72, 3);
}

#[test]
fn conv_transpose_steady_state_step_allocates_nothing() {
    let _serial = serial();
    manual_seed(7);
    let mut gen = Generator::new(12);
    let batches = bright_pixel_batches(&mut gen);
    let mut trainer = WsTrainer::new(UpCnn::default(), LossKind::CrossEntropy, 0.2);
    assert_steady_state_allocates_nothing("UpCnn", &mut trainer, &batches);
}

network! {
    /// Two recurrent layers over 16 steps of 5 sequences, and a classifier
    /// on each step's outputs.
    pub struct Tagger = LSTM(4, 8) -> GRU(8, 6) -> Flatten -> Linear(30, 3);
}

#[test]
fn recurrent_steady_state_step_allocates_nothing() {
    let _serial = serial();
    manual_seed(8);
    let mut gen = Generator::new(13);
    // Step t's class is t % 3, which the first feature of every sequence's
    // input at that step tells.
    let batches: Vec<_> = (0..4)
        .map(|_| {
            let x = Tensor::randn_with([16, 5, 4], &mut gen) * 0.1;
            let cls: Vec<i64> = (0..16).map(|t| (t % 3) as i64).collect();
            no_grad(|| {
                for (t, &k) in cls.iter().enumerate() {
                    x.select(0, t as isize).select(1, 0).fill_(k as f64);
                }
            });
            (x, Tensor::from_vec(cls, [16]))
        })
        .collect();
    let mut trainer = WsTrainer::new(Tagger::default(), LossKind::CrossEntropy, 0.2);
    assert_steady_state_allocates_nothing("Tagger", &mut trainer, &batches);
}

network! {
    /// An encoder layer over the tokens, a classifier on all of them.
    pub struct TokenClassifier = TransformerEncoderLayer(8, 2) -> Flatten -> Linear(48, 3);
}

#[test]
fn transformer_steady_state_step_allocates_nothing() {
    let _serial = serial();
    manual_seed(10);
    let mut gen = Generator::new(15);
    let mut model = TokenClassifier::new(&deriv::Device::Cpu);
    // Without dropout (its masks on the attention weights are the
    // allocating path's draws); batch-first and pre-norm (tests/attention.rs
    // checks both orders and layouts against the tape).
    let opts = TransformerEncoderLayerOptions {
        dim_feedforward: 16,
        dropout: 0.0,
        norm_first: true,
        batch_first: true,
        ..Default::default()
    };
    model.0 = TransformerEncoderLayer::with_options(8, 2, &opts, &deriv::Device::Cpu);
    // Sequence k's class is k % 3, which the first feature of its tokens
    // tells.
    let batches: Vec<_> = (0..4)
        .map(|_| {
            let x = Tensor::randn_with([5, 6, 8], &mut gen) * 0.1;
            let cls: Vec<i64> = (0..5).map(|n| (n % 3) as i64).collect();
            no_grad(|| {
                for (n, &k) in cls.iter().enumerate() {
                    x.select(0, n as isize).select(1, 0).fill_(k as f64);
                }
            });
            (x, Tensor::from_vec(cls, [5]))
        })
        .collect();
    let mut trainer = WsTrainer::new(model, LossKind::CrossEntropy, 0.2);
    assert_steady_state_allocates_nothing("TokenClassifier", &mut trainer, &batches);
    // A broadcast output gradient (a mean over the tokens) is copied into
    // a kept buffer, not sent down the allocating kernels.
    let layer = &trainer.model.0;
    let mut ws = layer.workspace();
    let x = &batches[0].0;
    let g = Tensor::randn([5, 1, 8]).expand([5, 6, 8]);
    let mut step = || {
        layer.forward_train_ws(x, &mut ws);
        layer.backward_ws(&mut ws, &g, true).is_some()
    };
    assert!(step() && step());
    let n = allocations_in(|| assert!(step()));
    assert_eq!(n, 0, "a broadcast gradient: {n} allocations");
}
