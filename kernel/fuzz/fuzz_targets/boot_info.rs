//! The PVH start info parser over arbitrary memory contents.
#![no_main]

use avm_kernel::boot_info::StartInfo;
use avm_kernel::phys::BufferMemory;
use libfuzzer_sys::fuzz_target;

const BASE: u64 = 0x1000;

fuzz_target!(|data: &[u8]| {
    let mem = BufferMemory::new(BASE, data);
    if let Ok(info) = StartInfo::parse(&mem, BASE) {
        // Everything derived from it must be usable without panicking.
        let _ = info.cmdline();
        for (start, end) in info.occupied_ranges() {
            assert!(start <= end);
        }
        for r in &info.memory {
            assert!(r.end() >= r.start);
        }
    }
});
