#!/usr/bin/env bash
# Builds the microcontroller firmware (runtime/firmware) for thumbv7em-none-eabihf
# (Cortex-M4F) and prints the path of its ELF. Needs Debian's rustc-web,
# cargo-web and rust-web-src (rust-src for -Zbuild-std) and rustup's rust-lld:
#   sudo apt-get install -y rustc-web cargo-web rust-web-src qemu-system-arm
# Cached: cargo rebuilds only what changed (target/thumb).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

lld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
for need in /usr/bin/rustc /usr/bin/cargo "$lld"; do
    [ -x "$need" ] || { echo "firmware.sh: $need is missing (rustc-web, cargo-web, rustup's rust-lld)" >&2; exit 2; }
done
[ -d /usr/lib/rustlib/src/rust/library ] || { echo "firmware.sh: rust-web-src (the library sources) is missing" >&2; exit 2; }

cd "$root/runtime/firmware"
# Debian's toolchain comes first: rustup's has no thumbv7em sources to build core with.
PATH=/usr/bin:$PATH RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_THUMBV7EM_NONE_EABIHF_LINKER="$lld" \
    cargo build --target thumbv7em-none-eabihf -Zbuild-std=core,alloc --release \
    --target-dir "$root/target/thumb" >&2
echo "$root/target/thumb/thumbv7em-none-eabihf/release/edgehil-firmware"
