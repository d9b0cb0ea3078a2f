#!/usr/bin/env bash
# Builds qemu-system-x86_64 from QEMU 10.2.2 (Debian's source package 1:10.2.2+ds-1, pinned by
# version and by the SHA-256 sums of its .dsc) with the `accelerator-pcie` device (qemu-device/)
# linked in, or with --stock the same source without any cosim code (the vfio-user mode's QEMU).
#
# Layout (everything outside the work tree, under $COSIM_CACHE, default ~/.cache/cosim):
#   qemu/dl/                      the pinned Debian source package files (checked by SHA-256)
#   qemu/apt/                     a private apt state with a deb-src entry for Debian unstable,
#                                 used only to download the pinned files (the system's apt lists
#                                 are not touched)
#   qemu/<key>/src/               unpacked, patched QEMU tree
#   qemu/<key>/build/             meson/ninja build directory
# <key> is a hash of the source version, the flavour (device or stock), this script's recipe
# and the patches under qemu-device/qemu/, so the stock build is cached separately.
# Our device files (C file, cbindgen header, Rust staticlib) are copied into
# src/hw/misc/accelerator-pcie/ on every run (only when their content changed), so after the
# first full build a change to the device only recompiles one C file and relinks.
#
# Usage: scripts/build-qemu.sh [--stock] [--out <dir>]
#   --stock       build QEMU without cosim's device (default out: $ROOT/build/qemu-stock)
#   --out <dir>   where to put the qemu-system-x86_64 symlink (default: $ROOT/build/qemu)
# Environment: COSIM_CACHE, CARGO (default cargo), JOBS (default: number of cores).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COSIM_CACHE=${COSIM_CACHE:-$HOME/.cache/cosim}
CARGO=${CARGO:-cargo}
JOBS=${JOBS:-$(nproc)}
OUT=""
STOCK=0
# The pinned source: Debian's qemu 1:10.2.2+ds-1 (unstable). The sums are those of its .dsc
# (Checksums-Sha256); the .dsc's own sum pins the file that lists them.
VERSION=1:10.2.2+ds-1
SUITE=sid
DSC=qemu_10.2.2+ds-1.dsc
DSC_SHA256=f1684b3aa5ec500c3389d346c6501dee45041ea91656c6556d4da9023b7987dd
ORIG=qemu_10.2.2+ds.orig.tar.xz
ORIG_SHA256=be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb
# COSIM_QEMU_BOOTSTRAP=1: build QEMU with an empty placeholder device (used only to warm the
# cache before the device crate exists; the result has no accelerator-pcie).
BOOTSTRAP=${COSIM_QEMU_BOOTSTRAP:-0}

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --stock) STOCK=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "build-qemu: unknown argument $1" >&2; exit 2 ;;
    esac
done

[ -n "$OUT" ] || { if [ "$STOCK" = 1 ]; then OUT=$ROOT/build/qemu-stock; else OUT=$ROOT/build/qemu; fi; }
FLAVOUR=device; [ "$STOCK" = 1 ] && FLAVOUR=stock
[ "$STOCK" = 1 ] && [ "$BOOTSTRAP" = 1 ] && { echo "build-qemu: --stock and COSIM_QEMU_BOOTSTRAP=1 exclude each other" >&2; exit 2; }

