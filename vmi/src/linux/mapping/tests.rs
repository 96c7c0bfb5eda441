//! The image-mapping check on crafted page tables: clean 4 KiB and 2 MiB
//! mappings pass; a page pointed elsewhere, a missing page, a table loop
//! and a table outside RAM are reported with the address they concern.

use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::craft::PageTableBuilder;
use crate::memory::{CountingMemory, MemoryError, SliceMemory};
use crate::paging::PagingMode;

const LINK: u64 = 0xffff_ffff_8100_0000;
const SLIDE: u64 = 0x2e60_0000;
const RUNTIME: u64 = LINK + SLIDE;
/// Where `_text` is in RAM (2 MiB aligned, as the kernel places it). The
/// check never reads the image itself: RAM is only the tables.
const PHYS: u64 = 0x20_0000;
/// Two 2 MiB pages of image.
const LEN: u64 = 4 << 20;
/// Where the builders put their tables: the root, then one table per level
/// below it, in order (the builder allocates frame after frame).
const TABLES: u64 = 0x1000;
/// The page directory of a 4-level builder's first mapping.
const PD: u64 = TABLES + 0x2000;
const PRESENT: u64 = 1;

fn location() -> KernelLocation {
    KernelLocation {
        phys_text: GuestPhysAddr(PHYS),
        link_text: LINK,
        runtime_text: RUNTIME,
    }
}

fn va(offset: u64) -> GuestVirtAddr {
    GuestVirtAddr::new(RUNTIME + offset).expect("canonical")
}

/// The entry of the page directory for image offset `offset`.
fn pd_entry(offset: u64) -> u64 {
    PD + (((RUNTIME + offset) >> 21) & 0x1ff) * 8
}

/// Maps image offsets `from..to` with 4 KiB pages, as the kernel does.
fn map_4k(b: &mut PageTableBuilder, from: u64, to: u64) {
    let mut off = from;
    while off < to {
        b.map_4k(RUNTIME + off, PHYS + off, false, true);
        off += 0x1000;
    }
}

fn map_2m(b: &mut PageTableBuilder, from: u64, to: u64) {
    let mut off = from;
    while off < to {
        b.map_2m(RUNTIME + off, PHYS + off, false, true);
        off += 0x20_0000;
    }
}

fn builder() -> PageTableBuilder {
    PageTableBuilder::new(TABLES, PagingMode::FourLevel)
}

fn check(b: &PageTableBuilder, offsets: Range<u64>) -> Result<u64, MappingError> {
    check_in(b, PagingMode::FourLevel, offsets)
}

fn check_in(
    b: &PageTableBuilder,
    mode: PagingMode,
    offsets: Range<u64>,
) -> Result<u64, MappingError> {
    let image = b.finish();
    let mem = SliceMemory::flat(&image);
    let space = AddressSpace::new(&mem, b.root(), mode);
    check_image_mapping(&space, &location(), offsets)
}

#[test]
fn a_clean_mapping_passes_with_4k_and_2m_pages() {
    // 4 KiB pages: each chunk is one page.
    let mut small = builder();
    map_4k(&mut small, 0, LEN);
    assert_eq!(check(&small, 0..LEN), Ok(LEN));
    for chunk in [0u64, 1, 511, 512, 1023] {
        let at = chunk * 0x1000;
        assert_eq!(check(&small, at..at + 0x1000), Ok(at + 0x1000));
    }
    // A range across a page boundary needs both pages.
    assert_eq!(check(&small, 0xff0..0x1010), Ok(0x2000));
    // A short last chunk (the end of the text) ends its page.
    assert_eq!(check(&small, 0x3000..0x3064), Ok(0x4000));
    // 2 MiB pages: a chunk anywhere in one vouches for the whole page.
    let mut large = builder();
    map_2m(&mut large, 0, LEN);
    assert_eq!(check(&large, 0..LEN), Ok(LEN));
    assert_eq!(check(&large, 0x5000..0x6000), Ok(0x20_0000));
    assert_eq!(check(&large, 0x20_0000..0x20_1000), Ok(LEN));
    assert_eq!(check(&large, 0x1f_f000..0x20_1000), Ok(LEN));
    // Both sizes in one image (the kernel splits its last large page where
    // the rights change).
    let mut mixed = builder();
    map_2m(&mut mixed, 0, 0x20_0000);
    map_4k(&mut mixed, 0x20_0000, LEN);
    assert_eq!(check(&mixed, 0..LEN), Ok(LEN));
    assert_eq!(check(&mixed, 0x1000..0x2000), Ok(0x20_0000));
    assert_eq!(check(&mixed, 0x20_1000..0x20_2000), Ok(0x20_2000));
    // An empty range is checked trivially.
    assert_eq!(check(&mixed, 0x1234..0x1234), Ok(0x1234));
}

