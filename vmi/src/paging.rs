//! x86-64 page walks over guest memory (4- and 5-level paging, 2 MiB and
//! 1 GiB pages). Every table pointer is an allegation of the guest: a walk
//! reads at most one entry per level, so a table that points at itself (or at
//! any earlier table) cannot make it loop, and a table outside guest RAM is an
//! error naming the level.

use core::cell::Cell;
use core::fmt;

use crate::addr::{GuestPhysAddr, GuestVirtAddr, NonCanonical};
use crate::memory::{GuestMemory, MemoryError};

/// Physical-address bits of an entry (bits 12..=51; MAXPHYADDR is at most 52).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const PAGE_SIZE_BIT: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;

/// Paging depth of the guest (CR4.LA57). A Debian kernel picks 5 levels when
/// the CPU has la57; read `pgdir_shift` from the guest to know which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PagingMode {
    FourLevel,
    FiveLevel,
}

impl PagingMode {
    pub const fn levels(self) -> u8 {
        match self {
            PagingMode::FourLevel => 4,
            PagingMode::FiveLevel => 5,
        }
    }

    /// Significant virtual-address bits.
    pub const fn va_bits(self) -> u32 {
        match self {
            PagingMode::FourLevel => 48,
            PagingMode::FiveLevel => 57,
        }
    }

    /// The slot (of 512) of the top-level table that maps `va`: its PML4
    /// index under 4-level paging, its PML5 index under 5-level.
    pub const fn top_slot(self, va: u64) -> usize {
        ((va >> (self.va_bits() - 9)) & 0x1ff) as usize
    }
}

/// Size of the page that maps an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSize {
    Size4K,
    Size2M,
    Size1G,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }
}

/// Where a virtual address maps and with which effective rights (the AND of
/// writable/user and the OR of no-execute over all levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub phys: GuestPhysAddr,
    pub page_size: PageSize,
    pub writable: bool,
    pub user: bool,
    pub executable: bool,
}

impl Translation {
    /// Bytes from the translated address to the end of its page.
    pub const fn bytes_to_page_end(&self) -> u64 {
        self.page_size.bytes() - (self.phys.0 & (self.page_size.bytes() - 1))
    }
}

/// Why a translation or a virtual read failed. `level` counts as the
/// hardware does: 1 is the page table, 4 the PML4, 5 the PML5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// Not canonical for the paging mode (or the end of a read ran past the
    /// canonical range).
    NonCanonical(u64),
    /// The entry at `level` has its present bit clear.
    NotPresent { va: GuestVirtAddr, level: u8 },
    /// The entry at `level` sets the page-size bit where the architecture
    /// reserves it (PML4, PML5).
    ReservedBit { va: GuestVirtAddr, level: u8 },
    /// The table of `level` could not be read (outside guest RAM).
    Table {
        va: GuestVirtAddr,
        level: u8,
        table: GuestPhysAddr,
        error: MemoryError,
    },
    /// The translated data could not be read.
    Memory {
        va: GuestVirtAddr,
        error: MemoryError,
    },
}

impl From<NonCanonical> for WalkError {
    fn from(e: NonCanonical) -> Self {
        WalkError::NonCanonical(e.0)
    }
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::NonCanonical(v) => write!(f, "non-canonical virtual address {v:#x}"),
            WalkError::NotPresent { va, level } => {
                write!(f, "{va} not mapped (level {level} entry not present)")
            }
            WalkError::ReservedBit { va, level } => {
                write!(f, "{va}: reserved page-size bit in a level {level} entry")
            }
            WalkError::Table {
                va,
                level,
                table,
                error,
            } => write!(
                f,
                "{va}: level {level} table at {table} unreadable: {error}"
            ),
            WalkError::Memory { va, error } => write!(f, "{va}: {error}"),
        }
    }
}

/// Reads of guest-virtual memory. [`AddressSpace`] is the page-walking
/// implementation; list walks and the Linux layer only need this trait.
pub trait VirtualMemory {
    /// Copies `buf.len()` bytes from `va` on; all or nothing (the buffer is
    /// zeroed on failure).
    fn read_virt(&self, va: GuestVirtAddr, buf: &mut [u8]) -> Result<(), WalkError>;

    fn read_virt_u8(&self, va: GuestVirtAddr) -> Result<u8, WalkError> {
        let mut b = [0u8; 1];
        self.read_virt(va, &mut b)?;
        Ok(b[0])
    }

