#!/usr/bin/env bash
# Log appraisal, the verifier next to its peers (part of `make bench`;
# scripts/bench.sh runs it and puts its rows into docs/benchmarks.md):
# a generated IMA list of N entries (default 100,000) and the Keylime
# runtime policy that allows it (../shared/peers/ima-baseline,
# gen_ima_log.py; data in /tmp/peer-ima), checked by
#
#  - the verifier's appraisal (`avm-bench ima-log`: template hashes,
#    replay to PCR 10, every entry against the allowlist; the code
#    `avm-verifier attest` runs), in process and as a whole process;
#  - `evmctl ima_measurement --pcrs` (replay only: it has no allowlist);
#  - Keylime's `process_measurement_list` (keylime_bench.py, in the venv
#    that setup.sh builds; "not available: why" if it cannot be set up).
#
# Each peer is compared with the figure that does what it times:
#  - Keylime's timed call has the list split into lines and the policy
#    loaded and deserialized before it: it is compared with our in-process
#    appraisal (list in memory, policy imported and indexed before).
#  - evmctl is timed as a whole process (reading the list, no policy): it
#    is compared with our whole process, `avm-bench ima-log --runs 1
#    --state DIR`, which loads the 100,000-entry policy from a verifier
#    state as `attest` does (imported there before with `avm-verifier
#    policy import-keylime`) and checks every entry against it; next to
#    it, our whole process importing the JSON policy itself, and our whole
#    process doing what evmctl does (`--replay-only`: template hashes and
#    replay, no policy).
#
# Each verdict is checked first (the good list passes, a list whose entry
# K measured another file fails for the allowlists); then RUNS runs each.
# Prints key=value lines on stdout (ima.*) and markdown rows to the file
# named by IMA_ROWS (if set). Exit 2 only if our own part cannot be
# measured.
# Environment: AVM_BENCH (default target/release/avm-bench), AVM_VERIFIER
# (target/release/avm-verifier), IMA_ENTRIES (100000), IMA_RUNS (11: a
# p50 of 5 moved by a quarter between minutes on this host), PEER_IMA
# (../shared/peers/ima-baseline), IMA_DATA (/tmp/peer-ima/data), IMA_ROWS.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench_bin=${AVM_BENCH:-$root/target/release/avm-bench}
verifier_bin=${AVM_VERIFIER:-$root/target/release/avm-verifier}
entries=${IMA_ENTRIES:-100000}
runs=${IMA_RUNS:-11}
peer=${PEER_IMA:-$root/../shared/peers/ima-baseline}
data=${IMA_DATA:-/tmp/peer-ima/data}/N$entries
rows=${IMA_ROWS:-/dev/null}

log() { echo "bench-ima: $*" >&2; }
fail() {
    log "$*"
    exit 2
}
value() { sed -n "s/^$1=//p" "$2" | head -n 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }'; }
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { print (a != "n/a" && a >= b) ? "met" : "not met" }'; }
ms() { awk -v v="$1" 'BEGIN { printf "%.1f ms", v }'; }

[ -x "$bench_bin" ] || fail "$bench_bin is missing: run \`make build\` first"
[ -x "$verifier_bin" ] || fail "$verifier_bin is missing: run \`make build\` first"
[ -f "$peer/gen_ima_log.py" ] || fail "the peer baseline is not at $peer"
command -v python3 >/dev/null || fail "python3 is not installed"

# --- The data ------------------------------------------------------------
for kind in good measured; do
    dir=$data/$kind
    [ -f "$dir/binary_runtime_measurements" ] && continue
    log "generating $entries entries ($kind) into $dir"
    extra=()
    [ "$kind" = good ] || extra=(--tamper "$((entries / 2))" --tamper-mode measured)
    python3 "$peer/gen_ima_log.py" "$entries" "$dir" "${extra[@]}" >/dev/null ||
        fail "gen_ima_log.py failed"
done
good=$data/good
measured=$data/measured
work=$(mktemp -d /tmp/avm-bench-ima.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- Ours ------------------------------------------------------------------
"$bench_bin" ima-log "$measured" --runs 1 >"$work/ours-measured.txt" || fail "avm-bench ima-log failed"
case "$(value ima.verdict "$work/ours-measured.txt")" in
    fail:*) ;;
    *) fail "the verifier passed a list that measured a file the policy does not allow" ;;
