//! W4 of the benchmark suite alone, for its peak memory (W5): the
//! 784-256-ReLU-128-ReLU-10 MLP, cross-entropy, batch 64, SGD lr 0.01, 500
//! steps over 10 fixed random batches, on the buffer-reusing compile-time
//! path. Prints samples/s and the process's peak resident set size (VmHWM;
//! `/usr/bin/time -v` reports the same as "Maximum resident set size").
//!
//! Run: `cargo run --release --example w4`

use deriv::nn::{Linear, ReLU, TrainStep};
use deriv::optim::{Optimizer, SGD};
use deriv::prelude::*;

deriv::network! {
    /// W4's model.
    pub struct W4 = Linear(784, 256) -> ReLU -> Linear(256, 128) -> ReLU -> Linear(128, 10);
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let mut gen = Generator::new(0);
    let batches: Vec<(Tensor, Tensor)> = (0..10)
        .map(|_| {
            let x = Tensor::randn_with([64, 784], &mut gen);
            let y: Vec<i64> = (0..64).map(|_| gen.int_range(0, 10)).collect();
            (x, Tensor::from_vec(y, [64]))
        })
        .collect();
    manual_seed(0);
    let model = W4::default();
    let mut ws = model.workspace();
    let mut opt = SGD::new(model.parameters(), 0.01);
    let loss = Tensor::zeros([]);
    let grad = Tensor::zeros([64, 10]);
    let steps = 500;
    let start = std::time::Instant::now();
    let mut last = 0.0;
    for i in 0..steps {
        let (x, y) = &batches[i % batches.len()];
        let out = model.forward_train_ws(x, &mut ws);
        last = deriv::vjp::cross_entropy_into(out, y, &loss, &grad);
        model.backward_ws(&mut ws, &grad, false);
        opt.step();
        opt.zero_grad_in_place();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("w4_loss {last:.4}");
    println!("w4_samples_per_s {:.1}", (steps * 64) as f64 / secs);
    match peak_rss_mib() {
        Some(m) => println!("w5_peak_rss_mib {m:.1}"),
        None => println!("w5_peak_rss_mib unavailable (no /proc/self/status)"),
    }
}