    fn read_virt_u16(&self, va: GuestVirtAddr) -> Result<u16, WalkError> {
        let mut b = [0u8; 2];
        self.read_virt(va, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn read_virt_u32(&self, va: GuestVirtAddr) -> Result<u32, WalkError> {
        let mut b = [0u8; 4];
        self.read_virt(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_virt_u64(&self, va: GuestVirtAddr) -> Result<u64, WalkError> {
        let mut b = [0u8; 8];
        self.read_virt(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a pointer stored at `va` and checks that it is canonical: the
    /// one way a guest pointer becomes a [`GuestVirtAddr`].
    fn read_pointer(&self, va: GuestVirtAddr) -> Result<GuestVirtAddr, WalkError> {
        Ok(GuestVirtAddr::new(self.read_virt_u64(va)?)?)
    }
}

impl<V: VirtualMemory + ?Sized> VirtualMemory for &V {
    fn read_virt(&self, va: GuestVirtAddr, buf: &mut [u8]) -> Result<(), WalkError> {
        (**self).read_virt(va, buf)
    }
}

/// One guest address space: guest memory plus the physical address of its
/// top-level table (what CR3 would hold; for the Linux kernel's own mappings
/// `init_top_pgt` serves without any CPU register).
///
/// Reads (`read_virt`, `equals_virt`) keep the last few translations they
/// walked, for as long as the value lives: the checks read many small
/// fields of structures that share pages (the kernel's direct map is large
/// pages), and each walk is up to five reads of guest memory. A check
/// builds its address space per round, so a page-table change is seen from
/// the next round on, as a walk per read would see it from its next read
/// (the guest can change its tables between any two reads either way).
/// [`AddressSpace::walk`] always walks.
#[derive(Debug)]
pub struct AddressSpace<'m, M: ?Sized> {
    memory: &'m M,
    root: GuestPhysAddr,
    mode: PagingMode,
    recent: [Cell<Recent>; RECENT_TRANSLATIONS],
    next_recent: Cell<usize>,
}

/// Translations an [`AddressSpace`] keeps for its reads.
const RECENT_TRANSLATIONS: usize = 4;

/// One kept translation: the page at `page` (virtual, `size` bytes) is at
/// `phys`. `size` 0: none.
#[derive(Clone, Copy, Debug, Default)]
struct Recent {
    page: u64,
    size: u64,
    phys: u64,
}

impl<M: ?Sized> Clone for AddressSpace<'_, M> {
    /// The same address space, without the kept translations.
    fn clone(&self) -> Self {
        AddressSpace {
            memory: self.memory,
            root: self.root,
            mode: self.mode,
            recent: Default::default(),
            next_recent: Cell::new(0),
        }
    }
}

impl<'m, M: GuestMemory + ?Sized> AddressSpace<'m, M> {
    /// `root` is a CR3-style value: flag bits (PCID, PWT, PCD) are ignored.
    pub fn new(memory: &'m M, root: GuestPhysAddr, mode: PagingMode) -> Self {
        AddressSpace {
            memory,
            root: GuestPhysAddr(root.0 & ADDR_MASK),
            mode,
            recent: Default::default(),
            next_recent: Cell::new(0),
        }
    }

    pub fn root(&self) -> GuestPhysAddr {
        self.root
    }

    pub fn mode(&self) -> PagingMode {
        self.mode
    }

    pub fn memory(&self) -> &'m M {
        self.memory
    }

    /// The guest-physical address `va` maps to.
    /// The physical address of `va` and the bytes from it to its page's
    /// end, from a kept translation if one covers it, else walked (and
    /// kept).
    fn translate_for_read(&self, va: GuestVirtAddr) -> Result<(GuestPhysAddr, u64), WalkError> {
        let v = va.value();
        for slot in &self.recent {
            let r = slot.get();
            let offset = v.wrapping_sub(r.page);
            if offset < r.size {
                return Ok((GuestPhysAddr(r.phys + offset), r.size - offset));
            }
        }
        let t = self.walk(va)?;
        let size = t.page_size.bytes();
        let offset = v & (size - 1);
        let index = self.next_recent.get() % RECENT_TRANSLATIONS;
        self.recent[index].set(Recent {
            page: v - offset,
            size,
            phys: t.phys.0 - offset,
        });
        self.next_recent.set(index + 1);
        Ok((t.phys, size - offset))
    }

    pub fn translate(&self, va: GuestVirtAddr) -> Result<GuestPhysAddr, WalkError> {
        self.walk(va).map(|t| t.phys)
    }

    /// The full translation of `va`: physical address, page size, rights.
    /// Reads exactly one entry per level, at most five.
    pub fn walk(&self, va: GuestVirtAddr) -> Result<Translation, WalkError> {
        if !va.is_canonical_for(self.mode.va_bits()) {
            return Err(WalkError::NonCanonical(va.value()));
        }
        let mut table = self.root;
        let mut writable = true;
        let mut user = true;
        let mut executable = true;
        let mut level = self.mode.levels();
        while level >= 1 {
            let shift = 12 + 9 * (u32::from(level) - 1);
            let index = (va.value() >> shift) & 0x1ff;
            // table is 4 KiB aligned (masked) and index < 512: no overflow.
            let entry_at = GuestPhysAddr(table.0 + index * 8);
            let entry = self
                .memory
                .read_u64(entry_at)
                .map_err(|error| WalkError::Table {
                    va,
                    level,
                    table,
                    error,
                })?;
            if entry & PRESENT == 0 {
                return Err(WalkError::NotPresent { va, level });
            }
            writable &= entry & WRITABLE != 0;
            user &= entry & USER != 0;
            executable &= entry & NO_EXECUTE == 0;
            let large = entry & PAGE_SIZE_BIT != 0;
            let page_size = match (level, large) {
                (1, _) => Some(PageSize::Size4K),
                (2, true) => Some(PageSize::Size2M),
                (3, true) => Some(PageSize::Size1G),
                (4 | 5, true) => return Err(WalkError::ReservedBit { va, level }),
                _ => None,
            };
            if let Some(page_size) = page_size {
                let size = page_size.bytes();
                let frame = entry & ADDR_MASK & !(size - 1);
                return Ok(Translation {
                    phys: GuestPhysAddr(frame | (va.value() & (size - 1))),
                    page_size,
                    writable,
                    user,
                    executable,
                });
            }
            table = GuestPhysAddr(entry & ADDR_MASK);
            level -= 1;
        }
        // Unreachable: level 1 always returns above. Kept as an error rather
        // than a panic.
        Err(WalkError::NotPresent { va, level: 1 })
    }
}

impl<M: GuestMemory + ?Sized> AddressSpace<'_, M> {
    /// Calls `visit` with the address and frame of every present 4 KiB
    /// page that the top-level slots `slots` (of 512) map, in address
    /// order. Large pages are passed over, as are tables that do not read
    /// (the CPU could not use them either). At most `max_tables` tables
    /// are read (a table linked twice counts twice; the walk only goes
    /// down, so a loop of tables ends); `None` if there are more.
    pub fn for_each_small_page(
        &self,
        slots: core::ops::Range<usize>,
        max_tables: usize,
        mut visit: impl FnMut(u64, GuestPhysAddr),
    ) -> Option<()> {
        let mut budget = max_tables;
        let top = self.mode.levels();
        self.visit_small_pages(self.root, top, 0, slots, &mut budget, &mut visit)
    }

    fn visit_small_pages(
        &self,
        table: GuestPhysAddr,
        level: u8,
        base: u64,
        slots: core::ops::Range<usize>,
        budget: &mut usize,
        visit: &mut impl FnMut(u64, GuestPhysAddr),
    ) -> Option<()> {
        *budget = budget.checked_sub(1)?;
        let mut entries = alloc::vec![0u8; 4096];
        if self.memory.read(table, &mut entries).is_err() {
            return Some(());
        }
        let shift = 12 + 9 * (u32::from(level) - 1);
        let bits = 64 - self.mode.va_bits();
        let (entries, _) = entries.as_chunks::<8>();
        let end = slots.end.min(entries.len());
        let entries = entries.get(slots.start.min(end)..end).unwrap_or_default();
        for (i, entry) in (slots.start..).zip(entries) {
            let entry = u64::from_le_bytes(*entry);
            if entry & PRESENT == 0 {
                continue;
            }
            // Sign-extended from the top bit the paging mode translates.
            let va = ((((base | (i as u64) << shift) << bits) as i64) >> bits) as u64;
            let next = GuestPhysAddr(entry & ADDR_MASK);
            if level == 1 {
                visit(va, next);
            } else if entry & PAGE_SIZE_BIT == 0 {
                self.visit_small_pages(next, level - 1, va, 0..512, budget, visit)?;
            }
        }
        Some(())
    }
}

impl<M: GuestMemory + ?Sized> VirtualMemory for AddressSpace<'_, M> {
    /// Translates each page the range touches (one walk per page, a large
    /// page counting as one) and reads it.
    fn read_virt(&self, va: GuestVirtAddr, buf: &mut [u8]) -> Result<(), WalkError> {
        let result = read_virt_pages(self, va, buf);
        if result.is_err() {
            buf.fill(0);
        }
        result
    }
}

impl<M: GuestMemory + ?Sized> AddressSpace<'_, M> {
    /// Whether the `expected.len()` bytes from `va` on equal `expected`,
    /// compared in place page by page (no copy; the A-VM compares the
    /// system-call table and the IDT with their last bytes every few
    /// milliseconds). An unmapped or unreadable page reached before the
    /// first difference is an error, as for [`VirtualMemory::read_virt`];
    /// the answer is never `true` for a range that cannot be read.
    pub fn equals_virt(&self, va: GuestVirtAddr, expected: &[u8]) -> Result<bool, WalkError> {
        let mut same = true;
        for_each_page(self, va, expected.len(), |here, phys, range| {
            let part = expected
                .get(range)
                .ok_or(WalkError::NonCanonical(here.value()))?;
            same = self
                .memory
                .equals(phys, part)
                .map_err(|error| WalkError::Memory { va: here, error })?;
            Ok(same)
        })?;
        Ok(same)
    }
}

