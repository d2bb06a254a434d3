#!/usr/bin/env bash
# Fuzzes the parsers that read untrusted bytes (fuzz/: safetensors,
# checkpoint, csv) with libFuzzer, built by nightly cargo with the flags
# cargo-fuzz uses (no cargo-fuzz install needed; `cargo fuzz run TARGET`
# works too where it is installed).
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Each target runs SECONDS_PER_TARGET (default 60) on one core, starting
# from the seeds in fuzz/seeds/TARGET and the inputs kept in
# tests/data/fuzz-regressions/TARGET; new corpus entries go to
# fuzz/corpus/TARGET (git-ignored). It prints each target's input count
# ("N inputs in S s") and fails on a finding: libFuzzer then writes the
# input to fuzz/artifacts/TARGET/ — copy it into
# tests/data/fuzz-regressions/TARGET/ so tests/fuzz_regressions.rs replays
# it in every `cargo test`. FUZZ_SANITIZER=address builds with ASan.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors checkpoint csv)

host=$(rustc +nightly -vV | sed -n 's/^host: //p')
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"
if [ -n "${FUZZ_SANITIZER:-}" ]; then
  flags="$flags -Zsanitizer=$FUZZ_SANITIZER"
fi
# --target keeps the instrumentation off build scripts and proc macros.
RUSTFLAGS="$flags" CARGO_TARGET_DIR=fuzz/target \
  cargo +nightly build --release --manifest-path fuzz/Cargo.toml --target "$host" --bins

status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "tests/data/fuzz-regressions/$t"
  log="fuzz/target/$t.log"
  # One worker, a 10 s limit per input (a hang is a finding), 2 GB of RSS.
  if ! "fuzz/target/$host/release/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
      "tests/data/fuzz-regressions/$t" -dict="fuzz/dicts/$t.dict" \
      -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    status=1
    echo "fuzz $t: FINDING (log: $log, input: fuzz/artifacts/$t/)"
    tail -40 "$log"
  fi
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 inputs in \2 s/p' "$log" | tail -1)
  echo "fuzz $t: ${runs:-no count (see $log)}"
done
exit $status
