//! Page walks, virtual reads and list walks on a memory image built from the
//! input (vmi::craft::WalkInput: a header naming the root table, a list head
//! and a read, then the RAM bytes). Every walk is bounded: the list by a
//! count, the page walk by the paging depth, the executable-path walk from
//! the same head taken as an `mm_struct` by its component and mount bounds;
//! the same head as a task's top-level table against the root's kernel half
//! by its finding bound; the cross-views (process tree, sysfs module set)
//! by their link bounds, and the task and credential rules over what the
//! task walk read; a watcher's incremental IMA reads from the read address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmi::craft::WalkInput;
use vmi::{
    AddressSpace, GuestPhysAddr, GuestVirtAddr, LayoutMemory, ListOptions, VirtualMemory, walk_list,
};

const MAX_NODES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let input = WalkInput::decode(data);
    let Some(layout) = input.layout() else {
        return;
    };
    let Ok(memory) = LayoutMemory::new(input.image.as_slice(), layout) else {
        return;
    };
    let space = AddressSpace::new(&memory, GuestPhysAddr(input.root), input.mode());

    if let Ok(va) = GuestVirtAddr::new(input.read_at) {
        if let Ok(t) = space.walk(va) {
            assert_eq!(t.phys.value() & 0xfff, va.value() & 0xfff);
        }
        let mut buf = vec![0xa5u8; usize::from(input.read_len)];
        if space.read_virt(va, &mut buf).is_err() {
            assert!(buf.iter().all(|&b| b == 0), "a failed read leaves nothing");
        }
    }

    if let Ok(head) = GuestVirtAddr::new(input.list_head) {
        let mut options = ListOptions::new(MAX_NODES);
        if input.check_prev {
            options = options.with_prev_check();
        }
        let mut nodes = 0usize;
        let mut errors = 0usize;
        for node in walk_list(&space, head, options) {
            match node {
                Ok(_) => nodes += 1,
                Err(_) => errors += 1,
            }
        }
        assert!(nodes <= MAX_NODES && errors <= 1);

        // The Linux lists on the same head, with fixed offsets: each walk
        // ends after at most its bound plus one error.
        let tasks = vmi::craft::WALK_TASK_OFFSETS;
        let cred = vmi::craft::WALK_CRED_OFFSETS;
        if let Ok(walk) = vmi::linux::tasks(&space, head, &tasks, &cred, 64) {
            assert!(walk.count() <= 66);
        }
        let modules = vmi::linux::ModuleOffsets {
            state: 0,
            list: 8,
            name: 24,
            text_base: 0x50,
            text_size: 0x58,
            taints: 0x60,
        };
        assert!(vmi::linux::modules(&space, head, &modules, 64).count() <= 65);
        let limits = vmi::linux::ImaLimits::default();
        let ima =
            vmi::linux::measurements(&space, head, &vmi::linux::ImaOffsets::LINUX_6, &limits, 64);
        assert!(ima.count() <= 65);
        // A watcher's incremental reads: the entries after a node it took,
        // and a known node read again against the one before it.
        if let Ok(node) = GuestVirtAddr::new(input.read_at) {
            let o = vmi::linux::ImaOffsets::LINUX_6;
            let after = vmi::linux::ima::entries_after(&space, head, node, &o, &limits, 64);
            assert!(after.count() <= 65);
            let _ = vmi::linux::ima::reread_linked(&space, head, node, &o, &limits);
        }

        // The same head as a task and its `mm_struct`: its top-level table
        // against the root's kernel half (the direct map where 4-level
        // Linux puts it without KASLR).
        use vmi::linux::top_tables::{KernelHalf, SharedEntries, TableOffsets, check_task_table};
        let page_offset_base = 0xffff_8880_0000_0000;
        if let Some(half) = KernelHalf::new(page_offset_base, input.mode()) {
            let root = GuestPhysAddr(input.root);
            if let Ok(shared) = SharedEntries::snapshot(&memory, root, half, input.check_prev) {
                let offsets = TableOffsets {
                    task_mm: 0x48,
                    mm_pgd: 0x50,
                    page_offset_base,
                };
                let found = check_task_table(&space, &memory, &shared, &offsets, head, head, 8);
                assert!(found.len() <= 8);
                assert!(shared.check_init(&memory, 8).len() <= 8);
            }
        }

        // The same head as an `mm_struct`: its executable's path (the
        // offsets the `exe-path` seeds of vmi/tests/fuzz_seeds.rs use).
        let path = vmi::craft::WALK_PATH_OFFSETS;
        if let Ok(exe) = vmi::linux::exe_path(&space, head, &path) {
            let bytes = exe.as_bytes();
            assert!(bytes.len() <= vmi::linux::MAX_PATH_LEN && bytes.first() == Some(&b'/'));
            assert!(!bytes.contains(&0));
        }
        // The same `mm_struct` as a set-uid program's: its flags, its
        // file's inode; bounded by the path walk.
        let task = vmi::linux::Task {
            address: head,
            pid: 1,
            tgid: 1,
            comm: vmi::linux::structs::heapless_str::FixedStr::new([0; 16]),
            parent: None,
            parent_pid: None,
            creds: None,
            real_cred: None,
            mm: Some(head),
            flags: 0,
        };
        let reference = vmi::craft::SETUID_REFERENCE;
        let _ = vmi::linux::crossview::setuid_exec(&space, &task, &path, &reference, |p| {
            p.first() == Some(&b'/')
        });

        // The cross-views on the same head: the process tree (children and
        // sibling at offset 0: the list itself), the sysfs module set, and
        // the task rules over what the task walk read (accounts read
        // through each cred).
        use vmi::linux::crossview;
        if let Ok(tree) = crossview::process_tree(&space, head, &reference) {
            assert!(tree.len() <= crossview::MAX_TASKS);
        }
        // The `net` class's devices, both ways to their list (6.1's
        // `class.p`, 6.4's `class_kset`), on the same head.
        for kset in [None, Some(head)] {
            if let Ok(nets) = crossview::class_net_namespaces(&space, head, kset, &reference) {
                assert!(nets.len() <= crossview::MAX_CLASS_DEVICES);
            }
        }
        if let Ok(modules) = crossview::kset_modules(&space, head, &reference) {
            assert!(modules.len() <= crossview::MAX_KOBJECTS);
        }
        let listed: Vec<vmi::linux::Task> = vmi::linux::tasks(&space, head, &tasks, &cred, 64)
            .map(|walk| walk.filter_map(Result::ok).collect())
            .unwrap_or_default();
        assert!(crossview::posing_tasks(&listed).len() <= listed.len());
        let findings = crossview::cred_findings(
            &listed,
            &[],
            0,
            |_| false,
            |t| crossview::account_uid(&space, t, &reference),
            |t| crossview::exec_ids(&space, t, &path, &reference, &cred),
        );
        assert!(findings.len() <= 2 * listed.len());
        // Their threads, bounded over all groups.
        let (threads, _) = crossview::threads(&space, &listed, &reference, &tasks, &cred);
        assert!(threads.threads.len() <= crossview::MAX_THREADS);
        assert!(threads.miscounted.len() <= listed.len());
        // The same head as the PID table's root pointer: nodes and tasks
        // bounded, the walk ending with or without an error.
        let (in_table, _) = crossview::pid_table_tasks(&space, head, &reference);
        assert!(in_table.len() <= crossview::MAX_PID_TASKS);
        // And as the cgroups' hash table: bounded.
        let (in_cgroups, _) = crossview::cgroup_tasks(&space, head, &reference);
        assert!(in_cgroups.len() <= crossview::MAX_PID_TASKS);
        // And as `__per_cpu_offset` (`nr_cpu_ids` the same word): one
        // task per CPU at most, the CPUs bounded.
        if let Ok(on_cpus) = crossview::running_tasks(&space, head, head, &reference) {
            assert!(on_cpus.running.len() <= crossview::MAX_CPUS as usize);
            assert!(on_cpus.idle.len() <= crossview::MAX_CPUS as usize);
        }
        // The users' task counts through each listed task's real
        // credentials (and the head as one): one entry per ucounts read,
        // bounded, every task found counted.
        let mut real_creds: Vec<_> = listed.iter().filter_map(|t| t.real_cred).collect();
        real_creds.push(head);
        if let Ok(counts) = crossview::process_counts(&space, &real_creds, &reference) {
            assert!(counts.len() <= crossview::MAX_UCOUNTS);
            let found: u64 = counts.iter().map(|c| c.found).sum();
            assert!(found >= real_creds.len() as u64);
            let mut tracker = crossview::ProcessCountTracker::default();
            assert!(tracker.update(&counts).len() <= counts.len());
        }
        // And as the busy vmalloc areas' list (6.1's) and as the array of
        // 6.12's nodes (the count the same word): bounded; the stacks the
        // CPUs hold, and those of no known task among what was read.
        let global = crossview::CrossViewReference {
            vmap_area_list: 1,
            ..reference.clone()
        };
        let (areas, _) = crossview::busy_vmap_areas(&space, |_| Some(head), &global);
        assert!(areas.len() <= crossview::MAX_VMAP_AREAS);
        let nodes = crossview::CrossViewReference {
            vmap_area_list: 0,
            vmap_nodes: 1,
            nr_vmap_nodes: 1,
            vmap_node_size: 0x40,
            ..reference.clone()
        };
        let (in_nodes, _) = crossview::busy_vmap_areas(&space, |_| Some(head), &nodes);
        assert!(in_nodes.len() <= crossview::MAX_VMAP_AREAS);
        let addresses: Vec<u64> = listed.iter().map(|t| t.address.value()).collect();
        let mut known = crossview::task_stacks(&space, &addresses, &reference);
        if let Ok(cpus) = crossview::cpu_stacks(&space, head, head, &reference) {
            assert!(cpus.len() <= 3 * crossview::MAX_CPUS as usize);
            known.extend(cpus);
        }
        known.sort_unstable();
        assert!(crossview::orphan_stacks(&space, &areas, &known).len() <= areas.len());
        // The stacks the random tables map, from the head's slot on:
        // bounded, ascending, each aligned and reading the magic word.
        if let Ok(mapped) = crossview::mapped_stacks(&space, &[head.value()]) {
            assert!(mapped.len() <= crossview::MAX_VMAP_AREAS);
            assert!(mapped.windows(2).all(|w| w[0] < w[1]));
            for stack in mapped {
                assert!(stack.is_multiple_of(crossview::STACK_SIZE));
                let at = vmi::GuestVirtAddr::new(stack).expect("canonical");
                assert_eq!(space.read_virt_u64(at), Ok(crossview::STACK_END_MAGIC));
            }
        }
        // The head as a stack: a task found on it points back at it.
        if let Some(task) = crossview::stack_owner(&space, head.value(), &reference) {
            assert_eq!(
                crossview::task_stacks(&space, &[task.value()], &reference),
                [head.value()]
            );
        }
        // Their network namespaces: at most one each.
        assert!(crossview::task_net_namespaces(&space, &listed, &reference).len() <= listed.len());

        // The same head as a netfilter hook point's `nf_hook_entries`: a
        // count bounded by MAX_NF_HOOKS, every function judged.
        if let Ok(hooks) =
            crossview::nf_hook_functions(&space, head.value(), &reference, crossview::MAX_NF_HOOKS)
        {
            assert!(hooks.len() <= crossview::MAX_NF_HOOKS);
            let ranges = crossview::ImageRanges::default();
            assert_eq!(
                crossview::foreign_functions(&hooks, &ranges, &[]).len(),
                hooks.len()
            );
        }
        // And as `net_namespace_list`: the namespaces bounded by
        // MAX_NET_NAMESPACES, the walk ending with or without an error.
        let (namespaces, _) = crossview::net_namespaces(&space, head, &reference);
        assert!(namespaces.len() <= crossview::MAX_NET_NAMESPACES);
        // And as a namespace's devices, within the caller's bound.
        let (devices, _) = crossview::net_devices(&space, head, &reference, 100);
        assert!(devices.len() <= 100);
    }
});
