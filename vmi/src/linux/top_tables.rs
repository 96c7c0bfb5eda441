//! Whether every process's top-level page table shares the kernel's
//! mappings.
//!
//! The text checks walk the kernel's own top-level table, `init_top_pgt`
//! ([`super::mapping`]). The CPU, though, runs with the current process's
//! table (`mm->pgd`, loaded into CR3 as `__pa(pgd)`). Linux copies the
//! kernel half of `init_top_pgt` into every new table (`pgd_ctor`: slots
//! from `pgd_index(PAGE_OFFSET)` up), and with page-table isolation (PTI)
//! it also copies that half of `init_top_pgt`'s user copy (the second 4 KiB
//! of the 8 KiB table) into the new table's user copy. Those slots point at
//! shared lower tables and never change after boot: the kernel preallocates
//! the vmalloc area's, and the rest are fixed at boot. A rootkit that points
//! one slot of a process's table at its own tables runs other kernel code
//! (or sees other kernel data) in that process only, while every check of
//! `init_top_pgt` passes. [`check_task_table`] compares each process's table with
//! [`SharedEntries`], a snapshot of `init_top_pgt`'s slots taken at
//! start-up; [`SharedEntries::check_init`] compares `init_top_pgt` itself.
//!
//! The one per-process slot of the kernel half, the LDT remap (`modify_ldt`),
//! is skipped. Limits: a change undone between two rounds is not seen, and
//! a memory hot-plug (which extends the direct map in every table) would be
//! reported.

use alloc::vec::Vec;
use core::fmt;

use crate::addr::{GuestPhysAddr, GuestVirtAddr};
use crate::memory::{GuestMemory, MemoryError};
use crate::paging::{PagingMode, VirtualMemory};

use super::structs::read_pointer;

/// Entries of a top-level table.
pub const SLOTS: usize = 512;
const TABLE_BYTES: usize = SLOTS * 8;
/// The user copy of a PTI table is its second 4 KiB page
/// (`kernel_to_user_pgdp` sets this bit of the table's address).
const USER_COPY_BIT: u64 = 0x1000;
/// The LDT remap slot (`LDT_PGD_ENTRY`: -240 with 4-level, -112 with
/// 5-level paging), as an index.
const LDT_SLOT_L4: usize = SLOTS - 240;
const LDT_SLOT_L5: usize = SLOTS - 112;

/// Which slots of a top-level table are the kernel's shared ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelHalf {
    /// `pgd_index(page_offset_base)`: the first slot `pgd_ctor` copies.
    pub first: usize,
    /// The LDT remap slot: per process, never compared.
    pub ldt: usize,
}

impl KernelHalf {
    /// The kernel half for a kernel whose direct map starts at
    /// `page_offset_base` (read from the guest; KASLR moves it). `None`
    /// when that is no kernel-half address for `mode`.
    pub fn new(page_offset_base: u64, mode: PagingMode) -> Option<Self> {
        let ldt = match mode {
            PagingMode::FourLevel => LDT_SLOT_L4,
            PagingMode::FiveLevel => LDT_SLOT_L5,
        };
        let va = GuestVirtAddr::new(page_offset_base).ok()?;
        if !va.is_canonical_for(mode.va_bits()) || page_offset_base >> 63 == 0 {
            return None;
        }
        let first = mode.top_slot(page_offset_base);
        Some(KernelHalf { first, ldt })
    }

    /// Whether slot `index` must equal `init_top_pgt`'s.
    pub fn shared(&self, index: usize) -> bool {
        index >= self.first && index < SLOTS && index != self.ldt
    }
}

/// Which half of a PTI table a slot is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableCopy {
    /// The table the kernel runs on.
    Kernel,
    /// The PTI user copy (user mode's CR3).
    User,
}

