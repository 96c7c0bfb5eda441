//! Property tests on crafted and random memory images: page walks, virtual
//! reads, list walks and kallsyms recovery never panic, stay within their
//! bounds, and agree with simple models where one exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use vmi::craft::{KallsymsBuilder, PageTableBuilder};
use vmi::kallsyms::{Kallsyms, Layout, Limits};
use vmi::{
    AddressSpace, CountingMemory, GuestMemory, GuestPhysAddr, GuestVirtAddr, LayoutMemory,
    ListError, ListOptions, PagingMode, RamLayout, RamRegion, SliceMemory, VirtualMemory,
    WalkError, walk_list,
};

fn mode(five: bool) -> PagingMode {
    if five {
        PagingMode::FiveLevel
    } else {
        PagingMode::FourLevel
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes as page tables: a translation reads at most one entry
    /// per level and never panics, whatever the tables hold (self
    /// references, pointers outside RAM, reserved bits).
    #[test]
    fn random_tables_walk_boundedly(
        image in prop::collection::vec(any::<u8>(), 0..0x6000),
        root in 0u64..0x8000,
        vas in prop::collection::vec(any::<u64>(), 1..16),
        five in any::<bool>(),
    ) {
        let mem = CountingMemory::new(SliceMemory::flat(&image));
        let space = AddressSpace::new(&mem, GuestPhysAddr(root), mode(five));
        for va in vas {
            let Ok(va) = GuestVirtAddr::new(va) else { continue };
            mem.reset();
            let result = space.walk(va);
            prop_assert!(mem.reads() <= usize::from(mode(five).levels()));
            if let Ok(t) = result {
                prop_assert_eq!(t.phys.value() & 0xfff, va.value() & 0xfff);
            }
            let mut buf = [0u8; 64];
            mem.reset();
            let _ = space.read_virt(va, &mut buf);
            // At most two pages: two walks plus two data reads.
            prop_assert!(mem.reads() <= 2 * (usize::from(mode(five).levels()) + 1));
        }
    }

    /// Mappings made by the builder translate as mapped, with either depth.
    #[test]
    fn built_mappings_translate(
        pages in prop::collection::btree_map(0u64..(1 << 20), 0u64..0x400, 1..24),
        five in any::<bool>(),
        kernel_half in any::<bool>(),
    ) {
        let base = if kernel_half { 0xffff_8880_0000_0000 } else { 0x0000_5555_0000_0000 };
        let mut b = PageTableBuilder::new(0x40_0000, mode(five));
        for (&vpn, &pfn) in &pages {
            b.map_4k(base + (vpn << 12), pfn << 12, true, false);
        }
        let image = b.finish();
        let mem = SliceMemory::flat(&image);
        let space = AddressSpace::new(&mem, b.root(), mode(five));
        for (&vpn, &pfn) in &pages {
            let va = GuestVirtAddr::new(base + (vpn << 12) + 0x7f8).unwrap();
            prop_assert_eq!(space.translate(va), Ok(GuestPhysAddr((pfn << 12) + 0x7f8)));
            prop_assert_eq!(
                space.read_virt_u64(va).ok(),
                mem.read_u64(GuestPhysAddr((pfn << 12) + 0x7f8)).ok()
            );
        }
        // A neighbour page that was not mapped is not present.
        let unmapped = (0..).find(|v| !pages.contains_key(v)).unwrap();
        let va = GuestVirtAddr::new(base + (unmapped << 12)).unwrap();
        let not_present = matches!(space.translate(va), Err(WalkError::NotPresent { .. }));
        prop_assert!(not_present);
    }

    /// Reads through a random RAM layout equal reads of a model that maps
    /// every byte on its own.
    #[test]
    fn layout_reads_match_a_byte_model(
        sizes in prop::collection::vec((1u64..0x300, 0u64..0x200), 1..6),
        reads in prop::collection::vec((0u64..0x2000, 0usize..0x400), 1..16),
    ) {
        let mut regions = Vec::new();
        let (mut phys, mut off) = (0u64, 0u64);
        for (size, gap) in &sizes {
            phys += gap;
            regions.push(RamRegion::new(phys, *size, off));
            phys += size;
            off += size;
        }
        let layout = RamLayout::new(&regions).unwrap();
        let backing: Vec<u8> = (0..off).map(|i| (i * 7 + 3) as u8).collect();
        let mem = LayoutMemory::new(backing.as_slice(), layout).unwrap();
        let model = |p: u64| regions.iter().find(|r| p >= r.phys.0 && p < r.phys.0 + r.size)
            .map(|r| backing[(r.offset + p - r.phys.0) as usize]);
        for (at, len) in reads {
            let mut buf = vec![0xeeu8; len];
            let expected: Option<Vec<u8>> = (at..at + len as u64).map(model).collect();
            match (mem.read(GuestPhysAddr(at), &mut buf), expected) {
                (Ok(()), Some(e)) => prop_assert_eq!(buf, e),
                (Err(_), None) => prop_assert!(buf.iter().all(|&b| b == 0)),
                (got, want) => prop_assert!(false, "read {:?} vs model {:?}", got, want.is_some()),
            }
        }
    }

    /// Lists whose `next` pointers are random node indices (lassos, self
    /// loops, chains back to the head): the walk ends, yields at most `max`
    /// nodes, and yields a node twice only if it then reports a cycle.
    #[test]
    fn random_lists_end(
        nexts in prop::collection::vec(0usize..64, 1..64),
        max in 0usize..200,
        check_prev in any::<bool>(),
    ) {
        const BASE: u64 = 0xffff_8880_0010_0000;
        let mut b = PageTableBuilder::new(0x10_0000, PagingMode::FourLevel);
        b.map_range(BASE, 0, 0x1000 * 16);
        for (i, &n) in nexts.iter().enumerate() {
            let n = n % nexts.len();
            b.write_u64(0x40 * i as u64, BASE + 0x40 * n as u64);
            b.write_u64(0x40 * i as u64 + 8, BASE + 0x40 * ((i + nexts.len() - 1) % nexts.len()) as u64);
        }
        let image = b.finish();
        let mem = SliceMemory::flat(&image);
        let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
        let mut options = ListOptions::new(max);
        if check_prev { options = options.with_prev_check(); }
        let mut seen = std::collections::HashSet::new();
        let mut yielded = 0;
        let mut repeated = false;
        let mut last_err = None;
        for node in walk_list(&space, GuestVirtAddr::new(BASE).unwrap(), options) {
            match node {
                Ok(n) => {
                    yielded += 1;
                    repeated |= !seen.insert(n);
                    prop_assert!(yielded <= max);
                    prop_assert!(yielded <= 4 * nexts.len() + 4, "cycle not found in time");
                }
                Err(e) => last_err = Some(e),
            }
        }
        if repeated {
            let cycle_or_bound = matches!(last_err, Some(ListError::Cycle { .. } | ListError::TooLong { .. }));
            prop_assert!(cycle_or_bound);
        }
    }

    /// Random lists over random memory: never a panic, always an end.
    #[test]
    fn list_walks_on_random_memory(
        image in prop::collection::vec(any::<u8>(), 0..0x3000),
        root in 0u64..0x3000,
        head in any::<u64>(),
    ) {
        let mem = SliceMemory::flat(&image);
        let space = AddressSpace::new(&mem, GuestPhysAddr(root), PagingMode::FourLevel);
        let Ok(head) = GuestVirtAddr::new(head) else { return Ok(()) };
        let n = walk_list(&space, head, ListOptions::new(1000).with_prev_check()).count();
        prop_assert!(n <= 1001);
        // The same head as a netfilter hook point's entries: bounded.
        let reference = vmi::craft::SETUID_REFERENCE;
        if let Ok(hooks) = vmi::linux::crossview::nf_hook_functions(&space, head.value(), &reference, 1 << 20) {
            prop_assert!(hooks.len() <= vmi::linux::crossview::MAX_NF_HOOKS);
        }
        // And as the list of network namespaces: bounded.
        let (namespaces, _) = vmi::linux::crossview::net_namespaces(&space, head, &reference);
        prop_assert!(namespaces.len() <= vmi::linux::crossview::MAX_NET_NAMESPACES);
        let (devices, _) = vmi::linux::crossview::net_devices(&space, head, &reference, 100);
        prop_assert!(devices.len() <= 100);
        // And as the PID table's root pointer: bounded.
        let (in_table, _) = vmi::linux::crossview::pid_table_tasks(&space, head, &reference);
        prop_assert!(in_table.len() <= vmi::linux::crossview::MAX_PID_TASKS);
        // And as the cgroups' hash table: bounded.
        let (in_cgroups, _) = vmi::linux::crossview::cgroup_tasks(&space, head, &reference);
        prop_assert!(in_cgroups.len() <= vmi::linux::crossview::MAX_PID_TASKS);
        // And as the CPUs' areas and their count: one task per CPU at most.
        if let Ok(running) = vmi::linux::crossview::running_tasks(&space, head, head, &reference) {
            prop_assert!(running.running.len() <= vmi::linux::crossview::MAX_CPUS as usize);
            prop_assert!(running.idle.len() <= vmi::linux::crossview::MAX_CPUS as usize);
        }
        // And as the busy vmalloc areas' list (6.1) or the array of 6.12's
        // nodes (their count the same word): bounded; the CPUs' stacks and
        // those of no known task among the areas read.
        let global = vmi::linux::crossview::CrossViewReference { vmap_area_list: 1, ..reference.clone() };
        let (areas, _) = vmi::linux::crossview::busy_vmap_areas(&space, |_| Some(head), &global);
        prop_assert!(areas.len() <= vmi::linux::crossview::MAX_VMAP_AREAS);
        let nodes = vmi::linux::crossview::CrossViewReference { vmap_nodes: 1, nr_vmap_nodes: 1, vmap_node_size: 0x40, ..reference.clone() };
        let (in_nodes, _) = vmi::linux::crossview::busy_vmap_areas(&space, |_| Some(head), &nodes);
        prop_assert!(in_nodes.len() <= vmi::linux::crossview::MAX_VMAP_AREAS);
        let mut known = Vec::new();
        if let Ok(cpus) = vmi::linux::crossview::cpu_stacks(&space, head, head, &reference) {
            prop_assert!(cpus.len() <= 3 * vmi::linux::crossview::MAX_CPUS as usize);
            known.extend(cpus);
        }
        known.sort_unstable();
        let orphans = vmi::linux::crossview::orphan_stacks(&space, &areas, &known);
        prop_assert!(orphans.len() <= areas.len());
        // The head as a stack: a task found on it points back at it.
        if let Some(task) = vmi::linux::crossview::stack_owner(&space, head.value(), &reference) {
            let stacks = vmi::linux::crossview::task_stacks(&space, &[task.value()], &reference);
            prop_assert_eq!(stacks, vec![head.value()]);
        }
        // And as a thread group's leader: its threads, bounded.
        let leader = vmi::linux::tasks::read_task(&space, head, &vmi::craft::WALK_TASK_OFFSETS, &vmi::craft::WALK_CRED_OFFSETS);
        if let Ok(leader) = leader {
            let (threads, _) = vmi::linux::crossview::threads(&space, &[leader], &reference, &vmi::craft::WALK_TASK_OFFSETS, &vmi::craft::WALK_CRED_OFFSETS);
            prop_assert!(threads.threads.len() <= vmi::linux::crossview::MAX_THREADS);
            prop_assert!(threads.miscounted.len() <= 1);
        }
    }
}

fn random_names() -> impl Strategy<Value = Vec<(String, u64)>> {
    prop::collection::vec(("[a-z_][a-z0-9_.]{0,40}", 0u64..0x100_0000), 1..600)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random symbol sets survive a build and a recovery in both layouts.
    #[test]
    fn kallsyms_round_trip(
        syms in random_names(),
        percpu in prop::collection::vec(0u64..0x4_0000, 0..8),
        layout in prop_oneof![
            Just(Layout::OffsetsFirst { seqs_of_names: true }),
            Just(Layout::OffsetsFirst { seqs_of_names: false }),
            Just(Layout::OffsetsLast),
        ],
        lead in 0usize..64,
    ) {
        const BASE: u64 = 0xffff_ffff_8100_0000;
        let mut b = KallsymsBuilder::new(layout);
        b.lead = lead * 8;
        for (name, off) in &syms {
            b.symbol(b't', name, BASE + off);
        }
        for (i, a) in percpu.iter().enumerate() {
            b.symbol(b'A', &format!("percpu_{i}"), *a);
        }
        let (image, _) = b.build();
        let k = Kallsyms::parse(&image, &Limits::default()).unwrap();
        prop_assert_eq!(k.symbols.len(), syms.len() + percpu.len());
        for (name, off) in &syms {
            prop_assert!(k.symbols.lookup_all(name).any(|s| s.address == BASE + off), "{}", name);
        }
        let mut prev = 0;
        for s in k.symbols.iter() {
            prop_assert!(s.address >= prev);
            prev = s.address;
        }
    }

    /// Corrupting bytes of valid tables never panics; whatever is accepted
    /// still satisfies the invariants.
    #[test]
    fn corrupted_kallsyms_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        truncate in prop::option::of(any::<prop::sample::Index>()),
        layout in prop_oneof![
            Just(Layout::OffsetsFirst { seqs_of_names: true }),
            Just(Layout::OffsetsLast),
        ],
    ) {
        let mut b = KallsymsBuilder::new(layout);
        for i in 0..300u64 {
            b.symbol(b'T', &format!("sym_{i}"), 0xffff_ffff_8100_0000 + 16 * i);
        }
        let (mut image, _) = b.build();
        for (at, v) in flips {
            let i = at.index(image.len());
            image[i] = v;
        }
        if let Some(t) = truncate {
            image.truncate(t.index(image.len()));
        }
        if let Ok(k) = Kallsyms::parse(&image, &Limits::default()) {
            let mut prev = 0;
            for s in k.symbols.iter() {
                prop_assert!(s.address >= prev);
                prop_assert!(!s.name.is_empty());
                prev = s.address;
            }
            prop_assert!(k.relative_base >= vmi::kallsyms::KERNEL_TEXT_PREFIX);
        }
    }

    /// Random bytes with digit runs sprinkled in: an error, quickly.
    #[test]
    fn random_images_are_not_kallsyms(
        mut image in prop::collection::vec(any::<u8>(), 0..0x4000),
        runs in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let run = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";
        if image.len() > run.len() {
            for r in runs {
                let at = r.index(image.len() - run.len());
                image[at..at + run.len()].copy_from_slice(run);
            }
        }
        prop_assert!(Kallsyms::parse(&image, &Limits::default()).is_err());
    }
}

