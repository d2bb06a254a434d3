#!/usr/bin/env bash
# Assembles every generated CUDA kernel with ptxas for sm_80 and sm_90 and
# fails on any ptxas error (the driver's JIT reports none). Needs no GPU.
#
#   bash scripts/check-ptx.sh
#
# Fetches ptxas and libcuda.so first (scripts/cuda-tools.sh), writes the PTX
# through the `write_ptx` test of tests/cuda.rs, then runs ptxas.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=/dev/null
source "$here/cuda-tools.sh"
out="${DERIV_PTX_DIR:-$root/target/ptx}"
mkdir -p "$out"
rm -f "$out"/deriv*.ptx
(cd "$root" && DERIV_PTX_OUT="$out/deriv.ptx" cargo test -j2 --features cuda --test cuda -- --exact write_ptx --nocapture)
[ -s "$out/deriv.ptx" ] || { echo "check-ptx: no PTX was written" >&2; exit 1; }
# The main module and each op's own module (ops/registry.rs).
files=("$out"/deriv*.ptx)
kernels=$(cat "${files[@]}" | grep -c '^.visible .entry')
for arch in sm_80 sm_90; do
    for f in "${files[@]}"; do
        "$PTXAS" --gpu-name "$arch" --warn-on-spills -o "${f%.ptx}.$arch.cubin" "$f"
    done
    echo "check-ptx: $kernels kernels in ${#files[@]} modules assemble for $arch"
done
