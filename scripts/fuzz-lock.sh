#!/usr/bin/env bash
# Writes the Cargo.lock of each fuzz crate (git-ignored) from the
# workspace's Cargo.lock, so that fuzz builds use exactly the dependency
# versions the workspace pins. Cargo keeps every version the copied lock
# names, drops what the fuzz crate does not use and resolves only what the
# workspace does not have (libfuzzer-sys, pinned in each fuzz Cargo.toml,
# and its build dependencies).
#
# Why not commit them: each fuzz crate is its own workspace with its own
# lock file, which went stale whenever a crate it fuzzes gained a
# dependency (kernel -> avm-net, verifier-host -> ...); `cargo fuzz` then
# silently rewrote the committed file and `make test` left the work tree
# dirty. Derived from the one committed lock, they cannot go stale.
#
# Usage: scripts/fuzz-lock.sh [FUZZ_CRATE_DIR...]  (default: every one)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo=${CARGO:-cargo}
if [ $# -eq 0 ]; then
    set -- drivers/tpm-crb/fuzz attest/fuzz net/fuzz kernel/fuzz verifier-host/fuzz vmi/fuzz \
        drivers/tpm-crb/fuzz/seedgen
fi
for dir in "$@"; do
    case $dir in /*) ;; *) dir=$root/$dir ;; esac
    [ -f "$dir/Cargo.toml" ] || continue
    # A crate that still commits its lock file keeps it as it is.
    if git -C "$root" ls-files --error-unmatch "$dir/Cargo.lock" >/dev/null 2>&1; then
        echo "fuzz-lock: ${dir#"$root"/}/Cargo.lock is committed: left as it is" >&2
        continue
    fi
    cp "$root/Cargo.lock" "$dir/Cargo.lock"
    if ! log=$(cd "$dir" && "$cargo" metadata --format-version 1 2>&1 >/dev/null); then
        echo "fuzz-lock: resolving $dir failed:" >&2
        echo "$log" >&2
        exit 1
    fi
done