esac
"$bench_bin" ima-log "$good" --runs "$runs" >"$work/ours.txt" || fail "avm-bench ima-log failed"
[ "$(value ima.verdict "$work/ours.txt")" = pass ] ||
    fail "the verifier refused the good list: $(value ima.verdict "$work/ours.txt")"
ours_ms=$(value ima.appraise.p50_ms "$work/ours.txt")
"$bench_bin" time --runs "$runs" -- "$bench_bin" ima-log "$good" --runs 1 >"$work/ours-process.txt" ||
    fail "timing avm-bench ima-log failed"
ours_process_ms=$(value command.p50_ms "$work/ours-process.txt")
"$bench_bin" ima-log "$good" --runs 1 --replay-only >"$work/ours-replay.txt" || fail "avm-bench ima-log --replay-only failed"
[ "$(value ima.verdict "$work/ours-replay.txt")" = pass ] ||
    fail "the verifier's replay refused the good list: $(value ima.verdict "$work/ours-replay.txt")"
"$bench_bin" time --runs "$runs" -- "$bench_bin" ima-log "$good" --runs 1 --replay-only >"$work/ours-replay-process.txt" ||
    fail "timing avm-bench ima-log --replay-only failed"
ours_replay_process_ms=$(value command.p50_ms "$work/ours-replay-process.txt")
# The policy kept in a verifier state, as `attest` loads it.
state=$work/state
"$verifier_bin" --state "$state" policy init --avm-image-sha256 "$(printf '%064d' 0)" >/dev/null ||
    fail "avm-verifier policy init failed"
"$verifier_bin" --state "$state" policy import-keylime "$good/runtime_policy.json" >/dev/null ||
    fail "avm-verifier policy import-keylime failed"
"$bench_bin" ima-log "$good" --runs "$runs" --state "$state" >"$work/ours-stored-load.txt" ||
    fail "avm-bench ima-log --state failed"
[ "$(value ima.verdict "$work/ours-stored-load.txt")" = pass ] ||
    fail "the verifier refused the good list with the stored policy: $(value ima.verdict "$work/ours-stored-load.txt")"
"$bench_bin" time --runs "$runs" -- "$bench_bin" ima-log "$good" --runs 1 --state "$state" >"$work/ours-stored-process.txt" ||
    fail "timing avm-bench ima-log --state failed"
ours_stored_process_ms=$(value command.p50_ms "$work/ours-stored-process.txt")
# The same with glibc's malloc asking for transparent huge pages (not the
# default: a deployment knob, docs/benchmarks.md): a whole process is
# mostly page faults of fresh memory besides the hashing.
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "$bench_bin" time --runs "$runs" -- "$bench_bin" ima-log "$good" --runs 1 --state "$state" >"$work/ours-stored-thp.txt" ||
    fail "timing avm-bench ima-log --state with THP failed"
ours_stored_thp_ms=$(value command.p50_ms "$work/ours-stored-thp.txt")
echo "ima.entries=$(value ima.entries "$work/ours.txt")"
echo "ima.ours.appraise_p50_ms=$ours_ms"
echo "ima.ours.process_p50_ms=$ours_process_ms"
echo "ima.ours.replay_process_p50_ms=$ours_replay_process_ms"
echo "ima.ours.policy_load_ms=$(value ima.policy_load_ms "$work/ours.txt")"
echo "ima.ours.stored_process_p50_ms=$ours_stored_process_ms"
echo "ima.ours.stored_policy_load_ms=$(value ima.policy_load_ms "$work/ours-stored-load.txt")"
echo "ima.ours.stored_process_thp_p50_ms=$ours_stored_thp_ms"

# --- evmctl ------------------------------------------------------------------
evmctl_ms=
if ! command -v evmctl >/dev/null; then
    evmctl_why="evmctl is not installed (ima-evm-utils; make deps or $peer/setup.sh)"
elif ! evmctl ima_measurement --ignore-violations --pcrs "sha256,$good/pcrs-sha256" \
    "$good/binary_runtime_measurements" >/dev/null 2>&1; then
    evmctl_why="evmctl refused the good list"
else
    "$bench_bin" time --runs "$runs" -- evmctl ima_measurement --ignore-violations \
        --pcrs "sha256,$good/pcrs-sha256" "$good/binary_runtime_measurements" >"$work/evmctl.txt"
    evmctl_ms=$(value command.p50_ms "$work/evmctl.txt")
    echo "ima.evmctl.process_p50_ms=$evmctl_ms"
