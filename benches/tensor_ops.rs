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
//! - `fma_ceiling/threads` is what the cores can do at their present clocks:
//!   each thread runs independent AVX2 FMA chains from registers (no memory
//!   traffic), so `Gelem/s` is GFLOP/s, the bound for `matmul_f32`;
//!   `fma_ceiling/avx512/threads` the same with AVX-512 (only where the CPU
//!   has it), the bound where the kernels use AVX-512.
//! - `unary_f32/<op>` reports elements per second of f32 `log`, `logsigmoid`,
//!   `softplus`, `elu` and `mish` over 10⁶ elements.
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

/// f32 `log`, `logsigmoid`, `softplus`, `elu` and `mish` over 10⁶ elements
/// (elements/s): the transcendental loops, which vectorise only with inline
/// arithmetic.
fn transcendental(c: &mut Criterion) {
    let mut group = c.benchmark_group("unary_f32");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(30);
    let n = 1_000_000usize;
    let x = Tensor::rand([n]) * 10.0;
    group.throughput(Throughput::Elements(n as u64));
    type UnaryFn = fn(&Tensor) -> Tensor;
    let ops: [(&str, UnaryFn); 5] = [
        ("log", |x| x.log()),
        ("logsigmoid", |x| deriv::nn::functional::logsigmoid(x)),
        ("softplus", |x| {
            deriv::nn::functional::softplus(x, 1.0, 20.0)
        }),
        ("elu", |x| deriv::nn::functional::elu(x, 1.0)),
        ("mish", |x| deriv::nn::functional::mish(x)),
    ];
    for (name, op) in ops {
        group.bench_function(BenchmarkId::new(name, n), |bch| {
            bch.iter(|| black_box(op(&x)))
        });
    }
    group.finish();
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

/// Rounds per thread per iteration of `fma_ceiling`: ~40 ms, so spawning the
/// threads costs well under 1%.
const FMA_ROUNDS: usize = 20_000_000;

/// Twelve independent FMA chains (FMA latency x units on current x86 cores is
/// at most 10, so the units never wait), 8 f32 lanes each: 192 flops a round.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_chains(rounds: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let (x, y) = (_mm256_set1_ps(0.999), _mm256_set1_ps(0.001));
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    let mut lanes = [0f32; 8];
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, a| _mm256_add_ps(s, *a));
    // SAFETY: `lanes` holds the 8 floats stored.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

/// [`fma_chains`] with AVX-512's 16 lanes: 384 flops a round.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_chains_avx512(rounds: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 12];
    let (x, y) = (_mm512_set1_ps(0.999), _mm512_set1_ps(0.001));
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    _mm512_reduce_add_ps(
        acc.iter()
            .fold(_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, *a)),
    )
}

/// The f32 FMA ceiling with as many threads as deriv's pool (rayon's default,
/// or RAYON_NUM_THREADS): the figure W1's GFLOP/s is a fraction of.
fn fma_ceiling(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let threads = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut group = c.benchmark_group("fma_ceiling");
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(3));
        group.sample_size(10);
        group.sampling_mode(SamplingMode::Flat);
        let on_all = |t: usize, chains: fn(usize) -> f32| {
            std::thread::scope(|s| {
                let helpers: Vec<_> = (1..t)
                    .map(|_| s.spawn(move || chains(FMA_ROUNDS)))
                    .collect();
                black_box(chains(FMA_ROUNDS));
                for h in helpers {
                    black_box(h.join().unwrap());
                }
            })
        };
        group.throughput(Throughput::Elements((threads * FMA_ROUNDS * 192) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |bch, &t| {
            // SAFETY: avx2 and fma were detected above.
            bch.iter(|| on_all(t, |r| unsafe { fma_chains(r) }))
        });
        // The kernels that use AVX-512 where the CPU has it (faer's GEMM,
        // the direct convolution) are bound by this one there.
        if std::arch::is_x86_feature_detected!("avx512f") {
            group.throughput(Throughput::Elements((threads * FMA_ROUNDS * 384) as u64));
            let id = BenchmarkId::new("avx512", threads);
            group.bench_with_input(id, &threads, |bch, &t| {
                // SAFETY: avx512f was detected just above.
                bch.iter(|| on_all(t, |r| unsafe { fma_chains_avx512(r) }))
            });
        }
        group.finish();
    }
}

criterion_group!(
    benches,
    matmul,
    fma_ceiling,
    elementwise,
    transcendental,
    example0_step
);
criterion_main!(benches);
