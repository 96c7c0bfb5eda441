#!/usr/bin/env bash
# `make bench`: measures the A-VM and the verifier and writes
# docs/benchmarks.md (and prints the same markdown table).
#
#  - attestation round trip, challenge to verdict (p50/p99 over ROUNDS
#    rounds) against a booted node, next to one `tpm2_quote` process run
#    against a swtpm (median of QUOTE_RUNS runs) measured in the same run;
#  - verification throughput on one core (full verify_evidence, signature
#    included, on the node's real evidence) next to `openssl speed
#    ecdsap256` verify/s on the same core;
#  - image size and boot time (`avm-qemu bench`).
#
# Benchmarks report; they never fail on a missed target (exit status 2 only
# if something could not be measured at all).
# Environment: AVM_IMAGE, AVM_QEMU, AVM_VERIFIER, AVM_BENCH (binaries,
# default target/release), ROUNDS (200), QUOTE_RUNS (20), BOOT_RUNS (7),
# VERIFY_SECONDS (3), CONCURRENCY (1,8,32,64 verifiers), CONCURRENCY_SECONDS
# (10 per level), BENCH_OUT (docs/benchmarks.md).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
qemu_bin=${AVM_QEMU:-$root/target/release/avm-qemu}
verifier_bin=${AVM_VERIFIER:-$root/target/release/avm-verifier}
bench_bin=${AVM_BENCH:-$root/target/release/avm-bench}
image=${AVM_IMAGE:-$root/build/avm.elf}
rounds=${ROUNDS:-200}
quote_runs=${QUOTE_RUNS:-20}
boot_runs=${BOOT_RUNS:-7}
verify_seconds=${VERIFY_SECONDS:-3}
concurrency_levels=${CONCURRENCY:-1,8,32,64}
concurrency_seconds=${CONCURRENCY_SECONDS:-10}
out=${BENCH_OUT:-$root/docs/benchmarks.md}

for file in "$qemu_bin" "$verifier_bin" "$bench_bin" "$image"; do
    if [ ! -f "$file" ]; then
        echo "bench: $file is missing: run \`make build\` first" >&2
        exit 2
    fi
done
for tool in swtpm tpm2_quote openssl taskset; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not installed (make deps)" >&2; exit 2; }
done

work=$(mktemp -d /tmp/avm-bench.XXXXXX)
node_state=$work/node
verifier=("$verifier_bin" --state "$work/verifier")
swtpm_pid=
cleanup() {
    local status=$?
    "$qemu_bin" down --state "$node_state" >/dev/null 2>&1 || true
    if [ -n "$swtpm_pid" ]; then kill "$swtpm_pid" 2>/dev/null || true; fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

log() { echo "bench: $*" >&2; }
fail() {
    log "$*"
    exit 2
}
# value KEY FILE: the value of a key=value line.
value() { sed -n "s/^$1=//p" "$2" | head -n 1; }
# ratio A B: A/B as a percentage, one decimal.
percent() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "n/a" }'; }
# at_most A B: "met" if A <= B.
at_most() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? "met" : "not met" }'; }
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= b) ? "met" : "not met" }'; }
ms() { awk -v v="$1" 'BEGIN { printf "%.1f ms", v }'; }

# --- A node, enrolled, with reference values from its own boot ----------
log "booting a node ($image)"
addr=$("$qemu_bin" up --state "$node_state" --image "$image" 2>/dev/null) || fail "the node did not come up"
status_json=$("$qemu_bin" status --state "$node_state" --json)
ek_ca=$(sed -n 's/.*"ek_ca":"\([^"]*\)".*/\1/p' <<<"$status_json")
monvm_profile=$(sed -n 's/.*"monvm_profile":"\([^"]*\)".*/\1/p' <<<"$status_json")
profile_args=()
[ -z "$monvm_profile" ] || profile_args=(--monvm-profile "$monvm_profile")
"${verifier[@]}" policy init --avm-image "$image" "${profile_args[@]}" >/dev/null || fail "policy init failed"
"${verifier[@]}" enroll "$addr" --ek-ca "$ek_ca" >/dev/null || fail "enrolment failed"
"${verifier[@]}" policy learn "$addr" >/dev/null || fail "policy learn failed"
"${verifier[@]}" attest "$addr" --export "$work/evidence" >/dev/null ||
    fail "the node is not trusted: no trusted evidence to measure"