fi

# --- Keylime -----------------------------------------------------------------
keylime_ms=
venv=/tmp/peer-ima/venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'from keylime.ima import ima' 2>/dev/null; then
    log "setting up Keylime ($peer/setup.sh)"
    if ! sh "$peer/setup.sh" >"$work/setup.log" 2>&1; then
        keylime_why="the Keylime venv could not be set up ($(tail -n 1 "$work/setup.log" | cut -c1-120))"
    fi
fi
if [ -z "${keylime_why:-}" ]; then
    if "$venv/bin/python" "$peer/keylime_bench.py" "$good" --bank sha256 --runs "$runs" \
        >"$work/keylime.json" 2>"$work/keylime.err"; then
        keylime_ms=$(python3 -c 'import json,sys,statistics; d=json.load(open(sys.argv[1])); print("%.3f" % (1e3*statistics.median(d["verify_s"])))' "$work/keylime.json")
        echo "ima.keylime.verify_p50_ms=$keylime_ms"
    else
        keylime_why="keylime_bench.py failed ($(tail -n 1 "$work/keylime.err" | cut -c1-120))"
    fi
fi

# --- Rows ------------------------------------------------------------------------
n=$(value ima.entries "$work/ours.txt")
{
    echo "| log appraisal: $n-entry IMA list against a $n-entry Keylime allowlist, verifier (template hashes, replay to PCR 10, allowlist; in process, policy imported and indexed before; p50 of $runs) | $(ms "$ours_ms") (as a whole process: $(ms "$ours_stored_process_ms") with the policy from the verifier state, as \`attest\` loads it, whose load alone takes $(ms "$(value ima.policy_load_ms "$work/ours-stored-load.txt")"); $(ms "$ours_process_ms") reading and importing the JSON policy; $(ms "$ours_replay_process_ms") without the policy, template hashes and replay only) | | |"
    if [ -n "$evmctl_ms" ]; then
        r=$(ratio "$evmctl_ms" "$ours_stored_process_ms")
        r_json=$(ratio "$evmctl_ms" "$ours_process_ms")
        r_replay=$(ratio "$evmctl_ms" "$ours_replay_process_ms")
        r_in=$(ratio "$evmctl_ms" "$ours_ms")
        r_thp=$(ratio "$evmctl_ms" "$ours_stored_thp_ms")
        echo "| evmctl ima_measurement --pcrs, same list (replay only, no allowlist; whole process, p50 of $runs) | $(ms "$evmctl_ms"): verifier ${r}x faster (whole process to whole process, ours with the allowlist from its state); ${r_thp}x the same with \`GLIBC_TUNABLES=glibc.malloc.hugetlb=1\` ($(ms "$ours_stored_thp_ms"), not the default); ${r_json}x importing the JSON policy in the same process; ${r_replay}x doing evmctl's work (--replay-only); ${r_in}x its in-process appraisal | >= 10x | $(at_least "$r" 10) |"
    else
        echo "| evmctl ima_measurement --pcrs, same list | not available: $evmctl_why | >= 10x | not measured |"
    fi
    if [ -n "$keylime_ms" ]; then
        r=$(ratio "$keylime_ms" "$ours_ms")
        echo "| Keylime process_measurement_list, same list and policy (SHA-256 bank; its timed call, p50 of $runs) | $(ms "$keylime_ms"): verifier ${r}x faster (timed section to timed section) | >= 30x | $(at_least "$r" 30) |"
    else
        echo "| Keylime process_measurement_list, same list and policy | not available: $keylime_why | >= 30x | not measured |"
    fi
} | tee -a "$rows" >"$work/rows.md"
cat "$work/rows.md" >&2
[ -z "$evmctl_ms" ] || echo "ima.evmctl.ratio=$(ratio "$evmctl_ms" "$ours_stored_process_ms")"
[ -z "$evmctl_ms" ] || echo "ima.evmctl.json_ratio=$(ratio "$evmctl_ms" "$ours_process_ms")"
[ -z "$evmctl_ms" ] || echo "ima.evmctl.replay_ratio=$(ratio "$evmctl_ms" "$ours_replay_process_ms")"
[ -z "$evmctl_ms" ] || echo "ima.evmctl.in_process_ratio=$(ratio "$evmctl_ms" "$ours_ms")"
[ -z "$keylime_ms" ] || echo "ima.keylime.ratio=$(ratio "$keylime_ms" "$ours_ms")"
