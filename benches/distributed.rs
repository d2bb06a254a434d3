//! Data-parallel benchmarks on MPI: run on every rank of a job, printed by rank 0.
//!
//! 1. All-reduce bus bandwidth by message size, 1 KiB to 64 MiB of f32, as
//!    nccl-tests reports it (`busbw = algbw · 2(n-1)/n`, `algbw = bytes /
//!    time`): deriv's `distributed::all_reduce` on a tensor beside a direct
//!    `MPI_Allreduce` (rsmpi's `all_reduce_into`) on plain `Vec`s.
//! 2. Overlap: the W4 MLP (784-256-128-10, batch 64 per rank, cross-entropy)
//!    on the compile-time path: backward alone, backward under
//!    `DistributedDataParallel` (which returns with the gradients
//!    averaged), and the all-reduce of all the gradients alone; the ratio
//!    and the fraction of communication hidden, by bucket size.
//! 3. The scaling model: from the measured compute times and all-reduce
//!    latency and bandwidth, W4's expected efficiency at 8, 64 and 512 ranks
//!    with a ring all-reduce per bucket, by bucket size.
//!
//! Not criterion: criterion picks its iteration counts from each process's
//! own timings, and every rank must run the same collectives. Each figure
//! here is the median of several timed rounds of a fixed number of
//! iterations, raw and deriv interleaved within the sitting.
//!
//! ```sh
//! cargo bench --features mpi --bench distributed --no-run
//! mpirun -np 2 -x RAYON_NUM_THREADS=1 target/release/deps/distributed-<hash>
//! ```
//! (`--allow-run-as-root` as root.) One compute thread per rank: two ranks
//! on this 2-core machine.

use std::time::Instant;

use deriv::distributed::{self, DdpOptions, DistributedDataParallel, ReduceOp};
use deriv::mpi::collective::SystemOperation;
use deriv::mpi::topology::SimpleCommunicator;
use deriv::mpi::traits::*;
use deriv::nn::{CrossEntropyLoss, Differentiable, Linear, Loss, Module, ReLU};
use deriv::{network, Generator, Tensor};

network! {
    /// W4: the MNIST-sized MLP of the benchmark suite.
    pub struct W4 = Linear(784, 256) -> ReLU -> Linear(256, 128) -> ReLU -> Linear(128, 10);
}

const BATCH: usize = 64;
/// Timed rounds per all-reduce figure.
const ROUNDS: usize = 31;

fn main() {
    distributed::init().expect("distributed::init");
    let (rank, world) = (distributed::rank(), distributed::world_size());
    let main = rank == 0;
    if main {
        println!(
            "{world} ranks, RAYON_NUM_THREADS={}",
            std::env::var("RAYON_NUM_THREADS").unwrap_or_default()
        );
    }
    let fit = allreduce_sweep(main, world);
    let w4 = overlap(main);
    if main {
        scaling_model(&w4, fit);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Seconds per call of `f`, over `iters` calls, after a barrier.
fn timed(iters: usize, mut f: impl FnMut()) -> f64 {
    distributed::barrier().unwrap();
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() / iters as f64
}

/// nccl-tests' bus bandwidth of an all-reduce of `bytes` taking `secs`, GB/s.
fn busbw(bytes: usize, secs: f64, world: usize) -> f64 {
    let algbw = bytes as f64 / secs / 1e9;
    algbw * 2.0 * (world as f64 - 1.0) / world as f64
}

/// The ring model's two parameters, fitted on the raw MPI figures.
#[derive(Clone, Copy)]
struct Fit {
    /// Seconds per message step (the latency term).
    alpha: f64,
    /// Bytes per second.
    bandwidth: f64,
}

fn allreduce_sweep(main: bool, world: usize) -> Fit {
    let comm = SimpleCommunicator::world();
    if main {
        println!("\n== all-reduce (sum, f32), {world} ranks: {ROUNDS} rounds each, raw and deriv interleaved; best round (median round)");
        println!("| size | MPI_Allreduce µs | deriv all_reduce µs | MPI busbw GB/s | deriv busbw GB/s | deriv / MPI busbw, best (median) |");
        println!("|---|---|---|---|---|---|");
    }
    let mut small = 0.0;
    // (bytes, seconds) of the best rounds from 1 MiB up.
    let mut large: Vec<(usize, f64)> = Vec::new();
    let mut bytes = 1 << 10;
    while bytes <= 64 << 20 {
        let n = bytes / 4;
        // Short rounds, many of them: on a shared machine the best ones are
        // those no other process interrupted.
        let iters = ((4usize << 20) / bytes).clamp(1, 256);
        let send = vec![1.0f32; n];
        let mut recv = vec![0.0f32; n];
        let t = Tensor::ones([n]);
        // Warm up both (pages touched, spare buffers allocated).
        for _ in 0..3 {
            comm.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
            distributed::all_reduce(&t, ReduceOp::Sum).unwrap();
        }
        let (mut raw, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            raw.push(timed(iters, || {
                comm.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum())
            }));
            ours.push(timed(iters, || {
                distributed::all_reduce(&t, ReduceOp::Sum).unwrap()
            }));
        }
        let (raw_med, ours_med) = (median(raw.clone()), median(ours.clone()));
        let (raw, ours) = (best(&raw), best(&ours));
        if main {
            let size = if bytes >= 1 << 20 {
                format!("{} MiB", bytes >> 20)
            } else {
                format!("{} KiB", bytes >> 10)
            };
            println!(
                "| {size} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.3} ({:.3}) |",
                raw * 1e6,
                raw_med * 1e6,
                ours * 1e6,
                ours_med * 1e6,
                busbw(bytes, raw, world),
                busbw(bytes, raw_med, world),
                busbw(bytes, ours, world),
                busbw(bytes, ours_med, world),
                raw / ours,
                raw_med / ours_med
            );
        }
        if bytes == 1 << 10 {
            small = raw;
        }
        if bytes >= 1 << 20 {
            large.push((bytes, raw));
        }
        bytes *= 4;
    }
    // Ring: t = 2(N-1)·α + 2(N-1)/N · bytes / B. α from the smallest
    // message; B the best bandwidth of the large ones (on a shared machine
    // the others were interrupted).
    let steps = 2.0 * (world as f64 - 1.0).max(1.0);
    let alpha = small / steps;
    let share = 2.0 * (world as f64 - 1.0).max(1.0) / world as f64;
    let bandwidth = large
        .iter()
        .map(|&(b, t)| share * b as f64 / (t - steps * alpha))
        .fold(0.0, f64::max);
    if main {
        println!(
            "fit: α = {:.2} µs per step, B = {:.2} GB/s",
            alpha * 1e6,
            bandwidth / 1e9
        );
    }
    Fit { alpha, bandwidth }
}

/// W4's measured step parts, seconds.
struct W4Times {
    forward: f64,
    backward: f64,
}

fn batch(g: &mut Generator) -> (Tensor, Tensor) {
    let x = Tensor::randn_with([BATCH, 784], g);
    let y: Vec<i64> = (0..BATCH).map(|_| g.int_range(0, 10)).collect();
    (x, Tensor::from_vec(y, [BATCH]))
}

/// The 10th percentile and the median.
fn p10_median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 10], v[v.len() / 2])
}

