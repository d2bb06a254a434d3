#!/usr/bin/env bash
# The benchmark suite, deriv beside PyTorch in one table (W1-W8, see
# benches/pytorch/suite.py for the workloads' definitions).
#
# Usage: benches/pytorch/suite.sh
#   PYTHON=/path/to/python   interpreter with torch (default: python3); without
#                            torch the PyTorch column stays empty
#   SKIP_CARGO=1             reuse the last criterion results in target/criterion
#   QUICK=1                  shorter PyTorch runs
# deriv's figures are criterion medians (cargo bench --bench tensor_ops and
# --bench network, W6-W8 --bench layers); W5 is the peak RSS (VmHWM) of a process running W4 alone
# (examples/w4.rs for deriv, suite.py --w4-only for PyTorch), which
# `/usr/bin/time -v` reports as "Maximum resident set size" too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
CRIT_DIR="$TARGET/criterion"
TORCH_OUT="$(mktemp)"
RSS_OUT="$(mktemp)"
trap 'rm -f "$TORCH_OUT" "$RSS_OUT"' EXIT

if [[ "${SKIP_CARGO:-0}" != 1 ]]; then
    echo "== cargo bench (W1, W2: tensor_ops; W3, W4: network)" >&2
    cargo bench --bench tensor_ops -- 'matmul_f32|fma_ceiling|example0_step' >&2
    cargo bench --bench network -- 'w3_step|w4_step' >&2
    cargo bench --bench layers >&2
fi
echo "== W5: examples/w4 (release), peak RSS" >&2
cargo build --release --example w4 >&2
"$TARGET/release/examples/w4" | tee "$RSS_OUT" >&2

if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
    echo "== PyTorch column skipped: '$PYTHON' cannot import torch (set PYTHON to an interpreter that can)" >&2
else
    QUICK_FLAG=()
    [[ "${QUICK:-0}" == 1 ]] && QUICK_FLAG=(--quick)
    # OpenMP's default active waiting makes PyTorch's small ops and matmuls
    # 10-30x slower on these shared 2-core VMs: passive unless set otherwise.
    export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
    echo "== OMP_WAIT_POLICY=$OMP_WAIT_POLICY $PYTHON benches/pytorch/suite.py" >&2
    "$PYTHON" benches/pytorch/suite.py "${QUICK_FLAG[@]}" | tee "$TORCH_OUT" >&2
    "$PYTHON" benches/pytorch/suite.py --w4-only | tee -a "$TORCH_OUT" >&2
fi

python3 - "$CRIT_DIR" "$TORCH_OUT" "$RSS_OUT" <<'PY'
import json, os, sys

crit_dir, torch_file, rss_file = sys.argv[1:4]

def crit_ns(*parts):
    path = os.path.join(crit_dir, *parts, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None

def read_pairs(path):
    out = {}
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) == 2:
                try:
                    out[p[0]] = float(p[1])
                except ValueError:
                    pass
    return out

torch = read_pairs(torch_file)
ours = read_pairs(rss_file)
inv = lambda ns, k=1.0: None if ns is None else k * 1e9 / ns

rows = []  # (workload, unit, deriv, torch, higher_is_better)
ceilings = []  # (name, GFLOP/s): AVX2's, then AVX-512's where the CPU has it
fma_dir = os.path.join(crit_dir, "fma_ceiling")
if os.path.isdir(fma_dir):
    for t in sorted(os.listdir(fma_dir)):
        ns = crit_ns("fma_ceiling", t)
        if t.isdigit() and ns is not None:
            ceilings.append(("AVX2", int(t) * 20_000_000 * 192 / ns))
            rows.append((f"FMA ceiling, AVX2 ({t} threads, no memory)", "GFLOP/s", ceilings[-1][1], None, True))
    avx512_dir = os.path.join(fma_dir, "avx512")
    for t in sorted(os.listdir(avx512_dir)) if os.path.isdir(avx512_dir) else []:
        ns = crit_ns("fma_ceiling", "avx512", t)
        if t.isdigit() and ns is not None:
            ceilings.append(("AVX-512", int(t) * 20_000_000 * 384 / ns))
            rows.append((f"FMA ceiling, AVX-512 ({t} threads, no memory)", "GFLOP/s", ceilings[-1][1], None, True))
for n in [64, 256, 512, 1024, 2048]:
    ns = crit_ns("matmul_f32", str(n))
    rows.append((f"W1 matmul n={n}", "GFLOP/s", None if ns is None else 2 * n**3 / ns,
                 torch.get(f"w1_matmul_gflops/{n}"), True))
ns = crit_ns("example0_step", "step")
rows.append(("W2 Example 0 step", "µs/step", None if ns is None else ns / 1e3,
             torch.get("w2_example0_us"), False))
for path in ["ws", "compile_time", "tape"]:
    rows.append((f"W3 small MLP ({path})", "steps/s", inv(crit_ns("w3_step", path, "16")),
                 torch.get("w3_small_mlp_steps_per_s"), True))
for path in ["ws", "compile_time", "tape"]:
    rows.append((f"W4 medium MLP ({path})", "samples/s", inv(crit_ns("w4_step", path, "64"), 64),
                 torch.get("w4_medium_mlp_samples_per_s"), True))
rows.append(("W5 peak RSS of the W4 process", "MiB", ours.get("w5_peak_rss_mib"),
             torch.get("w5_peak_rss_mib"), False))
for key, name, n, group in [("w6_lenet_samples_per_s", "W6 LeNet-5 CNN", 64, "w6_step"),
                            ("w7_lstm_samples_per_s", "W7 LSTM", 32, "w7_step"),
                            ("w8_transformer_samples_per_s", "W8 transformer layer", 16, "w8_step")]:
    for path in ["ws", "compile_time", "tape"]:
        rows.append((f"{name} ({path})", "samples/s", inv(crit_ns(group, path, str(n)), n),
                     torch.get(key), True))
ns = crit_ns("w6b_conv", "forward")
rows.append(("W6b Conv2d(64,64,3,p1) forward", "GFLOP/s",
             None if ns is None else 2 * 8 * 64 * 56 * 56 * 64 * 9 / ns, torch.get("w6b_conv_gflops"), True))

def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.2f}"

header = ("workload", "unit", "deriv", "PyTorch", "deriv / PyTorch (>1: deriv better)")
table = []
for name, unit, d, t, higher in rows:
    ratio = None if d is None or t is None or d == 0 or t == 0 else (d / t if higher else t / d)
    table.append((name, unit, fmt(d), fmt(t), "-" if ratio is None else f"{ratio:.2f}"))
widths = [max(len(r[i]) for r in table + [header]) for i in range(len(header))]
line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
print(line(header))
print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
for r in table:
    print(line(r))
# The kernels use AVX-512 where the CPU has it, so the last ceiling is the bound.
w6b = next((r[2] for r in rows if r[0].startswith("W6b")), None)
for name, ceiling in ceilings:
    shares = []
    for n in [512, 1024, 2048]:
        ns = crit_ns("matmul_f32", str(n))
        if ns is not None:
            shares.append(f"W1 n={n} {100 * 2 * n**3 / ns / ceiling:.0f}%")
    if w6b is not None:
        shares.append(f"W6b {100 * w6b / ceiling:.0f}%")
    print(f"\nShares of the {name} FMA ceiling ({ceiling:.1f} GFLOP/s): " + ", ".join(shares))
PY
