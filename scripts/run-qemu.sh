#!/usr/bin/env bash
# `make run-qemu`: boots an A-VM node with its Mon-VM (a Debian kernel the
# A-VM watches) under QEMU + swtpm, enrols it with avm-verifier, learns the
# reference values from this known-good boot, attests it and prints the
# verdict; then runs `avm-verifier monitor` on it in the foreground (a live
# status table on a terminal, one line per change otherwise) until Ctrl-C.
# Everything runs in a fresh temporary directory and is torn down on exit,
# also on failure or Ctrl-C.
#
# Exit status: 0 trusted, 1 untrusted (the monitor's verdict when it ran to
# its end, else the attestation's), 2 anything else failed.
# Environment: AVM_IMAGE (default build/avm.elf), AVM_QEMU and AVM_VERIFIER
# (default target/release/...), AVM_KEEP_STATE=1 keeps the state directory,
# RUN_QEMU_DURATION=SECS monitors for that long instead of until Ctrl-C
# (automated runs), RUN_QEMU_DURATION=0 skips the monitor, RUN_QEMU_CPUS
# (split, or shared) is `avm-qemu up --cpus`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
qemu_bin=${AVM_QEMU:-$root/target/release/avm-qemu}
verifier_bin=${AVM_VERIFIER:-$root/target/release/avm-verifier}
image=${AVM_IMAGE:-$root/build/avm.elf}

for file in "$qemu_bin" "$verifier_bin" "$image"; do
    if [ ! -f "$file" ]; then
        echo "run-qemu: $file is missing: run \`make build\` first" >&2
        exit 2
    fi
done

# Short path: swtpm's control socket lives in the node's state directory.
work=$(mktemp -d /tmp/avm-run.XXXXXX)
node_state=$work/node
verifier=("$verifier_bin" --state "$work/verifier")

cleanup() {
    local status=$?
    "$qemu_bin" down --state "$node_state" >/dev/null 2>&1 || true
    if [ "${AVM_KEEP_STATE:-0}" = 1 ]; then
        echo "state kept in $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

step() { printf '\n== %s\n' "$*"; }
# Failures of a step are errors (2), not verdicts.
fail() {
    echo "run-qemu: $*" >&2
    exit 2
}

step "Booting the A-VM ($image) under QEMU + swtpm"
# The A-VM on a CPU of its own (on a host with two or more): its timer
# wake-ups then do not preempt the Mon-VM (docs/monitoring.md, "Cost").
addr=$("$qemu_bin" up --state "$node_state" --image "$image" --cpus "${RUN_QEMU_CPUS:-split}") ||
    fail "the node did not come up"
status_json=$("$qemu_bin" status --state "$node_state" --json)
json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" <<<"$status_json"; }
ek_ca=$(json_field ek_ca)
serial=$(json_field avm_serial)
[ -n "$ek_ca" ] && [ -n "$serial" ] || fail "avm-qemu status did not name the EK CA and serial log"

echo "attestation server: $addr"
echo "A-VM image sha256:  $(json_field image_sha256)"
monvm_kernel=$(json_field monvm_kernel_release)
if [ -n "$monvm_kernel" ]; then
    echo "Mon-VM:             Linux $monvm_kernel (console: $(json_field monvm_console))"
else
    echo "Mon-VM:             none"
fi
echo "EK CA:              $ek_ca"
echo "boot report (from $serial):"
sed -n '/^AVM-REPORT-BEGIN/,/^AVM-REPORT-END/p' "$serial" |
    grep -E '^(tpm\.vendor|tpm\.startup|pcr\.sha256\.0|eventlog\.entries|ek\.alg|ak\.alg|ak\.name|boot\.us)=' |
    sed 's/^/  /'
grep '^AVM-NET-UP' "$serial" | sed 's/^/  /' || true

step "Reference values: allow this A-VM image"
# The A-VM's Mon-VM kernel profile is allowed by digest, like the image.
monvm_profile=$(json_field monvm_profile)
profile_args=()
[ -z "$monvm_profile" ] || profile_args=(--monvm-profile "$monvm_profile")
"${verifier[@]}" policy init --avm-image "$image" "${profile_args[@]}" || fail "policy init failed"

step "Enrolling $addr (EK certificate chain, credential activation of the AK)"
"${verifier[@]}" enroll "$addr" --ek-ca "$ek_ca" || fail "enrolment failed"

step "Learning firmware events from this known-good boot"
"${verifier[@]}" policy learn "$addr" || fail "policy learn failed"

step "Attesting $addr with a fresh nonce"
set +e
"${verifier[@]}" attest "$addr"
verdict=$?
set -e
[ "$verdict" -le 1 ] || fail "attest failed (exit $verdict)"

step "Enrolled nodes"
"${verifier[@]}" nodes

duration=${RUN_QEMU_DURATION:-}
if [ "$duration" != 0 ]; then
    monitor_args=(monitor "$addr")
    if [ -n "$duration" ]; then
        monitor_args+=(--duration "$duration")
        step "Monitoring $addr for ${duration}s (avm-verifier monitor)"
    else
        step "Monitoring $addr (avm-verifier monitor): Ctrl-C stops it and tears the node down"
    fi
    # Ctrl-C reaches the monitor (same process group; the node's QEMU and
    # swtpm run in their own) and ends it; the node is torn down below.
    trap 'interrupted=1' INT
    interrupted=0
    set +e
    "${verifier[@]}" "${monitor_args[@]}"
    monitor_status=$?
    set -e
    trap 'exit 2' INT
    if [ "$interrupted" = 0 ] && [ "$monitor_status" -le 1 ]; then
        verdict=$monitor_status
    elif [ "$interrupted" = 0 ]; then
        fail "monitor failed (exit $monitor_status)"
    fi
fi

step "Stopping the node"
"$qemu_bin" down --state "$node_state" 2>&1

if [ "$verdict" -eq 0 ]; then
    printf '\nverdict: TRUSTED\n'
else
    printf '\nverdict: UNTRUSTED\n'
fi
exit "$verdict"
