#!/usr/bin/env bash
# Installs the Debian packages and apt sources cosim needs on a fresh Debian 12 machine.
# Idempotent: a second run checks and returns quickly. Must run as root (or via sudo).
#
# Apt sources added (the mirror is taken from the machine's existing Debian source entry, so no
# host name is hard-coded here):
#   - bookworm-backports (deb, deb-src): qemu-system-data / qemu-system-x86 10.0 (firmware, baseline VM)
#   (QEMU 10.2.2 source itself is fetched by scripts/build-qemu.sh through a private apt state)
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { log "error: must run as root (or have sudo)"; exit 1; }
    SUDO="sudo"
fi

PACKAGES=(
    # Rust crates that build C/C++ (zmq vendors libzmq), the Verilator C++ main
    build-essential pkg-config cmake
    # HDL simulation
    verilator zlib1g-dev
    # QEMU build
    ninja-build libglib2.0-dev libpixman-1-dev flex bison libslirp-dev libfdt-dev
    device-tree-compiler  # dtc: QEMU 10.2 builds its .dtb files (the +ds tarball has no prebuilt ones)
    python3-venv dpkg-dev xz-utils bzip2
    # firmware for running QEMU (seabios, option ROMs, NIC ROMs)
    seabios ipxe-qemu
    # guest image
    busybox-static cpio gzip kmod
    # network namespaces and veth pairs of the two-host test and benchmark (ip)
    iproute2
    # host Python package cosim (python/): Debian's CPU-only torch (never PyPI's, ~3 GB of CUDA),
    # numpy, scikit-learn (its bundled digits data set) and pytest, for /usr/bin/python3
    python3-torch python3-numpy python3-sklearn python3-pytest
)
BACKPORTS_PACKAGES=(qemu-system-data qemu-system-x86)

SOURCES=/etc/apt/sources.list.d/cosim.sources

mirror_uri() {
    # The URI of the machine's own bookworm entry (deb822 or one-line format).
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1=="deb" && $3 ~ /^bookworm/ {print $2; exit}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || { log "error: cannot find the Debian mirror in /etc/apt/sources.list*"; exit 1; }
    printf '%s' "$uri"
}

need_update=0
if [ ! -f "$SOURCES" ]; then
    uri=$(mirror_uri)
    log "adding apt sources (bookworm-backports, deb-src bookworm) from mirror $uri"
    $SUDO tee "$SOURCES" >/dev/null <<SRC
Types: deb deb-src
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: $uri
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    need_update=1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
missing_bpo=()
for p in "${BACKPORTS_PACKAGES[@]}"; do
    v=$(dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null || true)
    case "$v" in "install ok installed"*bpo*) ;; *) missing_bpo+=("$p") ;; esac
done

# Python build tools for QEMU's configure (meson >= 1.5, pycotap), from PyPI.
py_missing=0
python3 - <<'PY' 2>/dev/null || py_missing=1
import importlib.metadata as m, sys
v = tuple(int(x) for x in m.version("meson").split(".")[:2])
m.version("pycotap")
sys.exit(0 if v >= (1, 5) else 1)
PY

if [ ${#missing[@]} -eq 0 ] && [ ${#missing_bpo[@]} -eq 0 ] && [ $py_missing -eq 0 ] && [ $need_update -eq 0 ]; then
    log "all dependencies present"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if [ $need_update -eq 1 ] || [ ${#missing[@]} -gt 0 ] || [ ${#missing_bpo[@]} -gt 0 ]; then
    log "apt-get update"
    $SUDO apt-get update -q -o Dpkg::Use-Pty=0 >/dev/null
fi
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    $SUDO apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
fi
if [ ${#missing_bpo[@]} -gt 0 ]; then
    log "installing from bookworm-backports: ${missing_bpo[*]}"
    $SUDO apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 -t bookworm-backports "${missing_bpo[@]}" >/dev/null
fi
if [ $py_missing -eq 1 ]; then
    log "installing meson>=1.5 and pycotap from PyPI"
    python3 -m pip install -q "meson>=1.5,<1.9" pycotap
fi
log "done"
