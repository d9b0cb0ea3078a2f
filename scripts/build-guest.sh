#!/usr/bin/env bash
# Builds the guest image: Debian 12's kernel, the cosim_accel module built against the matching
# headers, the static accel-tool, and a busybox initramfs whose /init runs the workload named on the
# kernel command line (cosim.run=...), prints COSIM-* marker lines and powers off.
#
# Output (in $BUILD/guest, default <repo>/build/guest):
#   bzImage            the Debian kernel
#   initramfs.cpio.gz  busybox + /init + cosim_accel.ko + accel-tool + NIC, virtio and VFIO modules
#   kernel-version     e.g. 6.1.0-56-amd64
# Cache: $COSIM_CACHE/guest-kernel/<kernel version>_<package version>_v4/ holds the kernel and the
# modules extracted from the linux-image package, so a rebuild downloads nothing.
#
# Environment: BUILD, COSIM_CACHE, CARGO, CARGO_TARGET_DIR, GUEST_KERNEL_VERSION (skip the
# resolution from linux-image-amd64 and use this ABI name, e.g. 6.1.0-56-amd64).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
COSIM_CACHE=${COSIM_CACHE:-$HOME/.cache/cosim}
CARGO=${CARGO:-cargo}
OUT=$BUILD/guest
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

log() { printf '[build-guest] %s\n' "$*" >&2; }
die() { printf '[build-guest] error: %s\n' "$*" >&2; exit 1; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

for tool in apt-cache apt-get dpkg-deb cpio gzip depmod make; do
    command -v "$tool" >/dev/null || die "'$tool' not found; run 'make deps'"
done
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] && "$BUSYBOX" --list >/dev/null 2>&1 || die "busybox not found; run 'make deps' (busybox-static)"
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' ||
    ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic executable' ||
    die "$BUSYBOX is not static; install busybox-static ('make deps')"

