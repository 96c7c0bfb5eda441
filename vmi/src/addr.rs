//! Typed guest addresses (vm-memory style): a guest-physical address and a
//! guest-virtual address are different types, so one is never used as the
//! other by accident. A guest-virtual address is canonical by construction.

use core::fmt;

/// Size of a base page on x86-64.
pub const PAGE_SIZE: u64 = 4096;
/// `PAGE_SIZE - 1`.
pub const PAGE_MASK: u64 = PAGE_SIZE - 1;

/// An address in the guest's physical address space. Any value can be named;
/// whether it is backed by RAM is decided by the [`GuestMemory`] that reads it.
///
/// [`GuestMemory`]: crate::GuestMemory
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GuestPhysAddr(pub u64);

impl GuestPhysAddr {
    pub const fn new(value: u64) -> Self {
        GuestPhysAddr(value)
    }

    pub const fn value(self) -> u64 {
        self.0
    }

    /// `self + offset`, or `None` on overflow.
    pub const fn checked_add(self, offset: u64) -> Option<Self> {
        match self.0.checked_add(offset) {
            Some(v) => Some(GuestPhysAddr(v)),
            None => None,
        }
    }

    /// `self - other` when `other <= self`.
    pub const fn checked_offset_from(self, other: GuestPhysAddr) -> Option<u64> {
        self.0.checked_sub(other.0)
    }

    /// Offset inside its 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & PAGE_MASK
    }

    /// The start of its 4 KiB page.
    pub const fn page_base(self) -> Self {
        GuestPhysAddr(self.0 & !PAGE_MASK)
    }

    pub const fn is_aligned(self, align: u64) -> bool {
        align != 0 && self.0.is_multiple_of(align)
    }
}

impl fmt::Debug for GuestPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestPhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for GuestPhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phys {:#x}", self.0)
    }
}

/// A value that is not a canonical x86-64 virtual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonCanonical(pub u64);

impl fmt::Display for NonCanonical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "non-canonical virtual address {:#x}", self.0)
    }
}

/// A canonical address in the guest's virtual address space.
///
/// Canonical here means canonical for 5-level paging (bits 63..=56 equal to
/// bit 56), the weaker of the two x86-64 rules; [`AddressSpace`] additionally
/// requires 4-level canonical form (bits 63..=47 equal) when the guest uses
/// 4-level paging. A pointer read from guest memory becomes a
/// `GuestVirtAddr` only through [`GuestVirtAddr::new`]: it is an allegation
/// until then.
///
/// [`AddressSpace`]: crate::AddressSpace
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestVirtAddr(u64);

impl GuestVirtAddr {
    /// Checks the 5-level canonical form.
    pub const fn new(value: u64) -> Result<Self, NonCanonical> {
        if is_canonical(value, 57) {
            Ok(GuestVirtAddr(value))
        } else {
            Err(NonCanonical(value))
        }
    }

    pub const fn value(self) -> u64 {
        self.0
    }

    /// Canonical for a virtual address width of `bits` (48 for 4-level
    /// paging, 57 for 5-level).
    pub const fn is_canonical_for(self, bits: u32) -> bool {
        is_canonical(self.0, bits)
    }

    /// `self + offset`, if it does not overflow and stays canonical.
    pub const fn checked_add(self, offset: u64) -> Option<Self> {
        match self.0.checked_add(offset) {
            Some(v) => match GuestVirtAddr::new(v) {
                Ok(a) => Some(a),
                Err(_) => None,
            },
            None => None,
        }
    }

    /// `self - offset`, if it does not underflow and stays canonical.
    pub const fn checked_sub(self, offset: u64) -> Option<Self> {
        match self.0.checked_sub(offset) {
            Some(v) => match GuestVirtAddr::new(v) {
                Ok(a) => Some(a),
                Err(_) => None,
            },
            None => None,
        }
    }

    /// `self - other` when `other <= self`.
    pub const fn checked_offset_from(self, other: GuestVirtAddr) -> Option<u64> {
        self.0.checked_sub(other.0)
    }

    /// Offset inside its 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & PAGE_MASK
    }

    /// The start of its 4 KiB page (still canonical: the high bits are kept).
    pub const fn page_base(self) -> Self {
        GuestVirtAddr(self.0 & !PAGE_MASK)
    }

    pub const fn is_aligned(self, align: u64) -> bool {
        align != 0 && self.0.is_multiple_of(align)
    }
}

impl fmt::Debug for GuestVirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestVirtAddr({:#x})", self.0)
    }
}

impl fmt::Display for GuestVirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "virt {:#x}", self.0)
    }
}

impl TryFrom<u64> for GuestVirtAddr {
    type Error = NonCanonical;
    fn try_from(value: u64) -> Result<Self, NonCanonical> {
        GuestVirtAddr::new(value)
    }
}

/// Bits `63..bits-1` all equal (sign extension of bit `bits - 1`).
const fn is_canonical(value: u64, bits: u32) -> bool {
    if bits == 0 || bits >= 64 {
        return true;
    }
    let shift = 64 - bits;
    (((value << shift) as i64) >> shift) as u64 == value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert!(GuestVirtAddr::new(0).is_ok());
        assert!(GuestVirtAddr::new(0x0000_7fff_ffff_ffff).is_ok());
        assert!(GuestVirtAddr::new(0xffff_8000_0000_0000).is_ok());
        assert!(GuestVirtAddr::new(0xffff_ffff_8100_0000).is_ok());
        // 5-level canonical but not 4-level canonical.
        let la57 = GuestVirtAddr::new(0xff29_0000_0000_0000).expect("la57 canonical");
        assert!(!la57.is_canonical_for(48));
        assert!(la57.is_canonical_for(57));
        // LIST_POISON1 and friends are never canonical.
        assert_eq!(
            GuestVirtAddr::new(0xdead_0000_0000_0100),
            Err(NonCanonical(0xdead_0000_0000_0100))
        );
        assert!(GuestVirtAddr::new(0x0100_0000_0000_0000).is_err());
    }

    #[test]
    fn arithmetic_is_checked() {
        let top = GuestVirtAddr::new(u64::MAX).expect("canonical");
        assert_eq!(top.checked_add(1), None);
        let low_half_end = GuestVirtAddr::new(0x00ff_ffff_ffff_ffff).expect("canonical");
        assert_eq!(low_half_end.checked_add(1), None, "crossing into the hole");
        assert_eq!(GuestPhysAddr(u64::MAX).checked_add(1), None);
        assert_eq!(GuestPhysAddr(0x1234).page_offset(), 0x234);
        assert_eq!(GuestPhysAddr(0x1234).page_base(), GuestPhysAddr(0x1000));
        let va = GuestVirtAddr::new(0xffff_ffff_8100_0fff).expect("canonical");
        assert_eq!(va.page_offset(), 0xfff);
        assert_eq!(va.page_base().value(), 0xffff_ffff_8100_0000);
        assert_eq!(
            va.checked_sub(0xfff).map(|a| a.value()),
            Some(0xffff_ffff_8100_0000)
        );
        assert_eq!(GuestVirtAddr::new(0).expect("zero").checked_sub(1), None);
    }
}