T0=$(date +%s)
stage() { printf '[build-qemu %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf '[build-qemu] error: %s\n' "$*" >&2; exit 1; }

CONFIGURE_FLAGS=(
    --target-list=x86_64-softmmu --disable-docs --disable-werror --disable-install-blobs
    --enable-slirp --disable-gtk --disable-sdl --disable-vnc --disable-opengl --disable-xen
    --disable-user
)

# ---------------------------------------------------------------------------------------------
stage "1/6 source: qemu $VERSION (pinned), flavour $FLAVOUR"
PATCHES=$ROOT/qemu-device/qemu
# Only the recipe part of this script (between the RECIPE markers) goes into the key, so that
# editing messages or the device copy step does not throw away a 6-minute build.
KEY=$( { echo "$VERSION $ORIG_SHA256 $FLAVOUR"; printf '%s\n' "${CONFIGURE_FLAGS[@]}";
         sed -n '/^# RECIPE-BEGIN/,/^# RECIPE-END/p' "$0";
         if [ "$STOCK" = 0 ] && [ -d "$PATCHES" ]; then find "$PATCHES" -type f | sort | xargs -r cat; fi; } | sha256sum | cut -c1-16)
CACHE=$COSIM_CACHE/qemu/$KEY
SRC=$CACHE/src
BLD=$CACHE/build
stage "    cache key $KEY ($CACHE)"

# ---------------------------------------------------------------------------------------------
stage "2/6 fetching source"
DL=$COSIM_CACHE/qemu/dl
mkdir -p "$DL"
sum_ok() { [ -s "$DL/$1" ] && [ "$(sha256sum "$DL/$1" | cut -d' ' -f1)" = "$2" ]; }
fetch_pinned() {
    command -v apt-get >/dev/null || die "apt-get not found (a Debian host is expected to fetch $DSC)"
    local uri="" apt="$COSIM_CACHE/qemu/apt"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "cannot find the Debian mirror in /etc/apt/sources.list* to fetch $DSC"
    mkdir -p "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/sources"
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uri" "$SUITE" >"$apt/sources/qemu-src.sources"
    local opts=(-o "Dir::State=$apt/state" -o "Dir::Cache=$apt/cache" -o Dir::Etc::SourceList=/dev/null
                -o "Dir::Etc::SourceParts=$apt/sources" -o APT::Sandbox::User=root)
    stage "    apt-get update (private state, deb-src $SUITE from $uri)"
    apt-get "${opts[@]}" update -q >"$apt/update.log" 2>&1 \
        || { tail -5 "$apt/update.log" >&2; die "apt-get update for the $SUITE sources failed (log: $apt/update.log)"; }
    stage "    apt-get source --download-only qemu=$VERSION (about 39 MB)"
    ( cd "$DL" && apt-get "${opts[@]}" source -q --download-only "qemu=$VERSION" ) >"$apt/source.log" 2>&1 \
        || { tail -5 "$apt/source.log" >&2
             die "the pinned QEMU source qemu=$VERSION could not be fetched from Debian $SUITE (log: $apt/source.log).
  The archive may have dropped this version. Put $DSC and $ORIG (SHA-256 $ORIG_SHA256)
  into $DL by hand, or update the pin in scripts/build-qemu.sh (version and sums from the new .dsc)."; }
}
# One fetch at a time (the device and stock builds may run at once under make -j).
exec 9>"$DL/.fetch.lock"
flock -w 600 9 || die "waited 10 min for another build-qemu's download ($DL/.fetch.lock)"
if ! sum_ok "$ORIG" "$ORIG_SHA256" || ! sum_ok "$DSC" "$DSC_SHA256"; then
    fetch_pinned
fi
sum_ok "$DSC" "$DSC_SHA256" || die "$DL/$DSC: missing or its SHA-256 is not the pinned $DSC_SHA256"
grep -q "^ $ORIG_SHA256 [0-9]* $ORIG\$" "$DL/$DSC" || die "$DSC does not list $ORIG with SHA-256 $ORIG_SHA256"
sum_ok "$ORIG" "$ORIG_SHA256" || die "$DL/$ORIG: missing or its SHA-256 is not the one in $DSC ($ORIG_SHA256)"
stage "    $ORIG: SHA-256 matches $DSC"
exec 9>&-

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
    # The stock flavour stops here: no cosim code at all.
    [ "$STOCK" = 1 ] || cat >>"$SRC/hw/misc/Kconfig" <<'KCONF'

config ACCELERATOR_PCIE
    bool
    default y if PCI_DEVICES
    depends on PCI && MSI_NONBROKEN
KCONF
    [ "$STOCK" = 1 ] || cat >>"$SRC/hw/misc/meson.build" <<'MESON'

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
[ "$STOCK" = 1 ] || mkdir -p "$DEV"
copy_if_changed() {  # src dst: keep dst's mtime unless the content changed (ninja stays idle)
    if ! cmp -s "$1" "$2"; then cp "$1" "$2.tmp" && mv "$2.tmp" "$2"; fi
}
if [ "$STOCK" = 1 ]; then
    stage "    stock QEMU: no device library"
elif [ "$BOOTSTRAP" = 1 ]; then
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
if [ "$STOCK" = 1 ]; then
    "$BIN" -device help 2>/dev/null | grep -q '"vfio-user-pci"' \
        || die "$BIN -device help does not list vfio-user-pci"
    if "$BIN" -device help 2>/dev/null | grep -q '"accelerator-pcie"'; then
        die "$BIN is meant to be stock but lists accelerator-pcie"
    fi
    stage "done: $OUT/qemu-system-x86_64 -> $BIN (stock QEMU $VERSION, lists vfio-user-pci)"
elif [ "$BOOTSTRAP" != 1 ]; then
    "$BIN" -device help 2>/dev/null | grep -q '"accelerator-pcie"' \
        || die "$BIN -device help does not list accelerator-pcie"
    stage "done: $OUT/qemu-system-x86_64 -> $BIN (lists accelerator-pcie)"
else
    stage "done (bootstrap, no device): $BIN"
fi
