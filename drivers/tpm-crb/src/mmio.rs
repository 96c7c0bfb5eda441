//! Register access behind a small trait, so the CRB state machine runs
//! unchanged against real MMIO (in the A-VM) and a simulated register file
//! (in unit tests).

/// A memory-mapped register region, addressed by byte offset from its base.
///
/// Implementations must not panic on an out-of-range offset: reads return
/// all-ones (what a bus returns for an unclaimed address) and writes are
/// dropped. The CRB driver checks its own offsets against [`Mmio::region_len`]
/// before relying on them.
pub trait Mmio {
    /// Reads the 32-bit register at `offset`.
    fn read32(&self, offset: usize) -> u32;
    /// Writes the 32-bit register at `offset`.
    fn write32(&mut self, offset: usize, value: u32);
    /// Reads one byte (the CRB data buffer is byte-addressed).
    fn read8(&self, offset: usize) -> u8;
    /// Writes one byte.
    fn write8(&mut self, offset: usize, value: u8);
    /// Length of the region in bytes.
    fn region_len(&self) -> usize;

    /// Copies `out.len()` bytes starting at `offset` out of the region.
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = self.read8(offset.saturating_add(i));
        }
    }

    /// Copies `data` into the region starting at `offset`.
    fn write_bytes(&mut self, offset: usize, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            self.write8(offset.saturating_add(i), *byte);
        }
    }
}

/// [`Mmio`] over a raw mapping, with volatile accesses and bounds-checked
/// offsets. This is what the A-VM kernel hands to [`crate::Crb::probe`].
pub struct VolatileMmio {
    base: *mut u8,
    len: usize,
}

impl VolatileMmio {
    /// Wraps the mapping `[base, base + len)`.
    ///
    /// # Safety
    ///
    /// `base` must point to a mapping of at least `len` bytes that is valid
    /// for volatile reads and writes (uncached device memory for a real TPM)
    /// for the whole lifetime of the returned value, `base` must be 4-byte
    /// aligned, and nothing else may access the region concurrently.
    #[must_use]
    pub unsafe fn new(base: *mut u8, len: usize) -> Self {
        Self { base, len }
    }

    /// True when an access of `width` bytes at `offset` lies inside the
    /// region and is naturally aligned.
    fn in_bounds(&self, offset: usize, width: usize) -> bool {
        offset.is_multiple_of(width) && offset.checked_add(width).is_some_and(|end| end <= self.len)
    }
}

impl Mmio for VolatileMmio {
    fn read32(&self, offset: usize) -> u32 {
        if !self.in_bounds(offset, 4) {
            return u32::MAX;
        }
        // SAFETY: `offset + 4 <= len` and `offset` is 4-aligned (checked
        // above); `new`'s contract makes `[base, base + len)` a valid,
        // 4-aligned mapping for volatile access.
        unsafe { self.base.add(offset).cast::<u32>().read_volatile() }
    }

    fn write32(&mut self, offset: usize, value: u32) {
        if !self.in_bounds(offset, 4) {
            return;
        }
        // SAFETY: as in `read32`; `&mut self` gives exclusive access.
        unsafe { self.base.add(offset).cast::<u32>().write_volatile(value) }
    }

    fn read8(&self, offset: usize) -> u8 {
        if !self.in_bounds(offset, 1) {
            return u8::MAX;
        }
        // SAFETY: `offset < len` (checked above) inside the mapping that
        // `new`'s contract guarantees.
        unsafe { self.base.add(offset).read_volatile() }
    }

    fn write8(&mut self, offset: usize, value: u8) {
        if !self.in_bounds(offset, 1) {
            return;
        }
        // SAFETY: as in `read8`; `&mut self` gives exclusive access.
        unsafe { self.base.add(offset).write_volatile(value) }
    }

    fn region_len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatile_mmio_reads_writes_and_rejects_out_of_range() {
        let mut backing = [0u32; 4];
        // SAFETY: `backing` is a live, 4-aligned, 16-byte array that outlives
        // `mmio` and is only accessed through it in this test.
        let mut mmio = unsafe { VolatileMmio::new(backing.as_mut_ptr().cast(), 16) };
        mmio.write32(4, 0x1122_3344);
        assert_eq!(mmio.read32(4), 0x1122_3344);
        mmio.write8(8, 0xab);
        assert_eq!(mmio.read8(8), 0xab);
        // Out of range or misaligned: reads all-ones, writes dropped.
        assert_eq!(mmio.read32(16), u32::MAX);
        assert_eq!(mmio.read32(2), u32::MAX);
        assert_eq!(mmio.read32(usize::MAX), u32::MAX);
        mmio.write32(14, 0);
        assert_eq!(mmio.read8(16), u8::MAX);
        mmio.write8(16, 1);
        let mut out = [0u8; 3];
        mmio.read_bytes(15, &mut out);
        assert_eq!(out[1..], [0xff, 0xff]);
        assert_eq!(backing[1], 0x1122_3344);
    }
}
