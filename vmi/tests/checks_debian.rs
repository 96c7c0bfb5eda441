//! The syscall-table and IDT checks on the stock Debian kernels (`make deps`)
//! loaded into a RAM image as the boot loader places them (at 16 MiB, at
//! their link address), read through the kernel's own page tables: every
//! one of the 451 (6.1) / 463 (6.12) slots holds its handler as linked, a
//! slot rewritten to another handler or into module space is named, and the
//! IDT (in `.bss`, all zero in the image) is read, has no present gate,
//! every gate the profile expects is reported absent, and it hashes as 4 KiB
//! of zeros. (The live kernels, KASLR on, are checked in
//! `qemu/tests/monvm_checks.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{load_kernel, monvm_kernel};
use vmi::SliceMemory;
use vmi::kernel_image::{Vmlinux, extract_vmlinux};
use vmi::linux::checks::{IDT_SIZE, MODULES_START, Target, idt, syscall_table};
use vmi::linux::locate_kernel;
use vmi::profile::build::from_vmlinux;

const LOAD: u64 = 0x100_0000;

fn check(series: &'static str, slots: usize) {
    let kernel = monvm_kernel(series);
    let vmlinux = extract_vmlinux(&kernel.vmlinuz).unwrap();
    let elf = Vmlinux::parse(&vmlinux).unwrap();
    let profile = from_vmlinux(&vmlinux).unwrap().profile;
    let s = &profile.symbols;
    assert_eq!(profile.syscalls.slots.len(), slots);
    // RAM for every segment in memory (the IDT is in .bss).
    let segments = elf.segments();
    let first = segments.iter().map(|g| g.paddr).min().unwrap();
    let span = segments
        .iter()
        .map(|g| g.paddr + g.memsz.max(g.filesz))
        .max()
        .unwrap()
        - first;
    let ram_size = ((LOAD + span + (8 << 20)) & !0xf_ffff) as usize;
    let mut ram = load_kernel(&elf, LOAD, ram_size);
    let mem = SliceMemory::flat(&ram);
    let loc = locate_kernel(&mem, mem.layout().regions(), &profile.kernel_image()).unwrap();
    let mode = loc.paging_mode(&mem, s.pgdir_shift).unwrap();
    let space = loc.address_space(&mem, s.init_top_pgt, mode).unwrap();

    let report = syscall_table(&space, &loc, &profile).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_eq!(report.slots, slots);
    let report = idt(&space, &loc, &profile).unwrap();
    // No gate is present in the image, so every gate the profile expects
    // (from the image's idt_data tables and irq stubs) is reported absent.
    let expected = profile.idt.as_ref().expect("an IDT reference").gates.len();
    assert!(report.gates.is_empty());
    assert_eq!(report.findings.len(), expected);
    assert!(report.findings.iter().all(|f| matches!(
        f.kind,
        vmi::linux::checks::IdtFindingKind::NotExpected { found: None, .. }
    )));
    let zeros: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest([0u8; IDT_SIZE]).into()
    };
    assert_eq!(report.digest, zeros);

    // read (0) -> write's handler; the last slot -> module space.
    let slot_at = |slot: u64| (LOAD + s.sys_call_table - s.text + 8 * slot) as usize;
    let write = profile.syscalls.slots[1].address;
    ram[slot_at(0)..slot_at(0) + 8].copy_from_slice(&write.to_le_bytes());
    let last = slots as u64 - 1;
    let module = MODULES_START + 0x4_2000;
    ram[slot_at(last)..slot_at(last) + 8].copy_from_slice(&module.to_le_bytes());
    let mem = SliceMemory::flat(&ram);
    let space = loc.address_space(&mem, s.init_top_pgt, mode).unwrap();
    let report = syscall_table(&space, &loc, &profile).unwrap();
    assert_eq!(report.findings.len(), 2, "{:#?}", report.findings);
    let (read, last_f) = (&report.findings[0], &report.findings[1]);
    assert_eq!(
        (read.slot, read.expected_name.as_str()),
        (0, "__x64_sys_read")
    );
    assert_eq!(
        read.target,
        Target::KernelText {
            symbol: Some("__x64_sys_write".into())
        }
    );
    assert_eq!(last_f.slot, slots - 1);
    assert_eq!(last_f.target, Target::ModuleArea);
    eprintln!("{series}: {read}\n{series}: {last_f}");
}

#[test]
fn checks_on_debian_6_1_cloud() {
    check("6.1", 451);
}

#[test]
fn checks_on_debian_6_12_cloud() {
    check("6.12", 463);
}