#[test]
fn five_level_tables_and_the_kernels_own_root() {
    let mut five = PageTableBuilder::new(TABLES, PagingMode::FiveLevel);
    map_2m(&mut five, 0, 0x20_0000);
    map_4k(&mut five, 0x20_0000, LEN);
    assert_eq!(check_in(&five, PagingMode::FiveLevel, 0..LEN), Ok(LEN));
    // The same tables read as 4-level ones map nothing of the image.
    assert!(matches!(
        check_in(&five, PagingMode::FourLevel, 0..LEN),
        Err(MappingError::Unmapped { offset: 0, .. } | MappingError::Walk { offset: 0, .. })
    ));
    // As the A-VM builds it: `init_top_pgt` inside the image, found from
    // the load address.
    let top = 0x30_0000;
    let mut b = PageTableBuilder::new(PHYS + top, PagingMode::FourLevel);
    map_2m(&mut b, 0, LEN);
    let image = b.finish();
    let mem = SliceMemory::flat(&image);
    let space = location()
        .address_space(&mem, LINK + top, PagingMode::FourLevel)
        .expect("root inside the image");
    assert_eq!(space.root(), b.root());
    assert_eq!(check_image_mapping(&space, &location(), 0..LEN), Ok(LEN));
}

#[test]
fn a_remapped_4k_page_is_reported_with_its_address() {
    let mut b = builder();
    map_4k(&mut b, 0, LEN);
    // The rootkit's patched copy of the page at +0x3000.
    let copy = 0x90_0000;
    b.map_4k(RUNTIME + 0x3000, copy, false, true);
    let found = Err(MappingError::Remapped {
        offset: 0x3000,
        va: va(0x3000),
        expected: GuestPhysAddr(PHYS + 0x3000),
        found: GuestPhysAddr(copy),
        page_size: PageSize::Size4K,
    });
    assert_eq!(check(&b, 0..LEN), found);
    assert_eq!(check(&b, 0x3000..0x4000), found);
    assert_eq!(check(&b, 0x2ff0..0x3010), found);
    // The chunks around it are fine.
    assert_eq!(check(&b, 0x2000..0x3000), Ok(0x3000));
    assert_eq!(check(&b, 0x4000..0x5000), Ok(0x5000));
    // Inside the page, the address asked about is named.
    assert_eq!(
        check(&b, 0x3800..0x3900),
        Err(MappingError::Remapped {
            offset: 0x3800,
            va: va(0x3800),
            expected: GuestPhysAddr(PHYS + 0x3800),
            found: GuestPhysAddr(copy + 0x800),
            page_size: PageSize::Size4K,
        })
    );
    // Two pages of the image swapped: each is somewhere in the image, but
    // not where it belongs.
    let mut swapped = builder();
    map_4k(&mut swapped, 0, LEN);
    swapped.map_4k(RUNTIME + 0x5000, PHYS + 0x6000, false, true);
    swapped.map_4k(RUNTIME + 0x6000, PHYS + 0x5000, false, true);
    assert!(matches!(
        check(&swapped, 0..LEN),
        Err(MappingError::Remapped { offset: 0x5000, found: GuestPhysAddr(f), .. })
            if f == PHYS + 0x6000
    ));
    let error = check(&swapped, 0x6000..0x7000).expect_err("swapped");
    assert_eq!(error.offset(), 0x6000);
    let text = alloc::format!("{error}");
    assert!(text.contains("+0x6000") && text.contains("0xffffffffaf606000"));
}

