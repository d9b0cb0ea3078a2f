#!/usr/bin/env bash
# Checks that the MSRV in Cargo.toml ([workspace.package] rust-version) is true, with the one
# (newer) toolchain installed:
#   1. every workspace member inherits it (`rust-version.workspace = true`);
#   2. no dependency in Cargo.lock (built on this platform, dev- and build-dependencies included)
#      declares a newer rust-version;
#   3. no workspace code (libraries, binaries, tests, benches) uses a std API stabilised after it:
#      clippy's `incompatible_msrv` (clippy.toml turns it on for test code too).
# It does not catch language features newer than the MSRV (clippy checks library items only).
# Used by `make test-msrv` (a tier of `make test`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CARGO=${CARGO:-cargo}
cd "$ROOT"

log() { printf '[check-msrv] %s\n' "$*" >&2; }

"$CARGO" clippy --version >/dev/null 2>&1 || { log "error: needs clippy (rustup component add clippy)"; exit 1; }

host=$(rustc -vV | awk '/^host:/ {print $2}')
read -r -d '' CHECK_DEPS <<'PY' || true
import json, re, sys

def ver(s):
    t = [int(x) for x in s.split(".")]
    return tuple(t + [0] * (3 - len(t)))

m = json.load(sys.stdin)
pkgs = {p["id"]: p for p in m["packages"]}
member_ids = set(m["workspace_members"])
members = [pkgs[i] for i in member_ids]
bad = []
for p in members:
    with open(p["manifest_path"]) as f:
        if not re.search(r"^rust-version\.workspace\s*=\s*true\s*$", f.read(), re.M):
            bad.append(f"{p['manifest_path']}: missing `rust-version.workspace = true`")
declared = {p["rust_version"] for p in members if p.get("rust_version")}
if len(declared) != 1:
    sys.exit("\n".join(bad + [f"members declare rust-version {sorted(declared)}, expected one workspace value"]))
msrv = declared.pop()
for node in m["resolve"]["nodes"]:
    p = pkgs[node["id"]]
    rv = p.get("rust_version")
    if node["id"] not in member_ids and rv and ver(rv) > ver(msrv):
        bad.append(f"dependency {p['name']} {p['version']} (Cargo.lock) needs Rust {rv} > MSRV {msrv}")
if bad:
    sys.exit("\n".join(bad))
print(msrv)
PY
# Prints the MSRV on success; names every problem and fails otherwise.
msrv=$("$CARGO" metadata --format-version 1 --filter-platform "$host" | python3 -c "$CHECK_DEPS") || { log "error: the MSRV in Cargo.toml is not true (see above)"; exit 1; }

log "MSRV $msrv: every member inherits it; no locked dependency needs a newer Rust"
# The MSRV is also passed as an (unused) cfg so that changing it re-lints: cargo does not
# fingerprint rust-version, but it does fingerprint clippy's arguments.
"$CARGO" clippy --release --workspace --all-targets --quiet -- \
    -A clippy::all -D clippy::incompatible_msrv \
    "--cfg=cosim_msrv=\"$msrv\"" '--check-cfg=cfg(cosim_msrv,values(any()))' \
    || { log "error: clippy failed (above): a std API newer than the MSRV $msrv (incompatible_msrv), or a build error"; exit 1; }
log "MSRV $msrv: no std API newer than it in the workspace (clippy::incompatible_msrv, tests included)"
