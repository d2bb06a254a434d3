#!/usr/bin/env python3
"""PyTorch's figures for the GPU work of benches/cuda.rs, in the same units:

  matmul f32 4096x4096        GFLOP/s  (fp32, TF32 off: 2 n^3 flops)
  add f32 1e8                 GB/s     (12 n bytes: two reads, one write)
  train step 784-256-128-10 b1024   samples/s  (Linear, ReLU, log_softmax,
                              mean NLL on autograd, SGD update, zero grads)

Usage: python3 gpu_bench.py [--device cuda|cpu]
"""

import argparse
import time

import torch


def seconds_per_call(fn, sync, budget=1.0):
    fn()
    sync()
    n, start = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - start < budget:
        fn()
        n += 1
        if n % 8 == 0:
            sync()
    sync()
    return (time.perf_counter() - start) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"PyTorch {torch.__version__} on {name}")

    n = 4096
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    s = seconds_per_call(lambda: a @ b, sync)
    print(f"{'matmul f32 4096x4096 (TF32 off)':<34} PyTorch {2 * n**3 / s / 1e9:>10.1f} GFLOP/s")

    n = 100_000_000
    x = torch.ones(n, device=dev)
    y = torch.ones(n, device=dev)
    s = seconds_per_call(lambda: x + y, sync)
    print(f"{'add f32 1e8':<34} PyTorch {12 * n / s / 1e9:>10.1f} GB/s")

    batch = 1024
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    ).to(dev)
    xb = torch.randn(batch, 784, device=dev)
    target = torch.randint(0, 10, (batch, 1), device=dev)

    def step():
        logp = model(xb).log_softmax(1)
        loss = -logp.gather(1, target).mean()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-0.01)
                p.grad.zero_()

    s = seconds_per_call(step, sync, budget=2.0)
    print(f"{'train step 784-256-128-10 b1024':<34} PyTorch {batch / s:>10.1f} samples/s")


if __name__ == "__main__":
    main()
