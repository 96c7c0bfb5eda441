#!/usr/bin/env bash
# Builds the test rootkit (qemu/rootkit/, docs/rootkit.md) for every Mon-VM
# kernel series whose headers scripts/fetch-monvm-kernels.sh unpacked into
# .cache/monvm/<series>/headers/. The sources are copied into
# .cache/monvm/<series>/rootkit/ (Kbuild writes next to them) and the module
# lands there as avm_rootkit.ko: never in the work tree. Kbuild rebuilds only
# what changed. Uses the host's gcc-12, as the headers ask.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MONVM_CACHE_DIR:-$root/.cache/monvm}"
src="$root/qemu/rootkit"

for series in 6.1 6.12; do
    dir="$cache/$series"
    [ -f "$dir/release" ] || { echo "rootkit: $series: no kernel in $dir (run make deps)" >&2; exit 1; }
    release="$(cat "$dir/release")"
    kdir="$dir/headers/usr/src/linux-headers-$release"
    [ -f "$kdir/Makefile" ] || { echo "rootkit: $series: no headers in $kdir (run make deps)" >&2; exit 1; }
    out="$dir/rootkit"
    mkdir -p "$out"
    for f in avm_rootkit.c Kbuild; do
        cmp -s "$src/$f" "$out/$f" || cp "$src/$f" "$out/$f"
    done
    # Module BTF needs pahole and the kernel's BTF: not wanted here.
    if ! make -s -C "$kdir" M="$out" CONFIG_DEBUG_INFO_BTF_MODULES= modules </dev/null >"$out/build.log" 2>&1; then
        cat "$out/build.log" >&2
        echo "rootkit: $series: build failed" >&2
        exit 1
    fi
    echo "rootkit: $series: $out/avm_rootkit.ko ($release)"
done
