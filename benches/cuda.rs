//! CPU and GPU throughput side by side (the `cuda` feature):
//! - matmul f32 GFLOP/s at n = 1024, 4096, 8192,
//! - one training step of a 784-256-128-10 MLP (Linear, ReLU, log_softmax,
//!   mean negative log-likelihood on the tape, SGD update) at batch 64 and
//!   1024, in samples/s,
//! - elementwise add GB/s (two reads and a write) at 1e7 and 1e8 elements.
//!
//! Without a GPU the GPU column says why it is absent.
//! Run: `cargo bench --features cuda --bench cuda`
//! (`DERIV_BENCH_CPU_MAX_N=4096` skips the slowest CPU products.)

use std::time::{Duration, Instant};

use deriv::backend::cuda;
use deriv::nn::{Forward, Linear, Module};
use deriv::{no_grad, Device, Generator, Tensor};

/// Seconds per call of `f`: one warm-up call, then calls until `budget`
/// has passed (at least one), waiting for the device after each batch.
fn time(dev: Device, budget: Duration, mut f: impl FnMut()) -> f64 {
    let sync = || {
        if let Device::Cuda(i) = dev {
            cuda::synchronize(i);
        }
    };
    f();
    sync();
    let start = Instant::now();
    let mut n = 0u32;
    while n == 0 || start.elapsed() < budget {
        f();
        n += 1;
        if dev.is_cuda() && !n.is_multiple_of(8) && start.elapsed() < budget {
            continue;
        }
        sync();
    }
    sync();
    start.elapsed().as_secs_f64() / n as f64
}

fn matmul_gflops(dev: Device, n: usize) -> f64 {
    let mut g = Generator::new(1);
    let a = Tensor::randn_with([n, n], &mut g).to(&dev);
    let b = Tensor::randn_with([n, n], &mut g).to(&dev);
    let s = time(dev, Duration::from_secs(1), || {
        let _ = a.matmul(&b);
    });
    2.0 * (n as f64).powi(3) / s / 1e9
}

fn add_gbs(dev: Device, n: usize) -> f64 {
    let a = Tensor::ones([n]).to(&dev);
    let b = Tensor::ones([n]).to(&dev);
    let s = time(dev, Duration::from_secs(1), || {
        let _ = &a + &b;
    });
    3.0 * 4.0 * n as f64 / s / 1e9
}

fn train_samples(dev: Device, batch: usize) -> f64 {
    let mut l1 = Linear::new(784, 256, &Device::Cpu);
    let mut l2 = Linear::new(256, 128, &Device::Cpu);
    let mut l3 = Linear::new(128, 10, &Device::Cpu);
    for l in [&mut l1, &mut l2, &mut l3] {
        l.to(&dev);
    }
    let mut g = Generator::new(2);
    let x = Tensor::randn_with([batch, 784], &mut g).to(&dev);
    let target = Tensor::randint(0, 10, [batch, 1]).to(&dev);
    let s = time(dev, Duration::from_secs(2), || {
        let h = l1.forward(&x).relu();
        let h = l2.forward(&h).relu();
        let logp = l3.forward(&h).log_softmax(1);
        let loss = -logp.gather(1, &target).mean();
        loss.backward();
        no_grad(|| {
            for l in [&l1, &l2, &l3] {
                for p in l.parameters() {
                    let gr = p.grad().expect("a gradient");
                    p.add_scaled_(&gr, -0.01);
                    gr.zero_();
                }
            }
        });
    });
    batch as f64 / s
}

fn row(what: &str, unit: &str, cpu: Option<f64>, gpu: Result<f64, &str>) {
    let c = cpu.map_or("skipped".to_string(), |v| format!("{v:>10.1} {unit}"));
    let g = match gpu {
        Ok(v) => format!("{v:>10.1} {unit}"),
        Err(why) => format!("absent ({why})"),
    };
    println!("{what:<34} CPU {c:<22} GPU {g}");
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported.
    let reason = Device::cuda_unavailable_reason();
    let gpu = if reason.is_none() {
        Some(Device::Cuda(0))
    } else {
        None
    };
    let why = reason.unwrap_or_default();
    let cpu_max: usize = std::env::var("DERIV_BENCH_CPU_MAX_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    println!(
        "deriv CPU vs GPU ({})",
        gpu.map_or("no GPU".to_string(), |d| d.to_string())
    );
    for n in [1024, 4096, 8192] {
        let c = (n <= cpu_max).then(|| matmul_gflops(Device::Cpu, n));
        let g = gpu.map(|d| matmul_gflops(d, n)).ok_or(why.as_str());
        row(&format!("matmul f32 {n}x{n}"), "GFLOP/s", c, g);
    }
    for batch in [64, 1024] {
        let c = Some(train_samples(Device::Cpu, batch));
        let g = gpu.map(|d| train_samples(d, batch)).ok_or(why.as_str());
        row(
            &format!("train step 784-256-128-10 b{batch}"),
            "samples/s",
            c,
            g,
        );
    }
    for n in [10_000_000usize, 100_000_000] {
        let c = Some(add_gbs(Device::Cpu, n));
        let g = gpu.map(|d| add_gbs(d, n)).ok_or(why.as_str());
        row(&format!("add f32 {n:.0e}"), "GB/s", c, g);
    }
}
