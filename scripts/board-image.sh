#!/usr/bin/env bash
# Builds a QEMU board image: Debian's cloud kernel (downloaded, extracted with
# dpkg-deb, never installed) and a busybox-static initramfs holding the agent,
# ONNX Runtime and the shared libraries they need. `edgehil board build` and
# the qemu: targets call it; the last line of its output is the image folder.
#
#   scripts/board-image.sh aarch64|x86_64 [AGENT]
#
# AGENT is the x86_64 agent (default target/debug/edgehil-agent); the aarch64
# agent is cross-built here with Debian's rustc-web and the arm64 standard
# library from libstd-rust-web-dev:arm64, in target/cross. Everything is cached
# under $EDGEHIL_BOARD_CACHE (default target/edgehil-boards); an image is keyed
# by the hashes of its kernel, agent, busybox, ONNX Runtime and init script.
#
# Needs (Debian): qemu-system-x86 or qemu-system-arm, busybox-static, cpio,
# rustc-web cargo-web, gcc-aarch64-linux-gnu libc6-dev-arm64-cross
# libstdc++6-arm64-cross, and for aarch64 the arm64 architecture in dpkg
# (added here when run as root: it is used for downloads only).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
arch=${1:?usage: board-image.sh aarch64|x86_64 [AGENT]}
cache=${EDGEHIL_BOARD_CACHE:-$repo/target/edgehil-boards}
ort_version=1.31.1
log() { echo "board-image: $*" >&2; }
die() { log "$*"; exit 1; }

case $arch in
x86_64)
    deb=amd64 triple=x86_64-linux-gnu libdirs="/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64"
    port=/dev/ttyS1 console=ttyS0 readelf=readelf strip=strip wheel_platform=manylinux_2_28_x86_64
    ;;
aarch64)
    deb=arm64 triple=aarch64-linux-gnu libdirs="/usr/aarch64-linux-gnu/lib"
    # virt has one PL011 (the console); the link is a PCI 16550 (8250_pci is built into the kernel).
    port=/dev/ttyS0 console=ttyAMA0 readelf=aarch64-linux-gnu-readelf strip=aarch64-linux-gnu-strip
    wheel_platform=manylinux_2_28_aarch64
    ;;
*) die "unknown arch '$arch': expected aarch64 or x86_64" ;;
esac
mkdir -p "$cache"/{deb,kernel,busybox,ort,images}
# One build at a time: parallel tests and suite workers ask for the same image.
exec 9>"$cache/.lock"
flock 9

