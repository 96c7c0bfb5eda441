//! The top-level table check on crafted RAM: tables that share the kernel's
//! slots pass (whatever their user half and LDT slot hold); a changed shared
//! slot, in the table or its PTI user copy, a table at a bad address and an
//! unreadable one are reported; a reference model agrees on random tables.

use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::memory::SliceMemory;
use crate::paging::WalkError;

const BASE: u64 = 0xffff_8880_0000_0000;
/// `init_top_pgt` (8 KiB: its user copy follows).
const INIT: u64 = 0x2000;
/// Two processes' tables (8 KiB each).
const TABLE_A: u64 = 0x4000;
const TABLE_B: u64 = 0x6000;
/// Where the `mm_struct`s are, and where their `pgd` is.
const MM_A: u64 = 0x100;
const MM_B: u64 = 0x200;
const MM_PGD: u64 = 0x48;
/// The processes' `task_struct`s, and where their `mm` is.
const TASK_A: u64 = 0x300;
const TASK_B: u64 = 0x400;
const TASK_MM: u64 = 0x20;
const OFFSETS: TableOffsets = TableOffsets {
    task_mm: TASK_MM,
    mm_pgd: MM_PGD,
    page_offset_base: BASE,
};
const RAM: usize = 0x10000;
/// Slots the kernel uses on a 4-level node: direct map, vmalloc, vmemmap,
/// CPU entry area, ESPFIX, the image.
const USED: [usize; 6] = [273, 300, 468, 508, 510, 511];

/// Reads the direct map the way the kernel's address space would.
struct DirectMap<'a>(SliceMemory<'a>);

impl VirtualMemory for DirectMap<'_> {
    fn read_virt(&self, va: GuestVirtAddr, buf: &mut [u8]) -> Result<(), WalkError> {
        let phys = va.value().wrapping_sub(BASE);
        self.0
            .read(GuestPhysAddr(phys), buf)
            .map_err(|_| WalkError::NotPresent { va, level: 1 })
    }
}

/// A changed slot finding.
fn changed(copy: TableCopy, index: u16, value: u64) -> TopTableFinding {
    TopTableFinding::Changed { copy, index, value }
}

fn half() -> KernelHalf {
    KernelHalf::new(BASE, PagingMode::FourLevel).expect("kernel half")
}

