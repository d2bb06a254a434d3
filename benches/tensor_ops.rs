//! Micro-benchmarks of the tensor runtime: matmul, elementwise add/mul, and one
//! optimisation step of Example 0 (the overhead of the op/tape/engine path).
//!
//! Run with `cargo bench --bench tensor_ops` (about two minutes), or one group
//! with e.g. `cargo bench --bench tensor_ops -- matmul_f32`.
//! `benches/pytorch/compare.sh` runs this and the same workloads in PyTorch and
//! prints them side by side.
//!
//! Reading the output:
//! - `matmul_f32/<n>` reports its throughput as `Gelem/s`: each iteration counts
//!   2·n³ "elements" (one multiply and one add per inner-product term), so the
//!   number is GFLOP/s.
//! - `add_f32/<n>` and `mul_f32/<n>` report bytes moved: 12·n per iteration (two
//!   f32 reads and one f32 write per element), so `GiB/s` is memory bandwidth.
//! - `example0_step` reports the time of one step: forward, backward, the SGD
//!   update under `no_grad`, and zeroing both gradients.

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use deriv::prelude::*;

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32");
    group.warm_up_time(Duration::from_millis(500));
    for n in [64usize, 256, 512, 1024, 2048] {
        let a = Tensor::randn([n, n]);
        let b = Tensor::randn([n, n]);
        // Big products take ~0.1 s each: a few iterations per sample suffice.
        if n >= 1024 {
            group.sampling_mode(SamplingMode::Flat);
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(if n >= 2048 { 4 } else { 3 }));
        } else {
            group.sampling_mode(SamplingMode::Auto);
            group.sample_size(30);
            group.measurement_time(Duration::from_secs(2));
        }
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| {
            bch.iter(|| black_box(a.matmul(&b)))
        });
    }
    group.finish();
}

fn elementwise(c: &mut Criterion) {
    for (name, op) in [
        (
            "add_f32",
            (|a: &Tensor, b: &Tensor| a + b) as fn(&Tensor, &Tensor) -> Tensor,
        ),
        ("mul_f32", |a: &Tensor, b: &Tensor| a * b),
    ] {
        let mut group = c.benchmark_group(name);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(30);
        for n in [1_000usize, 1_000_000, 10_000_000] {
            let a = Tensor::randn([n]);
            let b = Tensor::randn([n]);
            group.throughput(Throughput::Bytes(12 * n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| {
                bch.iter(|| black_box(op(&a, &b)))
            });
        }
        group.finish();
    }
}

fn example0_step(c: &mut Criterion) {
    let x1 = Tensor::scalar(0.0f32).requires_grad_(true);
    let x2 = Tensor::scalar(0.0f32).requires_grad_(true);
    let mut group = c.benchmark_group("example0_step");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(50);
    group.bench_function("step", |bch| {
        bch.iter(|| {
            let f = (&x1 - 3.0).pow(2.0) + (&x2 + 2.0).pow(2.0);
            f.backward();
            no_grad(|| {
                x1.sub_(&(x1.grad().unwrap() * 0.1));
                x2.sub_(&(x2.grad().unwrap() * 0.1));
            });
            x1.grad().unwrap().zero_();
            x2.grad().unwrap().zero_();
        })
    });
    group.finish();
}

criterion_group!(benches, matmul, elementwise, example0_step);
criterion_main!(benches);