#[test]
fn a_remapped_2m_page_is_reported() {
    let mut b = builder();
    map_2m(&mut b, 0, LEN);
    let copy = 0x80_0000;
    b.map_2m(RUNTIME + 0x20_0000, copy, false, true);
    assert_eq!(
        check(&b, 0..LEN),
        Err(MappingError::Remapped {
            offset: 0x20_0000,
            va: va(0x20_0000),
            expected: GuestPhysAddr(PHYS + 0x20_0000),
            found: GuestPhysAddr(copy),
            page_size: PageSize::Size2M,
        })
    );
    // Every chunk of the page sees it, with its own address.
    assert_eq!(
        check(&b, 0x20_5000..0x20_6000),
        Err(MappingError::Remapped {
            offset: 0x20_5000,
            va: va(0x20_5000),
            expected: GuestPhysAddr(PHYS + 0x20_5000),
            found: GuestPhysAddr(copy + 0x5000),
            page_size: PageSize::Size2M,
        })
    );
    assert_eq!(check(&b, 0x1f_f000..0x20_0000), Ok(0x20_0000));
    // A large page over 4 KiB ones: the kernel's table replaced by one
    // entry pointing at a copy of the whole 2 MiB.
    let mut over = builder();
    map_4k(&mut over, 0, LEN);
    over.write_u64(
        pd_entry(0),
        copy | PRESENT | 1 << 7, // page-size bit
    );
    assert!(matches!(
        check(&over, 0x7000..0x8000),
        Err(MappingError::Remapped {
            offset: 0x7000,
            page_size: PageSize::Size2M,
            ..
        })
    ));
}

#[test]
fn an_unmapped_page_is_reported() {
    let mut b = builder();
    map_4k(&mut b, 0, 0x5000);
    map_4k(&mut b, 0x6000, 0x20_0000);
    assert_eq!(
        check(&b, 0..0x20_0000),
        Err(MappingError::Unmapped {
            offset: 0x5000,
            va: va(0x5000),
            level: 1
        })
    );
    assert_eq!(check(&b, 0x4000..0x5000), Ok(0x5000));
    // A missing 2 MiB entry.
    let mut large = builder();
    map_2m(&mut large, 0, 0x20_0000);
    assert_eq!(
        check(&large, 0..LEN),
        Err(MappingError::Unmapped {
            offset: 0x20_0000,
            va: va(0x20_0000),
            level: 2
        })
    );
    // No tables at all.
    let empty = builder();
    assert_eq!(
        check(&empty, 0x1000..0x2000),
        Err(MappingError::Unmapped {
            offset: 0x1000,
            va: va(0x1000),
            level: 4
        })
    );
}

#[test]
fn table_loops_and_tables_outside_ram_are_errors() {
    // The second 2 MiB's directory entry points (as a table) back at the
    // root, and at its own directory: each walk still reads one entry per
    // level, and what it finds is no mapping of the image.
    for table in [TABLES, PD] {
        let mut b = builder();
        map_2m(&mut b, 0, LEN);
        b.write_u64(pd_entry(0x20_0000), table | PRESENT);
        let error = check(&b, 0..LEN).expect_err("loop");
        assert_eq!(error.offset(), 0x20_0000, "{error:?}");
        assert!(matches!(
            error,
            MappingError::Remapped { .. } | MappingError::Unmapped { .. }
        ));
    }
    // A page-table entry mapping its own table: the page is a table, not
    // the image.
    let mut b = builder();
    map_4k(&mut b, 0, 0x20_0000);
    let pt = TABLES + 0x3000;
    b.map_4k(RUNTIME + 0x1000, pt, false, true);
    assert_eq!(
        check(&b, 0..0x20_0000),
        Err(MappingError::Remapped {
            offset: 0x1000,
            va: va(0x1000),
            expected: GuestPhysAddr(PHYS + 0x1000),
            found: GuestPhysAddr(pt),
            page_size: PageSize::Size4K,
        })
    );
    // A table far outside guest RAM.
    let mut b = builder();
    map_2m(&mut b, 0, LEN);
    let far = 0x7_0000_0000;
    b.write_u64(pd_entry(0x20_0000), far | PRESENT);
    assert!(matches!(
        check(&b, 0..LEN),
        Err(MappingError::Walk {
            offset: 0x20_0000,
            error: WalkError::Table {
                level: 1,
                table: GuestPhysAddr(t),
                error: MemoryError::OutOfRange { .. },
                ..
            },
        }) if t == far
    ));
    // A root outside guest RAM.
    let image = builder().finish();
    let mem = SliceMemory::flat(&image);
    let lost = AddressSpace::new(&mem, GuestPhysAddr(far), PagingMode::FourLevel);
    assert!(matches!(
        check_image_mapping(&lost, &location(), 0..LEN),
        Err(MappingError::Walk {
            offset: 0,
            error: WalkError::Table { level: 4, .. },
        })
    ));
    // The page-size bit where it is reserved.
    let mut b = builder();
    let pml4 = TABLES + ((RUNTIME >> 39) & 0x1ff) * 8;
    b.write_u64(pml4, PRESENT | 1 << 7);
    assert!(matches!(
        check(&b, 0..0x1000),
        Err(MappingError::Walk {
            offset: 0,
            error: WalkError::ReservedBit { level: 4, .. },
        })
    ));
}