# --- (a) round trips -------------------------------------------------------
log "attestation round trips ($rounds per mode)"
"$bench_bin" roundtrip "$addr" --state "$work/verifier" --rounds "$rounds" >"$work/roundtrip.txt" ||
    fail "round-trip benchmark failed"
log "concurrent verifiers (${concurrency_levels}, ${concurrency_seconds}s each)"
"$bench_bin" concurrency "$addr" --state "$work/verifier" --verifiers "$concurrency_levels" \
    --seconds "$concurrency_seconds" >"$work/concurrency.txt" || fail "concurrency benchmark failed"
"$qemu_bin" down --state "$node_state" >/dev/null 2>&1 || true

# One tpm2_quote process run against a swtpm over TCP, with an ECC P-256
# AK made persistent first (tpm2-tools without a resource manager would
# otherwise leave a loaded context per run and exhaust the TPM's slots).
log "tpm2_quote against swtpm ($quote_runs runs)"
tpm_dir=$work/swtpm
mkdir -p "$tpm_dir"
for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    swtpm socket --tpm2 --tpmstate dir="$tpm_dir" \
        --server type=tcp,port=$port,bindaddr=127.0.0.1 \
        --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
        --flags not-need-init,startup-clear >"$work/swtpm.log" 2>&1 &
    swtpm_pid=$!
    export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$port"
    for _ in $(seq 50); do
        tpm2_getcap properties-fixed >/dev/null 2>&1 && break
        kill -0 "$swtpm_pid" 2>/dev/null || break
        sleep 0.1
    done
    tpm2_getcap properties-fixed >/dev/null 2>&1 && break
    kill "$swtpm_pid" 2>/dev/null || true
    swtpm_pid=
    [ "$attempt" -lt 5 ] || fail "swtpm did not start (ports taken?)"
done
# (`set -e` does not apply inside a command tested with ||: hence &&.)
{
    tpm2_createek -G ecc -c "$tpm_dir/ek.ctx" &&
        tpm2_createak -C "$tpm_dir/ek.ctx" -c "$tpm_dir/ak.ctx" -G ecc -g sha256 -s ecdsa &&
        tpm2_flushcontext -t &&
        tpm2_evictcontrol -C o -c "$tpm_dir/ak.ctx" 0x81010002 &&
        tpm2_flushcontext -t &&
        tpm2_flushcontext -s
} >"$work/tpm-setup.log" 2>&1 || fail "AK setup on swtpm failed: $(tail -3 "$work/tpm-setup.log")"
"$bench_bin" time --runs "$quote_runs" -- tpm2_quote -c 0x81010002 -l sha256:0,1,2,3,4,5,6,7 \
    -q "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    -m "$tpm_dir/q.msg" -s "$tpm_dir/q.sig" -o "$tpm_dir/q.pcrs" -g sha256 >"$work/quote.txt" ||
    fail "tpm2_quote benchmark failed"
kill "$swtpm_pid" 2>/dev/null || true
swtpm_pid=

# --- (b) verification throughput on one core ------------------------------
core=$(($(nproc) - 1))
log "verification throughput on core $core (${verify_seconds}s each)"
taskset -c "$core" "$bench_bin" verify "$work/evidence" --state "$work/verifier" \
    --seconds "$verify_seconds" >"$work/verify.txt" || fail "verification benchmark failed"
openssl_verify=$(taskset -c "$core" openssl speed -seconds "$verify_seconds" ecdsap256 2>/dev/null |
    awk '/nistp256/ { v = $NF } END { print v }')
