#!/bin/sh
# Regenerates the SeaBIOS event-log fixture: a measured launch as avm-qemu
# does it (H-CRTM of the image through swtpm's control channel), SeaBIOS
# booting a tiny PVH ELF that only halts, then
#   seabios-eventlog.bin   the log area (LAML bytes, zero padded) read from
#                          guest RAM (a memory-backend-file) via the ACPI
#                          TPM2 table's LASA/LAML,
#   seabios-pcrs.txt       the TPM's SHA-256 PCRs 0-7 afterwards ("i hex"),
#   seabios-image.sha256   SHA-256 of the measured image (tiny-pvh.elf).
# Needs: swtpm, swtpm_ioctl, qemu-system-x86_64, as, ld, python3.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
ram=/dev/shm/avm-attest-fixture-$$
cleanup() {
    [ -f "$work/qemu.pid" ] && kill -9 "$(cat "$work/qemu.pid")" 2>/dev/null || true
    [ -f "$work/swtpm.pid" ] && kill "$(cat "$work/swtpm.pid")" 2>/dev/null || true
    rm -rf "$work" "$ram"
}
trap cleanup EXIT

as --64 "$here/tiny-pvh.S" -o "$work/pvh.o"
ld -n -static --build-id=none -T "$here/tiny-pvh.ld" "$work/pvh.o" -o "$work/pvh.elf"

start_swtpm() {
    swtpm socket --tpm2 --tpmstate dir="$work" --ctrl type=unixio,path="$work/ctrl" \
        --daemon --pid file="$work/swtpm.pid"
    for _ in 1 2 3 4 5 6 7 8 9 10; do [ -S "$work/ctrl" ] && break; sleep 0.1; done
}

# H-CRTM: INIT, HASH_START/DATA/END, store volatile state, shutdown (exits).
start_swtpm
swtpm_ioctl --unix "$work/ctrl" -i
swtpm_ioctl --unix "$work/ctrl" -h - < "$work/pvh.elf"
swtpm_ioctl --unix "$work/ctrl" -v
swtpm_ioctl --unix "$work/ctrl" -s
sleep 0.3
rm -f "$work/ctrl"
start_swtpm

qemu-system-x86_64 -accel tcg -M q35 -m 128M -nodefaults -vga none -display none \
    -object memory-backend-file,id=mem,size=128M,mem-path="$ram",share=on \
    -machine memory-backend=mem \
    -chardev socket,id=chrtpm,path="$work/ctrl" -tpmdev emulator,id=tpm0,chardev=chrtpm \
    -device tpm-crb,tpmdev=tpm0 -kernel "$work/pvh.elf" \
    -pidfile "$work/qemu.pid" -daemonize
# SeaBIOS needs well under a second under TCG to reach the kernel.
sleep 4
# SIGKILL: QEMU must not shut the TPM down, its PCRs are read next.
kill -9 "$(cat "$work/qemu.pid")"
rm -f "$work/qemu.pid"
sleep 0.3

python3 "$here/swtpm_pcrread.py" "$work/ctrl" > "$here/seabios-pcrs.txt"
sha256sum "$work/pvh.elf" | cut -d' ' -f1 > "$here/seabios-image.sha256"
python3 - "$ram" "$here/seabios-eventlog.bin" <<'PY'
import struct, sys
ram = open(sys.argv[1], "rb").read()
# The ACPI TPM2 table (revision 4 layout): 36-byte header, platform class,
# reserved, control area, start method, 12 bytes of parameters, LAML, LASA.
pos = 0
while True:
    pos = ram.find(b"TPM2", pos)
    if pos < 0:
        sys.exit("no ACPI TPM2 table with a log area found")
    length = struct.unpack_from("<I", ram, pos + 4)[0]
    if length >= 76:
        laml, lasa = struct.unpack_from("<IQ", ram, pos + 64)
        if 0 < laml <= 1 << 20 and lasa + laml <= len(ram) and ram[lasa + 28 + 4:lasa + 28 + 4 + 15] == b"Spec ID Event03":
            open(sys.argv[2], "wb").write(ram[lasa:lasa + laml])
            break
    pos += 4
PY
echo "wrote $(wc -c < "$here/seabios-eventlog.bin") log bytes"
