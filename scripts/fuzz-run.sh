#!/usr/bin/env bash
# Runs every cargo-fuzz target of the given crates from its committed seeds
# (<crate>/fuzz/seeds/<target>/) and prints each target's coverage when the
# seeds are loaded (libFuzzer's INITED line) and at the end (DONE line).
#
#   scripts/fuzz-run.sh smoke SECONDS CRATE...   (make fuzz-smoke, make test)
#       a fresh corpus per target in a temporary directory, deleted at the
#       end: nothing is written into the work tree (crash inputs, if any,
#       are copied to target/fuzz-artifacts/ and shown);
#   scripts/fuzz-run.sh full SECONDS CRATE...    (make fuzz)
#       the corpus is kept in <crate>/fuzz/corpus/<target>/ (git-ignored)
#       and grows from run to run; crash inputs go to fuzz/artifacts/.
#
# In both modes the seed directory is passed after the corpus directory:
# libFuzzer reads both and writes new inputs only into the first. Extra
# cargo-fuzz flags come from FUZZ_FLAGS. Each fuzz crate's Cargo.lock is
# first derived from the workspace's (scripts/fuzz-lock.sh).
set -euo pipefail
mode=${1:?usage: fuzz-run.sh smoke|full SECONDS CRATE...}
seconds=${2:?usage: fuzz-run.sh smoke|full SECONDS CRATE...}
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
cargo=${CARGO:-cargo}
read -r -a flags <<<"${FUZZ_FLAGS:-}"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/avm-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# The libFuzzer status line without its speed and memory columns.
tidy() {
    sed -E 's/[[:space:]]+/ /g; s/ (lim|exec\/s|rss): [^ ]*//g' <<<"$1"
}

for crate in "$@"; do
    dir=$root/$crate/fuzz
    [ -d "$dir" ] || continue
    bash "$root/scripts/fuzz-lock.sh" "$dir"
    targets=$(cd "$dir" && RUSTC_BOOTSTRAP=1 "$cargo" fuzz list)
    for target in $targets; do
        seeds=$dir/seeds/$target
        count=$(find "$seeds" -maxdepth 1 -type f 2>/dev/null | wc -l)
        if [ "$count" -eq 0 ]; then
            echo "fuzz: $crate/fuzz/seeds/$target/ is missing or empty:" \
                "every target needs real seeds (docs/fuzzing.md, scripts/fuzz-seeds.sh)" >&2
            exit 1
        fi
        name=${crate//\//_}-$target
        if [ "$mode" = smoke ]; then
            corpus=$scratch/corpus/$name
            artifacts=$scratch/artifacts/$name/
        else
            corpus=$dir/corpus/$target
            artifacts=$dir/artifacts/$target/
        fi
        mkdir -p "$corpus" "$artifacts"
        # cargo fuzz creates fuzz/artifacts/<target>/ even when libFuzzer is
        # told to write elsewhere: an empty one it made is removed again.
        own_artifacts=$dir/artifacts
        [ -e "$own_artifacts" ] && own_artifacts=
        log=$scratch/$name.log
        echo "fuzz: $crate $target (${seconds}s from $count seeds)"
        if ! (cd "$dir" && RUSTC_BOOTSTRAP=1 "$cargo" fuzz run "${flags[@]}" "$target" \
            "$corpus" "$seeds" -- -max_total_time="$seconds" -artifact_prefix="$artifacts" \
            -print_final_stats=0) >"$log" 2>&1; then
            tail -n 40 "$log"
            if [ "$mode" = smoke ] && [ -n "$(ls -A "$artifacts")" ]; then
                mkdir -p "$root/target/fuzz-artifacts"
                cp "$artifacts"* "$root/target/fuzz-artifacts/"
                echo "fuzz: crash inputs copied to target/fuzz-artifacts/"
            fi
            echo "fuzz: $crate $target FAILED" >&2
            exit 1
        fi
        if [ -n "$own_artifacts" ] && [ "$mode" = smoke ]; then
            find "$own_artifacts" -depth -type d -empty -delete 2>/dev/null || true
        fi
        # "#40  INITED cov: 294 ft: 323 corp: 26/3990b exec/s: 0 rss: 29Mb"
        start=$(grep -m1 -E '^#[0-9]+[[:space:]]+INITED ' "$log" || echo "(no INITED line)")
        end=$(grep -E '^#[0-9]+[[:space:]]+DONE ' "$log" | tail -n 1 || echo "(no DONE line)")
        echo "  start: $(tidy "$start")"
        echo "  end:   $(tidy "$end")"
    done
done