/// A top-level table not sharing the kernel's slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopTableFinding {
    /// Shared slot `index` of `copy` holds `value`, not the snapshot's.
    Changed {
        copy: TableCopy,
        index: u16,
        value: u64,
    },
    /// The table's address is not a 4 KiB-aligned direct-map address (8 KiB
    /// with PTI: the user copy would not be where the CPU looks).
    BadAddress { pgd: u64 },
    /// The table (or `mm->pgd`) could not be read.
    Unreadable,
}

impl fmt::Display for TopTableFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopTableFinding::Changed {
                copy: TableCopy::Kernel,
                index,
                value,
            } => write!(f, "pgd[{index}]:{value:#x}"),
            TopTableFinding::Changed {
                copy: TableCopy::User,
                index,
                value,
            } => write!(f, "pgd-user[{index}]:{value:#x}"),
            TopTableFinding::BadAddress { pgd } => write!(f, "pgd@{pgd:#x}"),
            TopTableFinding::Unreadable => write!(f, "pgd:unreadable"),
        }
    }
}

/// `init_top_pgt`'s shared slots, as taken once the kernel is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedEntries {
    half: KernelHalf,
    init: GuestPhysAddr,
    /// The whole table (only the shared slots are compared).
    kernel: Vec<u8>,
    /// The user copy's, when page-table isolation is on.
    user: Option<Vec<u8>>,
}

impl SharedEntries {
    /// Reads `init_top_pgt` at `init`. `user_copy` says the kernel was built
    /// with PTI (its tables are 8 KiB); PTI is then taken as on when the
    /// user copy shares any kernel slot (PTI maps the entry code and the
    /// CPU entry area there at boot), and off otherwise (the user copies
    /// stay zero and the CPU never loads them).
    pub fn snapshot<M: GuestMemory + ?Sized>(
        mem: &M,
        init: GuestPhysAddr,
        half: KernelHalf,
        user_copy: bool,
    ) -> Result<Self, MemoryError> {
        let mut kernel = alloc::vec![0u8; TABLE_BYTES];
        mem.read(init, &mut kernel)?;
        let user = if user_copy {
            let at = GuestPhysAddr(init.0 | USER_COPY_BIT);
            let mut user = alloc::vec![0u8; TABLE_BYTES];
            mem.read(at, &mut user)?;
            let on = (0..SLOTS).any(|i| half.shared(i) && entry(&user, i) != 0);
            on.then_some(user)
        } else {
            None
        };
        Ok(SharedEntries {
            half,
            init,
            kernel,
            user,
        })
    }

    /// Whether PTI user copies are compared.
    pub fn pti(&self) -> bool {
        self.user.is_some()
    }

    pub fn half(&self) -> KernelHalf {
        self.half
    }

    /// `init_top_pgt` itself against the snapshot: its shared slots never
    /// change after boot either. At most `max` findings.
    pub fn check_init<M: GuestMemory + ?Sized>(&self, mem: &M, max: usize) -> Vec<TopTableFinding> {
        self.compare(mem, self.init, max)
    }

