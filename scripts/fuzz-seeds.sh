#!/usr/bin/env bash
# Regenerates the committed fuzz seed corpora, <crate>/fuzz/seeds/<target>/,
# from real data (docs/fuzzing.md lists every target and its seeds):
#   1. a live swtpm, through the project's own tpm-crb driver and wire
#      encoder (drivers/tpm-crb/fuzz/seedgen): TPM responses and recorded
#      conversations, wire frames, quotes, public areas, evidence;
#   2. real QEMU boots (scripts/fuzz-seeds-boot.py): QEMU's ACPI tables, the
#      PVH start info and SeaBIOS's TPM event logs;
#   3. tpm2-tools against a live swtpm: PCR files as tpm2_pcrread writes
#      them, next to the committed tpm2_quote fixtures;
#   4. the kernel command lines avm-qemu and the tests pass.
# TPM keys, nonces and random bytes differ on every run: the files change,
# their kind and number do not. Needs what `make deps` installs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo=${CARGO:-cargo}

echo "fuzz-seeds: swtpm through tpm-crb"
bash scripts/fuzz-lock.sh drivers/tpm-crb/fuzz/seedgen
"$cargo" build --release --quiet --manifest-path drivers/tpm-crb/fuzz/seedgen/Cargo.toml \
    --target-dir "$root/target/fuzz-seedgen"
"$root/target/fuzz-seedgen/release/avm-fuzz-seedgen" "$root"

echo "fuzz-seeds: QEMU boots (ACPI tables, PVH start info, event logs)"
python3 scripts/fuzz-seeds-boot.py "$root"

