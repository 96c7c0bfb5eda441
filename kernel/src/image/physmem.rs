//! Reading physical memory through the identity map, limited to what the
//! firmware memory map calls RAM or ACPI memory below 4 GiB: a bogus pointer
//! in a firmware table then becomes a read error, not a fault or an access
//! to device registers.

use avm_kernel::boot_info::MemoryRegion;
use avm_kernel::memory::is_ram_page;
use avm_kernel::phys::{PhysRead, PhysReadError};

const IDENTITY_MAPPED_END: u64 = 4 << 30;
const CHECK_GRANULE: u64 = 2 << 20;

/// Physical memory as seen through the boot identity map.
#[derive(Debug, Clone, Copy)]
pub struct IdentityMemory<'a> {
    memory: &'a [MemoryRegion],
}

impl<'a> IdentityMemory<'a> {
    /// Reads are allowed in the RAM and ACPI regions of `memory`.
    pub fn new(memory: &'a [MemoryRegion]) -> Self {
        Self { memory }
    }

    fn readable(&self, addr: u64, len: usize) -> bool {
        let Some(end) = addr.checked_add(len as u64) else {
            return false;
        };
        if end > IDENTITY_MAPPED_END {
            return false;
        }
        let mut page = addr & !(CHECK_GRANULE - 1);
        while page < end {
            if !is_ram_page(self.memory, page, CHECK_GRANULE) {
                return false;
            }
            page += CHECK_GRANULE;
        }
        true
    }
}

impl PhysRead for IdentityMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysReadError> {
        if !self.readable(addr, buf.len()) {
            return Err(PhysReadError {
                addr,
                len: buf.len(),
            });
        }
        // SAFETY: the range is below 4 GiB, hence identity-mapped, and lies in
        // pages the firmware reports as RAM/ACPI memory (plain memory, no side
        // effects). It is copied byte-wise into our own buffer, so firmware
        // data is never referenced in place.
        unsafe {
            core::ptr::copy_nonoverlapping(addr as usize as *const u8, buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }
}
