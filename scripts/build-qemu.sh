#!/usr/bin/env bash
# Builds qemu-system-x86_64 (QEMU 10.0 from Debian trixie's source package) with the
# `accelerator-pcie` device (qemu-device/) linked in.
#
# Layout (everything outside the work tree, under $COSIM_CACHE, default ~/.cache/cosim):
#   qemu/dl/                      downloaded Debian source package files
#   qemu/<key>/src/               unpacked, patched QEMU tree
#   qemu/<key>/build/             meson/ninja build directory
# <key> is a hash of the source version, this script and the patches under qemu-device/qemu/.
# Our device files (C file, cbindgen header, Rust staticlib) are copied into
# src/hw/misc/accelerator-pcie/ on every run (only when their content changed), so after the
# first full build a change to the device only recompiles one C file and relinks.
#
# Usage: scripts/build-qemu.sh [--out <dir>]
#   --out <dir>   where to put the qemu-system-x86_64 symlink (default: $ROOT/build/qemu)
# Environment: COSIM_CACHE, CARGO (default cargo), QEMU_SOURCE (default qemu/trixie),
#              JOBS (default: number of cores).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COSIM_CACHE=${COSIM_CACHE:-$HOME/.cache/cosim}
CARGO=${CARGO:-cargo}
QEMU_SOURCE=${QEMU_SOURCE:-qemu/trixie}
JOBS=${JOBS:-$(nproc)}
OUT=$ROOT/build/qemu
# COSIM_QEMU_BOOTSTRAP=1: build QEMU with an empty placeholder device (used only to warm the
# cache before the device crate exists; the result has no accelerator-pcie).
BOOTSTRAP=${COSIM_QEMU_BOOTSTRAP:-0}

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "build-qemu: unknown argument $1" >&2; exit 2 ;;
    esac
done

