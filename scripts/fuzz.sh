#!/usr/bin/env bash
# Fuzz smoke run: every target of runtime/fuzz for SECONDS (default 60) each.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Findings land in runtime/fuzz/artifacts/TARGET/; the run stops at the first.
set -euo pipefail
cd "$(dirname "$0")/../runtime"
seconds=${1:-60}
# Sanitizer off: the targets are safe Rust; this keeps the tract build and
# each execution fast enough for a smoke run.
cargo +nightly fuzz build -s none
for target in $(cargo +nightly fuzz list); do
    echo "== $target (${seconds} s)"
    cargo +nightly fuzz run -s none "$target" -- -max_total_time="$seconds" 2>&1 | grep -E "^Done|DONE|crash|panicked" || true
    [ -z "$(ls -A "fuzz/artifacts/$target" 2>/dev/null)" ] || { echo "findings in fuzz/artifacts/$target"; exit 1; }
done
