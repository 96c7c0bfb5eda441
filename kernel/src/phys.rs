//! Checked reads of physical memory.
//!
//! The kernel implements [`PhysRead`] over its identity map; tests and fuzzers
//! implement it over a byte buffer ([`BufferMemory`]). Parsers only ever see
//! this trait, so a bad address coming from firmware tables becomes an error,
//! not a fault.

/// A physical address or length that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhysReadError {
    /// The start of the rejected read.
    pub addr: u64,
    /// Its length in bytes.
    pub len: usize,
}

impl core::fmt::Display for PhysReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}+{:#x} unreadable", self.addr, self.len)
    }
}

/// Read access to physical memory.
pub trait PhysRead {
    /// Fills `buf` with the bytes at `addr..addr + buf.len()`, or fails without
    /// reading if any part of that range is not readable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysReadError>;

    /// Reads a fixed-size array.
    fn read_array<const N: usize>(&self, addr: u64) -> Result<[u8; N], PhysReadError> {
        let mut buf = [0u8; N];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, addr: u64) -> Result<u32, PhysReadError> {
        self.read_array::<4>(addr).map(u32::from_le_bytes)
    }

    /// Reads a little-endian `u64`.
    fn read_u64(&self, addr: u64) -> Result<u64, PhysReadError> {
        self.read_array::<8>(addr).map(u64::from_le_bytes)
    }
}

/// A byte buffer that pretends to live at physical address `base`.
#[derive(Debug, Clone, Copy)]
pub struct BufferMemory<'a> {
    base: u64,
    bytes: &'a [u8],
}

impl<'a> BufferMemory<'a> {
    /// Memory holding `bytes` at `base..base + bytes.len()`.
    pub fn new(base: u64, bytes: &'a [u8]) -> Self {
        Self { base, bytes }
    }
}

impl PhysRead for BufferMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PhysReadError> {
        let err = PhysReadError {
            addr,
            len: buf.len(),
        };
        let start = addr.checked_sub(self.base).ok_or(err)?;
        let start = usize::try_from(start).map_err(|_| err)?;
        let end = start.checked_add(buf.len()).ok_or(err)?;
        let src = self.bytes.get(start..end).ok_or(err)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Little-endian field accessors over a byte slice that return `None` when the
/// field lies outside it (used by the table views).
pub(crate) fn le_u16(bytes: &[u8], off: usize) -> Option<u16> {
    let b = bytes.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

pub(crate) fn le_u32(bytes: &[u8], off: usize) -> Option<u32> {
    let b = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn le_u64(bytes: &[u8], off: usize) -> Option<u64> {
    let b = bytes.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_memory_reads_inside_and_rejects_outside() {
        let bytes = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mem = BufferMemory::new(0x1000, &bytes);
        assert_eq!(mem.read_u32(0x1000), Ok(0x0403_0201));
        assert_eq!(mem.read_u32(0x1004), Ok(0x0807_0605));
        assert!(mem.read_u32(0x1005).is_err());
        assert!(mem.read_u32(0xfff).is_err());
        assert!(mem.read_u64(u64::MAX - 3).is_err());
    }

    #[test]
    fn le_accessors_are_bounded() {
        let b = [0xaa, 0xbb, 0xcc];
        assert_eq!(le_u16(&b, 1), Some(0xccbb));
        assert_eq!(le_u16(&b, 2), None);
        assert_eq!(le_u32(&b, 0), None);
        assert_eq!(le_u64(&b, usize::MAX), None);
    }
}
