//! Decisions about physical memory: where the heap goes and which 2 MiB pages
//! are RAM (cached) rather than device memory (uncached).

use crate::boot_info::{MemoryKind, MemoryRegion};

/// Heap and page granularity.
pub const PAGE_SIZE: u64 = 4096;

/// The largest piece of RAM inside `[floor, ceiling)` that overlaps none of
/// the `occupied` ranges (each `(start, end)`), page-aligned inwards.
/// Returns `(start, end)`, or `None` if no page is free.
pub fn choose_heap_region(
    memory: &[MemoryRegion],
    occupied: &[(u64, u64)],
    floor: u64,
    ceiling: u64,
) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    for r in memory.iter().filter(|r| r.kind == MemoryKind::Ram) {
        let (s, e) = (r.start.max(floor), r.end().min(ceiling));
        if s >= e {
            continue;
        }
        // Candidate starts: the region start and the end of every occupied
        // range inside it. Each free piece starts at one of them.
        let starts = core::iter::once(s).chain(
            occupied
                .iter()
                .map(|&(_, oe)| oe)
                .filter(|&oe| oe > s && oe < e),
        );
        for c in starts {
            if occupied.iter().any(|&(os, oe)| os <= c && c < oe) {
                continue;
            }
            let end = occupied
                .iter()
                .map(|&(os, _)| os)
                .filter(|&os| os > c)
                .fold(e, u64::min);
            let piece = (align_up(c), end & !(PAGE_SIZE - 1));
            if piece.0 < piece.1 && best.is_none_or(|b| piece.1 - piece.0 > b.1 - b.0) {
                best = Some(piece);
            }
        }
    }
    best
}

fn align_up(x: u64) -> u64 {
    x.checked_add(PAGE_SIZE - 1)
        .map_or(!(PAGE_SIZE - 1), |v| v & !(PAGE_SIZE - 1))
}

/// Whether the page `[start, start + len)` holds any RAM (or ACPI memory) and
/// may therefore be mapped write-back; everything else is device memory.
pub fn is_ram_page(memory: &[MemoryRegion], start: u64, len: u64) -> bool {
    let end = start.saturating_add(len);
    memory.iter().any(|r| {
        matches!(
            r.kind,
            MemoryKind::Ram | MemoryKind::AcpiReclaimable | MemoryKind::AcpiNvs
        ) && r.start < end
            && start < r.end()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ram(start: u64, len: u64) -> MemoryRegion {
        MemoryRegion {
            start,
            len,
            kind: MemoryKind::Ram,
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn picks_largest_gap_above_kernel_avoiding_modules() {
        let mem = [
            ram(0, 0x9fc00),
            MemoryRegion {
                start: 0xf0000,
                len: 0x10000,
                kind: MemoryKind::Reserved,
            },
            ram(MIB, 127 * MIB),
        ];
        // Kernel up to 3 MiB, an initrd at 100..110 MiB.
        let occupied = [(100 * MIB, 110 * MIB + 5)];
        let h = choose_heap_region(&mem, &occupied, 3 * MIB, 4 << 30).unwrap();
        assert_eq!(h, (3 * MIB, 100 * MIB));
        // A second module splits it again.
        let occupied = [(100 * MIB, 110 * MIB + 5), (10 * MIB, 60 * MIB)];
        let h = choose_heap_region(&mem, &occupied, 3 * MIB, 4 << 30).unwrap();
        assert_eq!(h, (60 * MIB, 100 * MIB));
    }

    #[test]
    fn no_ram_no_heap() {
        assert_eq!(choose_heap_region(&[], &[], 0, u64::MAX), None);
        assert_eq!(
            choose_heap_region(&[ram(0, MIB)], &[(0, MIB)], 0, u64::MAX),
            None
        );
    }

    #[test]
    fn ram_page_classification() {
        let mem = [ram(0, 128 * MIB)];
        assert!(is_ram_page(&mem, 126 * MIB, 2 * MIB));
        assert!(!is_ram_page(&mem, 128 * MIB, 2 * MIB));
        assert!(!is_ram_page(&mem, 0xfec0_0000, 2 * MIB));
    }

    proptest! {
        #[test]
        fn heap_is_free_ram_and_aligned(
            regions in proptest::collection::vec((0u64..1 << 32, 0u64..1 << 30), 0..6),
            occupied in proptest::collection::vec((0u64..1 << 32, 0u64..1 << 28), 0..6),
            floor in 0u64..1 << 31,
        ) {
            let mem: Vec<_> = regions.iter().map(|&(s, l)| ram(s, l)).collect();
            let occ: Vec<_> = occupied.iter().map(|&(s, l)| (s, s + l)).collect();
            if let Some((s, e)) = choose_heap_region(&mem, &occ, floor, 1 << 32) {
                prop_assert!(s < e && s % PAGE_SIZE == 0 && e % PAGE_SIZE == 0);
                prop_assert!(s >= floor && e <= 1 << 32);
                prop_assert!(mem.iter().any(|r| r.start <= s && e <= r.end()));
                prop_assert!(occ.iter().all(|&(os, oe)| oe <= s || e <= os));
            }
        }
    }
}