echo "fuzz-seeds: tpm2-tools PCR files"
work=$(mktemp -d)
swtpm_pid=
cleanup() {
    [ -n "$swtpm_pid" ] && kill "$swtpm_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
swtpm socket --tpm2 --tpmstate dir="$work" --server type=unixio,path="$work/tpm" \
    --ctrl type=unixio,path="$work/tpm.ctrl" --flags not-need-init,startup-clear 2>/dev/null &
swtpm_pid=$!
for _ in $(seq 50); do [ -S "$work/tpm" ] && break; sleep 0.1; done
export TPM2TOOLS_TCTI="swtpm:path=$work/tpm"
# Some non-trivial values in the low PCRs, as after a measured boot.
for pcr in 0 1 2 3 4 5 6 7; do
    tpm2_pcrextend "$pcr:sha256=$(printf 'fuzz seed %s' "$pcr" | sha256sum | cut -d' ' -f1)"
done
pcrs=verifier-host/fuzz/seeds/pcrs_file
rm -rf "$pcrs" && mkdir -p "$pcrs"
tpm2_pcrread sha256:0,1,2,3,4,5,6,7 -F serialized -o "$pcrs/tpm2_pcrread-sha256-0-7.serialized" >/dev/null
tpm2_pcrread sha256:0,1,2,3,4,5,6,7,8,9,10,16,23 -F serialized -o "$pcrs/tpm2_pcrread-sha256-13pcrs.serialized" >/dev/null
tpm2_pcrread sha1:0,1,2+sha256:0,1,2,3,4,5,6,7 -F serialized -o "$pcrs/tpm2_pcrread-sha1-sha256.serialized" >/dev/null
tpm2_pcrread sha256:0,1,2,3,4,5,6,7 -F values -o "$pcrs/tpm2_pcrread-sha256-0-7.values" >/dev/null
# tpm2_quote -o output committed with the attest fixtures (regenerate-quotes.sh).
cp attest/tests/data/quote-ecc.pcrs "$pcrs/tpm2_quote-ecc.pcrs"
kill "$swtpm_pid" 2>/dev/null || true
wait "$swtpm_pid" 2>/dev/null || true
swtpm_pid=

echo "fuzz-seeds: command lines"
# What avm-qemu passes (node.rs: exit-after-report, --cmdline words; the
# panic test's crash=panic), and the network options of the README.
for dir in kernel/fuzz/seeds/cmdline net/fuzz/seeds/cmdline; do
    rm -rf "$dir" && mkdir -p "$dir"
    printf '%s' "exit-after-report" > "$dir/avm-qemu-default"
    printf '%s' "exit-after-report log=debug" > "$dir/avm-qemu-log-debug"
    printf '%s' "crash=panic" > "$dir/panic-test"
    printf '%s' "exit-after-report crash=page-fault log=warn" > "$dir/crash-page-fault"
    printf '%s' "ip=10.0.2.15/24,gw=10.0.2.2 attest-port=7140" > "$dir/static-ip"
    printf '%s' "ip=dhcp log=info" > "$dir/dhcp"
    # The one the QEMU boot above passed (in its start info seed too).
    printf '%s' "exit-after-report log=debug attest-port=7140 ip=10.0.2.15/24,gw=10.0.2.2" > "$dir/qemu-boot"
done

echo "fuzz-seeds: attest fixtures"
# Real captures committed with the attest tests (regenerate-*.sh there).
cp attest/tests/data/quote-rsa.msg attest/fuzz/seeds/attest/fixture-quote-rsa.msg
cp attest/tests/data/quote-ecc.sig attest/fuzz/seeds/attest/fixture-quote-ecc.sig
cp attest/tests/data/ak-ecc.pub attest/fuzz/seeds/attest/fixture-ak-ecc.tpm2b-public
cp attest/tests/data/ek-rsa.pub verifier-host/fuzz/seeds/tpm_public/fixture-ek-rsa.tpm2b-public
# Key files as evidence directories and `verify --ak` hold them: PEM,
# TPM2B_PUBLIC (tpm2-tools) and a bare TPMT_PUBLIC (from swtpm above).
mkdir -p verifier-host/fuzz/seeds/ak_file
for kind in ecc rsa; do
    cp "attest/tests/data/ak-$kind.pem" "attest/tests/data/ak-$kind.pub" verifier-host/fuzz/seeds/ak_file/
done
cp verifier-host/fuzz/seeds/tpm_public/ak-ecc verifier-host/fuzz/seeds/ak_file/ak-ecc.tpmt

echo "fuzz-seeds: an A-VM measurement log with Mon-VM records"
# What the A-VM logs about a Mon-VM (profile, IMA entries, start-up records
# of both forms, events), built with the project's own ima-ng writer.
mkdir -p attest/fuzz/seeds/monvm
cargo run -q -p avm-attest --example monvm-seed > attest/fuzz/seeds/monvm/avm-monvm-log 2>/dev/null ||
    echo "fuzz-seeds: the monvm seed example failed: seed kept as it is" >&2

echo "fuzz-seeds: IMA lists"
# Binary ima-ng lists from the IMA peer's independent generator (shared/
# beside the project), one of them with a stale template hash.
peer=$root/../shared/peers/ima-baseline/gen_ima_log.py
if [ -f "$peer" ]; then
    tmp=$(mktemp -d)
    mkdir -p attest/fuzz/seeds/ima
    python3 "$peer" 6 "$tmp/a" >/dev/null
    python3 "$peer" 3 "$tmp/b" --tamper 2 --tamper-mode raw >/dev/null
    cp "$tmp/a/binary_runtime_measurements" attest/fuzz/seeds/ima/peer-ima-ng-7-records
    cp "$tmp/b/binary_runtime_measurements" attest/fuzz/seeds/ima/peer-ima-ng-stale-template-hash
    # Keylime runtime policies (import-keylime) and a list the Mon-VM
    # appraisal reads as PCR 10 entries.
    mkdir -p verifier-host/fuzz/seeds/keylime_policy attest/fuzz/seeds/monvm
    cp "$tmp/a/runtime_policy.json" verifier-host/fuzz/seeds/keylime_policy/peer-6-paths.json
    cp "$tmp/a/binary_runtime_measurements" attest/fuzz/seeds/monvm/peer-ima-ng-7-records
    rm -rf "$tmp"
else
    echo "fuzz-seeds: $peer missing: IMA seeds kept as they are" >&2
fi

echo "fuzz-seeds: stored policy snapshots"
# What `avm-verifier` keeps in its state after `policy import-keylime` of
# the policies above (one with excludes), as `attest` reads it back.
verifier=$root/target/release/avm-verifier
if "$cargo" build --release --quiet -p avm-verifier; then
    mkdir -p verifier-host/fuzz/seeds/policy_snapshot
    # Plus one large enough to be kept with its hash index's table (1,024
    # paths and more), from the peer's generator if it is there.
    big=$(mktemp -d)
    policies=(verifier-host/fuzz/seeds/keylime_policy/*.json)
    if [ -f "$peer" ] && python3 "$peer" 1030 "$big/p" >/dev/null; then
        cp "$big/p/runtime_policy.json" "$big/peer-1030-paths-indexed.json"
        policies+=("$big/peer-1030-paths-indexed.json")
    fi
    for policy in "${policies[@]}"; do
        tmp=$(mktemp -d)
        "$verifier" --state "$tmp" policy init --avm-image-sha256 "$(printf '%064d' 1)" >/dev/null
        "$verifier" --state "$tmp" policy import-keylime "$policy" >/dev/null
        python3 - "$tmp/verifier.sqlite3" \
            "verifier-host/fuzz/seeds/policy_snapshot/$(basename "$policy" .json)" <<'PY'
import sqlite3, sys
row = sqlite3.connect(sys.argv[1]).execute("SELECT body FROM policy_snapshot").fetchone()
open(sys.argv[2], "wb").write(row[0])
PY
        rm -rf "$tmp"
    done
    rm -rf "$big"
else
    echo "fuzz-seeds: avm-verifier did not build: snapshot seeds kept as they are" >&2
fi

du -sb drivers/tpm-crb/fuzz/seeds attest/fuzz/seeds net/fuzz/seeds kernel/fuzz/seeds verifier-host/fuzz/seeds | sed 's/^/fuzz-seeds: bytes /'
