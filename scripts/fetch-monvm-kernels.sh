#!/usr/bin/env bash
# Fetches the stock Debian 12 kernels the Mon-VM runs, without installing them:
# each series is resolved through its meta-package (ABI-numbered packages leave
# the archive, the meta-packages stay), the real image package is downloaded
# with `apt-get download` and unpacked with `dpkg-deb -x` into
# .cache/monvm/<series>/ (git-ignored). Idempotent: a series whose resolved
# package and version are already unpacked is skipped. Safe with no standard
# input (CI).
#
# Each series folder holds, next to the unpacked boot/ and lib/ trees:
#   package   the resolved image package name (linux-image-6.1.0-57-cloud-amd64)
#   version   its Debian version (6.1.192-1)
#   release   the kernel release (6.1.0-57-cloud-amd64)
#   vmlinuz   a symlink to boot/vmlinuz-<release>
#   headers/  linux-headers-<release>, its -common package and the matching
#             linux-kbuild-* package, unpacked (usr/src, usr/lib), so that
#             out-of-tree modules (the test rootkit, docs/rootkit.md) build
#             against the exact kernel; headers/package-list names them.
#             The Debian Makefile's `include /usr/src/...` is rewritten to
#             the folder next to it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MONVM_CACHE_DIR:-$root/.cache/monvm}"

# series  meta-package
series_list=(
    "6.1 linux-image-cloud-amd64"
    "6.12 linux-image-6.12-cloud-amd64"
)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
updated=0
apt_update() {
    if [ "$updated" -eq 0 ]; then
        echo "monvm: apt-get update"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq </dev/null
        updated=1
    fi
}

# The image package a meta-package depends on (the first linux-image-* one).
resolve() {
    local meta="$1"
    apt-cache depends "$meta" 2>/dev/null </dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}

# The candidate version apt would download for a package.
candidate() {
    apt-cache policy "$1" 2>/dev/null </dev/null | awk '$1 == "Candidate:" { print $2; exit }'
}

# The headers of an unpacked series, with the -common and linux-kbuild-*
# packages it depends on (the compiler package is the host's gcc-12, which
# scripts/deps.sh installs). Skipped when the same package list is present.
fetch_headers() {
    local series="$1" dest="$2" release hpkg deps list work deb mk
    release="$(cat "$dest/release")"
    hpkg="linux-headers-$release"
    deps="$(apt-cache depends "$hpkg" 2>/dev/null </dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-(headers|kbuild)-/ { print $2 }')"
    if [ -z "$deps" ]; then
        apt_update
        deps="$(apt-cache depends "$hpkg" 2>/dev/null </dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-(headers|kbuild)-/ { print $2 }')"
    fi
    if [ -z "$deps" ]; then
        echo "monvm: cannot resolve $hpkg (is a Debian 12 archive configured?)" >&2
        exit 1
    fi
    list="$(printf '%s\n' "$hpkg" $deps | sort -u | while read -r p; do
        echo "$p $(candidate "$p")"; done)"
    if [ -f "$dest/headers/package-list" ] && [ "$(cat "$dest/headers/package-list")" = "$list" ]; then
        echo "monvm: $series headers present ($hpkg)"
        return
    fi
    echo "monvm: $series: headers $(echo "$list" | awk '{ print $1 }' | tr '\n' ' ')"
    work="$(mktemp -d "$cache/.headers-$series.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    chmod 0777 "$work"
    # shellcheck disable=SC2086
    if ! (cd "$work" && apt-get download -qq $(echo "$list" | awk '{ print $1 }') </dev/null); then
        apt_update
        # shellcheck disable=SC2086
        (cd "$work" && apt-get download -qq $(echo "$list" | awk '{ print $1 }') </dev/null)
    fi
    mkdir -p "$work/tree"
    for deb in "$work"/*.deb; do
        dpkg-deb -x "$deb" "$work/tree"
    done
    mk="$work/tree/usr/src/$hpkg/Makefile"
    if [ ! -f "$mk" ]; then
        echo "monvm: $hpkg has no usr/src/$hpkg/Makefile" >&2
        exit 1
    fi
    # `include /usr/src/linux-headers-X-common/Makefile` -> the folder beside it
    sed -i 's|^include /usr/src/\(.*\)$|include $(dir $(lastword $(MAKEFILE_LIST)))../\1|' "$mk"
    echo "$list" >"$work/tree/package-list"
    rm -rf "$dest/headers"
    mv "$work/tree" "$dest/headers"
    rm -rf "$work"
    trap - EXIT
    echo "monvm: $series headers ready in $dest/headers"
}

mkdir -p "$cache"
for entry in "${series_list[@]}"; do
    read -r series meta <<<"$entry"
    dest="$cache/$series"

    pkg="$(resolve "$meta")"
    if [ -z "$pkg" ]; then
        apt_update
        pkg="$(resolve "$meta")"
    fi
    if [ -z "$pkg" ]; then
        echo "monvm: cannot resolve $meta to an image package (is a Debian 12 archive configured?)" >&2
        exit 1
    fi
    version="$(candidate "$pkg")"

    if [ -f "$dest/package" ] && [ -f "$dest/version" ] && [ -e "$dest/vmlinuz" ] &&
        [ "$(cat "$dest/package")" = "$pkg" ] &&
        { [ -z "$version" ] || [ "$(cat "$dest/version")" = "$version" ]; }; then
        echo "monvm: $series present ($pkg $(cat "$dest/version"))"
        fetch_headers "$series" "$dest"
        continue
    fi

    echo "monvm: $series: $meta -> $pkg ${version:-?}"
    work="$(mktemp -d "$cache/.fetch-$series.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    # apt-get download writes into the current directory as its sandbox user
    # (_apt) when run as root: let it write into the scratch folder.
    chmod 0777 "$work"
    if ! (cd "$work" && apt-get download -qq "$pkg" </dev/null); then
        # A stale list points at a file the archive no longer has.
        apt_update
        (cd "$work" && apt-get download -qq "$pkg" </dev/null)
    fi
    deb="$(ls "$work"/*.deb)"
    mkdir -p "$work/tree"
    dpkg-deb -x "$deb" "$work/tree"
    release="${pkg#linux-image-}"
    if [ ! -f "$work/tree/boot/vmlinuz-$release" ]; then
        echo "monvm: $deb has no boot/vmlinuz-$release" >&2
        exit 1
    fi
    dpkg-deb -f "$deb" Package >"$work/tree/package"
    dpkg-deb -f "$deb" Version >"$work/tree/version"
    echo "$release" >"$work/tree/release"
    ln -s "boot/vmlinuz-$release" "$work/tree/vmlinuz"

    rm -rf "$dest"
    mv "$work/tree" "$dest"
    rm -rf "$work"
    trap - EXIT
    echo "monvm: $series ready in $dest ($(cat "$dest/package") $(cat "$dest/version"))"
    fetch_headers "$series" "$dest"
done
