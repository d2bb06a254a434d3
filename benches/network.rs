//! One training step (forward, backward, SGD update, zero grad) of two MLPs
//! declared with `network!`, on the compile-time path and on the tape, side
//! by side on the same model:
//! - small:  Linear(2,16)-ReLU-Linear(16,1) at batch 16 (steps/s),
//! - medium: 784-256-ReLU-128-ReLU-10 at batch 64 (samples/s).
//!
//! The loss is the mean squared error; the compile-time path seeds backward
//! with its gradient, 2(y - t)/N, so both paths do the same arithmetic.
//!
//! The W3/W4 groups run the workloads of `tests/common/workloads.rs` (BCE
//! and cross-entropy, the losses of the performance targets) with a full
//! step, updated by `optim::SGD`, on three paths: `ws` (the buffer-reusing `TrainStep`, which
//! allocates nothing in steady state), `compile_time` (`forward_train` /
//! `backward`, allocating) and `tape`:
//! - w3_step: Linear(2,16)-ReLU-Linear(16,1), BCE-with-logits, batch 16, SGD 0.1 (steps/s),
//! - w4_step: 784-256-ReLU-128-ReLU-10, cross-entropy, batch 64, SGD 0.01 (samples/s).
//!
//! Run: `cargo bench --bench network`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use deriv::DType;

#[path = "../tests/common/workloads.rs"]
mod workloads;
use deriv::nn::{Differentiable, Forward, Linear, Module, ReLU};
use deriv::{network, no_grad, Generator, Tensor};
use workloads::{LossKind, WsTrainer, W3, W4};

network! {
    /// The small MLP of the benchmark.
    pub struct Small = Linear(2, 16) -> ReLU -> Linear(16, 1);
}

network! {
    /// The medium MLP of the benchmark.
    pub struct Medium = Linear(784, 256) -> ReLU -> Linear(256, 128) -> ReLU -> Linear(128, 10);
}

/// Plain SGD in place: p -= lr * p.grad, then zero the gradients.
fn sgd_step(model: &impl Module, lr: f64) {
    no_grad(|| {
        model.visit_parameters("", &mut |_, p| {
            if let Some(g) = p.grad() {
                p.add_scaled_(&g, -lr);
                g.zero_();
            }
        })
    });
}

fn compile_time_step<M: Differentiable>(model: &M, x: &Tensor, t: &Tensor, lr: f64) {
    let (y, saved) = model.forward_train(x);
    let grad = (&y - t) * (2.0 / y.numel() as f64);
    model.backward(saved, &grad, false);
    sgd_step(model, lr);
}

fn tape_step<M: Forward + Module>(model: &M, x: &Tensor, t: &Tensor, lr: f64) {
    let y = model.forward(x);
    let loss = (&y - t).square().mean();
    loss.backward();
    sgd_step(model, lr);
}

fn bench_model<M: Differentiable>(
    c: &mut Criterion,
    name: &str,
    model: M,
    batch: usize,
    features: usize,
    outputs: usize,
    per_sample: bool,
) {
    let mut gen = Generator::new(0);
    let x = Tensor::randn_with([batch, features], &mut gen);
    let t = Tensor::randn_with([batch, outputs], &mut gen);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(if per_sample {
        batch as u64
    } else {
        1
    }));
    group.bench_function(BenchmarkId::new("compile_time", batch), |b| {
        b.iter(|| compile_time_step(&model, &x, &t, 0.01))
    });
    group.bench_function(BenchmarkId::new("tape", batch), |b| {
        b.iter(|| tape_step(&model, &x, &t, 0.01))
    });
    group.finish();
}

/// A W3/W4 workload on the three paths (each on its own model, same init).
fn bench_workload<M: deriv::nn::TrainStep>(
    c: &mut Criterion,
    name: &str,
    make: impl Fn() -> M,
    batch: (Tensor, Tensor),
    loss: LossKind,
    lr: f64,
    per_sample: bool,
) {
    let (x, t) = batch;
    let mut group = c.benchmark_group(name);
    let n = x.shape()[0] as u64;
    group.throughput(Throughput::Elements(if per_sample { n } else { 1 }));
    let mut trainer = WsTrainer::new(make(), loss, lr);
    group.bench_function(BenchmarkId::new("ws", n), |b| {
        b.iter(|| trainer.step(&x, &t))
    });
    let model = make();
    let mut opt = workloads::sgd(&model, lr);
    group.bench_function(BenchmarkId::new("compile_time", n), |b| {
        b.iter(|| workloads::user_step(&model, &x, &t, loss, &mut opt))
    });
    let model = make();
    let mut opt = workloads::sgd(&model, lr);
    group.bench_function(BenchmarkId::new("tape", n), |b| {
        b.iter(|| workloads::tape_step(&model, &x, &t, loss, &mut opt))
    });
    group.finish();
}

fn network_steps(c: &mut Criterion) {
    let mut gen = Generator::new(0);
    let w3 = workloads::w3_batch(&mut gen, DType::F32);
    let w4 = workloads::w4_batch(&mut gen, DType::F32);
    bench_workload(
        c,
        "w3_step",
        W3::default,
        w3,
        LossKind::Bce,
        workloads::W3_LR,
        false,
    );
    bench_workload(
        c,
        "w4_step",
        W4::default,
        w4,
        LossKind::CrossEntropy,
        workloads::W4_LR,
        true,
    );
    bench_model(c, "small_mlp_step", Small::default(), 16, 2, 1, false);
    bench_model(c, "medium_mlp_step", Medium::default(), 64, 784, 10, true);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = network_steps
}
criterion_main!(benches);
