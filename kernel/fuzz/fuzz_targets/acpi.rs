//! RSDP discovery, the RSDT/XSDT walk and the TPM2 table over arbitrary
//! memory (the first 8 bytes choose the RSDP hint).
#![no_main]

use avm_kernel::acpi::{Rsdp, Tpm2Table};
use avm_kernel::phys::BufferMemory;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Tpm2Table::parse(data, true);
    let Some((hint, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    // A hint inside the buffer (or 0: scan the BIOS area).
    let hint = u64::from(u16::from_le_bytes(*hint));
    let mem = BufferMemory::new(0xE_0000, rest);
    let hint = if hint == 0 { 0 } else { 0xE_0000 + hint };
    if let Ok(rsdp) = Rsdp::find(&mem, hint) {
        let _ = Tpm2Table::find(&mem, &rsdp);
    }
});