# ---------------------------------------------------------------- 1. resolve the kernel version
# The metapackage linux-image-amd64 depends on linux-image-<abi>-amd64 (= <package version>).
resolve_kernel() {
    local cand dep
    cand=$(apt-cache policy linux-image-amd64 2>/dev/null | awk '/Candidate:/ {print $2}')
    [ -n "$cand" ] && [ "$cand" != "(none)" ] || return 1
    dep=$(apt-cache show "linux-image-amd64=$cand" 2>/dev/null | awk -F': ' '/^Depends:/ {print $2; exit}')
    KVER=$(printf '%s\n' "$dep" | tr ',' '\n' | sed -n 's/^ *linux-image-\([0-9][^ ]*\).*/\1/p' | head -n1)
    [ -n "$KVER" ] || return 1
    KPKGVER=$(apt-cache policy "linux-image-$KVER" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [ -n "$KPKGVER" ] && [ "$KPKGVER" != "(none)" ]
}

if [ -n "${GUEST_KERNEL_VERSION:-}" ]; then
    KVER=$GUEST_KERNEL_VERSION
    KPKGVER=$(apt-cache policy "linux-image-$KVER" 2>/dev/null | awk '/Candidate:/ {print $2}')
else
    if ! resolve_kernel; then
        log "apt lists do not know linux-image-amd64; running apt-get update"
        $SUDO apt-get update -q -o Dpkg::Use-Pty=0 >/dev/null
        resolve_kernel || die "cannot resolve the kernel from linux-image-amd64 (apt-cache show linux-image-amd64)"
    fi
fi
log "guest kernel: linux-image-$KVER ($KPKGVER)"

# ---------------------------------------------------------------- 2. kernel + NIC modules (cached)
# Modules copied into the initramfs (with their dependencies, found by modinfo): the NICs, the
# virtio PCI transport with virtio-serial (the channel of `accel-tool serve`, docs/guest.md), and
# VFIO (a user-space program drives a device behind the virtual IOMMU: cosim-launch --iommu).
CACHED_MODULES=(virtio_net e1000 e1000e virtio_pci virtio_console vfio vfio_iommu_type1 vfio_pci)
# The cache layout version (v4) is part of the key: bump it when the cached contents change.
KCACHE=$COSIM_CACHE/guest-kernel/${KVER}_${KPKGVER}_v4
if [ ! -f "$KCACHE/.complete" ]; then
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/cosim-kernel.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    log "downloading linux-image-$KVER=$KPKGVER (about 70 MB) ..."
    (cd "$tmp" && apt-get download -q -o Dpkg::Use-Pty=0 "linux-image-$KVER=$KPKGVER" >/dev/null 2>"$tmp/download.err") ||
        { cat "$tmp/download.err" >&2; die "apt-get download linux-image-$KVER failed"; }
    log "extracting the kernel package ..."
    dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/x"
    rm -rf "$KCACHE.partial"
    mkdir -p "$KCACHE.partial/modules"
    cp "$tmp/x/boot/vmlinuz-$KVER" "$KCACHE.partial/bzImage"
    cp "$tmp/x/boot/config-$KVER" "$KCACHE.partial/config"
    mdir=$tmp/x/lib/modules/$KVER
    # Resolve dependencies with modinfo, keep each module's path under kernel/.
    declare -A seen=()
    queue=("${CACHED_MODULES[@]}")
    while [ ${#queue[@]} -gt 0 ]; do
        m=${queue[0]}; queue=("${queue[@]:1}")
        [ -n "${seen[$m]:-}" ] && continue
        seen[$m]=1
        # A module's file may spell '_' as '-' (vfio_pci is vfio-pci.ko).
        f=$(find "$mdir/kernel" \( -name "$m.ko" -o -name "${m//_/-}.ko" \) -print -quit)
        [ -n "$f" ] || die "module $m.ko not in linux-image-$KVER"
        rel=${f#"$mdir"/}
        mkdir -p "$KCACHE.partial/modules/$(dirname "$rel")"
        cp "$f" "$KCACHE.partial/modules/$rel"
        deps=$(modinfo -F depends "$f" | tr ',' ' ')
        for d in $deps; do queue+=("$d"); done
    done
    # depmod and modprobe want these to know the built-in modules.
    for f in modules.order modules.builtin modules.builtin.modinfo; do
        cp "$mdir/$f" "$KCACHE.partial/modules/$f"
    done
    printf '%s\n' "$KVER" >"$KCACHE.partial/kernel-version"
    touch "$KCACHE.partial/.complete"
    rm -rf "$KCACHE"
    mv "$KCACHE.partial" "$KCACHE"
    rm -rf "$tmp"
    trap - EXIT
    log "kernel cached in $KCACHE"
else
    log "kernel from cache $KCACHE"
fi

# ---------------------------------------------------------------- 3. headers + module
KDIR=/lib/modules/$KVER/build
if [ ! -f "$KDIR/Makefile" ]; then
    log "installing linux-headers-$KVER (to build the module) ..."
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Use-Pty=0 "linux-headers-$KVER" >/dev/null ||
        die "cannot install linux-headers-$KVER"
fi
log "building cosim_accel.ko against $KDIR ..."
MODBUILD=$OUT/driver-build
mkdir -p "$MODBUILD"
# Copy only the sources, so kbuild's output stays out of the work tree.
for f in Kbuild cosim_accel.c cosim_accel_ioctl.h cosim_accel_regs.h; do
    cmp -s "$ROOT/guest/driver/$f" "$MODBUILD/$f" 2>/dev/null || cp "$ROOT/guest/driver/$f" "$MODBUILD/$f"
done
make -s -C "$KDIR" M="$MODBUILD" modules >"$MODBUILD/build.log" 2>&1 ||
    { cat "$MODBUILD/build.log" >&2; die "module build failed"; }
grep -E 'warning|error' "$MODBUILD/build.log" | grep -v 'Skipping BTF' >&2 || true
vermagic=$(modinfo -F vermagic "$MODBUILD/cosim_accel.ko" | awk '{print $1}')
[ "$vermagic" = "$KVER" ] || die "module vermagic '$vermagic' does not match kernel '$KVER'"

# ---------------------------------------------------------------- 4. the tool (static)
log "building accel-tool (static, release) ..."
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    "$CARGO" build --release --target x86_64-unknown-linux-gnu -p accel-tool) ||
    die "cargo build -p accel-tool failed"
TOOL=$TARGET_DIR/x86_64-unknown-linux-gnu/release/accel-tool
[ -x "$TOOL" ] || die "accel-tool not found at $TOOL"
if ldd "$TOOL" 2>&1 | grep -q '=>'; then die "accel-tool is dynamically linked"; fi

# ---------------------------------------------------------------- 5. initramfs
log "assembling the initramfs ..."
STAGE=$OUT/initramfs.d
rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,etc,lib/modules/"$KVER"/extra}
cp "$BUSYBOX" "$STAGE/bin/busybox"
cp "$TOOL" "$STAGE/bin/accel-tool"
cp "$ROOT/guest/initramfs/init" "$STAGE/init"
chmod 0755 "$STAGE/init" "$STAGE/bin/busybox" "$STAGE/bin/accel-tool"
cp -r "$KCACHE/modules/kernel" "$KCACHE"/modules/modules.* "$STAGE/lib/modules/$KVER/"
cp "$MODBUILD/cosim_accel.ko" "$STAGE/lib/modules/$KVER/extra/"
depmod -b "$STAGE" "$KVER"
printf '%s\n' "$KVER" >"$STAGE/etc/kernel-version"
# No /dev/console node in the image (that would need root to mknod): /init mounts devtmpfs and
# reopens its stdio on /dev/console itself.
tmpimg=$OUT/initramfs.cpio.gz.tmp
(
    cd "$STAGE"
    find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet
) | gzip -9n >"$tmpimg"
mv "$tmpimg" "$OUT/initramfs.cpio.gz"
cp "$KCACHE/bzImage" "$OUT/bzImage"
printf '%s\n' "$KVER" >"$OUT/kernel-version"
log "done: $OUT/bzImage, $OUT/initramfs.cpio.gz ($(du -h "$OUT/initramfs.cpio.gz" | cut -f1)), kernel $KVER"
