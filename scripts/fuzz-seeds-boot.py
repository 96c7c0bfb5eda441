#!/usr/bin/env python3
"""Kernel fuzz seeds from a real boot: QEMU (q35, SeaBIOS, a CRB TPM on
swtpm, as avm-qemu runs the A-VM) boots the tiny PVH image of the attest
fixtures (it only halts) with a real A-VM command line; guest RAM is a
memory-backend-file, so afterwards this reads QEMU's own ACPI tables, the
PVH start info (its address is EBX at the PVH entry: the image never
touches it, and QEMU's monitor reports it) and SeaBIOS's TPM event log. A
second boot adds the NIC's option ROM, which SeaBIOS measures: a longer log.

The fuzz targets map their input at fixed addresses (acpi: 0xE0000,
boot_info: 0x1000), so the real structures are laid out again there:
contents as QEMU wrote them, only the pointers between them (RSDP -> RSDT,
RSDT entries, start info -> command line / memory map) moved into the
seed, and the checksums over those pointers recomputed.

Usage: fuzz-seeds-boot.py REPO_ROOT   (run by scripts/fuzz-seeds.sh)
Needs: qemu-system-x86_64, swtpm, as, ld.
"""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
DATA = os.path.join(ROOT, "attest/tests/data")
RAM_MB = 128
# What avm-qemu passes (qemu/src/node.rs: exit-after-report plus --cmdline
# words) with the options the kernel reads (kernel/src/cmdline.rs).
CMDLINE = "exit-after-report log=debug attest-port=7140 ip=10.0.2.15/24,gw=10.0.2.2"


def run(*args, **kw):
    subprocess.run(args, check=True, **kw)


