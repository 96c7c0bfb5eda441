//! What the PC firmware leaves in the guest's low memory: a sign that the
//! machine was reset, seen before any kernel is.
//!
//! SeaBIOS (QEMU's default firmware) sets the BIOS data area's timer tick
//! count from the RTC's time of day at every reset, and counts it at
//! 18.2 Hz while the firmware runs; a 64-bit Linux never writes it (checked
//! on both Debian kernels: the count stands still for as long as one runs,
//! and holds a new value after `reboot -f`). A count that changed under a
//! running kernel means the firmware ran: a reboot is under way, and the
//! changes it makes to the old kernel's memory (the new kernel decompressed
//! over the old one, a gate at a time) are not an attack. Other firmware
//! (UEFI) leaves it alone: then there is no sign. A guest can write it; all
//! that buys is what any other sign of a reboot does (docs/monitoring.md).

use crate::{GuestMemory, GuestPhysAddr, MemoryError};

/// The BIOS data area's timer tick count (segment 0x40, offset 0x6C).
pub const BDA_TIMER_TICKS: GuestPhysAddr = GuestPhysAddr(0x46c);

/// The firmware's tick count in `memory`.
pub fn bios_timer_ticks<M: GuestMemory + ?Sized>(memory: &M) -> Result<u32, MemoryError> {
    memory.read_u32(BDA_TIMER_TICKS)
}

/// The firmware's tick count as it was when a kernel was found running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirmwareTicks {
    baseline: Option<u32>,
}

impl FirmwareTicks {
    /// The count read (`None`: unreadable) while a kernel runs.
    pub fn at(ticks: Option<u32>) -> Self {
        Self { baseline: ticks }
    }

    /// Whether the firmware ran since: the count read now is another. An
    /// unreadable count, then or now, is no sign.
    pub fn ran(&self, now: Option<u32>) -> bool {
        matches!((self.baseline, now), (Some(then), Some(now)) if then != now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SliceMemory;

    fn memory_with(ticks: u32) -> alloc::vec::Vec<u8> {
        let mut ram = alloc::vec![0u8; 0x1000];
        ram[0x46c..0x470].copy_from_slice(&ticks.to_le_bytes());
        ram
    }

    #[test]
    fn the_count_is_read_where_the_bios_keeps_it() {
        let ram = memory_with(0x7d36f);
        assert_eq!(bios_timer_ticks(&SliceMemory::flat(&ram)), Ok(0x7d36f));
        assert!(bios_timer_ticks(&SliceMemory::flat(&ram[..0x46e])).is_err());
    }

    #[test]
    fn a_new_count_means_the_firmware_ran() {
        let running = FirmwareTicks::at(Some(0x7d36f));
        assert!(!running.ran(Some(0x7d36f)));
        assert!(running.ran(Some(0x7d413)));
        // Nothing read, then or now: no sign either way.
        assert!(!running.ran(None));
        assert!(!FirmwareTicks::at(None).ran(Some(0x7d413)));
        assert!(!FirmwareTicks::default().ran(Some(0)));
    }
}
