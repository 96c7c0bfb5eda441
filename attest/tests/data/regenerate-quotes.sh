#!/bin/sh
# Regenerates the quote fixtures with a real TPM (swtpm + tpm2-tools):
#   1. H-CRTM measurement of the tiny PVH image through swtpm's control
#      channel (as avm-qemu does before boot), then TPM2_Startup(CLEAR);
#   2. every extended SeaBIOS event of seabios-eventlog.bin extended into
#      its PCR with tpm2_pcrextend, so PCRs 0-7 equal those of the real boot
#      and the quote matches that log;
#   3. for ecc and rsa: EK, AK (tpm2_createek/createak), and a quote of
#      sha256:0-7 with the nonce in nonce.hex:
#        quote-KIND.msg  TPMS_ATTEST        quote-KIND.sig  TPMT_SIGNATURE
#        quote-KIND.pcrs tpm2-tools PCR file (serialized)
#        ak-KIND.pub     TPM2B_PUBLIC        ak-KIND.pem     the AK as PEM
#        ak-KIND.name    TPM name            ek-KIND.pub     TPM2B_PUBLIC
#   pcrs.txt: the SHA-256 PCRs 0-7 after the extends ("i hex").
# Needs: swtpm, swtpm_ioctl, tpm2-tools, as, ld, python3.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
cleanup() {
    [ -f "$work/swtpm.pid" ] && kill "$(cat "$work/swtpm.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

as --64 "$here/tiny-pvh.S" -o "$work/pvh.o"
ld -n -static --build-id=none -T "$here/tiny-pvh.ld" "$work/pvh.o" -o "$work/pvh.elf"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ctrl=$((port + 1))
swtpm socket --tpm2 --tpmstate dir="$work" --server type=tcp,port=$port,bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$ctrl,bindaddr=127.0.0.1 --daemon --pid file="$work/swtpm.pid"
sleep 0.3
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$port"

swtpm_ioctl --tcp 127.0.0.1:$ctrl -i
swtpm_ioctl --tcp 127.0.0.1:$ctrl -h - < "$work/pvh.elf"
tpm2_startup -c

python3 - "$here/seabios-eventlog.bin" > "$work/extends" <<'PY'
import struct, sys
log = open(sys.argv[1], "rb").read()
off = 32 + struct.unpack_from("<I", log, 28)[0]
sizes = {}
hdr = log[32:]
n = struct.unpack_from("<I", hdr, 24)[0]
for i in range(n):
    a, s = struct.unpack_from("<HH", hdr, 28 + 4 * i)
    sizes[a] = s
while off + 12 <= len(log) and any(log[off:off + 12]):
    pcr, etype, count = struct.unpack_from("<III", log, off); off += 12
    sha256 = None
    for _ in range(count):
        a = struct.unpack_from("<H", log, off)[0]; off += 2
        if a == 0x000B:
            sha256 = log[off:off + 32].hex()
        off += sizes[a]
    size = struct.unpack_from("<I", log, off)[0]; off += 4 + size
    if etype != 3:
        print(f"{pcr}:sha256={sha256}")
PY
while read -r extend; do tpm2_pcrextend "$extend"; done < "$work/extends"

tpm2_pcrread sha256:0,1,2,3,4,5,6,7 -o "$work/pcrs.bin" > /dev/null
python3 -c '
import sys
d = open(sys.argv[1], "rb").read()
for i in range(8): print(i, d[32*i:32*i+32].hex())
' "$work/pcrs.bin" > "$here/pcrs.txt"

nonce=$(cat "$here/nonce.hex")
for kind in ecc rsa; do
    if [ $kind = ecc ]; then scheme=ecdsa; else scheme=rsassa; fi
    # Without a resource manager, transient objects and sessions stay
    # loaded: flush them after every command.
    flush() { tpm2_flushcontext -t; tpm2_flushcontext -s; }
    tpm2_createek -c "$work/ek.ctx" -G $kind -u "$here/ek-$kind.pub"
    flush
    tpm2_createak -C "$work/ek.ctx" -c "$work/ak.ctx" -G $kind -g sha256 -s $scheme \
        -u "$here/ak-$kind.pub" -n "$here/ak-$kind.name" > /dev/null
    flush
    tpm2_readpublic -c "$work/ak.ctx" -f pem -o "$here/ak-$kind.pem" > /dev/null
    flush
    tpm2_quote -c "$work/ak.ctx" -l sha256:0,1,2,3,4,5,6,7 -q "$nonce" -g sha256 \
        -m "$here/quote-$kind.msg" -s "$here/quote-$kind.sig" -o "$here/quote-$kind.pcrs" > /dev/null
    tpm2_checkquote -u "$here/ak-$kind.pem" -m "$here/quote-$kind.msg" -s "$here/quote-$kind.sig" \
        -f "$here/quote-$kind.pcrs" -g sha256 -q "$nonce" > /dev/null
    flush
done
echo "quote fixtures written to $here"