[ -n "$openssl_verify" ] || fail "could not read openssl speed's verify/s"

# --- (c) image size and boot time -------------------------------------------
log "image size and boot time ($boot_runs boots)"
"$qemu_bin" bench --runs "$boot_runs" --image "$image" >"$work/boot.txt" 2>"$work/boot.err" ||
    fail "avm-qemu bench failed: $(tail -3 "$work/boot.err")"

# --- (d) log appraisal next to evmctl and Keylime ----------------------------
log "log appraisal (scripts/bench-ima.sh)"
AVM_BENCH="$bench_bin" IMA_ROWS="$work/ima-rows.md" bash "$root/scripts/bench-ima.sh" >"$work/ima.txt" ||
    fail "log appraisal benchmark failed"

# --- (e) the Mon-VM kernel text check in the A-VM -----------------------------
log "Mon-VM text check and A-VM CPU (scripts/bench-monvm.sh)"
AVM_QEMU="$qemu_bin" AVM_IMAGE="$image" MONVM_ROWS="$work/monvm-rows.md" \
    bash "$root/scripts/bench-monvm.sh" >"$work/monvm.txt" || fail "Mon-VM text benchmark failed"

# --- (f) round trips while the A-VM checks a Mon-VM ----------------------------
log "round trip while the A-VM checks a Mon-VM (scripts/bench-monitor.sh)"
AVM_QEMU="$qemu_bin" AVM_VERIFIER="$verifier_bin" AVM_BENCH="$bench_bin" AVM_IMAGE="$image" \
    MONITOR_ROWS="$work/monitor-rows.md" bash "$root/scripts/bench-monitor.sh" >"$work/monitor.txt" ||
    fail "monitor round-trip benchmark failed"

# --- (g) detection latency per attack class, Mon-VM slowdown (docs/demo.md) --
log "detection latency and Mon-VM slowdown (scripts/bench-detect.sh)"
AVM_DEMO="${AVM_DEMO:-$root/target/release/avm-demo}" AVM_VERIFIER="$verifier_bin" AVM_IMAGE="$image" \
    DETECT_ROWS="$work/detect-rows.md" bash "$root/scripts/bench-detect.sh" >"$work/detect.txt" ||
    fail "detection latency benchmark failed"

# --- The table --------------------------------------------------------------
rt=$work/roundtrip.txt
quote_p50=$(value command.p50_ms "$work/quote.txt")
conn_p50=$(value roundtrip.connection.p50_ms "$rt")
conn_p99=$(value roundtrip.connection.p99_ms "$rt")
pers_p50=$(value roundtrip.persistent.p50_ms "$rt")
pers_p99=$(value roundtrip.persistent.p99_ms "$rt")
full=$(value verify.full_per_s "$work/verify.txt")
sig_only=$(value verify.signature_only_per_s "$work/verify.txt")
full_pct=$(percent "$full" "$openssl_verify")

