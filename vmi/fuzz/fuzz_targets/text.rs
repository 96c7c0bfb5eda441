//! The kernel text checker on arbitrary guest memory: a crafted kernel's
//! reference (vmi::craft::TextKernel, with ftrace trampoline templates)
//! checked against RAM from the input (u32 physical address of `_text`, u64
//! slide, then the RAM bytes). Fentry calls into the module area are judged
//! by the trampoline check, reading through page tables rooted at physical
//! 0x8000 of the same RAM (where the seeds put them). Every chunk either
//! answers or errs; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmi::addr::GuestPhysAddr;
use vmi::craft::TextKernel;
use vmi::linux::text::ftrace::check_trampoline;
use vmi::linux::text::{Area, TextChecker, ro_after_init_digest};
use vmi::memory::SliceMemory;
use vmi::paging::{AddressSpace, PagingMode};

/// Where the page tables for the trampoline reads are.
const TABLES: u64 = 0x8000;

fuzz_target!(|data: &[u8]| {
    let Some((header, ram)) = data.split_at_checked(12) else {
        return;
    };
    let phys = u64::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let mut slide = [0u8; 8];
    slide.copy_from_slice(&header[4..12]);
    let slide = u64::from_le_bytes(slide);
    let k = TextKernel::new().with_ftrace();
    let memory = SliceMemory::flat(ram);
    let location = k.location(phys, slide);
    let space = AddressSpace::new(&memory, GuestPhysAddr(TABLES), PagingMode::FourLevel);
    let Ok(mut checker) = TextChecker::new(&k.reference, location, k.ro_after_init.clone()) else {
        return;
    };
    for area in [Area::Text, Area::Rodata] {
        for index in 0..=checker.chunks(area) {
            let mut judge =
                |target| check_trampoline(&space, &k.reference, &location, target).is_ok();
            if let Ok(outcome) = checker.check_chunk_with(&memory, area, index, &mut judge) {
                assert_eq!(outcome.index, index);
                assert!(outcome.sites.len() <= 8);
                assert!(outcome.trampolines.len() <= 1);
            }
        }
    }
    if let Ok(t) = check_trampoline(&space, &k.reference, &location, TextKernel::TRAMPOLINE_VA) {
        assert_eq!(t.tracer, TextKernel::FUNCTIONS[0]);
    }
    let _ = ro_after_init_digest(
        &memory,
        &location,
        k.ro_after_init.clone(),
        &k.reference.relocations,
    );
});