    /// Compares the table at `table` (and its user copy) with the snapshot.
    fn compare<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        table: GuestPhysAddr,
        max: usize,
    ) -> Vec<TopTableFinding> {
        let mut out = Vec::new();
        let user = GuestPhysAddr(table.0 | USER_COPY_BIT);
        let copies = [
            (TableCopy::Kernel, table, Some(&self.kernel)),
            (TableCopy::User, user, self.user.as_ref()),
        ];
        for (copy, at, expected) in copies {
            let Some(expected) = expected else { continue };
            match self.differing(mem, at, expected) {
                Ok(None) => {}
                Ok(Some(found)) => {
                    for index in (0..SLOTS).filter(|&i| self.half.shared(i)) {
                        let value = entry(&found, index);
                        if value != entry(expected, index) && out.len() < max {
                            out.push(TopTableFinding::Changed {
                                copy,
                                index: index as u16,
                                value,
                            });
                        }
                    }
                }
                Err(_) => {
                    if out.len() < max {
                        out.push(TopTableFinding::Unreadable);
                    }
                }
            }
        }
        out
    }

    /// `None` if the shared slots at `at` are `expected`'s (compared in
    /// place, around the LDT slot), else the whole table as read.
    fn differing<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        at: GuestPhysAddr,
        expected: &[u8],
    ) -> Result<Option<Vec<u8>>, MemoryError> {
        let first = self.half.first.min(SLOTS);
        let ldt = self.half.ldt;
        let ranges = if (first..SLOTS).contains(&ldt) {
            [first..ldt, ldt + 1..SLOTS]
        } else {
            [first..SLOTS, SLOTS..SLOTS]
        };
        let mut same = true;
        for r in ranges {
            if r.is_empty() {
                continue;
            }
            let bytes = expected.get(r.start * 8..r.end * 8).unwrap_or(&[]);
            let from = at
                .checked_add(r.start as u64 * 8)
                .ok_or(MemoryError::OutOfRange {
                    at,
                    len: TABLE_BYTES as u64,
                })?;
            if !mem.equals(from, bytes)? {
                same = false;
                break;
            }
        }
        if same {
            return Ok(None);
        }
        let mut found = alloc::vec![0u8; TABLE_BYTES];
        mem.read(at, &mut found)?;
        Ok(Some(found))
    }
}

/// Slot `index` of a table's bytes.
fn entry(table: &[u8], index: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(bytes) = table.get(index * 8..index * 8 + 8) {
        word.copy_from_slice(bytes);
    }
    u64::from_le_bytes(word)
}

/// The physical address the kernel loads into CR3 for the table at `pgd`
/// (`__pa`: a page-allocator table lives in the direct map), if it is one.
pub fn table_phys(pgd: u64, page_offset_base: u64, pti: bool) -> Option<GuestPhysAddr> {
    let phys = pgd.checked_sub(page_offset_base)?;
    let align = if pti { 2 * 0x1000 } else { 0x1000 };
    (pgd >> 63 == 1 && phys.is_multiple_of(align)).then_some(GuestPhysAddr(phys))
}

/// Where the check finds a task's table: the offsets of `task_struct.mm`
/// and `mm_struct.pgd`, and the runtime direct-map base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOffsets {
    pub task_mm: u64,
    pub mm_pgd: u64,
    pub page_offset_base: u64,
}

/// Checks the top-level table of `task`'s address space `mm` (as read by
/// the task walk) against `shared`. `space` reads kernel memory (the
/// kernel's address space), `mem` the tables. At most `max` findings.
///
/// A task exiting under the check frees its table, whose page may hold
/// anything by the time it is compared; findings therefore count only if,
/// after the compare, the task still has `mm` and `mm` the same `pgd`
/// (`exit_mm` clears `task->mm` before the table can be freed, and `exec`
/// replaces it).
pub fn check_task_table<V: VirtualMemory + ?Sized, M: GuestMemory + ?Sized>(
    space: &V,
    mem: &M,
    shared: &SharedEntries,
    offsets: &TableOffsets,
    task: GuestVirtAddr,
    mm: GuestVirtAddr,
    max: usize,
) -> Vec<TopTableFinding> {
    if max == 0 {
        return Vec::new();
    }
    let pgd = read_pointer(space, mm, offsets.mm_pgd);
    let found = match pgd {
        Ok(Some(pgd)) => match table_phys(pgd.value(), offsets.page_offset_base, shared.pti()) {
            Some(table) => shared.compare(mem, table, max),
            None => alloc::vec![TopTableFinding::BadAddress { pgd: pgd.value() }],
        },
        Ok(None) => alloc::vec![TopTableFinding::BadAddress { pgd: 0 }],
        Err(_) => alloc::vec![TopTableFinding::Unreadable],
    };
    if found.is_empty() {
        return found;
    }
    let still_mm = read_pointer(space, task, offsets.task_mm) == Ok(Some(mm));
    if still_mm && read_pointer(space, mm, offsets.mm_pgd) == pgd {
        found
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