# Downloads a Debian package once into the cache; prints its path.
download() {
    local pkg=$1 found
    found=$(find "$cache/deb" -name "${pkg%%:*}_*_${deb}.deb" -print -quit)
    if [ -z "$found" ]; then
        (cd "$cache/deb" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg failed"
        found=$(find "$cache/deb" -name "${pkg%%:*}_*_${deb}.deb" -print -quit)
    fi
    echo "$found"
}

if [ "$deb" = arm64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [ "$(id -u)" = 0 ] || die "dpkg has no arm64 architecture: run 'dpkg --add-architecture arm64 && apt-get update' as root"
    log "adding arm64 to dpkg (downloads only) and updating the package lists"
    dpkg --add-architecture arm64 && apt-get update -qq >&2
fi

# The kernel: the version the cloud meta-package names today (it moves with security updates).
kpkg=$(apt-cache depends "linux-image-cloud-$deb:$deb" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^:]*\).*/\1/p' | head -1)
[ -n "$kpkg" ] || die "apt-cache knows no linux-image-cloud-$deb (run apt-get update)"
kdir=$cache/kernel/$kpkg
if [ ! -f "$kdir/vmlinuz" ]; then
    log "kernel $kpkg"
    tmp=$(mktemp -d)
    dpkg-deb -x "$(download "$kpkg:$deb")" "$tmp"
    mkdir -p "$kdir" && cp "$tmp"/boot/vmlinuz-* "$kdir/vmlinuz.tmp" && mv "$kdir/vmlinuz.tmp" "$kdir/vmlinuz"
    rm -rf "$tmp"
fi

# busybox: the host's for x86_64 (busybox-static), the arm64 package's for aarch64.
busybox=$cache/busybox/busybox-$arch
if [ ! -f "$busybox" ]; then
    if [ "$arch" = x86_64 ]; then
        file -L /bin/busybox | grep -q 'statically linked' || die "/bin/busybox is not static: apt-get install busybox-static"
        cp /bin/busybox "$busybox"
    else
        tmp=$(mktemp -d)
        dpkg-deb -x "$(download busybox-static:arm64)" "$tmp"
        cp "$tmp/bin/busybox" "$busybox" && rm -rf "$tmp"
    fi
fi

# The agent.
if [ "$arch" = x86_64 ]; then
    agent=${2:-$repo/target/debug/edgehil-agent}
    [ -x "$agent" ] || die "no agent at $agent: build it (cargo build --workspace --bins --tests) or pass its path"
else
    agent=${2:-}
    if [ -z "$agent" ]; then
        sysroot=$cache/sysroot
        if [ ! -d "$sysroot/lib/rustlib/aarch64-unknown-linux-gnu" ]; then
            log "arm64 standard library from libstd-rust-web-dev:arm64"
            tmp=$(mktemp -d)
            dpkg-deb -x "$(download libstd-rust-web-dev:arm64)" "$tmp"
            mkdir -p "$sysroot/lib/rustlib"
            mv "$tmp/usr/lib/rustlib/aarch64-unknown-linux-gnu" "$sysroot/lib/rustlib/"
            ln -sfn /usr/lib/rustlib/x86_64-unknown-linux-gnu "$sysroot/lib/rustlib/"
            rm -rf "$tmp"
        fi
        [ -x /usr/bin/cargo ] && /usr/bin/rustc --print target-list | grep -qx aarch64-unknown-linux-gnu ||
            die "Debian's rustc-web/cargo-web are needed in /usr/bin: apt-get install rustc-web cargo-web rust-web-src"
        log "cross-building the agent (target/cross)"
        # Debian's cargo and rustc 1.96 (rustup's come first in PATH and lack the aarch64 target).
        (cd "$repo" && PATH=/usr/bin:$PATH CARGO_TARGET_DIR=$repo/target/cross \
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="--sysroot $sysroot" \
            CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++ \
            AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
            nice -n 10 /usr/bin/cargo build -q -p edgehil-runtime --features ort --bin edgehil-agent \
            --target aarch64-unknown-linux-gnu >&2) || die "cross build of the aarch64 agent failed"
        agent=$repo/target/cross/aarch64-unknown-linux-gnu/debug/edgehil-agent
    fi
fi

# ONNX Runtime: the wheel for this arch, its library only.
ort=$cache/ort/$arch/libonnxruntime.so.$ort_version
if [ ! -f "$ort" ]; then
    tmp=$(mktemp -d)
    if python3 -m pip download -q --disable-pip-version-check "onnxruntime==$ort_version" --platform "$wheel_platform" \
        --only-binary=:all: --no-deps -d "$tmp" >&2; then
        mkdir -p "$(dirname "$ort")"
        (cd "$tmp" && python3 -m zipfile -e onnxruntime-*.whl x >/dev/null) && cp "$tmp"/x/onnxruntime/capi/libonnxruntime.so.* "$ort"
    else
        log "no onnxruntime $ort_version wheel for $wheel_platform: the board will have no ort engine"
    fi
    rm -rf "$tmp"
fi

init=$(cat <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Models uploaded to the board live in RAM, as on a board's tmpfs.
mkdir -p /storage && mount -t tmpfs -o size=100% storage /storage
cap=0 threads=1
for word in \$(cat /proc/cmdline); do
    case \$word in
    edgehil.cap=*) cap=\${word#*=} ;;
    edgehil.threads=*) threads=\${word#*=} ;;
    esac
done
set -- --port $port --cap \$cap --threads \$threads
[ -f /lib/libonnxruntime.so ] && set -- "\$@" --ort-library /lib/libonnxruntime.so
/bin/edgehil-agent --help | grep -q -- --storage && set -- "\$@" --storage /storage
echo "EDGEHIL-BOOTED \$(cut -d' ' -f1 /proc/uptime)"
# A shut-down agent is started again: the VM serves sessions until the host stops it.
while true; do
    echo "EDGEHIL-AGENT-START"
    /bin/edgehil-agent "\$@"
    echo "EDGEHIL-AGENT-EXIT \$?"
    sleep 1
done
EOF
)

hash_of() { sha256sum "$@" | sha256sum | cut -c1-16; }
parts=("$kdir/vmlinuz" "$busybox" "$agent")
[ -f "$ort" ] && parts+=("$ort")
key=$( (hash_of "${parts[@]}"; echo "$init") | sha256sum | cut -c1-16)
image=$cache/images/$arch-$key
if [ -f "$image/initrd.gz" ]; then
    echo "$image"
    exit 0
fi

log "initramfs $image"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,lib,storage,tmp}
cp "$busybox" "$root/bin/busybox"
echo "$init" >"$root/init" && chmod 755 "$root/init"
# Stripped: the debug build's line tables would cost the board's RAM.
"$strip" -o "$root/bin/edgehil-agent" "$agent"
[ -f "$ort" ] && cp "$ort" "$root/lib/libonnxruntime.so"

# The shared libraries the agent and ONNX Runtime need, walked through NEEDED
# (ldd cannot run a foreign binary), and the loader named by PT_INTERP.
resolve() {
    for d in $libdirs; do [ -e "$d/$1" ] && { echo "$d/$1"; return; }; done
    die "library $1 not found in $libdirs (install libc6-dev-arm64-cross / libstdc++6-arm64-cross for aarch64)"
}
declare -A seen
walk() {
    local lib path
    for lib in $("$readelf" -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        [ -n "${seen[$lib]:-}" ] && continue
        seen[$lib]=1
        path=$(resolve "$lib")
        cp -L "$path" "$root/lib/$lib"
        walk "$path"
    done
}
walk "$root/bin/edgehil-agent"
[ -f "$root/lib/libonnxruntime.so" ] && walk "$root/lib/libonnxruntime.so"
interp=$("$readelf" -l "$root/bin/edgehil-agent" | sed -n 's/.*interpreter: \(.*\)\]/\1/p')
mkdir -p "$root$(dirname "$interp")"
cp -L "$(resolve "$(basename "$interp")")" "$root$interp"
[ -e "$root/lib/$(basename "$interp")" ] || ln -s "$interp" "$root/lib/$(basename "$interp")"
# The loader looks in /lib/$triple and /usr/lib too; /lib is enough with this link.
ln -s . "$root/lib/$triple"

mkdir -p "$image.tmp"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -6 -n >"$image.tmp/initrd.gz")
cp "$kdir/vmlinuz" "$image.tmp/vmlinuz"
cat >"$image.tmp/image.txt" <<EOF
arch=$arch
kernel=$kpkg
console=$console
agent_sha256=$(sha256sum "$agent" | cut -c1-64)
ort=$([ -f "$ort" ] && echo "$ort_version" || echo none)
initrd_bytes=$(stat -c %s "$image.tmp/initrd.gz")
EOF
rm -rf "$image" && mv "$image.tmp" "$image"
echo "$image"