#[test]
fn ranges_outside_the_image_mapping_are_refused_not_judged() {
    let mut b = builder();
    map_2m(&mut b, 0, LEN);
    let bad = |start, end| Err(MappingError::BadRange { start, end });
    let reversed = Range {
        start: 0x2000,
        end: 0x1000,
    };
    assert_eq!(check(&b, reversed), bad(0x2000, 0x1000));
    let room = KERNEL_IMAGE_END - RUNTIME;
    assert_eq!(check(&b, 0..room + 1), bad(0, room + 1));
    assert_eq!(check(&b, 0..u64::MAX), bad(0, u64::MAX));
    assert_eq!(check(&b, u64::MAX..u64::MAX), bad(u64::MAX, u64::MAX));
    // Up to the end of the image mapping is a range (unmapped here).
    assert!(matches!(
        check(&b, room - 0x1000..room),
        Err(MappingError::Unmapped { .. })
    ));
    // A location outside the image mapping.
    let image = b.finish();
    let mem = SliceMemory::flat(&image);
    let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
    for (runtime_text, phys_text) in [(0x1000, PHYS), (RUNTIME, u64::MAX - 0x100)] {
        let at = KernelLocation {
            phys_text: GuestPhysAddr(phys_text),
            link_text: LINK,
            runtime_text,
        };
        assert_eq!(check_image_mapping(&space, &at, 0..0x1000), bad(0, 0x1000));
    }
}

#[test]
fn a_large_page_costs_one_walk() {
    let reads = |b: &PageTableBuilder, offsets: Range<u64>| {
        let image = b.finish();
        let mem = CountingMemory::new(SliceMemory::flat(&image));
        let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
        let end = check_image_mapping(&space, &location(), offsets).expect("clean");
        (end, mem.reads())
    };
    let mut large = builder();
    map_2m(&mut large, 0, LEN);
    // A walk of a 2 MiB page reads three entries (PML4, PDPT, PD).
    assert_eq!(reads(&large, 0..LEN), (LEN, 2 * 3));
    assert_eq!(reads(&large, 0x3000..0x4000), (0x20_0000, 3));
    let mut small = builder();
    map_4k(&mut small, 0, LEN);
    assert_eq!(reads(&small, 0..LEN), (LEN, 1024 * 4));
    assert_eq!(reads(&small, 0x3000..0x4000), (0x4000, 4));
    assert_eq!(reads(&small, 0x3000..0x3000), (0x3000, 0));
}

/// What the check must answer for `offsets`, from one walk per 4 KiB step
/// (the range's start, then every 4 KiB boundary): the first step that is
/// not mapped to its place is the error's offset; with none, the end of
/// the page holding the range's last byte.
fn oracle<M: GuestMemory + ?Sized>(
    space: &AddressSpace<'_, M>,
    offsets: Range<u64>,
) -> Result<u64, u64> {
    if offsets.is_empty() {
        return Ok(offsets.start);
    }
    let mut at = offsets.start;
    while at < offsets.end {
        if space.translate(va(at)) != Ok(GuestPhysAddr(PHYS + at)) {
            return Err(at);
        }
        at = (at & !0xfff) + 0x1000;
    }
    let last = space.walk(va(offsets.end - 1)).map_err(|_| offsets.end)?;
    Ok(offsets.end - 1 + last.bytes_to_page_end())
}

