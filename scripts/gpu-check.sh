#!/usr/bin/env bash
# The GPU check, in two halves for two machines.
#
#   bash scripts/gpu-check.sh build   # here (Rust, no GPU): build the release test
#                                     # and bench binaries, strip them, and put them
#                                     # with the PyTorch script in target/gpu-check/
#   bash scripts/gpu-check.sh run     # on the GPU machine (NVIDIA driver and PyTorch,
#                                     # no Rust): run them, then PyTorch's figures
#
# `run` looks for the binaries in $GPU_CHECK_DIR (default target/gpu-check/);
# carry that folder to the GPU machine (it is ignored by git). It prints the
# GPU tests' results, deriv's CPU/GPU throughput, and PyTorch's GPU figures for
# the same work, and exits non-zero when a test fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
dir="${GPU_CHECK_DIR:-$root/target/gpu-check}"

# The executable cargo built for target `name` of kind `kind` (test/bench),
# read from cargo's JSON messages on stdin.
pick() {
    python3 -c '
import json, sys
name, kind = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target") or {}
    if m.get("reason") == "compiler-artifact" and t.get("name") == name and kind in t.get("kind", []) and m.get("executable"):
        print(m["executable"])
' "$1" "$2"
}

case "${1:-}" in
build)
    # shellcheck source=/dev/null
    source "$here/cuda-tools.sh"
    mkdir -p "$dir"
    cd "$root"
    t="$(cargo test -j2 --release --features cuda --test cuda --no-run --message-format=json | pick cuda test)"
    b="$(cargo bench -j2 --features cuda --bench cuda --no-run --message-format=json | pick cuda bench)"
    [ -x "$t" ] && [ -x "$b" ] || { echo "gpu-check: cargo did not report both binaries" >&2; exit 1; }
    cp "$t" "$dir/cuda-tests"
    cp "$b" "$dir/cuda-bench"
    strip "$dir/cuda-tests" "$dir/cuda-bench"
    cp "$root/benches/pytorch/gpu_bench.py" "$dir/"
    cp "$here/gpu-check.sh" "$dir/"
    ls -la "$dir"
    echo "gpu-check: built; on the GPU machine run: bash scripts/gpu-check.sh run (carry ${dir#"$root"/})"
    ;;
run)
    [ -x "$dir/cuda-tests" ] || { echo "gpu-check: no $dir/cuda-tests; run 'gpu-check.sh build' on a machine with Rust first" >&2; exit 1; }
    # Without a driver (a dry run here), the copy fetched by cuda-tools.sh lets
    # the binaries start and report that no device exists.
    cache="${DERIV_CUDA_CACHE:-$HOME/.cache/deriv-cuda}/cuda/lib64"
    if ! { ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; } && [ -e "$cache/libcuda.so.1" ]; then
        export LD_LIBRARY_PATH="$cache${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    status=0
    echo "== deriv GPU tests (every op on the GPU vs the CPU, training run, optimizers)"
    "$dir/cuda-tests" --test-threads=1 || status=$?
    echo "== deriv throughput, CPU vs GPU"
    "$dir/cuda-bench" --bench || status=$?
    echo "== PyTorch on the same work"
    py="${PYTHON:-python3}"
    "$py" "$dir/gpu_bench.py" || "$py" "$root/benches/pytorch/gpu_bench.py" || status=$?
    exit $status
    ;;
*)
    echo "usage: $0 build|run" >&2
    exit 2
    ;;
esac