fn put(ram: &mut [u8], at: u64, value: u64) {
    let at = at as usize;
    ram[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn slot(table: u64, index: usize) -> u64 {
    table + index as u64 * 8
}

/// RAM with `init_top_pgt` and two processes sharing its slots; with
/// `pti`, the user copies share the CPU entry area and the entry text.
fn ram(pti: bool) -> Vec<u8> {
    let mut ram = alloc::vec![0u8; RAM];
    for (n, &i) in USED.iter().enumerate() {
        let value = 0x10_0000 + (n as u64) * 0x1000 + 0x63;
        for table in [INIT, TABLE_A, TABLE_B] {
            put(&mut ram, slot(table, i), value);
        }
    }
    if pti {
        for (i, value) in [(508, 0x20_0067), (511, 0x21_0067)] {
            for table in [INIT, TABLE_A, TABLE_B] {
                put(&mut ram, slot(table | USER_COPY_BIT, i), value);
            }
        }
    }
    // Each process has its own user half and an LDT.
    put(&mut ram, slot(TABLE_A, 0), 0x30_0067);
    put(&mut ram, slot(TABLE_B, 255), 0x31_0067);
    put(&mut ram, slot(TABLE_A, LDT_SLOT_L4), 0x32_0067);
    put(&mut ram, slot(TABLE_A | USER_COPY_BIT, 0), 0x33_0067);
    put(&mut ram, MM_A + MM_PGD, BASE + TABLE_A);
    put(&mut ram, MM_B + MM_PGD, BASE + TABLE_B);
    put(&mut ram, TASK_A + TASK_MM, BASE + MM_A);
    put(&mut ram, TASK_B + TASK_MM, BASE + MM_B);
    ram
}

fn mm(phys: u64) -> GuestVirtAddr {
    GuestVirtAddr::new(BASE + phys).expect("canonical")
}

/// Checks the process whose `mm_struct` is at `mm_at` as its task walk
/// saw it.
fn check(ram: &[u8], shared: &SharedEntries, mm_at: u64) -> Vec<TopTableFinding> {
    let task = if mm_at == MM_B { TASK_B } else { TASK_A };
    check_task(ram, shared, task, mm_at, 64)
}

fn check_task(
    ram: &[u8],
    shared: &SharedEntries,
    task: u64,
    mm_at: u64,
    max: usize,
) -> Vec<TopTableFinding> {
    let mem = SliceMemory::flat(ram);
    let space = DirectMap(SliceMemory::flat(ram));
    check_task_table(&space, &mem, shared, &OFFSETS, mm(task), mm(mm_at), max)
}

fn snapshot(ram: &[u8], user_copy: bool) -> SharedEntries {
    snapshot_with(ram, half(), user_copy)
}

fn snapshot_with(ram: &[u8], half: KernelHalf, user_copy: bool) -> SharedEntries {
    let mem = SliceMemory::flat(ram);
    SharedEntries::snapshot(&mem, GuestPhysAddr(INIT), half, user_copy).expect("snapshot")
}

#[test]
fn the_kernel_half_starts_at_the_direct_map_and_skips_the_ldt_slot() {
    assert_eq!(
        half(),
        KernelHalf {
            first: 273,
            ldt: 272
        }
    );
    // KASLR moves the direct map up.
    let moved = KernelHalf::new(0xffff_9a00_0000_0000, PagingMode::FourLevel).expect("half");
    assert_eq!(moved.first, 308);
    let five = KernelHalf::new(0xff11_0000_0000_0000, PagingMode::FiveLevel).expect("half");
    assert_eq!(
        five,
        KernelHalf {
            first: 273,
            ldt: 400
        }
    );
    assert!(five.shared(399) && !five.shared(400) && five.shared(401));
    // A user address or a non-canonical one is no direct-map base.
    assert_eq!(
        KernelHalf::new(0x7fff_0000_0000, PagingMode::FourLevel),
        None
    );
    assert_eq!(
        KernelHalf::new(0xff11_0000_0000_0000, PagingMode::FourLevel),
        None
    );
}

#[test]
fn tables_sharing_the_kernel_slots_pass_whatever_their_own_slots_hold() {
    for pti in [false, true] {
        let ram = ram(pti);
        let shared = snapshot(&ram, true);
        assert_eq!(shared.pti(), pti);
        assert_eq!(shared.check_init(&SliceMemory::flat(&ram), 64), Vec::new());
        for at in [MM_A, MM_B] {
            assert_eq!(check(&ram, &shared, at), Vec::new(), "pti {pti}");
        }
    }
}

#[test]
fn a_changed_shared_slot_is_reported_with_its_index_and_value() {
    let mut ram = ram(false);
    let shared = snapshot(&ram, true);
    // The image's slot pointed at the rootkit's tables.
    put(&mut ram, slot(TABLE_B, 511), 0x40_0063);
    // A slot the kernel does not use, filled.
    put(&mut ram, slot(TABLE_B, 400), 0x2);
    assert_eq!(check(&ram, &shared, MM_A), Vec::new());
    assert_eq!(
        check(&ram, &shared, MM_B),
        alloc::vec![
            changed(TableCopy::Kernel, 400, 0x2),
            changed(TableCopy::Kernel, 511, 0x40_0063),
        ]
    );
    // A cleared slot too.
    let mut ram = self::ram(false);
    put(&mut ram, slot(TABLE_A, 273), 0);
    let found = check(&ram, &shared, MM_A);
    assert_eq!(found, alloc::vec![changed(TableCopy::Kernel, 273, 0)]);
    assert_eq!(found[0].to_string(), "pgd[273]:0x0");
}

#[test]
fn with_pti_the_user_copy_is_compared_and_must_follow_its_table() {
    let mut ram = ram(true);
    let shared = snapshot(&ram, true);
    put(&mut ram, slot(TABLE_A | USER_COPY_BIT, 511), 0x41_0067);
    let found = check(&ram, &shared, MM_A);
    assert_eq!(found, alloc::vec![changed(TableCopy::User, 511, 0x41_0067)]);
    assert_eq!(found[0].to_string(), "pgd-user[511]:0x410067");
    // A table at an odd 4 KiB page: its user copy is itself, which maps
    // the whole kernel to user mode.
    put(&mut ram, MM_B + MM_PGD, BASE + TABLE_B + 0x1000);
    assert_eq!(
        check(&ram, &shared, MM_B),
        alloc::vec![TopTableFinding::BadAddress {
            pgd: BASE + TABLE_B + 0x1000
        }]
    );
}

#[test]
fn without_pti_the_unused_user_copies_are_not_judged() {
    let mut ram = ram(false);
    // PTI built in but off: the user copies stay zero and are never loaded.
    let shared = snapshot(&ram, true);
    assert!(!shared.pti());
    put(&mut ram, slot(TABLE_A | USER_COPY_BIT, 511), 0x41_0067);
    assert_eq!(check(&ram, &shared, MM_A), Vec::new());
    // A 4 KiB table is fine then.
    put(&mut ram, MM_B + MM_PGD, BASE + TABLE_A + 0x1000);
    put(&mut ram, slot(TABLE_A + 0x1000, 511), 0x10_5063);
    let found = check(&ram, &shared, MM_B);
    assert!(
        found.iter().all(|f| matches!(
            f,
            TopTableFinding::Changed {
                copy: TableCopy::Kernel,
                ..
            }
        )),
        "{found:?}"
    );
    assert!(!found.is_empty());
}

#[test]
fn bad_and_unreadable_tables_are_findings() {
    let ram0 = ram(false);
    let shared = snapshot(&ram0, true);
    let cases: [(u64, TopTableFinding); 4] = [
        // NULL.
        (0, TopTableFinding::BadAddress { pgd: 0 }),
        // Below the direct map.
        (
            0xffff_8000_0000_0000,
            TopTableFinding::BadAddress {
                pgd: 0xffff_8000_0000_0000,
            },
        ),
        // Not page-aligned.
        (
            BASE + TABLE_A + 8,
            TopTableFinding::BadAddress {
                pgd: BASE + TABLE_A + 8,
            },
        ),
        // Outside guest RAM.
        (BASE + 0x100_0000, TopTableFinding::Unreadable),
    ];
    for (pgd, want) in cases {
        let mut ram = ram0.clone();
        put(&mut ram, MM_A + MM_PGD, pgd);
        assert_eq!(
            check(&ram, &shared, MM_A),
            alloc::vec![want],
            "pgd {pgd:#x}"
        );
    }
    // An mm that does not read, and a non-canonical pgd.
    let mut ram = ram0.clone();
    put(&mut ram, TASK_A + TASK_MM, BASE + 0x20_0000);
    assert_eq!(
        check_task(&ram, &shared, TASK_A, 0x20_0000, 64),
        alloc::vec![TopTableFinding::Unreadable]
    );
    let mut ram = ram0.clone();
    put(&mut ram, MM_A + MM_PGD, 0x8000_0000_0000_0000);
    assert_eq!(
        check(&ram, &shared, MM_A),
        alloc::vec![TopTableFinding::Unreadable]
    );
}

#[test]
fn a_task_that_left_its_address_space_under_the_check_is_not_judged() {
    let mut ram = ram(false);
    let shared = snapshot(&ram, true);
    // The table as the exiting task's freed page may look.
    put(&mut ram, slot(TABLE_A, 511), 0xdead_0000);
    let changed = alloc::vec![changed(TableCopy::Kernel, 511, 0xdead_0000)];
    assert_eq!(check(&ram, &shared, MM_A), changed);
    // It exited (`exit_mm` cleared its mm) or exec'd (a new mm) since the
    // walk read it.
    for now in [0, BASE + MM_B] {
        let mut gone = ram.clone();
        put(&mut gone, TASK_A + TASK_MM, now);
        assert_eq!(check(&gone, &shared, MM_A), Vec::new(), "mm now {now:#x}");
    }
    // Its mm got another table (freed and reused).
    let mut moved = ram.clone();
    put(&mut moved, MM_A + MM_PGD, BASE + TABLE_B);
    // Another table that is fine: nothing to confirm.
    assert_eq!(check(&moved, &shared, MM_A), Vec::new());
    // Nor is a task that (now) has another mm than the walk read.
    assert_eq!(check_task(&ram, &shared, TASK_B, MM_A, 64), Vec::new());
    assert_eq!(check_task(&ram, &shared, TASK_A, MM_A, 0), Vec::new());
}

#[test]
fn init_top_pgt_itself_is_held_to_its_snapshot_and_findings_are_capped() {
    let mut ram = ram(false);
    let shared = snapshot(&ram, true);
    for i in 300..400 {
        put(&mut ram, slot(INIT, i), 0x7);
    }
    let mem = SliceMemory::flat(&ram);
    let found = shared.check_init(&mem, 5);
    assert_eq!(found.len(), 5);
    assert_eq!(found[0], changed(TableCopy::Kernel, 300, 0x7));
    // The snapshot does not read outside RAM.
    let tiny = [0u8; 0x100];
    assert!(
        SharedEntries::snapshot(&SliceMemory::flat(&tiny), GuestPhysAddr(0), half(), false)
            .is_err()
    );
}

proptest! {
    /// Against a reference model: a finding for exactly the shared slots
    /// that differ (kernel copy first, then the user copy with PTI), in
    /// order, at most `max`.
    #[test]
    fn findings_are_the_shared_slots_that_differ(
        pti in any::<bool>(),
        five_level in any::<bool>(),
        changes in proptest::collection::vec((0usize..512, any::<bool>(), any::<u64>()), 0..24),
        max in 0usize..8,
    ) {
        // 5-level paging puts the LDT slot inside the shared range.
        let half = if five_level {
            KernelHalf::new(0xff11_0000_0000_0000, PagingMode::FiveLevel).expect("half")
        } else {
            half()
        };
        let mut ram = ram(pti);
        let shared = snapshot_with(&ram, half, true);
        for &(index, user, value) in &changes {
            let table = if user { TABLE_A | USER_COPY_BIT } else { TABLE_A };
            put(&mut ram, slot(table, index), value);
        }
        let clean = self::ram(pti);
        let mut want = Vec::new();
        for (copy, table) in [(TableCopy::Kernel, TABLE_A), (TableCopy::User, TABLE_A | USER_COPY_BIT)] {
            if copy == TableCopy::User && !pti {
                continue;
            }
            for index in 0..SLOTS {
                let at = slot(table, index) as usize;
                let now = u64::from_le_bytes(ram[at..at + 8].try_into().expect("8"));
                let init_at = slot(if copy == TableCopy::User { INIT | USER_COPY_BIT } else { INIT }, index) as usize;
                let init = u64::from_le_bytes(clean[init_at..init_at + 8].try_into().expect("8"));
                if half.shared(index) && now != init && want.len() < max {
                    want.push(changed(copy, index as u16, now));
                }
            }
        }
        let got = check_task(&ram, &shared, TASK_A, MM_A, max);
        prop_assert_eq!(got, want);
    }
}
