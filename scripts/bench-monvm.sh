#!/usr/bin/env bash
# Part of `make bench` (scripts/bench.sh): the A-VM's check of the Mon-VM
# kernel's text and rodata, on one node per Debian kernel booted with
# `monvm.bench`:
#  - the start-up check (read through ivshmem, undo KASLR, check every
#    patch site, hash every chunk) in MB/s, next to plain SHA-256 of as
#    many bytes in A-VM memory, timed by the A-VM in the same boot,
#    alternating with the check and side-effect-free repeats of it
#    (the fastest run of each: the host's speed drifts by tens of percent
#    within seconds);
#  - the full start-up measurement (survey, check filling the copy for later sweeps);
#  - the A-VM's CPU use over MONVM_IDLE_SECONDS with the Mon-VM idle and
#    every check at its default period: placed by the host's scheduler,
#    then (two CPUs or more) with the placement of `up --cpus split`;
#    and, for 6.1, where it goes: the same with every check at 60 s, and
#    with only the system-call table and IDT at their default period.
# Writes markdown table rows to $MONVM_ROWS; exit status 2 if something
# could not be measured.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
qemu_bin=${AVM_QEMU:-$root/target/release/avm-qemu}
image=${AVM_IMAGE:-$root/build/avm.elf}
rows=${MONVM_ROWS:?MONVM_ROWS names the output file}
# The idle span is counted in windows of this many seconds, to show how
# much the figure moves within one boot (a point and more on this host);
# it is rounded up to whole windows, so the rows name the span measured.
window_seconds=10
idle_seconds=${MONVM_IDLE_SECONDS:-40}
idle_seconds=$(((idle_seconds + window_seconds - 1) / window_seconds * window_seconds))
work=$(mktemp -d /tmp/avm-bench-monvm.XXXXXX)
state=$work/node
cleanup() {
    "$qemu_bin" down --state "$state" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

log() { echo "bench-monvm: $*" >&2; }
# field KEY LINE: the value of KEY=... in a line of key=value words.
field() { tr ' ' '\n' <<<"${2//$'\r'/}" | sed -n "s/^$1=//p" | head -n 1; }
mbps() { awk -v b="$1" -v us="$2" 'BEGIN { if (us > 0) printf "%.1f", b / us; else print "n/a" }'; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# share TICKS SECONDS: percent of one core.
share() { awk -v d="$1" -v hz="$(getconf CLK_TCK)" -v s="$2" 'BEGIN { printf "%.1f", 100 * d / hz / s }'; }
# idle_cpu PID: after 3 s to settle, the process's share of one core over
# $idle_seconds in $cpu (percent), $cpu_met against the 5% target, and in
# $cpu_windows the lowest and highest share of its windows.
idle_cpu() {
    sleep 3
    local first before after windows=()
    first=$(ticks "$1")
    before=$first
    local n=$((idle_seconds / window_seconds))
    for _ in $(seq 1 "$n"); do
        sleep "$window_seconds"
        after=$(ticks "$1")
        windows+=("$(share "$((after - before))" "$window_seconds")")
        before=$after
    done
    cpu=$(share "$((after - first))" "$idle_seconds")
    cpu_met=$(awk -v c="$cpu" 'BEGIN { print (c < 5) ? "met" : "not met" }')
    cpu_windows="its $n windows of ${window_seconds} s: $(printf '%s\n' "${windows[@]}" | sort -g | sed -n '1p;$p' | paste -sd- -)%"
}

# median_of LIST: the median of comma-separated numbers.
median_of() {
    tr ',' '\n' <<<"$1" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# up_node SERIES UP-ARGS...: a fresh node with the SERIES Mon-VM, waited
# for until the A-VM has measured its text; sets $serial and $pid (the
# A-VM's QEMU).
up_node() {
    local series=$1
    shift
    rm -rf "$state"
    "$qemu_bin" up --state "$state" --image "$image" --monvm-kernel "$series" "$@" \
        >/dev/null 2>"$work/up.err" || {
        log "node ($series, $*) did not come up: $(tail -3 "$work/up.err")"
        exit 2
    }
    serial=$state/avm-serial.log
    for _ in $(seq 1 600); do
        grep -q '^AVM-MONVM-TEXT ' "$serial" && break
        sleep 0.1
    done
    pid=$("$qemu_bin" status --state "$state" --json | sed -n 's/.*"qemu_pid":\([0-9]*\).*/\1/p')
    [ -n "$pid" ] || { log "no A-VM pid"; exit 2; }
}

# policy_cpu SERIES POLICY: the A-VM's CPU use ($cpu) on a node whose
# A-VM runs monitor policy POLICY, the Mon-VM idle.
policy_cpu() {
    up_node "$1" --monitor-policy "$2"
    idle_cpu "$pid"
    "$qemu_bin" down --state "$state" >/dev/null 2>&1 || true
}

: >"$rows"
for series in 6.1 6.12; do
    log "booting a node with the $series Mon-VM"
    up_node "$series" --cmdline monvm.bench
    bench=$(grep -m1 '^AVM-MONVM-BENCH ' "$serial") || { log "no AVM-MONVM-BENCH line"; exit 2; }
    text=$(grep -m1 '^AVM-MONVM-TEXT ' "$serial")
    survey=$(grep -m1 '^AVM-MONVM ' "$serial")
    bytes=$(field bytes "$bench")
    check_us=$(field text_check_us "$bench")
    sha_us=$(field sha256_us "$bench")
    overhead=$(awk -v c="$check_us" -v s="$sha_us" 'BEGIN { printf "%.0f", 100 * (c - s) / s }')
    met=$(awk -v o="$overhead" 'BEGIN { print (o <= 25) ? "met" : "not met" }')
    # The medians beside it: one run in a quiet moment moves the fastest.
    median_overhead=$(awk -v c="$(median_of "$(field checks "$bench")")" \
        -v s="$(median_of "$(field sha256_runs "$bench")")" \
        'BEGIN { if (s > 0) printf "%+.0f", 100 * (c - s) / s; else print "?" }')
    total_ms=$(awk -v a="$(field us "$survey")" -v b="$(field us "$text")" 'BEGIN { printf "%.0f", (a + b) / 1000 }')
    total_met=$(awk -v t="$total_ms" 'BEGIN { print (t < 1000) ? "met" : "not met" }')
    mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
    # The A-VM's CPUs that checked (and hashed for the peer figure).
    cpus=$(field cpus "$text")
    cpus_said="on ${cpus:-?} CPU$([ "${cpus:-1}" = 1 ] || echo s) of the A-VM"
    # The A-VM hashes a buffer as large as the text when its heap has room
    # (the peer the target names), else a 1 MiB one over and over.
    sha_buffer=$(field sha256_buffer "$bench")
    if [ "${sha_buffer:-0}" -ge "$bytes" ]; then
        sha_where="a $mb MB buffer in A-VM memory"
    else
        sha_where="a ${sha_buffer:-?}-byte buffer in A-VM memory hashed over and over (no room for a $mb MB one)"
    fi
    echo "| Mon-VM $series kernel text+rodata ($mb MB) checked by the A-VM at start-up (ivshmem reads, KASLR undone, patch-site rules, SHA-256 per 4 KiB chunk; $cpus_said) | $(mbps "$bytes" "$check_us") MB/s (fastest of the start-up check and its repeats: $(field checks "$bench" | tr ',' '\n' | awk '{ printf "%s%d", (NR > 1 ? ", " : ""), $1 / 1000 }') ms), next to plain SHA-256 of as many bytes, 4 KiB at a time, from $sha_where, $cpus_said: $(mbps "$bytes" "$sha_us") MB/s (fastest of the runs alternating with the checks: $(field sha256_runs "$bench" | tr ',' '\n' | awk '{ printf "%s%d", (NR > 1 ? ", " : ""), $1 / 1000 }') ms) (VMI +$overhead%, fastest to fastest; median to median $median_overhead%) | VMI at most 25% over plain hashing | $met |" >>"$rows"
    echo "| Mon-VM $series full start-up measurement (survey $(field us "$survey") us; text check $cpus_said, filling the copy for later sweeps on the way, $(awk -v v="$check_us" 'BEGIN { printf "%.0f", v / 1000 }') ms) | $total_ms ms | under 1 s under TCG | $total_met |" >>"$rows"
    # Idle CPU: let the start-up settle, then count the A-VM QEMU's ticks.
    idle_cpu "$pid"
    shared_cpu=$cpu
    echo "| A-VM CPU with the $series Mon-VM idle, default monitor policy (syscall table and IDT compared every 5 ms, text+rodata swept every 1 s, IMA list and cross-views every 500 ms; ${idle_seconds}s; processes placed by the host's scheduler) | $cpu% of one host core ($cpu_windows) | under 5% | $cpu_met |" >>"$rows"
    # The same node with the placement of `up --cpus split`: every thread
    # of the A-VM's QEMU and swtpm on the last CPU, the Mon-VM's on the rest.
    last=$(python3 -c 'import os; print(sorted(os.sched_getaffinity(0))[-1])')
    others=$(python3 -c 'import os; print(",".join(map(str, sorted(os.sched_getaffinity(0))[:-1])))')
    if [ -n "$others" ]; then
        status_json=$("$qemu_bin" status --state "$state" --json)
        swtpm_pid=$(sed -n 's/.*"swtpm_pid":\([0-9]*\).*/\1/p' <<<"$status_json")
        monvm_pid=$(sed -n 's/.*"monvm_pid":\([0-9]*\).*/\1/p' <<<"$status_json")
        taskset -a -p -c "$last" "$pid" >/dev/null
        taskset -a -p -c "$last" "$swtpm_pid" >/dev/null
        taskset -a -p -c "$others" "$monvm_pid" >/dev/null
        idle_cpu "$pid"
        echo "| A-VM CPU, the same node, with the A-VM's QEMU and swtpm on CPU $last and the Mon-VM's QEMU on CPU $others (the placement of \`avm-qemu up --cpus split\`, applied with taskset; ${idle_seconds}s) | $cpu% of one host core ($cpu_windows) | under 5% | $cpu_met |" >>"$rows"
    fi
    "$qemu_bin" down --state "$state" >/dev/null 2>&1 || true
    if [ "$series" = 6.1 ]; then
        default_cpu=$shared_cpu
        # Where the A-VM's CPU goes: the same node with the checks
        # stretched to the longest period the policy allows, so what is left
        # is QEMU waking the idle A-VM on every timer tick.
        policy_cpu "$series" syscall_idt=60000,text=60000,ima=60000,cross=60000
        floor_cpu=$cpu
        policy_cpu "$series" syscall_idt=5,text=60000,ima=60000,cross=60000
        fast_cpu=$cpu
        echo "| A-VM CPU breakdown, $series Mon-VM idle, processes placed by the host's scheduler, ${idle_seconds}s each: every check at 60 s, the longest period a policy allows (timer at 100 Hz): $floor_cpu%; syscall table and IDT every 5 ms, the rest at 60 s (timer at 200 Hz): $fast_cpu%; default policy (row above): $default_cpu% | $floor_cpu% / $fast_cpu% / $default_cpu% of one host core | (where the 5% goes) | - |" >>"$rows"
    fi
done
cat "$rows"