/// One W4 step on `model`: forward and loss gradient, then the backward,
/// timed, then zeroed gradients. Returns (forward, backward) seconds.
fn w4_step<M: Differentiable>(model: &M, x: &Tensor, y: &Tensor) -> (f64, f64) {
    let t0 = Instant::now();
    let (out, saved) = model.forward_train(x);
    let (_, d) = CrossEntropyLoss::new().forward_backward(&out, y);
    let t1 = Instant::now();
    model.backward(saved, &d, false);
    let t2 = Instant::now();
    model.zero_grad();
    ((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64())
}

fn overlap(main: bool) -> W4Times {
    let steps = 400;
    // One bucket; two (the last two layers, then the first); one per layer.
    let caps = [25.0, 0.125, 4.0 / 1024.0];
    let plain = W4::default();
    let nparams = plain.num_parameters();
    let ddps: Vec<_> = caps
        .iter()
        .map(|&mb| {
            let opts = DdpOptions::new()
                .bucket_cap_mb(mb)
                .first_bucket_mb(mb.min(1.0));
            DistributedDataParallel::with_options(W4::default(), opts).unwrap()
        })
        .collect();
    // The gradients' all-reduce alone: one buffer of every parameter.
    let flat = Tensor::zeros([nparams]);
    let mut g = Generator::new(7 + distributed::rank() as u64);
    let batches: Vec<_> = (0..8).map(|_| batch(&mut g)).collect();
    let (mut fwd, mut bwd, mut ar) = (Vec::new(), Vec::new(), Vec::new());
    let mut ddp_bwd = vec![Vec::new(); caps.len()];
    // Everything interleaved step by step, so all see the same conditions.
    for s in 0..steps + 20 {
        let (x, y) = &batches[s % batches.len()];
        let (f, b) = w4_step(&plain, x, y);
        let t = Instant::now();
        distributed::all_reduce(&flat, ReduceOp::Avg).unwrap();
        let a = t.elapsed().as_secs_f64();
        let d: Vec<f64> = ddps.iter().map(|m| w4_step(m, x, y).1).collect();
        if s >= 20 {
            fwd.push(f);
            bwd.push(b);
            ar.push(a);
            for (v, t) in ddp_bwd.iter_mut().zip(d) {
                v.push(t);
            }
        }
    }
    let (forward, forward_med) = p10_median(fwd);
    let (backward, backward_med) = p10_median(bwd);
    let (allreduce, allreduce_med) = p10_median(ar);
    if main {
        println!(
            "\n== overlap: W4, batch {BATCH} per rank, compile-time path ({nparams} parameters, {:.0} KiB of gradients); {steps} steps, 10th percentile (median)",
            nparams as f64 * 4.0 / 1024.0
        );
        println!(
            "forward + loss {:.0} ({:.0}) µs, backward alone {:.0} ({:.0}) µs, all-reduce of all gradients alone {:.0} ({:.0}) µs",
            forward * 1e6,
            forward_med * 1e6,
            backward * 1e6,
            backward_med * 1e6,
            allreduce * 1e6,
            allreduce_med * 1e6
        );
        println!("| bucket cap | buckets | DDP backward µs | (backward + all-reduce) / backward | communication hidden |");
        println!("|---|---|---|---|---|");
    }
    for ((mb, ddp), times) in caps.iter().zip(&ddps).zip(ddp_bwd) {
        let (t, t_med) = p10_median(times);
        let hidden = |t: f64, b: f64, a: f64| ((b + a - t) / a).clamp(0.0, 1.0) * 100.0;
        if main {
            println!(
                "| {} | {} | {:.0} ({:.0}) | {:.2} ({:.2}) | {:.0}% ({:.0}%) |",
                if *mb >= 1.0 {
                    format!("{mb} MiB")
                } else {
                    format!("{} KiB", mb * 1024.0)
                },
                ddp.bucket_names().len(),
                t * 1e6,
                t_med * 1e6,
                t / backward,
                t_med / backward_med,
                hidden(t, backward, allreduce),
                hidden(t_med, backward_med, allreduce_med)
            );
        }
    }
    W4Times { forward, backward }
}

/// W4's layers (in, out) in forward order.
const LAYERS: [(usize, usize); 3] = [(784, 256), (256, 128), (128, 10)];

fn scaling_model(w4: &W4Times, fit: Fit) {
    // Backward time per layer, last layer first, in proportion to its
    // multiply-adds (dW always, dx for all but the first layer).
    let flops: Vec<f64> = LAYERS
        .iter()
        .enumerate()
        .rev()
        .map(|(l, &(i, o))| (if l == 0 { 1.0 } else { 2.0 }) * (BATCH * i * o) as f64)
        .collect();
    let total: f64 = flops.iter().sum();
    // Each layer's gradients (weight then bias, reversed: bias, weight)
    // become ready when its backward ends.
    let mut params = Vec::new(); // (ready time, bytes), in reverse parameter order
    let mut clock = 0.0;
    for (k, &(i, o)) in LAYERS.iter().rev().enumerate() {
        clock += w4.backward * flops[k] / total;
        params.push((clock, o * 4));
        params.push((clock, i * o * 4));
    }
    let cost = |n: usize, bytes: f64, fit: Fit| {
        let n = n as f64;
        2.0 * (n - 1.0) * fit.alpha + 2.0 * (n - 1.0) / n * bytes / fit.bandwidth
    };
    let step = |n: usize, cap: usize, fit: Fit| {
        // Buckets as DDP makes them (one dtype): close at `cap` bytes.
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        let mut open = (0.0, 0.0);
        for &(ready, bytes) in &params {
            open = (ready, open.1 + bytes as f64);
            if open.1 >= cap as f64 {
                buckets.push(open);
                open = (0.0, 0.0);
            }
        }
        if open.1 > 0.0 {
            buckets.push(open);
        }
        let mut end: f64 = 0.0;
        for &(ready, bytes) in &buckets {
            end = end.max(ready) + cost(n, bytes, fit);
        }
        w4.forward + w4.backward.max(end)
    };
    let compute = w4.forward + w4.backward;
    let caps = [
        16usize << 10,
        64 << 10,
        256 << 10,
        1 << 20,
        4 << 20,
        25 << 20,
    ];
    let nets = [
        ("measured here (shared memory)", fit),
        (
            "assumed 10 GbE: α 25 µs, 1.1 GB/s",
            Fit {
                alpha: 25e-6,
                bandwidth: 1.1e9,
            },
        ),
        (
            "assumed 100 Gb/s InfiniBand: α 2 µs, 11 GB/s",
            Fit {
                alpha: 2e-6,
                bandwidth: 11e9,
            },
        ),
    ];
    println!(
        "\n== scaling model: W4, batch {BATCH} per rank, compute {:.0} µs per step (forward {:.0} + backward {:.0}), ring all-reduce per bucket",
        compute * 1e6,
        w4.forward * 1e6,
        w4.backward * 1e6
    );
    for (name, fit) in nets {
        println!("\n{name}: efficiency = compute / step time");
        println!("| ranks | 16 KiB | 64 KiB | 256 KiB | 1 MiB | 4 MiB | 25 MiB | best |");
        println!("|---|---|---|---|---|---|---|---|");
        for n in [8usize, 64, 512] {
            let effs: Vec<f64> = caps.iter().map(|&c| compute / step(n, c, fit)).collect();
            let (best, e) = effs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, e)| (caps[i], *e))
                .unwrap();
            let cells: Vec<String> = effs.iter().map(|e| format!("{:.0}%", e * 100.0)).collect();
            println!(
                "| {n} | {} | {} ({:.0}%) |",
                cells.join(" | "),
                if best >= 1 << 20 {
                    format!("{} MiB", best >> 20)
                } else {
                    format!("{} KiB", best >> 10)
                },
                e * 100.0
            );
        }
    }
}
