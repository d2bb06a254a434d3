#!/usr/bin/env python3
"""The benchmark suite's workloads W1-W8 in PyTorch (see suite.sh, which runs
deriv's side and prints both in one table).

  W1 matmul       C = A.B, square f32, n in 64..2048          GFLOP/s (2n^3/t)
  W2 example0     Example 0 of the tutorials, one step        us/step over 1000 steps
  W3 small MLP    Linear(2,16)-ReLU-Linear(16,1), BCE-with-logits (mean),
                  batch 16, SGD lr 0.1, 10,000 steps           steps/s
  W4 medium MLP   784-256-ReLU-128-ReLU-10, cross-entropy, batch 64,
                  SGD lr 0.01, 500 steps                       samples/s
  W5 peak RSS of a process running W4 alone (--w4-only; read VmHWM, or run
                  it under /usr/bin/time -v)                   MiB
  W6 LeNet-5      Conv(1,6,5,p2)-ReLU-MaxPool2-Conv(6,16,5)-ReLU-MaxPool2-
                  Flatten-Linear(400,120)-ReLU-Linear(120,84)-ReLU-Linear(84,10),
                  cross-entropy, batch 64 of 1x28x28, SGD 0.01   samples/s
  W6b conv        Conv2d(64,64,3,padding=1) forward, 8x64x56x56  GFLOP/s
  W7 LSTM         LSTM(64,128,batch_first) over 32 steps, batch 32,
                  Linear(128,10) on the last hidden state, SGD 0.01  samples/s
  W8 transformer  TransformerEncoderLayer(128,4,512,dropout 0,batch_first) on
                  16 x 64 tokens, mean-pool, Linear(128,10), SGD 0.01  samples/s

Each timed workload is run `--repeats` times and the median is printed, one
`key value` line each. Usage:
  python3 suite.py [--threads 2] [--repeats 5] [--quick] [--w4-only]
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def median_of(repeats, run):
    """Median of `run()` (seconds) over `repeats` runs, after one warm-up run."""
    run()
    return statistics.median(run() for _ in range(repeats))


def w1(n, repeats, quick):
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    reps = max(3, int((2e9 if not quick else 5e8) / (2 * n**3)))

    def run():
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.matmul(a, b)
            return (time.perf_counter() - t0) / reps

    t = median_of(repeats, run)
    return 2 * n**3 / t / 1e9


def w2(repeats):
    x1 = torch.tensor(0.0, requires_grad=True)
    x2 = torch.tensor(0.0, requires_grad=True)

    def run():
        with torch.no_grad():
            x1.zero_()
            x2.zero_()
        t0 = time.perf_counter()
        for _ in range(1000):
            f = (x1 - 3.0) ** 2 + (x2 + 2.0) ** 2
            f.backward()
            with torch.no_grad():
                x1.sub_(x1.grad * 0.1)
                x2.sub_(x2.grad * 0.1)
            x1.grad.zero_()
            x2.grad.zero_()
        return (time.perf_counter() - t0) / 1000

    return median_of(repeats, run) * 1e6


def train_steps(model, loss_fn, batches, lr, steps):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def w3_batches():
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(100):
        x = torch.randn(16, 2, generator=g)
        y = ((x[:, 0] * x[:, 1]) > 0).float().unsqueeze(1)
        out.append((x, y))
    return out


def w3(repeats, quick):
    steps = 2_000 if quick else 10_000
    batches = w3_batches()
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
    t = median_of(repeats, lambda: train_steps(model, F.binary_cross_entropy_with_logits, batches, 0.1, steps))
    return steps / t


def w4_setup():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)) for _ in range(10)]
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    return model, batches


def w4(repeats, quick):
    steps = 100 if quick else 500
    model, batches = w4_setup()
    t = median_of(repeats, lambda: train_steps(model, F.cross_entropy, batches, 0.01, steps))
    return steps * 64 / t


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

    def forward(self, x):
        return self.net(x)


class LastStep(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(64, 128, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.lstm(x)[0][:, -1])


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.encoder(x).mean(1))


def layer_workload(model, shape, repeats, quick):
    """samples/s of SGD training steps with cross-entropy on one batch of `shape`."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(*shape, generator=g), torch.randint(0, 10, (shape[0],), generator=g))]
    steps = 5 if quick else 20
    t = median_of(repeats, lambda: train_steps(model, F.cross_entropy, batches, 0.01, steps))
    return steps * shape[0] / t


def w6b(repeats, quick):
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(8, 64, 56, 56)
    reps = 2 if quick else 5

    def run():
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(reps):
                conv(x)
            return (time.perf_counter() - t0) / reps

    return 2 * 8 * 64 * 56 * 56 * 64 * 9 / median_of(repeats, run) / 1e9


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--w4-only", action="store_true", help="run W4 once, print samples/s and peak RSS")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.w4_only:
        model, batches = w4_setup()
        t = train_steps(model, F.cross_entropy, batches, 0.01, 500)
        print(f"w4_samples_per_s {500 * 64 / t:.1f}")
        print(f"w5_peak_rss_mib {peak_rss_mib():.1f}")
        return

    for n in [64, 256, 512, 1024, 2048]:
        print(f"w1_matmul_gflops/{n} {w1(n, args.repeats, args.quick):.2f}", flush=True)
    print(f"w2_example0_us {w2(args.repeats):.3f}", flush=True)
    print(f"w3_small_mlp_steps_per_s {w3(args.repeats, args.quick):.1f}", flush=True)
    print(f"w4_medium_mlp_samples_per_s {w4(args.repeats, args.quick):.1f}", flush=True)
    print(f"w6_lenet_samples_per_s {layer_workload(LeNet(), (64, 1, 28, 28), args.repeats, args.quick):.1f}", flush=True)
    print(f"w6b_conv_gflops {w6b(args.repeats, args.quick):.2f}", flush=True)
    print(f"w7_lstm_samples_per_s {layer_workload(LastStep(), (32, 32, 64), args.repeats, args.quick):.1f}", flush=True)
    print(f"w8_transformer_samples_per_s {layer_workload(Encoder(), (16, 64, 128), args.repeats, args.quick):.1f}", flush=True)


if __name__ == "__main__":
    main()
