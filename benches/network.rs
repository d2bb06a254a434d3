//! One training step (forward, backward, SGD update, zero grad) of two MLPs
//! declared with `network!`, on the compile-time path and on the tape, side
//! by side on the same model:
//! - small:  Linear(2,16)-ReLU-Linear(16,1) at batch 16 (steps/s),
//! - medium: 784-256-ReLU-128-ReLU-10 at batch 64 (samples/s).
//!
//! The loss is the mean squared error; the compile-time path seeds backward
//! with its gradient, 2(y - t)/N, so both paths do the same arithmetic.
//!
//! Run: `cargo bench --bench network`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use deriv::nn::{Differentiable, Forward, Linear, Module, ReLU};
use deriv::{network, no_grad, Generator, Tensor};

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

fn network_steps(c: &mut Criterion) {
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