phase() { ms "$(value "roundtrip.connection.$1.p50_ms" "$rt")"; }
table=$(
    echo "| metric | value | target | |"
    echo "|---|---|---|---|"
    echo "| attestation round trip, new connection per round (connect, Hello, Challenge, verify; p50 / p99 of $rounds) | $(ms "$conn_p50") / $(ms "$conn_p99") | <= one tpm2_quote run ($(ms "$quote_p50")) | $(at_most "$conn_p50" "$quote_p50") |"
    echo "| attestation round trip, one connection (Challenge, verify; p50 / p99 of $rounds) | $(ms "$pers_p50") / $(ms "$pers_p99") | <= one tpm2_quote run ($(ms "$quote_p50")) | $(at_most "$pers_p50" "$quote_p50") |"
    echo "| one tpm2_quote process run, swtpm over TCP, ECC P-256 AK (median of $quote_runs) | $(ms "$quote_p50") | | |"
    echo "| verification throughput, one core (full verify_evidence on real evidence) | $full quotes/s ($full_pct% of openssl) | >= 50% of openssl P-256 verify | $(at_least "$full_pct" 50) |"
    echo "| openssl speed ecdsap256, verify, same core | $openssl_verify verify/s | | |"
    for n in ${concurrency_levels//,/ }; do
        c=$work/concurrency.txt
        echo "| $n concurrent verifiers, a connection per attestation (${concurrency_seconds}s): trusted/s, p50 / p99, failed, reconnects | $(value "concurrency.$n.per_s" "$c")/s, $(ms "$(value "concurrency.$n.latency.p50_ms" "$c")") / $(ms "$(value "concurrency.$n.latency.p99_ms" "$c")"), $(value "concurrency.$n.failed" "$c") failed, $(value "concurrency.$n.retries" "$c") reconnects | every verifier gets its verdicts (0 failed) | $(at_most "$(value "concurrency.$n.failed" "$c")" 0) |"
    done
    grep -E '^\| (image size|boot|kernel entry)' "$work/boot.txt" || true
    cat "$work/ima-rows.md"
    cat "$work/monvm-rows.md"
    cat "$work/monitor-rows.md"
    cat "$work/detect-rows.md"
)
details=$(
    echo "Round-trip phases, new connection per round (p50): connect $(phase connect), Hello $(phase hello), Challenge to Evidence $(phase challenge), verification $(phase verify)."
    echo "Signature alone through the verifier's OpenSSL code: $sig_only verify/s."
)

# The revision measured; the output file itself (rewritten below, and by
# every earlier run) does not make the tree count as modified.
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain -- . ":(exclude)${out#"$root"/}" 2>/dev/null)" ]; then
    revision="$revision-dirty"
fi