#[test]
fn la57_kernel_and_direct_map_addresses() {
    // A 5-level guest: the direct map at 0xff11..., the kernel image at
    // 0xffffffff81000000 with 2 MiB pages, a module page at 0xffffffffc0000000.
    let mut b = PageTableBuilder::new(0x80_0000, PagingMode::FiveLevel);
    b.map_2m(0xffff_ffff_8100_0000, 0x20_0000, false, true);
    b.map_1g(0xff11_0000_0000_0000, 0, true, false);
    b.map_4k(0xffff_ffff_c000_0000, 0x5000, true, true);
    let mut image = b.finish();
    image[0x20_0100..0x20_0108].copy_from_slice(b"KERNEL!!");
    let mem = SliceMemory::flat(&image);
    let space = AddressSpace::new(&mem, b.root(), PagingMode::FiveLevel);
    let text = GuestVirtAddr::new(0xffff_ffff_8100_0100).unwrap();
    let direct = GuestVirtAddr::new(0xff11_0000_0020_0100).unwrap();
    assert_eq!(space.read_virt_u64(text), space.read_virt_u64(direct));
    assert_eq!(
        space.read_virt_u64(text).unwrap().to_le_bytes(),
        *b"KERNEL!!"
    );
    let module = GuestVirtAddr::new(0xffff_ffff_c000_0008).unwrap();
    assert_eq!(space.translate(module), Ok(GuestPhysAddr(0x5008)));
    // The direct map entry claims 1 GiB; most of it is beyond this image.
    let far = GuestVirtAddr::new(0xff11_0000_3fff_f000).unwrap();
    assert!(matches!(
        space.read_virt_u64(far),
        Err(WalkError::Memory { .. })
    ));
}
