//! Whether the kernel's own page tables still map its image where the text
//! checker looks.
//!
//! The text checker ([`super::text`]) reads the kernel's text and read-only
//! data by *physical* address (`phys_text + offset`). The CPU runs them
//! through the kernel image mapping (`runtime_text + offset`), whose tables
//! (`level2_kernel_pgt` and the like) live in writable guest memory. A
//! rootkit that copies a text page, patches the copy and points the page's
//! entry at the copy runs its code while every sweep hashes the untouched
//! original. [`check_image_mapping`] closes that gap: it walks the
//! kernel's page tables (`init_top_pgt`, the [`AddressSpace`] of
//! [`KernelLocation::address_space`]) and requires every page of a range
//! of the image to map to `phys_text + offset`.
//!
//! Limits: only `init_top_pgt` is walked. Every other top-level table
//! (each process's `pgd`, the PTI user copies) holds copies of its kernel
//! entries, which [`super::top_tables`] compares with `init_top_pgt`'s;
//! a mapping that is changed and restored between two checks is not seen.

use core::fmt;
use core::ops::Range;

use crate::addr::{GuestPhysAddr, GuestVirtAddr};
use crate::kallsyms::KERNEL_TEXT_PREFIX;
use crate::memory::GuestMemory;
use crate::paging::{AddressSpace, PageSize, WalkError};

use super::kaslr::{KERNEL_IMAGE_END, KernelLocation};

/// Why a range of the kernel image is not known to be mapped where it
/// belongs. Every variant but [`MappingError::BadRange`] is a finding about
/// the guest: the CPU may run something other than what was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingError {
    /// `runtime_text + start .. runtime_text + end` is not inside the kernel
    /// image mapping (or `start > end`, or `phys_text + end` overflows): the
    /// caller's range or location is wrong, the guest is not judged.
    BadRange { start: u64, end: u64 },
    /// The page holding `va` (image offset `offset`) maps it to `found`,
    /// not `expected` (`phys_text + offset`).
    Remapped {
        offset: u64,
        va: GuestVirtAddr,
        expected: GuestPhysAddr,
        found: GuestPhysAddr,
        page_size: PageSize,
    },
    /// `va` (image offset `offset`) is not mapped: the entry at `level` is
    /// not present.
    Unmapped {
        offset: u64,
        va: GuestVirtAddr,
        level: u8,
    },
    /// The walk for image offset `offset` failed otherwise: a table outside
    /// guest RAM, a reserved bit set.
    Walk { offset: u64, error: WalkError },
}

impl MappingError {
    /// The image offset the finding is about (the start of a bad range).
    pub fn offset(&self) -> u64 {
        match *self {
            MappingError::BadRange { start, .. } => start,
            MappingError::Remapped { offset, .. }
            | MappingError::Unmapped { offset, .. }
            | MappingError::Walk { offset, .. } => offset,
        }
    }
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MappingError::BadRange { start, end } => write!(
                f,
                "image offsets {start:#x}..{end:#x} are outside the kernel image mapping"
            ),
            MappingError::Remapped {
                offset,
                va,
                expected,
                found,
                page_size,
            } => write!(
                f,
                "kernel image +{offset:#x} ({va}) maps to {found}, not {expected} ({} KiB page)",
                page_size.bytes() >> 10
            ),
            MappingError::Unmapped { offset, va, level } => write!(
                f,
                "kernel image +{offset:#x} ({va}) is not mapped (level {level} entry not present)"
            ),
            MappingError::Walk { offset, error } => {
                write!(f, "kernel image +{offset:#x}: {error}")
            }
        }
    }
}

/// Checks that `space` (the kernel's own page tables, from
/// [`KernelLocation::address_space`]) maps every byte of the image
/// offsets `offsets` (from `_text`) at `location.runtime_text + offset` to
/// `location.phys_text + offset`, where the text checker reads them.
///
/// Returns the image offset where the last page walked ends (at least
/// `offsets.end`; `offsets.start` for an empty range): every offset from
/// `offsets.start` up to it was mapped as expected when walked, since a
/// page that maps one of its addresses right maps all of them right. A
/// caller checking chunk after chunk within one pass may skip the check for
/// chunks below that offset (for 2 MiB pages, one walk per 512 chunks);
/// it is a snapshot, not a guarantee for later passes.
///
/// Cost: one page walk (one table entry read per level, at most five 8-byte
/// reads) per page the range touches, a 2 MiB or 1 GiB page counting once;
/// no allocation. Each walk moves on to the end of the page it found, so
/// there are at most as many walks as 4 KiB pages the range touches,
/// whatever the tables hold (a table pointing back at itself costs nothing
/// more: every walk reads at most one entry per level).
///
/// The first page that is not mapped as expected is the error; a caller
/// wanting every finding of a larger range resumes after its page.
pub fn check_image_mapping<M: GuestMemory + ?Sized>(
    space: &AddressSpace<'_, M>,
    location: &KernelLocation,
    offsets: Range<u64>,
) -> Result<u64, MappingError> {
    let bad = MappingError::BadRange {
        start: offsets.start,
        end: offsets.end,
    };
    if offsets.start > offsets.end {
        return Err(bad);
    }
    // The whole range lies inside the image mapping (so every address of
    // it is canonical) and its physical addresses do not overflow.
    let runtime_end = location.runtime_text.checked_add(offsets.end).ok_or(bad)?;
    if location.runtime_text < KERNEL_TEXT_PREFIX
        || runtime_end > KERNEL_IMAGE_END
        || location.phys_text.checked_add(offsets.end).is_none()
    {
        return Err(bad);
    }
    if offsets.is_empty() {
        return Ok(offsets.start);
    }
    let mut offset = offsets.start;
    loop {
        // In range by the checks above: no overflow, canonical.
        let va = GuestVirtAddr::new(location.runtime_text + offset).map_err(|_| bad)?;
        let expected = GuestPhysAddr(location.phys_text.0 + offset);
        let t = space.walk(va).map_err(|error| match error {
            WalkError::NotPresent { va, level } => MappingError::Unmapped { offset, va, level },
            error => MappingError::Walk { offset, error },
        })?;
        if t.phys != expected {
            return Err(MappingError::Remapped {
                offset,
                va,
                expected,
                found: t.phys,
                page_size: t.page_size,
            });
        }
        // At least 1; the page's end is at most 1 GiB past `offset`, far
        // from overflowing (`offset < end`, and `end` is below the image
        // mapping's 1 GiB).
        let page_end = offset.saturating_add(t.bytes_to_page_end());
        if page_end >= offsets.end {
            return Ok(page_end);
        }
        offset = page_end;
    }
}

#[cfg(test)]
mod tests;
