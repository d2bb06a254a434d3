#!/usr/bin/env bash
# Fetches what `cargo build --features cuda` and the PTX check need on a machine
# without a CUDA toolkit, into a cache folder, and sets the environment.
#
#   source scripts/cuda-tools.sh        # fetch if missing, export CUDA_LIBRARY_PATH, PTXAS
#   bash scripts/cuda-tools.sh          # fetch if missing, print the exports
#   bash scripts/cuda-tools.sh check-ptx   # also assemble every kernel with ptxas (sm_80, sm_90)
#
# What it fetches (idempotent: each step is skipped when its result is there):
#   - libcuda.so from Debian's `libcuda1` package (contrib/non-free), unpacked with
#     `dpkg -x`, never installed (installing pulls the driver and dkms). It is only
#     linked against: a binary built so runs here and reports that no device exists.
#   - ptxas from PyPI's `nvidia-cuda-nvcc` wheel (CUDA 13.x), only bin/ptxas.
#
# The cache folder is $DERIV_CUDA_CACHE, default ~/.cache/deriv-cuda.
# Needs root (or sudo) only the first time, to add the apt components and run apt-get.

_deriv_cuda_main() {
    local cache="${DERIV_CUDA_CACHE:-$HOME/.cache/deriv-cuda}"
    local root="$cache/cuda"  # CUDA_LIBRARY_PATH: $root/lib64/libcuda.so
    mkdir -p "$root/lib64" "$cache/bin" || return 1

    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

    # --- libcuda.so ------------------------------------------------------------
    if [ ! -e "$root/lib64/libcuda.so" ]; then
        local src=""
        if [ -f /etc/apt/sources.list.d/debian.sources ]; then
            src=/etc/apt/sources.list.d/debian.sources
            if grep -q '^Components:' "$src" && ! grep -q '^Components:.*non-free' "$src"; then
                echo "cuda-tools: adding contrib non-free to $src" >&2
                $sudo sed -i -E '/^Components:/{/contrib/!s/$/ contrib/;/non-free( |$)/!s/$/ non-free/}' "$src" || return 1
            fi
        elif [ -f /etc/apt/sources.list ]; then
            src=/etc/apt/sources.list
            if ! grep -Eq '^deb .* non-free( |$)' "$src"; then
                echo "cuda-tools: adding contrib non-free to $src" >&2
                $sudo sed -i -E '/^deb /{/contrib/!s/$/ contrib/;/non-free( |$)/!s/$/ non-free/}' "$src" || return 1
            fi
        fi
        echo "cuda-tools: apt-get update" >&2
        $sudo apt-get update -qq >&2 || return 1
        local tmp
        tmp="$(mktemp -d)" || return 1
        (cd "$tmp" && apt-get download libcuda1 >&2) || { rm -rf "$tmp"; return 1; }
        local deb
        deb="$(find "$tmp" -name 'libcuda1_*.deb' -print -quit)"
        mkdir -p "$cache/libcuda1"
        dpkg -x "$deb" "$cache/libcuda1" || { rm -rf "$tmp"; return 1; }
        rm -rf "$tmp"
        local so
        so="$(find "$cache/libcuda1" -name 'libcuda.so.1' -print -quit)"
        if [ -z "$so" ]; then
            so="$(find "$cache/libcuda1" -name 'libcuda.so.*' -print -quit)"
        fi
        if [ -z "$so" ]; then
            echo "cuda-tools: libcuda1 has no libcuda.so.*" >&2
            return 1
        fi
        # Real files, not links into the unpacked tree: the cache may be copied.
        cp -L "$so" "$root/lib64/libcuda.so.1" || return 1
        ln -sf libcuda.so.1 "$root/lib64/libcuda.so"
        mkdir -p "$root/lib64/stubs"
        ln -sf ../libcuda.so.1 "$root/lib64/stubs/libcuda.so"
    fi

    # --- ptxas -------------------------------------------------------------------
    if [ ! -x "$cache/bin/ptxas" ]; then
        local py=""
        for p in python3 python; do
            if command -v "$p" >/dev/null 2>&1 && "$p" -m pip --version >/dev/null 2>&1; then
                py="$p"
                break
            fi
        done
        if [ -z "$py" ]; then
            echo "cuda-tools: installing python3-pip for pip download" >&2
            $sudo apt-get install -y -qq python3-pip unzip >&2 || return 1
            py=python3
        fi
        command -v unzip >/dev/null 2>&1 || $sudo apt-get install -y -qq unzip >&2 || return 1
        local tmp
        tmp="$(mktemp -d)" || return 1
        echo "cuda-tools: pip download nvidia-cuda-nvcc (CUDA 13)" >&2
        "$py" -m pip download -q --no-deps -d "$tmp" 'nvidia-cuda-nvcc>=13,<14' >&2 \
            || { rm -rf "$tmp"; return 1; }
        local whl
        whl="$(find "$tmp" -name 'nvidia_cuda_nvcc*.whl' -print -quit)"
        local member
        member="$(unzip -Z1 "$whl" | grep -m1 -E '(^|/)bin/ptxas$' || true)"
        if [ -z "$member" ]; then
            echo "cuda-tools: $whl has no bin/ptxas" >&2
            rm -rf "$tmp"
            return 1
        fi
        unzip -q -o -j "$whl" "$member" -d "$cache/bin" || { rm -rf "$tmp"; return 1; }
        chmod +x "$cache/bin/ptxas"
        rm -rf "$tmp"
    fi

    # Binaries built with the feature link libcuda.so.1. Where no driver is
    # installed, the fetched copy lets them start (and report no device);
    # where one is, the system's own must be used, so nothing is added.
    if ! { ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; }; then
        case ":${LD_LIBRARY_PATH:-}:" in
            *":$root/lib64:"*) ;;
            *) export LD_LIBRARY_PATH="$root/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
        esac
    fi
    export CUDA_LIBRARY_PATH="$root"
    export CUDA_PATH="$root"
    export PTXAS="$cache/bin/ptxas"
    case ":$PATH:" in
        *":$cache/bin:"*) ;;
        *) export PATH="$cache/bin:$PATH" ;;
    esac
    return 0
}

_deriv_cuda_check_ptx() {
    # Writes every kernel's PTX (cargo run of the generator) and assembles it.
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    bash "$here/check-ptx.sh"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    # Executed: fail loudly, print the exports.
    set -euo pipefail
    _deriv_cuda_main
    echo "export CUDA_LIBRARY_PATH=$CUDA_LIBRARY_PATH"
    echo "export CUDA_PATH=$CUDA_PATH"
    echo "export PTXAS=$PTXAS"
    echo "export PATH=$(dirname "$PTXAS"):\$PATH"
    if [ -n "${LD_LIBRARY_PATH:-}" ]; then echo "export LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; fi
    if [ "${1:-}" = "check-ptx" ]; then
        _deriv_cuda_check_ptx
    fi
else
    # Sourced: set the environment of the caller's shell.
    _deriv_cuda_main || { echo "cuda-tools: failed (see above)" >&2; return 1; }
fi