def monitor(path, command):
    """One HMP command over the monitor socket; returns its output."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(5)
    out = b""
    def read_until_prompt():
        nonlocal out
        while not out.endswith(b"(qemu) "):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    read_until_prompt()
    out = b""
    s.sendall(command.encode() + b"\n")
    read_until_prompt()
    s.close()
    return out.decode(errors="replace")


# The devices avm-qemu gives the A-VM (qemu/src/qemu.rs): a modern-only
# virtio-net NIC without option ROM, the isa-debug-exit port.
AVM_DEVICES = ["-no-reboot", "-no-user-config",
               "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,disable-legacy=on,romfile=",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
# The same NIC with QEMU's default iPXE option ROM, which SeaBIOS loads and
# measures into PCR 2: a longer real event log.
WITH_OPTION_ROM = ["-no-reboot", "-no-user-config",
                   "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]


def boot(work, devices):
    """Boots, returns (ram bytes, start info address)."""
    if not os.path.exists(f"{work}/pvh.elf"):
        run("as", "--64", os.path.join(DATA, "tiny-pvh.S"), "-o", f"{work}/pvh.o")
        run("ld", "-n", "-static", "--build-id=none", "-T", os.path.join(DATA, "tiny-pvh.ld"),
            f"{work}/pvh.o", "-o", f"{work}/pvh.elf")
    for stale in ("ctrl", "mon"):
        if os.path.exists(f"{work}/{stale}"):
            os.unlink(f"{work}/{stale}")
    ram = f"/dev/shm/avm-fuzz-seeds-{os.getpid()}"
    swtpm = subprocess.Popen(["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={work}",
                              "--ctrl", f"type=unixio,path={work}/ctrl"],
                             stderr=subprocess.DEVNULL)
    qemu = None
    try:
        for _ in range(50):
            if os.path.exists(f"{work}/ctrl"):
                break
            time.sleep(0.1)
        qemu = subprocess.Popen([
            "qemu-system-x86_64", "-accel", "tcg", "-M", "q35", "-m", f"{RAM_MB}M",
            "-nodefaults", "-vga", "none", "-display", "none",
            "-object", f"memory-backend-file,id=mem,size={RAM_MB}M,mem-path={ram},share=on",
            "-machine", "memory-backend=mem",
            "-chardev", f"socket,id=chrtpm,path={work}/ctrl",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0",
            "-kernel", f"{work}/pvh.elf", "-append", CMDLINE, *devices,
            "-monitor", f"unix:{work}/mon,server=on,wait=off"])
        # SeaBIOS needs well under a second under TCG to reach the image;
        # wait until the CPU sits in the image's halt loop (EIP in 1M+).
        ebx = None
        for _ in range(60):
            time.sleep(0.5)
            if not os.path.exists(f"{work}/mon"):
                continue
            regs = monitor(f"{work}/mon", "info registers")
            fields = dict(f.split("=", 1) for f in regs.split() if "=" in f)
            eip = int(fields.get("EIP", "0"), 16) if "EIP" in fields else int(fields.get("RIP", "0"), 16)
            if 0x100000 <= eip < 0x101000 and "HLT=1" in regs:
                ebx = int(fields.get("EBX", fields.get("RBX", "0")), 16)
                break
        if ebx is None:
            sys.exit("fuzz-seeds-boot: the image was not reached")
        monitor(f"{work}/mon", "stop")
        with open(ram, "rb") as f:
            return f.read(), ebx
    finally:
        if qemu:
            qemu.kill()
            qemu.wait()
        swtpm.kill()
        swtpm.wait()
        if os.path.exists(ram):
            os.unlink(ram)


def checksum_fix(buf, start, length, at):
    buf[at] = 0
    buf[at] = (-sum(buf[start:start + length])) & 0xFF


def find_rsdp(ram):
    for addr in range(0xE0000, 0x100000, 16):
        if ram[addr:addr + 8] == b"RSD PTR " and sum(ram[addr:addr + 20]) & 0xFF == 0:
            return addr
    sys.exit("fuzz-seeds-boot: no RSDP")


def table(ram, addr):
    length = struct.unpack_from("<I", ram, addr + 4)[0]
    return bytes(ram[addr:addr + length])


def acpi_seeds(ram, out):
    rsdp_addr = find_rsdp(ram)
    rsdp = bytearray(ram[rsdp_addr:rsdp_addr + 36])
    revision = rsdp[15]
    rsdt_addr = struct.unpack_from("<I", rsdp, 16)[0]
    rsdt = table(ram, rsdt_addr)
    entries = [struct.unpack_from("<I", rsdt, o)[0] for o in range(36, len(rsdt), 4)]
    tables = [table(ram, a) for a in entries]
    names = [t[:4].decode() for t in tables]
    print(f"fuzz-seeds-boot: RSDP rev {revision} at {rsdp_addr:#x}, RSDT at {rsdt_addr:#x}: "
          f"{' '.join(names)}", file=sys.stderr)
    base = 0xE0000

    def lay_out(rsdp_off, use_xsdt):
        """RSDP at rsdp_off, then the root table, then every table."""
        root_off = (rsdp_off + 36 + 15) & ~15
        entry_size = 8 if use_xsdt else 4
        root_len = 36 + entry_size * len(tables)
        off = (root_off + root_len + 15) & ~15
        offsets = []
        for t in tables:
            offsets.append(off)
            off = (off + len(t) + 15) & ~15
        buf = bytearray(off)
        root = bytearray(rsdt[:36])
        if use_xsdt:
            root[0:4] = b"XSDT"
        struct.pack_into("<I", root, 4, root_len)
        for o in offsets:
            root += struct.pack("<Q" if use_xsdt else "<I", base + o)
        checksum_fix(root, 0, root_len, 9)
        buf[root_off:root_off + root_len] = root
        for o, t in zip(offsets, tables):
            buf[o:o + len(t)] = t
        r = bytearray(rsdp)
        if use_xsdt:
            r[15] = 2
            struct.pack_into("<IQ", r, 20, 36, base + root_off)
            struct.pack_into("<I", r, 16, 0)
        else:
            struct.pack_into("<I", r, 16, base + root_off)
        checksum_fix(r, 0, 20, 8)
        length = 20
        if r[15] >= 2:
            length = 36
            checksum_fix(r, 0, 36, 32)
        buf[rsdp_off:rsdp_off + length] = r[:length]
        return bytes(buf)

    tpm2 = next((t for t in tables if t[:4] == b"TPM2"), None)
    if tpm2 is None:
        sys.exit("fuzz-seeds-boot: no TPM2 table")
    if out is None:
        return tpm2

    def write(name, hint, memory):
        with open(os.path.join(out, name), "wb") as f:
            f.write(struct.pack("<H", hint) + memory)

    # hint 0: the kernel scans the BIOS area (as without a PVH rsdp_paddr).
    write("qemu-rsdt-scan", 0, lay_out(0, False))
    # a hint, as the start info's rsdp_paddr gives one.
    write("qemu-rsdt-hint", 0x40, lay_out(0x40, False))
    # the same tables behind an XSDT (RSDP revision 2, as on UEFI).
    write("qemu-xsdt-scan", 0, lay_out(0, True))
    # The TPM2 table alone (the target first parses the whole input as one).
    with open(os.path.join(out, "qemu-tpm2-table"), "wb") as f:
        f.write(tpm2)
    return tpm2


def event_log_seeds(ram, tpm2, out, name, full):
    """SeaBIOS's crypto-agile event log of this boot, from the TPM2
    table's LASA/LAML, without the zero padding after the last event; and
    its first events alone (a short seed mutates faster)."""
    laml, lasa = struct.unpack_from("<IQ", tpm2, 64)
    log = bytes(ram[lasa:lasa + laml])
    # The Spec ID event (TCG_PCClientPCREvent, SHA-1 format) gives the
    # digest sizes of the crypto-agile events after it.
    off = 32 + struct.unpack_from("<I", log, 28)[0]
    count = struct.unpack_from("<I", log, 32 + 24)[0]
    sizes = dict(struct.unpack_from("<HH", log, 32 + 28 + 4 * i) for i in range(count))
    ends = []
    while off + 12 <= len(log) and any(log[off:off + 12]):
        digests = struct.unpack_from("<I", log, off + 8)[0]
        off += 12
        for _ in range(digests):
            off += 2 + sizes[struct.unpack_from("<H", log, off)[0]]
        off += 4 + struct.unpack_from("<I", log, off)[0]
        ends.append(off)
    print(f"fuzz-seeds-boot: event log at {lasa:#x}: {len(ends)} events, {off} bytes", file=sys.stderr)
    if full:
        with open(os.path.join(out, name), "wb") as f:
            f.write(log[:off])
    else:
        with open(os.path.join(out, f"{name}-first-3-events"), "wb") as f:
            f.write(log[:ends[2]])


def start_info_seeds(ram, addr, out):
    head = bytes(ram[addr:addr + 56])
    magic, version, flags, nr_modules, modlist, cmdline_paddr, rsdp = struct.unpack_from("<IIIIQQQ", head)
    if magic != 0x336EC578:
        sys.exit(f"fuzz-seeds-boot: no start info at {addr:#x}")
    memmap_paddr, entries = struct.unpack_from("<QI", head, 40) if version >= 1 else (0, 0)
    cmdline = bytes(ram[cmdline_paddr:ram.index(b"\0", cmdline_paddr)]) if cmdline_paddr else b""
    memmap = bytes(ram[memmap_paddr:memmap_paddr + 24 * entries])
    print(f"fuzz-seeds-boot: start info v{version} at {addr:#x}: {entries} memory regions, "
          f"{nr_modules} modules, rsdp {rsdp:#x}, cmdline {cmdline!r}", file=sys.stderr)
    base = 0x1000

    def lay_out(line, with_memmap=True):
        cmd_off = 0x40
        map_off = (cmd_off + len(line) + 1 + 7) & ~7
        buf = bytearray(head)
        buf += bytes(cmd_off - len(buf))
        buf += line + b"\0"
        buf += bytes(map_off - len(buf))
        buf += memmap
        struct.pack_into("<Q", buf, 24, base + cmd_off if line else 0)
        if with_memmap:
            struct.pack_into("<QI", buf, 40, base + map_off, entries)
        else:
            buf = buf[:map_off]
            struct.pack_into("<QI", buf, 40, 0, 0)
        return bytes(buf)

    # Version 0 (no memory map fields): what older PVH loaders pass.
    v0 = bytearray(lay_out(cmdline, with_memmap=False))
    struct.pack_into("<I", v0, 4, 0)
    for name, data in [("qemu-start-info", lay_out(cmdline)),
                       ("qemu-start-info-no-cmdline", lay_out(b"")),
                       ("qemu-start-info-v0", bytes(v0))]:
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def main():
    seeds = os.path.join(ROOT, "kernel/fuzz/seeds")
    work = tempfile.mkdtemp(prefix="avm-fuzz-seeds-")
    try:
        ram, ebx = boot(work, AVM_DEVICES)
        rom_ram, _ = boot(work, WITH_OPTION_ROM)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for target in ("acpi", "boot_info"):
        shutil.rmtree(os.path.join(seeds, target), ignore_errors=True)
        os.makedirs(os.path.join(seeds, target))
    tpm2 = acpi_seeds(ram, os.path.join(seeds, "acpi"))
    start_info_seeds(ram, ebx, os.path.join(seeds, "boot_info"))
    # Written next to the SeaBIOS fixture log seedgen puts there (it runs
    # first; this boot's full log is byte for byte the same).
    logs = os.path.join(ROOT, "attest/fuzz/seeds/eventlog")
    os.makedirs(logs, exist_ok=True)
    event_log_seeds(ram, tpm2, logs, "qemu-seabios-boot", full=False)
    rom_tpm2 = acpi_seeds(rom_ram, None)
    event_log_seeds(rom_ram, rom_tpm2, logs, "qemu-seabios-boot-option-rom", full=True)


if __name__ == "__main__":
    main()
