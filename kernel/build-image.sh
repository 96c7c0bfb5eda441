#!/bin/sh
# Builds the A-VM image and writes the stripped ELF to build/avm.elf (or $1).
# Usage: kernel/build-image.sh [output]   (run from anywhere)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build/avm.elf}
target_dir=${CARGO_TARGET_DIR_KERNEL:-$root/target/kernel}
# The explicit --target keeps RUSTFLAGS off build scripts and proc macros.
RUSTFLAGS="-C relocation-model=static" cargo build --manifest-path "$root/Cargo.toml" \
    -p avm-kernel --features image --profile kernel --target x86_64-unknown-linux-gnu --target-dir "$target_dir"
mkdir -p "$(dirname "$out")"
strip -o "$out" "$target_dir/x86_64-unknown-linux-gnu/kernel/avm-kernel"
size=$(stat -c %s "$out")
echo "avm image: $out ($size bytes)"
if [ "$size" -gt 524288 ]; then
    echo "error: image larger than 512 KiB" >&2
    exit 1
fi
