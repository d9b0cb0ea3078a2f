#!/usr/bin/env bash
# Creates a device project of your own from templates/device (README.md there), outside this
# cosim checkout, with its paths pointing at this checkout.
set -euo pipefail

COSIM_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)"
TEMPLATE="$COSIM_ROOT/templates/device"

usage() {
    cat <<EOF
usage: new-project.sh DIR

Copies the template device ($TEMPLATE: RTL, host-model tests, guest program)
to DIR, which must not exist or be empty, and must lie outside this cosim checkout. The copy's
Makefile (COSIM) and Cargo.toml files (path dependencies) point at $COSIM_ROOT.
Exit status: 0 created, 2 usage error or refused DIR.
EOF
}

die() { echo "new-project.sh: $*" >&2; exit 2; }

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
esac
[ $# -eq 1 ] || die "one DIR expected, got $# arguments (try --help)"
[ -d "$TEMPLATE" ] || die "the template is missing: $TEMPLATE"

dir="$(realpath -m -- "$1")"
case "$dir/" in
    "$COSIM_ROOT/"*) die "$dir is inside the cosim checkout $COSIM_ROOT; a project lives outside it (e.g. ~/my-device)" ;;
esac
if [ -e "$dir" ]; then
    [ -d "$dir" ] || die "$dir exists and is not a directory"
    [ -z "$(ls -A -- "$dir")" ] || die "$dir exists and is not empty; give a new or empty directory"
fi
mkdir -p -- "$dir"
# A failure from here on leaves nothing behind, so the same command can simply be run again.
trap 'status=$?; if [ $status -ne 0 ]; then find "$dir" -mindepth 1 -delete 2>/dev/null; rmdir -- "$dir" 2>/dev/null; fi' EXIT

# The template without what a build in the checkout left there.
tar -C "$TEMPLATE" --exclude=./build --exclude=./host-test/target --exclude=./sw/target -cf - . | tar -C "$dir" -xf -

# Point the copy at this checkout: the Makefile's COSIM and the Cargo path dependencies, which
# in the template are relative to templates/device (../../.. from host-test/ and sw/).
esc="$(printf '%s' "$COSIM_ROOT" | sed 's/[\\|&]/\\&/g')"
sed -i "s|^COSIM ?= .*|COSIM ?= $esc|" "$dir/Makefile"
grep -qxF "COSIM ?= $COSIM_ROOT" "$dir/Makefile" || die "could not set COSIM in $dir/Makefile"
for toml in "$dir"/*/Cargo.toml; do
    sed -i "s|path = \"\\.\\./\\.\\./\\.\\./|path = \"$esc/|g" "$toml"
    if grep -q 'path = "\.\./\.\./\.\./' "$toml"; then die "could not rewrite the paths of $toml"; fi
done

cat <<EOF
new-project.sh: created $dir from the template device, using cosim at $COSIM_ROOT.
Next:
  cd $dir
  make sim        # build/sim/sim, the simulation of rtl/ (Verilator warnings are fatal)
  make test       # host-test/: the host-model tests against it (the first run compiles cosim's host model)
  make guest-run  # a guest runs sw/ through VFIO (first: make -C $COSIM_ROOT qemu guest launcher)
Then make it yours: README.md (the register map), rtl/, host-test/tests/, sw/src/.
EOF
