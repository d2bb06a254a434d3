#!/usr/bin/env bash
# Side-by-side: deriv (criterion, benches/tensor_ops.rs) vs PyTorch (bench.py)
# on the same workloads, medians on both sides.
#
# Usage: benches/pytorch/compare.sh
#   PYTHON=/path/to/python   interpreter with torch (default: python3)
#   SKIP_CARGO=1             reuse the last criterion results in target/criterion
#   SKIP_TORCH=1             leave the PyTorch column empty
# Units: matmul in GFLOP/s (2n^3 per product), add/mul in GB/s (12n bytes:
# two f32 reads + one write), example0_step in us/step. The ratio is deriv's
# speed relative to PyTorch's: > 1 means deriv is faster.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
CRIT_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/criterion"
TORCH_OUT="$(mktemp)"
trap 'rm -f "$TORCH_OUT"' EXIT

if [[ "${SKIP_CARGO:-0}" != 1 ]]; then
    echo "== cargo bench --bench tensor_ops" >&2
    cargo bench --bench tensor_ops >&2
fi

if [[ "${SKIP_TORCH:-0}" == 1 ]]; then
    echo "== PyTorch column skipped (SKIP_TORCH=1)" >&2
elif ! "$PYTHON" -c 'import torch' 2>/dev/null; then
    echo "== PyTorch column skipped: '$PYTHON' cannot import torch (set PYTHON to an interpreter that can)" >&2
else
    echo "== $PYTHON benches/pytorch/bench.py --ns" >&2
    "$PYTHON" "$ROOT/benches/pytorch/bench.py" --ns | tee "$TORCH_OUT" >&2
fi

if ! command -v python3 >/dev/null; then
    echo "compare.sh: python3 is needed to read criterion's estimates.json" >&2
    exit 1
fi

python3 - "$CRIT_DIR" "$TORCH_OUT" <<'PY'
import json, os, sys

crit_dir, torch_file = sys.argv[1], sys.argv[2]

def crit_ns(group, bench):
    path = os.path.join(crit_dir, group, bench, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None

torch_ns = {}
with open(torch_file) as f:
    for line in f:
        parts = line.split()
        if len(parts) == 2:
            torch_ns[parts[0]] = float(parts[1])

rows = []  # (workload, unit, value-from-ns, higher_is_better, deriv_ns, torch_ns)
for n in [64, 256, 512, 1024, 2048]:
    rows.append((f"matmul f32 n={n}", "GFLOP/s", lambda ns, n=n: 2 * n**3 / ns, True,
                 crit_ns("matmul_f32", str(n)), torch_ns.get(f"matmul_f32/{n}")))
for op in ["add", "mul"]:
    for n in [1_000, 1_000_000, 10_000_000]:
        rows.append((f"{op} f32 n={n:.0e}".replace("e+0", "e"), "GB/s", lambda ns, n=n: 12 * n / ns, True,
                     crit_ns(f"{op}_f32", str(n)), torch_ns.get(f"{op}_f32/{n}")))
rows.append(("example0 step", "us/step", lambda ns: ns / 1e3, False,
             crit_ns("example0_step", "step"), torch_ns.get("example0_step")))

def fmt(v):
    return "-" if v is None else f"{v:.2f}"

header = ("workload", "unit", "deriv", "PyTorch", "ratio (>1: deriv faster)")
table = []
for name, unit, conv, _, d, t in rows:
    dv = conv(d) if d else None
    tv = conv(t) if t else None
    ratio = None if (d is None or t is None) else t / d  # time ratio = speed ratio
    table.append((name, unit, fmt(dv), fmt(tv), fmt(ratio)))
widths = [max(len(r[i]) for r in table + [header]) for i in range(len(header))]
line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
print(line(header))
print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
for r in table:
    print(line(r))
PY