T0=$(date +%s)
stage() { printf '[build-qemu %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf '[build-qemu] error: %s\n' "$*" >&2; exit 1; }

CONFIGURE_FLAGS=(
    --target-list=x86_64-softmmu --disable-docs --disable-werror --disable-install-blobs
    --enable-slirp --disable-gtk --disable-sdl --disable-vnc --disable-opengl --disable-xen
    --disable-user
)

# ---------------------------------------------------------------------------------------------
stage "1/6 resolving source package $QEMU_SOURCE"
command -v apt-get >/dev/null || die "apt-get not found (Debian host expected)"
SUITE=${QEMU_SOURCE#*/}
VERSION=$(apt-cache madison "${QEMU_SOURCE%/*}" 2>/dev/null \
          | awk -F'|' -v s=" $SUITE/" 'index($3, s) && $3 ~ /Sources/ {gsub(/ /, "", $2); print $2}' \
          | sort -V | tail -1 || true)
if [ -z "$VERSION" ]; then
    die "apt does not know the source package $QEMU_SOURCE; run 'make deps' (adds the trixie deb-src entry)"
fi
UPSTREAM=${VERSION#*:}; UPSTREAM=${UPSTREAM%-*}         # 1:10.0.13+ds-0+deb13u1 -> 10.0.13+ds
ORIG=qemu_${UPSTREAM}.orig.tar.xz
PATCHES=$ROOT/qemu-device/qemu
# Only the recipe part of this script (between the RECIPE markers) goes into the key, so that
# editing messages or the device copy step does not throw away a 6-minute build.
KEY=$( { echo "$VERSION"; printf '%s\n' "${CONFIGURE_FLAGS[@]}";
         sed -n '/^# RECIPE-BEGIN/,/^# RECIPE-END/p' "$0";
         if [ -d "$PATCHES" ]; then find "$PATCHES" -type f | sort | xargs -r cat; fi; } | sha256sum | cut -c1-16)
CACHE=$COSIM_CACHE/qemu/$KEY
SRC=$CACHE/src
BLD=$CACHE/build
stage "    version $VERSION, cache key $KEY ($CACHE)"

# ---------------------------------------------------------------------------------------------
stage "2/6 fetching source"
mkdir -p "$COSIM_CACHE/qemu/dl"
if [ ! -s "$COSIM_CACHE/qemu/dl/$ORIG" ]; then
    ( cd "$COSIM_CACHE/qemu/dl" && apt-get source --download-only "$QEMU_SOURCE" ) \
        || [ -s "$COSIM_CACHE/qemu/dl/$ORIG" ] \
        || die "could not download $ORIG (apt-get source --download-only $QEMU_SOURCE)"
fi
[ -s "$COSIM_CACHE/qemu/dl/$ORIG" ] || die "$ORIG missing after download"

if [ ! -f "$SRC/.cosim-unpacked" ]; then
    stage "    unpacking $ORIG"
    rm -rf "$SRC" "$BLD"
    mkdir -p "$SRC"
    tar -xJf "$COSIM_CACHE/qemu/dl/$ORIG" -C "$SRC" --strip-components=1
    touch "$SRC/.cosim-unpacked"
fi

# RECIPE-BEGIN (tree preparation: changes here change the cache key)
# ---------------------------------------------------------------------------------------------
stage "3/6 applying integration (hw/misc Kconfig + meson, edk2 workaround)"
if [ ! -f "$SRC/.cosim-patched" ]; then
    # The +ds tarball lacks the edk2 blobs; meson setup fails when it tries to unpack them.
    grep -q 'unpack_edk2_blobs = bzip2.found()' "$SRC/meson.build" \
        || die "edk2 workaround: pattern not found in meson.build"
    sed -i 's/unpack_edk2_blobs = bzip2.found()/unpack_edk2_blobs = false/' "$SRC/meson.build"
    cat >>"$SRC/hw/misc/Kconfig" <<'KCONF'

config ACCELERATOR_PCIE
    bool
    default y if PCI_DEVICES
    depends on PCI && MSI_NONBROKEN
KCONF
    cat >>"$SRC/hw/misc/meson.build" <<'MESON'

# cosim: accelerator-pcie (device logic in a Rust staticlib, see qemu-device/ in cosim)
cosim_dir = meson.current_source_dir() / 'accelerator-pcie'
cosim_dep = declare_dependency(
  link_args: [cosim_dir / 'libcosim_qemu_device.a', '-lstdc++', '-ldl', '-lpthread'],
  include_directories: include_directories('accelerator-pcie'))
system_ss.add(when: 'CONFIG_ACCELERATOR_PCIE',
              if_true: [files('accelerator-pcie/accelerator-pcie.c'), cosim_dep])
MESON
    touch "$SRC/.cosim-patched"
fi
# RECIPE-END

# ---------------------------------------------------------------------------------------------
stage "4/6 building the device library (cargo build --release -p cosim-qemu-device)"
DEV=$SRC/hw/misc/accelerator-pcie
mkdir -p "$DEV"
copy_if_changed() {  # src dst: keep dst's mtime unless the content changed (ninja stays idle)
    if ! cmp -s "$1" "$2"; then cp "$1" "$2.tmp" && mv "$2.tmp" "$2"; fi
}
if [ "$BOOTSTRAP" = 1 ]; then
    printf '#include "qemu/osdep.h"\n' >"$DEV/placeholder.c"
    copy_if_changed "$DEV/placeholder.c" "$DEV/accelerator-pcie.c"
    [ -f "$DEV/libcosim_qemu_device.a" ] || ar rcs "$DEV/libcosim_qemu_device.a"
    printf '/* placeholder */\n' >"$DEV/cosim_qemu_device.h"
    printf '#define COSIM_QEMU_DEVICE_LIB_HASH "bootstrap"\n' >"$DEV/cosim_qemu_device_stamp.h"
else
    ( cd "$ROOT" && "$CARGO" build --release -p cosim-qemu-device ) \
        || die "cargo build of qemu-device failed"
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    LIB=$TARGET_DIR/release/libcosim_qemu_device.a
    HDR=$TARGET_DIR/cosim-qemu-device/cosim_qemu_device.h
    [ -f "$LIB" ] || die "missing $LIB"
    [ -f "$HDR" ] || die "missing $HDR (generated by qemu-device/build.rs)"
    copy_if_changed "$ROOT/qemu-device/c/accelerator-pcie.c" "$DEV/accelerator-pcie.c"
    copy_if_changed "$HDR" "$DEV/cosim_qemu_device.h"
    copy_if_changed "$LIB" "$DEV/libcosim_qemu_device.a"
    # The C file includes this stamp, so a changed library recompiles it and relinks QEMU
    # (meson's declare_dependency cannot name a link dependency on a prebuilt archive).
    printf '#define COSIM_QEMU_DEVICE_LIB_HASH "%s"\n' \
        "$(sha256sum "$DEV/libcosim_qemu_device.a" | cut -c1-16)" >"$DEV/stamp.tmp"
    copy_if_changed "$DEV/stamp.tmp" "$DEV/cosim_qemu_device_stamp.h"
    rm -f "$DEV/stamp.tmp"
fi

# ---------------------------------------------------------------------------------------------
if [ ! -f "$BLD/build.ninja" ]; then
    stage "5/6 configuring (about 30 s)"
    rm -rf "$BLD"; mkdir -p "$BLD"
    ( cd "$BLD" && "$SRC/configure" "${CONFIGURE_FLAGS[@]}" >"$BLD/configure.log" 2>&1 ) \
        || { tail -30 "$BLD/configure.log" >&2; die "configure failed (log: $BLD/configure.log)"; }
else
    stage "5/6 configure: up to date"
fi

stage "6/6 ninja -j$JOBS qemu-system-x86_64 (a first build takes 6 to 20 min on 2 busy cores; later ones relink in seconds)"
ninja -C "$BLD" -j"$JOBS" qemu-system-x86_64 || die "ninja failed"

BIN=$BLD/qemu-system-x86_64
mkdir -p "$OUT"
ln -sfn "$BIN" "$OUT/qemu-system-x86_64"
if [ "$BOOTSTRAP" != 1 ]; then
    "$BIN" -device help 2>/dev/null | grep -q '"accelerator-pcie"' \
        || die "$BIN -device help does not list accelerator-pcie"
    stage "done: $OUT/qemu-system-x86_64 -> $BIN (lists accelerator-pcie)"
else
    stage "done (bootstrap, no device): $BIN"
fi
