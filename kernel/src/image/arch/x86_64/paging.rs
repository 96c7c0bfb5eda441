//! Identity-mapped page tables. The entry code maps the first 4 GiB with
//! 2 MiB pages, all write-back; `init` then makes every 2 MiB page that holds
//! no RAM uncached (PCD|PWT), which covers the IOAPIC, the TPM CRB at
//! 0xFED40000, the LAPIC and the 32-bit PCI holes. `map_mmio` adds uncached
//! identity mappings above 4 GiB (64-bit PCI BARs) from a small table pool.

use avm_kernel::boot_info::MemoryRegion;
use avm_kernel::memory::is_ram_page;
use core::cell::UnsafeCell;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const LARGE_PAGE: u64 = 2 << 20;
/// Identity mappings end here (48-bit physical address space, 4 levels).
const MAX_PHYS: u64 = 1 << 47;
const BOOT_MAPPED: u64 = 4 << 30;

type Table = [u64; 512];

unsafe extern "C" {
    // Defined in the entry assembly (`.bss.boot`), 4 KiB aligned.
    static mut boot_pml4: Table;
    static mut boot_pd: [Table; 4];
}

/// Tables for `map_mmio` (each PD maps 1 GiB).
const POOL_TABLES: usize = 8;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[Table; POOL_TABLES]>);
// SAFETY: only touched by `map_mmio`, which runs on the single CPU with
// interrupts disabled (the timer handler never touches page tables).
unsafe impl Sync for Pool {}
static POOL: Pool = Pool(UnsafeCell::new([[0; 512]; POOL_TABLES]));
static POOL_USED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Why a range could not be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// The range wraps or ends above the 47-bit identity-mappable space.
    OutOfRange,
    /// The table pool is exhausted.
    NoTables,
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::OutOfRange => "out of the mappable range",
            Self::NoTables => "no page tables left",
        })
    }
}

/// Applies cache attributes to the boot identity map of the first 4 GiB from
/// the firmware memory map: RAM write-back, everything else uncached.
pub fn init(memory: &[MemoryRegion]) {
    // SAFETY: the boot page directories are live page tables; each entry is
    // rewritten to the same frame with only cache bits changed, then the TLB
    // is flushed. Single CPU, interrupts off.
    unsafe {
        let pds = &raw mut boot_pd;
        for i in 0..4 * 512 {
            let base = i as u64 * LARGE_PAGE;
            let mut entry = base | PRESENT | WRITABLE | HUGE;
            if !is_ram_page(memory, base, LARGE_PAGE) {
                entry |= CACHE_DISABLE | WRITE_THROUGH;
            }
            (*pds)[i / 512][i % 512] = entry;
        }
    }
    super::cpu::flush_tlb();
}

/// Identity-maps `[phys, phys + len)` uncached (2 MiB granularity). Ranges
/// below 4 GiB are already mapped by `init`.
pub fn map_mmio(phys: u64, len: u64) -> Result<(), MapError> {
    let end = phys.checked_add(len).ok_or(MapError::OutOfRange)?;
    if end > MAX_PHYS {
        return Err(MapError::OutOfRange);
    }
    let mut page = phys.max(BOOT_MAPPED) & !(LARGE_PAGE - 1);
    while page < end {
        // SAFETY: walks and extends the live identity map; new tables come
        // zeroed from the pool and are linked before use. Identity mapping
        // means a table's address is its physical address.
        unsafe {
            let pml4 = &raw mut boot_pml4;
            let pdpt = next_table(&mut (*pml4)[((page >> 39) & 511) as usize])?;
            let pd = next_table(&mut (*pdpt)[((page >> 30) & 511) as usize])?;
            (*pd)[((page >> 21) & 511) as usize] =
                page | PRESENT | WRITABLE | HUGE | CACHE_DISABLE | WRITE_THROUGH;
        }
        page += LARGE_PAGE;
    }
    super::cpu::flush_tlb();
    Ok(())
}

/// The table an entry points to, allocating it from the pool if absent.
///
/// # Safety
/// `entry` must be a non-leaf entry of the live identity map.
unsafe fn next_table(entry: &mut u64) -> Result<*mut Table, MapError> {
    if *entry & PRESENT != 0 {
        return Ok((*entry & ADDR_MASK) as *mut Table);
    }
    let i = POOL_USED.load(core::sync::atomic::Ordering::Relaxed);
    if i >= POOL_TABLES {
        return Err(MapError::NoTables);
    }
    POOL_USED.store(i + 1, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: slot i is unused (bump allocation) and zeroed in `.bss`.
    let table = unsafe { (POOL.0.get() as *mut Table).add(i) };
    *entry = table as u64 | PRESENT | WRITABLE;
    Ok(table)
}
