#!/usr/bin/env bash
# Part of `make bench` (scripts/bench.sh): does the A-VM keep answering
# challenges while it watches a Mon-VM? The attestation round trip
# (`avm-bench roundtrip`: Challenge to verified Evidence, p50/p99) on a
# node without a Mon-VM (the A-VM idle) next to a node with the 6.1 Mon-VM
# and every check at its default period, with `avm-verifier monitor`
# subscribed to its events at the same time. Target: at most 2x idle.
# Writes markdown table rows to $MONITOR_ROWS; exit status 2 if something
# could not be measured.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
qemu_bin=${AVM_QEMU:-$root/target/release/avm-qemu}
verifier_bin=${AVM_VERIFIER:-$root/target/release/avm-verifier}
bench_bin=${AVM_BENCH:-$root/target/release/avm-bench}
image=${AVM_IMAGE:-$root/build/avm.elf}
rows=${MONITOR_ROWS:?MONITOR_ROWS names the output file}
rounds=${MONITOR_ROUNDS:-200}
work=$(mktemp -d /tmp/avm-bench-monitor.XXXXXX)
monitor_pid=
cleanup() {
    if [ -n "$monitor_pid" ]; then kill "$monitor_pid" 2>/dev/null || true; fi
    for node in idle monvm; do
        "$qemu_bin" down --state "$work/$node" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

log() { echo "bench-monitor: $*" >&2; }
fail() {
    log "$*"
    exit 2
}
value() { sed -n "s/^$1=//p" "$2" | head -n 1; }

# up NAME [avm-qemu up args...]: boots, enrols and learns a node; prints its address.
up() {
    local name=$1
    shift
    local state=$work/$name verifier=("$verifier_bin" --state "$work/verifier-$name")
    local addr status_json ek_ca profile profile_args=()
    addr=$("$qemu_bin" up --state "$state" --image "$image" "$@" 2>"$work/$name-up.err") ||
        fail "node $name did not come up: $(tail -3 "$work/$name-up.err")"
    status_json=$("$qemu_bin" status --state "$state" --json)
    ek_ca=$(sed -n 's/.*"ek_ca":"\([^"]*\)".*/\1/p' <<<"$status_json")
    profile=$(sed -n 's/.*"monvm_profile":"\([^"]*\)".*/\1/p' <<<"$status_json")
    [ -z "$profile" ] || profile_args=(--monvm-profile "$profile")
    if [ -n "$profile" ]; then
        # The Mon-VM's IMA list is anchored once the A-VM found its kernel.
        for _ in $(seq 1 600); do
            grep -q '^AVM-MONVM-IMA ' "$state/avm-serial.log" && break
            sleep 0.1
        done
    fi
    "${verifier[@]}" policy init --avm-image "$image" "${profile_args[@]}" >/dev/null || fail "policy init failed"
    "${verifier[@]}" enroll "$addr" --ek-ca "$ek_ca" >/dev/null || fail "enrolment failed"
    "${verifier[@]}" policy learn "$addr" >/dev/null || fail "policy learn failed"
    "${verifier[@]}" attest "$addr" >/dev/null || fail "node $name is not trusted"
    echo "$addr"
}

log "node without a Mon-VM (A-VM idle)"
idle_addr=$(up idle --no-monvm)
"$bench_bin" roundtrip "$idle_addr" --state "$work/verifier-idle" --rounds "$rounds" >"$work/idle.txt" ||
    fail "round trips on the idle node failed"
"$qemu_bin" down --state "$work/idle" >/dev/null 2>&1 || true

log "node with the 6.1 Mon-VM, every check running, a monitor subscribed"
monvm_addr=$(up monvm --monvm-kernel 6.1)
"$verifier_bin" --state "$work/verifier-monvm" monitor "$monvm_addr" --json --interval 1 \
    --duration 3600 >"$work/monitor.jsonl" 2>"$work/monitor.err" &
monitor_pid=$!
for _ in $(seq 1 100); do
    grep -q '"state":"subscribed"' "$work/monitor.jsonl" && break
    sleep 0.1
done
grep -q '"state":"subscribed"' "$work/monitor.jsonl" || fail "the monitor did not subscribe"
"$bench_bin" roundtrip "$monvm_addr" --state "$work/verifier-monvm" --rounds "$rounds" >"$work/busy.txt" ||
    fail "round trips on the Mon-VM node failed"
kill "$monitor_pid" 2>/dev/null || true
monitor_pid=

: >"$rows"
for mode in connection persistent; do
    idle_p50=$(value "roundtrip.$mode.p50_ms" "$work/idle.txt")
    idle_p99=$(value "roundtrip.$mode.p99_ms" "$work/idle.txt")
    busy_p50=$(value "roundtrip.$mode.p50_ms" "$work/busy.txt")
    busy_p99=$(value "roundtrip.$mode.p99_ms" "$work/busy.txt")
    ratio=$(awk -v a="$busy_p50" -v b="$idle_p50" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    met=$(awk -v r="$ratio" 'BEGIN { print (r != "n/a" && r <= 2) ? "met" : "not met" }')
    what="new connection per round"
    [ "$mode" = connection ] || what="one connection"
    echo "| attestation round trip while the A-VM checks a 6.1 Mon-VM (default periods) with a monitor subscribed, $what (p50 / p99 of $rounds) | $busy_p50 / $busy_p99 ms; idle A-VM $idle_p50 / $idle_p99 ms (${ratio}x) | at most 2x idle | $met |" >>"$rows"
done
cat "$rows"
