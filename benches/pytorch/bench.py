#!/usr/bin/env python3
"""The workloads of benches/tensor_ops.rs in PyTorch, for a side-by-side
comparison (see compare.sh).

Prints one `key value` line per measurement (medians over repeated runs):
  matmul_f32/<n>       GFLOP/s   (2 n^3 flops per product)
  add_f32/<n>          GB/s      (12 n bytes: two f32 reads and one write)
  mul_f32/<n>          GB/s
  example0_step        us/step   (forward, backward, update under no_grad, grad.zero_())
and, with --ns, the raw median time per iteration in ns instead (`key ns`).

Usage: python3 bench.py [--threads 2] [--ns] [--quick]
"""

import argparse
import statistics
import time

import torch


def median_time(fn, min_time, min_reps=5, max_reps=100_000, inner=1):
    """Median seconds per call of fn, timing batches of `inner` calls."""
    for _ in range(max(2, min_reps // 2)):  # warm-up
        fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < max_reps and (
        len(samples) < min_reps or time.perf_counter() - start < min_time
    ):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ns", action="store_true", help="print median ns per iteration")
    ap.add_argument("--quick", action="store_true", help="shorter runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    scale = 0.3 if args.quick else 1.0

    def report(key, seconds, value):
        if args.ns:
            print(f"{key} {seconds * 1e9:.1f}", flush=True)
        else:
            print(f"{key} {value:.3f}", flush=True)

    with torch.no_grad():
        for n in [64, 256, 512, 1024, 2048]:
            a = torch.randn(n, n, dtype=torch.float32)
            b = torch.randn(n, n, dtype=torch.float32)
            inner = max(1, int(2e6 // (n**3 // 64 + 1)))  # ~ms-sized batches for small n
            t = median_time(lambda: torch.matmul(a, b), 2.0 * scale, min_reps=10, inner=min(inner, 200))
            report(f"matmul_f32/{n}", t, 2 * n**3 / t / 1e9)

        for name, op in [("add_f32", torch.add), ("mul_f32", torch.mul)]:
            for n in [1_000, 1_000_000, 10_000_000]:
                a = torch.randn(n, dtype=torch.float32)
                b = torch.randn(n, dtype=torch.float32)
                inner = 100 if n <= 1_000 else 1
                t = median_time(lambda: op(a, b), 2.0 * scale, min_reps=10, inner=inner)
                report(f"{name}/{n}", t, 12 * n / t / 1e9)

    x1 = torch.tensor(0.0, dtype=torch.float32, requires_grad=True)
    x2 = torch.tensor(0.0, dtype=torch.float32, requires_grad=True)

    def step():
        f = (x1 - 3.0).pow(2.0) + (x2 + 2.0).pow(2.0)
        f.backward()
        with torch.no_grad():
            x1.sub_(x1.grad * 0.1)
            x2.sub_(x2.grad * 0.1)
        x1.grad.zero_()
        x2.grad.zero_()

    t = median_time(step, 3.0 * scale, min_reps=20, inner=100)
    report("example0_step", t, t * 1e6)


if __name__ == "__main__":
    main()