fn read_virt_pages<M: GuestMemory + ?Sized>(
    space: &AddressSpace<'_, M>,
    va: GuestVirtAddr,
    buf: &mut [u8],
) -> Result<(), WalkError> {
    for_each_page(space, va, buf.len(), |here, phys, range| {
        let chunk = buf
            .get_mut(range)
            .ok_or(WalkError::NonCanonical(here.value()))?;
        space
            .memory
            .read(phys, chunk)
            .map_err(|error| WalkError::Memory { va: here, error })?;
        Ok(true)
    })
}

/// Walks the pages of `len` bytes from `va` on (one walk per page, a large
/// page counting as one) and calls `visit` with each piece's address, its
/// guest-physical address and its range in `0..len`, in order, until
/// `visit` returns `false` or an error.
fn for_each_page<M: GuestMemory + ?Sized>(
    space: &AddressSpace<'_, M>,
    va: GuestVirtAddr,
    len: usize,
    mut visit: impl FnMut(
        GuestVirtAddr,
        GuestPhysAddr,
        core::ops::Range<usize>,
    ) -> Result<bool, WalkError>,
) -> Result<(), WalkError> {
    if len == 0 {
        return Ok(());
    }
    // The last byte must be a canonical address too.
    let last = va
        .value()
        .checked_add(len as u64 - 1)
        .ok_or(WalkError::NonCanonical(u64::MAX))?;
    let last = GuestVirtAddr::new(last)?;
    if !last.is_canonical_for(space.mode.va_bits()) {
        return Err(WalkError::NonCanonical(last.value()));
    }
    let mut done = 0usize;
    while done < len {
        // Every address in [va, last] is canonical, and va + done <= last.
        let here = GuestVirtAddr::new(va.value() + done as u64)?;
        let (phys, to_page_end) = space.translate_for_read(here)?;
        let step = to_page_end.min((len - done) as u64) as usize;
        if !visit(here, phys, done..done + step)? {
            return Ok(());
        }
        done += step;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::PageTableBuilder;
    use crate::memory::SliceMemory;

    fn va(v: u64) -> GuestVirtAddr {
        GuestVirtAddr::new(v).expect("canonical test address")
    }

    #[test]
    fn reads_through_kept_translations_read_what_walks_read() {
        let mut b = PageTableBuilder::new(0x40_0000, PagingMode::FourLevel);
        // Five adjacent 4 KiB pages in scattered frames (more than the
        // translations kept), a 2 MiB page and a 1 GiB page.
        let frames = [0x9000u64, 0x5000, 0x7000, 0x6000, 0x8000];
        for (i, &frame) in frames.iter().enumerate() {
            b.map_4k(
                0xffff_8880_0000_0000 + 0x1000 * i as u64,
                frame,
                true,
                false,
            );
            b.write(frame, &[i as u8 + 1; 0x1000]);
        }
        b.map_2m(0xffff_ffff_8100_0000, 0x20_0000, false, true);
        b.write(0x20_0ff8, &[0xaa; 16]);
        b.map_1g(0xffff_8881_0000_0000, 0, true, false);
        let image = b.finish();
        let mem = SliceMemory::flat(&image);
        let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
        let byte_by_walk = |v: u64| {
            let phys = space.walk(va(v)).expect("mapped").phys;
            image[phys.0 as usize]
        };
        // Every page in turn, twice, then backwards, across page ends.
        let order: Vec<u64> = (0..5).chain(0..5).chain((0..5).rev()).collect();
        for &page in &order {
            let at = 0xffff_8880_0000_0000 + 0x1000 * page + 0xffc;
            let mut buf = [0u8; 8];
            let fits = page < 4;
            assert_eq!(space.read_virt(va(at), &mut buf).is_ok(), fits);
            if fits {
                let want: Vec<u8> = (0..8).map(|d| byte_by_walk(at + d)).collect();
                assert_eq!(buf.to_vec(), want, "page {page}");
                assert_eq!(space.equals_virt(va(at), &want), Ok(true));
            }
        }
        let mut buf = [0u8; 16];
        space
            .read_virt(va(0xffff_ffff_8100_0ff8), &mut buf)
            .expect("2m");
        assert_eq!(buf, [0xaa; 16]);
        space
            .read_virt(va(0xffff_8881_0000_5000), &mut buf)
            .expect("1g");
        assert_eq!(buf, [2; 16]);
        space
            .read_virt(va(0xffff_8880_0000_1000), &mut buf)
            .expect("4k again");
        assert_eq!(buf, [2; 16]);
        // A clone starts without the kept translations and reads the same.
        let again = space.clone();
        let mut other = [0u8; 16];
        again
            .read_virt(va(0xffff_8880_0000_1000), &mut other)
            .expect("clone");
        assert_eq!(other, buf);
    }

    #[test]
    fn four_kib_two_mib_and_one_gib_pages() {
        let mut b = PageTableBuilder::new(0x40_0000, PagingMode::FourLevel);
        b.map_4k(0xffff_8880_0000_1000, 0x5000, true, false);
        b.map_2m(0xffff_ffff_8100_0000, 0x20_0000, false, true);
        b.map_1g(0xffff_8881_0000_0000, 0x4000_0000, true, false);
        let image = b.finish();
        let mem = SliceMemory::flat(&image);
        let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
        let t = space.walk(va(0xffff_8880_0000_1234)).expect("4k");
        assert_eq!(t.phys, GuestPhysAddr(0x5234));
        assert_eq!(t.page_size, PageSize::Size4K);
        assert!(t.writable && !t.executable);
        let t = space.walk(va(0xffff_ffff_8112_3456)).expect("2m");
        assert_eq!(t.phys, GuestPhysAddr(0x32_3456));
        assert_eq!(t.page_size, PageSize::Size2M);
        assert!(!t.writable && t.executable);
        let t = space.walk(va(0xffff_8881_3fff_fff8)).expect("1g");
        assert_eq!(t.phys, GuestPhysAddr(0x7fff_fff8));
        assert_eq!(t.page_size, PageSize::Size1G);
        assert_eq!(
            space.translate(va(0xffff_8880_0000_2000)),
            Err(WalkError::NotPresent {
                va: va(0xffff_8880_0000_2000),
                level: 1
            })
        );
        assert!(matches!(
            space.translate(va(0x1000)),
            Err(WalkError::NotPresent { level: 4, .. })
        ));
    }

    #[test]
    fn five_level_walks_and_la57_addresses() {
        let mut b = PageTableBuilder::new(0x40_0000, PagingMode::FiveLevel);
        b.map_4k(0xff29_0000_0000_0000, 0x6000, true, false);
        b.map_4k(0xffff_ffff_8100_0000, 0x7000, false, true);
        let image = b.finish();
        let mem = SliceMemory::flat(&image);
        let five = AddressSpace::new(&mem, b.root(), PagingMode::FiveLevel);
        assert_eq!(
            five.translate(va(0xff29_0000_0000_0010)),
            Ok(GuestPhysAddr(0x6010))
        );
        assert_eq!(
            five.translate(va(0xffff_ffff_8100_0010)),
            Ok(GuestPhysAddr(0x7010))
        );
        // The same address under 4-level paging is not canonical.
        let four = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
        assert_eq!(
            four.translate(va(0xff29_0000_0000_0010)),
            Err(WalkError::NonCanonical(0xff29_0000_0000_0010))
        );
    }

    #[test]
    fn reads_and_compares_across_pages_through_separate_translations() {
        let mut b = PageTableBuilder::new(0x40_0000, PagingMode::FourLevel);
        // Two adjacent virtual pages on non-adjacent physical frames.
        b.map_4k(0xffff_c900_0000_0000, 0x9000, true, false);
        b.map_4k(0xffff_c900_0000_1000, 0x3000, true, false);
        let mut image = b.finish();
        image[0x9ffc..0xa000].copy_from_slice(&[1, 2, 3, 4]);
        image[0x3000..0x3004].copy_from_slice(&[5, 6, 7, 8]);
        let mem = SliceMemory::flat(&image);
        let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
        let mut buf = [0u8; 8];
        space
            .read_virt(va(0xffff_c900_0000_0ffc), &mut buf)
            .expect("cross-page read");
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8]);
        // Running into an unmapped third page fails as a whole.
        let mut buf = [0xffu8; 0x1008];
        assert!(matches!(
            space.read_virt(va(0xffff_c900_0000_0ffc), &mut buf),
            Err(WalkError::NotPresent { level: 1, .. })
        ));
        assert!(buf.iter().all(|&b| b == 0));
        // Compared in place, page by page, the same way.
        let at = va(0xffff_c900_0000_0ffc);
        assert_eq!(space.equals_virt(at, &[1, 2, 3, 4, 5, 6, 7, 8]), Ok(true));
        // A difference on either page is seen.
        assert_eq!(space.equals_virt(at, &[1, 2, 3, 9, 5, 6, 7, 8]), Ok(false));
        assert_eq!(space.equals_virt(at, &[1, 2, 3, 4, 5, 6, 7, 9]), Ok(false));
        assert_eq!(space.equals_virt(at, &[]), Ok(true));
        // A range running into an unmapped page is an error, never "equal".
        let mut long = vec![0u8; 0x1008];
        long[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(
            space.equals_virt(at, &long),
            Err(WalkError::NotPresent { level: 1, .. })
        ));
        // As for reads, the last byte must be canonical.
        assert!(matches!(
            space.equals_virt(va(0x0000_7fff_ffff_fffc), &[0; 8]),
            Err(WalkError::NonCanonical(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn small_pages_visited_are_what_walks_translate(
            pages in proptest::collection::vec((0u64..0x800, 0u64..0x40, proptest::bool::ANY), 0..24),
        ) {
            // 4 KiB pages (or 2 MiB ones) at page numbers from the vmalloc
            // start, each on a frame of its own.
            let base = 0xffff_c900_0000_0000u64;
            let mut b = PageTableBuilder::new(0x1_0000, PagingMode::FourLevel);
            for &(page, frame, large) in &pages {
                if large {
                    b.map_2m(base + (page << 21), frame << 21, true, false);
                } else {
                    b.map_4k(base + (page << 12), frame << 12, true, false);
                }
            }
            let image = b.finish();
            let visited = small_pages(&image, b.root(), PagingMode::FourLevel, 256..512, 4096)
                .expect("few tables");
            let mem = SliceMemory::flat(&image);
            let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
            // Ascending, each a 4 KiB page whose walk agrees.
            proptest::prop_assert!(visited.windows(2).all(|w| w[0].0 < w[1].0));
            for &(at, frame) in &visited {
                let t = space.walk(va(at)).expect("visited pages translate");
                proptest::prop_assert_eq!(t.page_size, PageSize::Size4K);
                proptest::prop_assert_eq!(t.phys.0, frame);
            }
            // And every 4 KiB page a walk finds is visited.
            for &(page, _, _) in &pages {
                let at = base + (page << 12);
                if let Ok(t) = space.walk(va(at)) && t.page_size == PageSize::Size4K {
                    proptest::prop_assert!(visited.iter().any(|v| v.0 == at));
                }
            }
        }

        #[test]
        fn equals_virt_agrees_with_read_virt(
            offset in 0u64..0x2000,
            len in 0usize..0x1800,
            flip in proptest::option::of(0usize..0x1800),
        ) {
            let mut b = PageTableBuilder::new(0x40_0000, PagingMode::FourLevel);
            b.map_4k(0xffff_c900_0000_0000, 0x9000, true, false);
            b.map_4k(0xffff_c900_0000_1000, 0x3000, true, false);
            b.map_4k(0xffff_c900_0000_2000, 0x5000, true, false);
            let mut image = b.finish();
            for frame in [0x9000, 0x3000, 0x5000] {
                for (i, byte) in image[frame..frame + 0x1000].iter_mut().enumerate() {
                    *byte = ((frame + i) * 7 % 251) as u8;
                }
            }
            let mem = SliceMemory::flat(&image);
            let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
            let at = va(0xffff_c900_0000_0000 + offset);
            let mut buf = vec![0u8; len];
            let read = space.read_virt(at, &mut buf);
            let flipped = flip.filter(|&i| i < len);
            if let Some(i) = flipped {
                buf[i] ^= 1;
            }
            let equal = space.equals_virt(at, &buf);
            if read.is_ok() {
                proptest::prop_assert_eq!(equal, Ok(flipped.is_none()));
            } else {
                // Unreadable: an error, or a difference found before it;
                // never equal.
                proptest::prop_assert_ne!(equal, Ok(true));
            }
        }
    }

    /// Every small page `for_each_small_page` visits through `slots`.
    fn small_pages(
        image: &[u8],
        root: GuestPhysAddr,
        mode: PagingMode,
        slots: core::ops::Range<usize>,
        max_tables: usize,
    ) -> Option<Vec<(u64, u64)>> {
        let mem = SliceMemory::flat(image);
        let space = AddressSpace::new(&mem, root, mode);
        let mut seen = Vec::new();
        space
            .for_each_small_page(slots, max_tables, |va, frame| seen.push((va, frame.0)))
            .map(|()| seen)
    }

    #[test]
    fn small_pages_are_visited_in_address_order_through_the_slots_asked() {
        let mut b = PageTableBuilder::new(0x40_0000, PagingMode::FourLevel);
        // Mapped out of order, on scattered frames; a user page, a 2 MiB
        // and a 1 GiB page (passed over).
        b.map_4k(0xffff_c900_0000_2000, 0x5000, true, false);
        b.map_4k(0xffff_c900_0000_0000, 0x9000, true, false);
        b.map_4k(0xffff_ffff_a000_0000, 0x3000, false, true);
        b.map_4k(0xffff_c900_0020_0000, 0x7000, true, false);
        b.map_4k(0x0000_7fff_0000_0000, 0x8000, true, false);
        b.map_2m(0xffff_c900_0040_0000, 0x20_0000, true, false);
        b.map_1g(0xffff_8880_0000_0000, 0, true, false);
        let image = b.finish();
        let kernel = [
            (0xffff_c900_0000_0000, 0x9000),
            (0xffff_c900_0000_2000, 0x5000),
            (0xffff_c900_0020_0000, 0x7000),
            (0xffff_ffff_a000_0000, 0x3000),
        ];
        let four = PagingMode::FourLevel;
        assert_eq!(
            small_pages(&image, b.root(), four, 256..512, 64),
            Some(kernel.to_vec())
        );
        // From the vmalloc slot on; the user half alone.
        assert_eq!(
            small_pages(&image, b.root(), four, 0x1ff..512, 64),
            Some(kernel[3..].to_vec())
        );
        assert_eq!(
            small_pages(&image, b.root(), four, 0..256, 64),
            Some(vec![(0x0000_7fff_0000_0000, 0x8000)])
        );
        // Slots past the table's end: nothing, no panic.
        assert_eq!(
            small_pages(&image, b.root(), four, 500..9000, 64),
            Some(kernel[3..].to_vec())
        );
        // Tables: the PML4; for the vmalloc pages a PDPT, a PD and two PTs;
        // for the image's a PDPT, a PD and a PT; the 1 GiB page's PDPT.
        // Fewer allowed: none.
        assert!(small_pages(&image, b.root(), four, 256..512, 9).is_some());
        assert_eq!(small_pages(&image, b.root(), four, 256..512, 8), None);
        // 5-level: the kernel half of the PML5, sign-extended from bit 56.
        let mut five = PageTableBuilder::new(0x40_0000, PagingMode::FiveLevel);
        five.map_4k(0xff29_0000_0000_0000, 0x6000, true, false);
        five.map_4k(0xffff_ffff_8100_0000, 0x7000, false, true);
        let image = five.finish();
        assert_eq!(
            small_pages(&image, five.root(), PagingMode::FiveLevel, 256..512, 64),
            Some(vec![
                (0xff29_0000_0000_0000, 0x6000),
                (0xffff_ffff_8100_0000, 0x7000)
            ])
        );
    }

    #[test]
    fn small_page_walks_end_on_loops_and_pass_over_tables_off_ram() {
        // PML4[256] points back at the PML4: each level re-reads it, down
        // to level 1, where its entries count as pages.
        let mut image = vec![0u8; 0x2000];
        let root = 0x1000u64;
        let entry = (root | PRESENT | WRITABLE).to_le_bytes();
        image[0x1800..0x1808].copy_from_slice(&entry);
        let pages = small_pages(
            &image,
            GuestPhysAddr(root),
            PagingMode::FourLevel,
            256..512,
            64,
        )
        .expect("four tables");
        assert_eq!(pages, [(0xffff_8040_2010_0000, root)]);
        // Every entry of the table pointing back: 1 + 512 + ... tables,
        // more than allowed, and said so.
        let mut full = vec![0u8; 0x2000];
        for slot in full[0x1000..0x2000].chunks_mut(8) {
            slot.copy_from_slice(&entry);
        }
        let all = small_pages(
            &full,
            GuestPhysAddr(root),
            PagingMode::FourLevel,
            256..512,
            4096,
        );
        assert_eq!(all, None);
        // A table off RAM maps nothing.
        let mut off = vec![0u8; 0x2000];
        off[0x1800..0x1808].copy_from_slice(&(0x10_0000 | PRESENT).to_le_bytes());
        assert_eq!(
            small_pages(
                &off,
                GuestPhysAddr(root),
                PagingMode::FourLevel,
                256..512,
                64
            ),
            Some(vec![])
        );
    }

    #[test]
    fn table_pointing_to_itself_is_bounded() {
        // PML4[0] points back at the PML4: every level re-reads it.
        let mut image = vec![0u8; 0x2000];
        let root = 0x1000u64;
        image[0x1000..0x1008].copy_from_slice(&(root | PRESENT | WRITABLE).to_le_bytes());
        let mem = SliceMemory::flat(&image);
        let space = AddressSpace::new(&mem, GuestPhysAddr(root), PagingMode::FourLevel);
        // Recursive mapping: va 0 maps the PML4 itself.
        assert_eq!(space.translate(va(0x10)), Ok(GuestPhysAddr(0x1010)));
        assert!(matches!(
            space.translate(va(0x1000)),
            Err(WalkError::NotPresent { level: 1, .. })
        ));
        let five = AddressSpace::new(&mem, GuestPhysAddr(root), PagingMode::FiveLevel);
        assert_eq!(five.translate(va(0x18)), Ok(GuestPhysAddr(0x1018)));
    }

    #[test]
    fn tables_outside_ram_and_reserved_bits_are_errors() {
        let mut image = vec![0u8; 0x2000];
        // PML4[0] -> a PDPT far beyond the image.
        image[0x1000..0x1008].copy_from_slice(&(0x7_0000_0000u64 | PRESENT).to_le_bytes());
        // PML4[1] has the page-size bit (reserved at this level).
        image[0x1008..0x1010].copy_from_slice(&(PRESENT | PAGE_SIZE_BIT).to_le_bytes());
        let mem = SliceMemory::flat(&image);
        let space = AddressSpace::new(&mem, GuestPhysAddr(0x1000), PagingMode::FourLevel);
        assert!(matches!(
            space.translate(va(0x10)),
            Err(WalkError::Table {
                level: 3,
                table: GuestPhysAddr(0x7_0000_0000),
                ..
            })
        ));
        assert!(matches!(
            space.translate(va(0x80_0000_0000)),
            Err(WalkError::ReservedBit { level: 4, .. })
        ));
        // A root outside RAM fails at the top level.
        let lost = AddressSpace::new(&mem, GuestPhysAddr(0x10_0000), PagingMode::FourLevel);
        assert!(matches!(
            lost.translate(va(0)),
            Err(WalkError::Table { level: 4, .. })
        ));
    }

    #[test]
    fn mapped_page_outside_ram_fails_on_read_only() {
        let mut b = PageTableBuilder::new(0x1_0000, PagingMode::FourLevel);
        b.map_4k(0xffff_8880_0000_0000, 0x8000_0000, true, false);
        let image = b.finish();
        let mem = SliceMemory::flat(&image);
        let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
        assert_eq!(
            space.translate(va(0xffff_8880_0000_0000)),
            Ok(GuestPhysAddr(0x8000_0000))
        );
        assert!(matches!(
            space.read_virt_u64(va(0xffff_8880_0000_0000)),
            Err(WalkError::Memory { .. })
        ));
    }

    #[test]
    fn reads_running_off_the_canonical_range_fail() {
        let image = vec![0u8; 0x1000];
        let mem = SliceMemory::flat(&image);
        let space = AddressSpace::new(&mem, GuestPhysAddr(0), PagingMode::FourLevel);
        let mut buf = [0u8; 16];
        assert!(matches!(
            space.read_virt(va(u64::MAX - 7), &mut buf),
            Err(WalkError::NonCanonical(_))
        ));
        assert!(matches!(
            space.read_virt(va(0x7fff_ffff_fff8), &mut buf),
            Err(WalkError::NonCanonical(_))
        ));
    }
}
