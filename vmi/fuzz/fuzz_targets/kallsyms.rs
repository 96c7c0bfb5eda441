//! kallsyms recovery on arbitrary bytes, as a kernel image (a slice) and as
//! guest memory (chunked scan, windows): an error or a table that keeps the
//! invariants, never a panic, and bounded work (small limits here).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmi::kallsyms::{KERNEL_TEXT_PREFIX, Kallsyms, Limits};
use vmi::{GuestPhysAddr, SliceMemory};

fn check(k: &Kallsyms) {
    assert!(k.relative_base >= KERNEL_TEXT_PREFIX);
    let mut prev = 0;
    for s in k.symbols.iter() {
        assert!(s.address >= prev);
        assert!(!s.name.is_empty());
        prev = s.address;
        assert!(k.symbols.lookup(s.name).is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_candidates: 8,
        max_symbols: 1 << 16,
        max_scan_back: 1 << 20,
        max_name_len: 512,
        max_name_parses: 4,
    };
    let from_slice = Kallsyms::parse(data, &limits);
    if let Ok(k) = &from_slice {
        check(k);
    }
    let memory = SliceMemory::flat(data);
    let from_memory = Kallsyms::from_memory(&memory, GuestPhysAddr(0), data.len() as u64, &limits);
    if let Ok(k) = &from_memory {
        check(k);
    }
    // The same bytes give the same symbols either way.
    if let (Ok(a), Ok(b)) = (&from_slice, &from_memory) {
        assert_eq!(a.symbols, b.symbols);
    }
});