machine="$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(uname -sr)"
mkdir -p "$(dirname "$out")"
{
    echo "# Benchmarks"
    echo
    echo "Written by \`make bench\` (scripts/bench.sh) on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo "Machine: $machine. QEMU under TCG. Benchmarks report; they do not fail on targets."
    echo "A-VM image sha256 $(sha256sum "$image" | cut -d' ' -f1), git $revision."
    echo
    echo "$table"
    echo
    echo "$details"
    echo
    echo "## How it is measured"
    echo
    echo "- Round trip: \`avm-bench roundtrip\` against a node booted by \`avm-qemu up\`, enrolled with"
    echo "  \`avm-verifier enroll\` and with reference values learned from its own boot. A round is a fresh"
    echo "  random nonce to a trusted verdict (signature, nonce, PCR digest, event-log replay, image and"
    echo "  firmware reference values), in process, without the database. Two modes: a new TCP connection"
    echo "  and Hello per round (what \`avm-verifier attest\` does), and one connection with a Hello, then"
    echo "  Challenges only. The attestation port is forwarded by QEMU user networking."
    echo "- Concurrency: \`avm-bench concurrency\` runs N verifier threads at once for ${concurrency_seconds}s, each"
    echo "  attesting in a loop as \`attest\` does (new connection, Hello, Challenge, full verification), and"
    echo "  counts trusted verdicts. Refused or dropped connections are retried by the client inside its 30 s"
    echo "  deadline (reconnects); QEMU's user network accepts with a backlog of 1, so SYNs are dropped"
    echo "  under load before they reach the A-VM."
    echo "- tpm2_quote: the wall time of one \`tpm2_quote -c 0x81010002 -l sha256:0-7 -q NONCE\` process"
    echo "  against \`swtpm socket\` over TCP (TCTI \`swtpm\`), ECC P-256 AK created and made persistent first."
    echo "- Verification: \`avm-bench verify\` runs the full \`verify_evidence\` on the exported evidence of"
    echo "  that node for ${verify_seconds}s, pinned with taskset to one core, next to \`openssl speed -seconds"
    echo "  $verify_seconds ecdsap256\` on the same core. The verifier caches parsed AK keys, so repeated quotes"
    echo "  from one node cost about one raw signature check."
    echo "- Image size and boot time: \`avm-qemu bench --runs $boot_runs\` (QEMU start to the boot report)."
    echo "- Log appraisal: \`scripts/bench-ima.sh\` generates a 100,000-entry IMA list and the Keylime runtime"
    echo "  policy allowing it with ../shared/peers/ima-baseline/gen_ima_log.py (data in /tmp/peer-ima), checks"
    echo "  each tool's verdict (good list passes; a list that measured another file fails the allowlists), then"
    echo "  times \`avm-bench ima-log\` (the verifier's own appraisal: template hashes, replay to PCR 10, every"
    echo "  entry against the allowlist, on all cores, with the policy loaded and indexed as the verifier holds it;"
    echo "  also as a whole process: loading the policy from a verifier state as \`attest\` does (imported there"
    echo "  with \`avm-verifier policy import-keylime\`; docs/policy.md, snapshot) on a thread while the list is"
    echo "  read and replayed, as \`attest\` loads it while it asks the node and replays the log, reading and"
    echo "  importing the 12 MB JSON policy itself, and with no policy), \`evmctl ima_measurement --pcrs\`"
    echo "  (a whole process: evmctl loads no policy) and Keylime's \`process_measurement_list\` (keylime_bench.py:"
    echo "  the timed call, policy already a dict). The whole process is also timed with glibc's malloc asking for"
    echo "  transparent huge pages (\`GLIBC_TUNABLES=glibc.malloc.hugetlb=1\`, not the default, a knob a deployment can set):"
    echo "  about a fifth of a one-shot process's CPU time goes to page faults of fresh memory (9,400; 2,700 with the knob),"
    echo "  which the knob trades for huge-page allocation: 15-20% faster in quiet minutes, slower when the host's memory is"
    echo "  fragmented (the kernel then compacts on the fault)."
    echo "- Mon-VM text: \`scripts/bench-monvm.sh\` boots a node per Debian kernel with \`monvm.bench\`; the A-VM"
    echo "  times its start-up check of the kernel's text and rodata and plain SHA-256 over as many bytes"
    echo "  (4 KiB at a time from a buffer of that size in A-VM memory; a 1 MiB one hashed over and over if the"
    echo "  heap has no room, said in the row), alternating, in the same boot, both on the A-VM's two CPUs (its"
    echo "  own and the helper \`avm-qemu up\` gives it next to a Mon-VM, each half of the work on one; the rows"
    echo "  say how many checked); the target is judged on the fastest run of each side, the medians stand"
    echo "  beside it (a single run in a quiet moment moves the fastest); the A-VM QEMU process's CPU time is read"
    echo "  from /proc over an idle period afterwards (40 s, counted in 10 s windows: the row gives the share over"
    echo "  the whole period and the lowest and highest window, which differ by a point and more on this host;"
    echo "  docs/kernel-text.md); for the breakdown, two more 6.1 nodes"
    echo "  run monitor policies with every check at 60 s, and with only the system-call table and IDT at 5 ms."
    echo "- Detection latency and Mon-VM slowdown: \`scripts/bench-detect.sh\` (\`avm-demo --rounds\` and"
    echo "  \`avm-demo --slowdown\`; method in docs/demo.md): every class on one node with its processes placed"
    echo "  by the host's scheduler, then the system-call table and IDT classes on a fresh node with the A-VM's"
    echo "  QEMU and swtpm on a CPU of their own (\`--cpus split\`, as \`make run-qemu\` places a node; the"
    echo "  console class first, so that no RAM class carries the node's first event). The slowdown verdict uses the alternating pairs:"
    echo "  the Hodges-Lehmann estimate of the per-pair slowdown with its 95% Wilcoxon signed-rank interval;"
    echo "  met only if the whole interval is at most 0.5%, not met if all of it is above, else inconclusive"
    echo "  (also if all of it is below -0.5%: runs faster with monitoring are host noise, not a result)."
} >"$out"

echo "$table"
echo
echo "$details"
log "wrote $out"
