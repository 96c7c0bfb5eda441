#!/usr/bin/env bash
# Installs what building, running and testing the project needs, skipping
# whatever is already there. Safe to run any number of times, with no
# standard input (CI).
set -euo pipefail

# command-that-must-exist  debian-package
required=(
    "qemu-system-x86_64 qemu-system-x86"
    "swtpm swtpm"
    "swtpm_setup swtpm-tools"
    "swtpm_localca swtpm-tools"
    "tpm2_quote tpm2-tools"
    "tpm2_checkquote tpm2-tools"
    "busybox busybox-static"
    "openssl openssl"
    "pkg-config pkg-config"
    "strip binutils"
    "cc gcc"
    "gcc-12 gcc-12"
    "make make"
    "xz xz-utils"
    "evmctl ima-evm-utils"
)
# Files (not commands) that packages provide.
required_files=(
    "/usr/include/openssl/ssl.h libssl-dev"
    "/usr/share/seabios/bios-256k.bin seabios"
    "/sbin/mke2fs e2fsprogs"
)

missing=()
for entry in "${required[@]}"; do
    read -r cmd pkg <<<"$entry"
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/bin/$cmd" ] || missing+=("$pkg")
done
for entry in "${required_files[@]}"; do
    read -r file pkg <<<"$entry"
    [ -e "$file" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
    # shellcheck disable=SC2207
    missing=($(printf '%s\n' "${missing[@]}" | sort -u))
    echo "deps: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq </dev/null
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
else
    echo "deps: system packages present"
fi

# cargo-fuzz drives the fuzz targets (built with RUSTC_BOOTSTRAP=1 on stable).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "deps: installing cargo-fuzz"
    cargo install --locked cargo-fuzz </dev/null
fi
bash "$(dirname "${BASH_SOURCE[0]}")/fetch-monvm-kernels.sh"
# The test rootkit, built against each kernel's headers (docs/rootkit.md).
bash "$(dirname "${BASH_SOURCE[0]}")/build-rootkit.sh"