fn agrees<M: GuestMemory + ?Sized>(
    space: &AddressSpace<'_, M>,
    offsets: Range<u64>,
) -> Result<(), TestCaseError> {
    let got = check_image_mapping(space, &location(), offsets.clone());
    let want = oracle(space, offsets);
    match got {
        Ok(end) => prop_assert_eq!(Ok(end), want),
        Err(e) => {
            prop_assert_eq!(Err(e.offset()), want);
            if let MappingError::Remapped {
                offset,
                va: at,
                expected,
                found,
                ..
            } = e
            {
                prop_assert_eq!(at, va(offset));
                prop_assert_eq!(expected, GuestPhysAddr(PHYS + offset));
                prop_assert_ne!(found, expected);
                prop_assert_eq!(space.translate(at), Ok(found));
            }
        }
    }
    Ok(())
}

/// How one 2 MiB slot of the image is mapped.
#[derive(Clone, Debug)]
enum Slot {
    /// One 2 MiB page at `frame` (the right one when 0).
    Large {
        frame: u64,
    },
    Absent,
    /// 4 KiB pages, right but for these: page index, frame (none: absent;
    /// 0: the right one).
    Small(Vec<(u64, Option<u64>)>),
}

fn slot() -> impl Strategy<Value = Slot> {
    let frame = prop_oneof![Just(0u64), (1u64..64).prop_map(|f| f << 21)];
    let page =
        (0u64..512, proptest::option::of(0u64..0x4000)).prop_map(|(i, f)| (i, f.map(|f| f << 12)));
    prop_oneof![
        3 => Just(Slot::Large { frame: 0 }),
        2 => frame.prop_map(|frame| Slot::Large { frame }),
        1 => Just(Slot::Absent),
        3 => Just(Slot::Small(Vec::new())),
        3 => proptest::collection::vec(page, 1..4).prop_map(Slot::Small),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// On tables of every kind of slot, the answer is the oracle's: the
    /// first page off its place, or the end of the last page checked.
    #[test]
    fn the_check_agrees_with_a_walk_per_page(
        slots in proptest::collection::vec(slot(), 1..4),
        start in 0u64..(4 << 21),
        len in 0u64..(4 << 21),
    ) {
        let mut b = builder();
        for (i, s) in slots.iter().enumerate() {
            let base = (i as u64) << 21;
            match s {
                Slot::Large { frame } => {
                    let frame = if *frame == 0 { PHYS + base } else { *frame };
                    b.map_2m(RUNTIME + base, frame, false, true);
                }
                Slot::Absent => {}
                Slot::Small(changes) => {
                    map_4k(&mut b, base, base + (1 << 21));
                    for &(page, frame) in changes {
                        let off = base + (page << 12);
                        match frame {
                            None => b.write_u64(
                                pt_entry(&b, off),
                                0,
                            ),
                            Some(0) => b.map_4k(RUNTIME + off, PHYS + off, false, true),
                            Some(f) => b.map_4k(RUNTIME + off, f, false, true),
                        }
                    }
                }
            }
        }
        // Mostly inside the slots (beyond them nothing is mapped).
        let total = (slots.len() as u64) << 21;
        let start = start % total;
        let len = len % (total - start + 1);
        let image = b.finish();
        let mem = SliceMemory::flat(&image);
        let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
        agrees(&space, start..start + len)?;
    }

    /// Any bytes as page tables: never a panic or a hang, and still the
    /// oracle's answer.
    #[test]
    fn arbitrary_tables_never_panic(
        ram in proptest::collection::vec(any::<u8>(), 0..0x6000),
        root in 0u64..0x8000,
        start in 0u64..(4 << 21),
        len in 0u64..0x10_0000,
    ) {
        let mem = SliceMemory::flat(&ram);
        for mode in [PagingMode::FourLevel, PagingMode::FiveLevel] {
            let space = AddressSpace::new(&mem, GuestPhysAddr(root), mode);
            agrees(&space, start..start + len)?;
        }
    }
}

/// The page-table entry of a builder's 4 KiB mapping of image offset
/// `offset` (found with the walker's own reads of the built image).
fn pt_entry(b: &PageTableBuilder, offset: u64) -> u64 {
    let image = b.finish();
    let mem = SliceMemory::flat(&image);
    let pd = mem
        .read_u64(GuestPhysAddr(pd_entry(offset)))
        .expect("PD entry");
    (pd & 0x000f_ffff_ffff_f000) + (((RUNTIME + offset) >> 12) & 0x1ff) * 8
}
