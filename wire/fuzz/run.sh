#!/usr/bin/env bash
# Builds wire's libFuzzer targets with the same instrumentation `cargo fuzz build -s none` uses
# (sanitizer coverage, no sanitizer, so stable Rust builds it) and runs each for SECONDS (default
# 20). Plain cargo, so CI needs no cargo-fuzz install; `cargo fuzz run -s none --fuzz-dir wire/fuzz
# TARGET` works on the same crate. A crash exits non-zero and leaves its input in
# wire/fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
target="$(rustc -vV | sed -n 's/^host: //p')"
# --target keeps the flags off build scripts and proc-macros (serde_derive), as cargo fuzz does.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cdebug-assertions" \
  cargo build --release --target "$target" --bins -q
for t in frame message token; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="target/fuzz-$t.log"
  if ! "target/$target/release/$t" -max_total_time="$seconds" -artifact_prefix="artifacts/$t/" "corpus/$t" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz target $t failed: its input is in wire/fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | sed "s/^/$t: /" || true
done
