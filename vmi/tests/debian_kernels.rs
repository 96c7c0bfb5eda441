//! The stock Debian 12 Mon-VM kernels fetched by `make deps` (6.1 cloud:
//! LZ4, kallsyms tables in the old order; 6.12 cloud: ZSTD, the new order):
//! unpacked with `vmi::kernel_image`, kallsyms recovered from the image and
//! from a RAM image of it, the profile built from the package alone and
//! used to locate the kernel and read its structures. The kernels must be
//! there: a missing one fails the test and says to run `make deps`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::{MonvmKernel, load_kernel, monvm_kernel};
use vmi::kallsyms::{Kallsyms, Layout, Limits};
use vmi::kernel_image::{Vmlinux, extract_vmlinux};
use vmi::linux::{KaslrError, locate_kernel};
use vmi::profile::KernelProfile;
use vmi::profile::build::Built;
use vmi::{
    GuestMemory, GuestPhysAddr, GuestVirtAddr, LayoutMemory, PagingMode, RamLayout, RamRegion,
    SliceMemory, VirtualMemory,
};

/// Symbols the A-VM relies on: each must be present with a kernel address.
const NEEDED: &[&str] = &[
    "_text",
    "_etext",
    "sys_call_table",
    "init_task",
    "init_top_pgt",
    "idt_table",
    "ima_measurements",
    "modules",
    "linux_banner",
    "x64_sys_call",
];

struct Expect {
    series: &'static str,
    count: std::ops::RangeInclusive<usize>,
    layout: Layout,
    /// NR_syscalls (FACTS-linux: 451 on 6.1, 463 on 6.12).
    syscalls: usize,
}

fn check_kernel(expect: &Expect) {
    let kernel = monvm_kernel(expect.series);
    let t = Instant::now();
    let vmlinux = extract_vmlinux(&kernel.vmlinuz).unwrap();
    let unpack = t.elapsed();
    let elf = Vmlinux::parse(&vmlinux).unwrap();

    let t = Instant::now();
    let k = Kallsyms::parse(&vmlinux, &Limits::default())
        .unwrap_or_else(|e| panic!("{} ({}): {e}", kernel.package, kernel.version));
    let recover = t.elapsed();
    eprintln!(
        "{} {} ({}): vmlinux {} MB unpacked in {unpack:?}; {} symbols recovered in {recover:?}, layout {:?}",
        kernel.package,
        kernel.version,
        expect.series,
        vmlinux.len() >> 20,
        k.symbols.len(),
        k.layout
    );
    let syms = &k.symbols;
    assert!(
        expect.count.contains(&syms.len()),
        "{} symbols, expected {:?}",
        syms.len(),
        expect.count
    );
    assert_eq!(k.layout, expect.layout);
    assert_eq!(k.relative_base, 0xffff_ffff_8100_0000, "linked _text");

    // Addresses never decrease; names are unique enough to look up.
    let mut prev = 0;
    for s in syms.iter() {
        assert!(
            s.address >= prev,
            "{} at {:#x} below {prev:#x}",
            s.name,
            s.address
        );
        prev = s.address;
    }
    for name in NEEDED {
        let s = syms
            .lookup(name)
            .unwrap_or_else(|| panic!("{name} missing in {}", kernel.package));
        assert!(
            (0xffff_ffff_8100_0000..0xffff_ffff_c000_0000).contains(&s.address),
            "{name} at {:#x} is not in the kernel image",
            s.address
        );
        let (back, off) = syms.symbol_at(s.address).expect("symbol_at");
        assert_eq!(off, 0);
        assert_eq!(back.address, s.address);
    }
    assert_eq!(syms.address_of("_text"), Some(k.relative_base));
    assert!(syms.lookup("no_such_symbol_anywhere").is_none());

    // The tables are where their own symbols say (file offsets of the ELF;
    // 6.1's kallsyms leaves its own tables out, 6.4+ lists them).
    let at = |name: &str| elf.file_offset(syms.address_of(name).unwrap()).unwrap();
    let loc = &k.locations;
    if syms.lookup("kallsyms_token_table").is_some() {
        assert_eq!(loc.token_table, at("kallsyms_token_table"));
        assert_eq!(loc.token_index, at("kallsyms_token_index"));
        assert_eq!(loc.names, at("kallsyms_names"));
        assert_eq!(loc.markers, at("kallsyms_markers"));
        assert_eq!(loc.offsets, at("kallsyms_offsets"));
        assert_eq!(loc.num_syms, at("kallsyms_num_syms"));
        assert_eq!(loc.relative_base, at("kallsyms_relative_base"));
        assert_eq!(loc.seqs_of_names, Some(at("kallsyms_seqs_of_names")));
    } else {
        // Contiguous, in the old order, right after the banner (FACTS-linux).
        assert!(loc.offsets > at("linux_banner"));
        assert!(loc.offsets < loc.relative_base && loc.relative_base + 8 == loc.num_syms);
        assert!(loc.names < loc.markers && loc.markers < loc.seqs_of_names.unwrap());
        assert!(loc.seqs_of_names.unwrap() < loc.token_table && loc.token_table < loc.token_index);
    }

    // linux_banner's address holds the banner of this very package.
    let banner_at = at("linux_banner") as usize;
    let banner = &vmlinux[banner_at..banner_at + 256];
    let banner = String::from_utf8_lossy(&banner[..banner.iter().position(|&b| b == 0).unwrap()])
        .to_string();
    assert!(banner.starts_with("Linux version "), "{banner}");
    assert!(
        banner.contains(&kernel.release),
        "{banner} vs {}",
        kernel.release
    );
    let upstream = kernel.version.split('-').next().unwrap();
    assert!(banner.contains(upstream), "{banner} vs {}", kernel.version);

    // The profile, from the package alone.
    let t = Instant::now();
    let built = vmi::profile::build::from_vmlinux(&vmlinux).unwrap();
    eprintln!(
        "  profile: {} bytes, {} syscalls, built in {:?} ({:?})",
        built.encoded.len(),
        built.profile.syscall_count(),
        t.elapsed(),
        built.timings
    );
    check_profile(&kernel, expect, &built, &k, &elf, &banner);

    // The same kernel loaded into a RAM image above 4 GiB (a split RAM
    // layout like QEMU pc with 4 GiB), found by scanning guest memory.
    from_ram_image(&elf, &k);
    kaslr_and_kernel_page_tables(&elf, &built.profile);
}

/// The text reference lists every kind of patch site a Debian kernel has,
/// and the image itself, loaded unrelocated (slide 0) with every site in its
/// link-time form, passes it.
fn check_text_reference(p: &KernelProfile, elf: &Vmlinux<'_>) {
    use vmi::linux::text::{Area, TextChecker};
    let t = p.text_reference.as_ref().expect("a text reference");
    let s = &t.sites;
    for (what, n) in [
        ("returns", s.returns.len()),
        ("fentry", s.fentry.len()),
        ("calls", s.calls.len()),
        ("locks", s.locks.len()),
        ("jumps", s.jumps.offsets.len()),
        ("boot", s.boot.offsets.len()),
        ("abs32 relocations", t.relocations.abs32.len()),
        ("abs64 relocations", t.relocations.abs64.len()),
        ("functions", t.functions.len()),
    ] {
        assert!(n > 1000, "{what}: {n}");
    }
    assert!(!t.return_thunks.is_empty() && !t.fentry_targets.is_empty());
    let len = t.rodata.start + t.rodata.len - t.text.start;
    const PHYS: u64 = 0x100_0000;
    let mut ram = vec![0u8; PHYS as usize];
    ram.extend_from_slice(elf.read(t.text.start, len as usize).expect("image bytes"));
    let mem = vmi::memory::SliceMemory::flat(&ram);
    let location = vmi::linux::KernelLocation {
        phys_text: vmi::GuestPhysAddr(PHYS),
        link_text: t.text.start,
        runtime_text: t.text.start,
    };
    let mut checker = TextChecker::new(
        t,
        location,
        p.symbols.start_ro_after_init..p.symbols.end_ro_after_init,
    )
    .expect("checker");
    for area in [Area::Text, Area::Rodata] {
        for i in 0..checker.chunks(area) {
            let o = checker.check_chunk(&mem, area, i).expect("readable");
            assert!(o.is_clean(), "{area:?} chunk {i}: {o:?}");
        }
    }
    check_ftrace_templates(t, ram);
}

/// Both trampoline templates are in the profile, and a trampoline made from
/// each as `create_trampoline` makes one (on this unpatched image) passes,
/// one byte changed does not.
fn check_ftrace_templates(t: &vmi::linux::text::TextReference, mut ram: Vec<u8>) {
    use vmi::linux::text::ftrace::{TrampolineError, check_trampoline};
    let f = t.ftrace.as_ref().expect("ftrace templates");
    assert_eq!(f.templates.len(), 2);
    assert!(f.templates[0].direct_jmp.is_none() && f.templates[1].direct_jmp.is_some());
    assert!(
        f.tracers.len() >= 10,
        "{} tracer functions",
        f.tracers.len()
    );
    const PHYS: u64 = 0x100_0000;
    const VA: u64 = 0xffff_ffff_c000_0000;
    let tables = (ram.len() as u64).next_multiple_of(0x1000);
    let location = vmi::linux::KernelLocation {
        phys_text: vmi::GuestPhysAddr(PHYS),
        link_text: t.text.start,
        runtime_text: t.text.start,
    };
    for (i, tm) in f.templates.iter().enumerate() {
        let n = tm.bytes.len();
        let mut tramp = tm.bytes.clone();
        let op = usize::from(tm.op_ptr);
        tramp[op + 3..op + 7].copy_from_slice(&((n + 5) as i32 - (op + 7) as i32).to_le_bytes());
        let call = usize::from(tm.call);
        let tracer = t.text.start + u64::from(f.tracers[0]);
        let rel = tracer.wrapping_sub(VA + call as u64 + 5) as i32;
        tramp[call + 1..call + 5].copy_from_slice(&rel.to_le_bytes());
        if let Some(j) = tm.direct_jmp {
            tramp[usize::from(j)..usize::from(j) + 2].copy_from_slice(&[0x66, 0x90]);
        }
        tramp.extend_from_slice(&[0xc3, 0xcc, 0, 0, 0]);
        tramp.extend_from_slice(&0xffff_8880_0000_1000u64.to_le_bytes());
        let mut pt = vmi::craft::PageTableBuilder::new(tables, PagingMode::FourLevel);
        pt.map_4k(VA, tables + 0x8000, false, true);
        pt.write(tables + 0x8000, &[0; 4096]);
        let verdict = |pt: &vmi::craft::PageTableBuilder, ram: &mut Vec<u8>| {
            let image = pt.finish();
            ram.resize(image.len(), 0);
            ram[tables as usize..].copy_from_slice(&image[tables as usize..]);
            let mem = SliceMemory::flat(ram);
            let space = vmi::AddressSpace::new(&mem, pt.root(), PagingMode::FourLevel);
            check_trampoline(&space, t, &location, VA).map(|ok| (ok.template, ok.tracer))
        };
        pt.write(tables + 0x8000, &tramp);
        assert_eq!(
            verdict(&pt, &mut ram),
            Ok((i, f.tracers[0])),
            "template {i}"
        );
        tramp[1] ^= 1;
        pt.write(tables + 0x8000, &tramp);
        assert!(
            matches!(verdict(&pt, &mut ram), Err(TrampolineError::Body(_))),
            "template {i}"
        );
    }
}

/// The profile round-trips, names this kernel, and agrees with kallsyms and
/// the image on every symbol and syscall slot; its offsets are plausible.
fn check_profile(
    kernel: &MonvmKernel,
    expect: &Expect,
    built: &Built,
    k: &Kallsyms,
    elf: &Vmlinux<'_>,
    banner: &str,
) {
    let p = &built.profile;
    // Encoding: canonical, decodes to the same, digest of the bytes.
    assert_eq!(KernelProfile::decode(&built.encoded).as_ref(), Ok(p));
    assert_eq!(p.encode().unwrap(), built.encoded);
    assert_eq!(built.digest, vmi::profile::digest(&built.encoded));
    assert_eq!(p.digest(), Ok(built.digest));
    assert!(
        built.encoded.len() < 2 << 20,
        "{} bytes",
        built.encoded.len()
    );
    check_text_reference(p, elf);
    assert_eq!(built.kallsyms_symbols, k.symbols.len());

    // Identity.
    assert_eq!(p.kernel.release, kernel.release);
    assert_eq!(p.kernel.banner, banner);
    assert!(
        p.kernel
            .banner
            .ends_with(&format!("{}\n", p.kernel.version))
    );
    assert!(
        p.kernel.version.starts_with("#1 SMP"),
        "{}",
        p.kernel.version
    );
    let upstream = kernel.version.split('-').next().unwrap();
    assert!(p.kernel.version.contains(upstream));

    // Every symbol is kallsyms' (kallsyms_relative_base: listed on 6.12,
    // derived from the table's location on 6.1).
    let syms = &k.symbols;
    for (name, address) in p.symbols.named() {
        let listed = syms.address_of(name);
        match name {
            "kallsyms_relative_base" => {
                assert_eq!(
                    Some(address.unwrap()),
                    elf.address_of_offset(k.locations.relative_base)
                );
                assert!(listed.is_none() || listed == address);
                assert_eq!(listed.is_some(), expect.series == "6.12");
            }
            _ => assert_eq!(address, listed, "{name}"),
        }
    }
    assert!(p.symbols.ia32_sys_call.is_some() && p.symbols.pgdir_shift.is_some());

    // sys_call_table: NR_syscalls slots, each the __x64_sys_* handler the
    // image holds there.
    let slots = &p.syscalls.slots;
    assert_eq!(slots.len(), expect.syscalls);
    for (nr, name) in [
        (0, "__x64_sys_read"),
        (1, "__x64_sys_write"),
        (57, "__x64_sys_fork"),
        (59, "__x64_sys_execve"),
        (60, "__x64_sys_exit"),
        (231, "__x64_sys_exit_group"),
        (450, "__x64_sys_set_mempolicy_home_node"),
    ] {
        assert_eq!(slots[nr].name, name, "slot {nr}");
    }
    for (nr, slot) in slots.iter().enumerate() {
        assert!(
            slot.name.starts_with("__x64_sys_") || slot.name == "sys_ni_syscall",
            "slot {nr}: {}",
            slot.name
        );
        assert!(
            syms.lookup_all(&slot.name)
                .any(|s| s.address == slot.address)
        );
        assert_eq!(
            elf.read_u64(p.symbols.sys_call_table + 8 * nr as u64),
            Some(slot.address)
        );
    }
    // Unused numbers (the gap from 336 to 423) go to ni_syscall.
    assert_eq!(slots[400].name, "__x64_sys_ni_syscall");

    // Offsets: inside their structs, the IMA layout vmi knew, the module
    // text where each generation keeps it.
    let o = &p.offsets;
    assert!(o.task.comm + 16 <= o.sizes.task_struct);
    assert!(o.task.tasks + 16 <= o.sizes.task_struct);
    assert!(o.sizes.task_struct > 4096 && o.sizes.task_struct < 32 << 10);
    assert_eq!(o.task.tgid, o.task.pid + 4);
    // After thread_info (24 bytes), __state (+ saved_state), stack, usage.
    assert_eq!(o.task.flags, 0x2c);
    assert_eq!(
        (o.cred.uid, o.cred.gid, o.cred.euid, o.cred.egid),
        (8, 12, 24, 28)
    );
    assert_eq!(o.ima, vmi::linux::ImaOffsets::LINUX_6);
    assert_eq!((o.module.state, o.module.list, o.module.name), (0, 8, 24));
    assert_eq!(o.module.text_base, 0x140);
    // 6.1: core_layout { base, size, text_size }; 6.12: mem[MOD_TEXT] { base, size }.
    let text_size = if expect.series == "6.1" { 0x14c } else { 0x148 };
    assert_eq!(o.module.text_size, text_size);
    assert_eq!((o.path.qstr_len, o.path.qstr_name), (4, 8));
    assert_eq!((o.path.path_mnt, o.path.path_dentry), (0, 8));
    assert!(p.text_reference.is_some());
    // The IDT's expected entries, from the image's idt_data tables and irq
    // stubs: every vector from 0x20 on, and the exceptions the kernel
    // installs handlers for.
    let idt = p.idt.as_ref().expect("an IDT reference");
    assert!(idt.gates.len() > 230, "{} gates", idt.gates.len());
    let name_of = |v: u8| {
        idt.gates
            .iter()
            .find(|(vector, _)| *vector == v)
            .map(|(_, e)| e.name.as_str())
    };
    assert_eq!(name_of(0x00), Some("asm_exc_divide_error"));
    assert_eq!(name_of(0x0e), Some("asm_exc_page_fault"));
    assert_eq!(name_of(0xec), Some("asm_sysvec_apic_timer_interrupt"));
    assert!(name_of(0x21).is_some_and(|n| n.starts_with("irq_entries_start")));
    assert_eq!(name_of(0x03), Some("asm_exc_int3"));
    // Each gate's attribute word (struct idt_bits): DPL 3 only where user
    // space may raise the vector (#BP, #OF, int 0x80), an IST stack for
    // #DF, NMI, #DB (IST_INDEX_* + 1), interrupt gates throughout.
    assert_eq!(idt.attributes.len(), idt.gates.len());
    let bits_of = |v: u8| {
        idt.gates
            .iter()
            .zip(&idt.attributes)
            .find(|((vector, _), _)| *vector == v)
            .map(|(_, bits)| *bits)
    };
    for (vector, bits) in [
        (0x00, 0x8e00),
        (0x01, 0x8e03),
        (0x02, 0x8e02),
        (0x03, 0xee00),
        (0x04, 0xee00),
        (0x08, 0x8e01),
        (0x0e, 0x8e00),
        (0x21, 0x8e00),
        (0x80, 0xee00),
        (0xec, 0x8e00),
    ] {
        assert_eq!(bits_of(vector), Some(bits), "vector {vector:#x}");
    }
    let user_callable: Vec<u8> = idt
        .gates
        .iter()
        .zip(&idt.attributes)
        .filter(|(_, bits)| *bits >> 13 & 3 == 3)
        .map(|((vector, _), _)| *vector)
        .collect();
    assert_eq!(user_callable, [0x03, 0x04, 0x80]);
    check_pointer_tables(p, elf, syms);
}

/// The pointer tables as the profile describes them. Their
/// function-pointer words (from BTF) are where the image keeps functions:
/// in `tcp_prot` and `udp_prot` as linked, each is NULL or a function of
/// the text, and every word of them that holds the address of a text
/// symbol is one of them (none missed); `struct tty_ldisc_ops` has its
/// name and number first and its owner last. The netfilter hook points
/// are `init_net`'s, NULL as linked.
fn check_pointer_tables(p: &KernelProfile, elf: &Vmlinux<'_>, syms: &vmi::kallsyms::SymbolTable) {
    let cross = p.cross_view.as_ref().expect("a cross-view reference");
    let table = |name: &str| {
        cross
            .pointer_tables
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let text = p.symbols.text..p.symbols.etext;
    for name in ["tcp_prot", "udp_prot"] {
        let t = table(name);
        assert!(t.structure);
        assert!(t.functions.len() > 30, "{name}: {:?}", t.functions);
        let mut functions_set = 0;
        for word in 0..t.entries {
            let value = elf.read_u64(t.address + 8 * u64::from(word)).unwrap();
            let function = t.functions.contains(&word);
            if function {
                assert!(
                    value == 0 || text.contains(&value),
                    "{name}[{word}] = {value:#x}"
                );
                if value != 0 {
                    assert!(
                        syms.symbols_at(value).next().is_some(),
                        "{name}[{word}] = {value:#x}: no symbol starts there"
                    );
                    functions_set += 1;
                }
            } else {
                assert!(
                    !text.contains(&value),
                    "{name}[{word}] = {value:#x}: not a function word"
                );
            }
        }
        assert!(functions_set >= 15, "{name}: {functions_set} functions set");
    }
    let ldiscs = table("tty_ldiscs");
    assert!(!ldiscs.structure);
    assert_eq!(ldiscs.pointee_entries, 18);
    assert_eq!(ldiscs.functions, (2..=16).collect::<Vec<u32>>());
    // Netfilter: init_net's hook points (5 per IP family, 3 for ARP), each
    // NULL in the image as linked (hooks register at boot), and the
    // entries' layout of both generations.
    let init_net = syms.address_of("init_net").expect("init_net");
    let families: Vec<(&str, u32)> = cross
        .pointer_tables
        .iter()
        .filter(|t| t.hook_points)
        .map(|t| (t.name.as_str(), t.entries))
        .collect();
    assert_eq!(
        families,
        [
            ("nf_hooks_ipv4", 5),
            ("nf_hooks_ipv6", 5),
            ("nf_hooks_arp", 3)
        ]
    );
    for t in cross.pointer_tables.iter().filter(|t| t.hook_points) {
        assert!(
            t.address > init_net && t.address - init_net < 8192,
            "{}",
            t.name
        );
        assert!(!t.structure && t.functions.is_empty());
        // NULL as linked: hooks register at boot.
        for i in 0..u64::from(t.entries) {
            assert_eq!(elf.read_u64(t.address + 8 * i), Some(0), "{}[{i}]", t.name);
        }
    }
    assert_eq!((cross.nf_entries_hooks, cross.nf_entry_size), (8, 16));
    // Every network namespace's hook points: the list of them is empty
    // as linked (its head points at itself), `init_net` is the symbol.
    let list = cross.net_namespace_list;
    assert_eq!(syms.address_of("net_namespace_list"), Some(list));
    assert_eq!(
        (elf.read_u64(list), elf.read_u64(list + 8)),
        (Some(list), Some(list))
    );
    assert_eq!(cross.init_net, init_net);
    assert!(cross.net_list.is_multiple_of(8) && cross.net_list < 8192);
    assert!(cross.net_inum.is_multiple_of(4) && cross.net_inum < 8192);
    // Each device's ingress and egress hooks: both kernels build both in.
    assert!(cross.netdev_nf_hooks_ingress > 0 && cross.netdev_nf_hooks_egress > 0);
    assert!(cross.net_dev_base_head > 0 && cross.netdev_dev_list > 0);
    // A thread group's threads: `init_task`'s signal struct is
    // `init_signals`, whose thread list holds `init_task` alone as linked.
    let init_task = syms.address_of("init_task").expect("init_task");
    let init_signals = syms.address_of("init_signals").expect("init_signals");
    let head = init_signals + cross.signal_thread_head;
    let node = init_task + cross.task_thread_node;
    assert_eq!(
        elf.read_u64(init_task + cross.task_signal),
        Some(init_signals)
    );
    assert_eq!(
        (elf.read_u64(head), elf.read_u64(head + 8)),
        (Some(node), Some(node))
    );
    assert_eq!(
        (elf.read_u64(node), elf.read_u64(node + 8)),
        (Some(head), Some(head))
    );
    // The PID table: `init_pid_ns`'s IDR, empty as linked (`alloc_pid`
    // fills it at run time: monvm_crossview reads it live), of 64-slot
    // XArray nodes laid out as x86-64 builds them.
    assert_eq!(
        Some(cross.init_pid_ns),
        syms.address_of("init_pid_ns"),
        "init_pid_ns"
    );
    assert_eq!(
        elf.read_u64(cross.init_pid_ns + cross.pid_ns_xa_head),
        Some(0)
    );
    assert_eq!((cross.xa_node_shift, cross.xa_node_slots), (0, 40));
    assert!(cross.pid_tasks > 0 && cross.pid_tasks.is_multiple_of(8));
    assert!(cross.task_pid_links > 0 && cross.task_pid_links.is_multiple_of(8));
    // The run queues: `runqueues` in the per-CPU section (linked at 0),
    // `__per_cpu_offset` and `nr_cpu_ids` (NR_CPUS until boot sets it) in
    // the image's data.
    assert!(cross.runqueues > 0 && Some(cross.runqueues) < syms.address_of("__per_cpu_end"));
    assert_eq!(
        elf.read_u64(cross.nr_cpu_ids).map(|w| w as u32),
        Some(8192),
        "nr_cpu_ids as linked"
    );
    assert!(cross.rq_curr > 0 && cross.rq_idle > cross.rq_curr);
    // The cgroups' task sets: `css_set_table` filled at boot, and
    // `init_css_set`'s task lists empty as linked (heads pointing at
    // themselves), laid out as `struct css_set` declares them.
    assert_eq!(
        Some(cross.css_set_table),
        syms.address_of("css_set_table"),
        "css_set_table"
    );
    let init_css_set = syms.address_of("init_css_set").expect("init_css_set");
    for list in [
        cross.css_set_tasks,
        cross.css_set_mg_tasks,
        cross.css_set_dying_tasks,
    ] {
        let head = init_css_set + list;
        assert_eq!(
            elf.read_u64(head),
            Some(head),
            "init_css_set list at {list:#x}"
        );
    }
    assert!(
        cross.css_set_tasks < cross.css_set_mg_tasks
            && cross.css_set_mg_tasks < cross.css_set_dying_tasks
    );
    assert!(cross.task_cg_list > 0 && cross.task_cg_list.is_multiple_of(8));
    // The kernel stacks: the busy vmalloc areas on 6.1's global list
    // (empty as linked: a head pointing at itself) or on 6.12's nodes
    // (one as linked); `init_task` on `init_stack`; the per-CPU cache.
    if cross.vmap_area_list != 0 {
        assert_eq!(cross.vmap_nodes, 0);
        assert_eq!(
            elf.read_u64(cross.vmap_area_list),
            Some(cross.vmap_area_list),
            "vmap_area_list as linked"
        );
    } else {
        assert!(cross.vmap_nodes > 0 && cross.vmap_node_size > cross.vmap_node_busy_head);
        assert_eq!(
            elf.read_u64(cross.nr_vmap_nodes).map(|w| w as u32),
            Some(1),
            "nr_vmap_nodes as linked"
        );
    }
    assert_eq!(
        (
            cross.vmap_area_va_start,
            cross.vmap_area_va_end,
            cross.vmap_area_list_node
        ),
        (0, 8, 40)
    );
    assert_eq!(cross.vm_struct_addr, 8);
    assert_eq!(
        elf.read_u64(init_task + cross.task_stack),
        syms.address_of("init_stack"),
        "init_task.stack"
    );
    assert!(
        cross.cached_stacks > 0 && Some(cross.cached_stacks) < syms.address_of("__per_cpu_end")
    );
    let nr_threads = elf.read_u64(init_signals + cross.signal_nr_threads);
    assert_eq!(
        nr_threads.map(|w| w as u32),
        Some(1),
        "init_signals.nr_threads"
    );
    for name in ["net_families", "inet_protos"] {
        let t = table(name);
        assert!(!t.functions.is_empty() && t.functions.iter().all(|&w| w < t.pointee_entries));
    }
}

/// The kernel loaded where it was linked (P = 16 MiB, no slide): located by
/// its banner, its own `init_top_pgt` from the image (as linked: 2 MiB pages
/// of the kernel mapping) translates its addresses, and `pgdir_shift` says 4
/// levels. Then loaded elsewhere with a slide written into the relocated
/// kallsyms base and `phys_base`, as the kernel's boot code would.
fn kaslr_and_kernel_page_tables(elf: &Vmlinux<'_>, profile: &KernelProfile) {
    let syms = &profile.symbols;
    let link = syms.text;
    let image = profile.kernel_image();
    let banner = profile.kernel.banner.as_str();
    let relative_base_va = syms.kallsyms_relative_base;
    let phys_base_va = syms.phys_base;
    let segments = elf.segments();
    let span = segments.iter().map(|s| s.paddr + s.filesz).max().unwrap()
        - segments.iter().map(|s| s.paddr).min().unwrap();
    let ram_size = (0x1000000 + span as usize + (8 << 20)) & !0xfffff;

    let ram = load_kernel(elf, 0x100_0000, ram_size);
    let mem = SliceMemory::flat(&ram);
    let t = Instant::now();
    let loc = locate_kernel(&mem, mem.layout().regions(), &image).unwrap();
    eprintln!(
        "  kernel located in a {} MB RAM image in {:?}",
        ram_size >> 20,
        t.elapsed()
    );
    assert_eq!(loc.phys_text, GuestPhysAddr(0x100_0000));
    assert_eq!(loc.runtime_text, link);
    let mode = loc.paging_mode(&mem, syms.pgdir_shift).unwrap();
    assert_eq!(mode, PagingMode::FourLevel);
    let space = loc.address_space(&mem, syms.init_top_pgt, mode).unwrap();
    let text = GuestVirtAddr::new(link).unwrap();
    assert_eq!(space.translate(text), Ok(GuestPhysAddr(0x100_0000)));
    let banner_va = GuestVirtAddr::new(image.banner_va).unwrap();
    let mut read = vec![0u8; banner.len()];
    space.read_virt(banner_va, &mut read).unwrap();
    assert_eq!(
        read,
        banner.as_bytes(),
        "banner through the kernel's own page tables"
    );
    let sct = GuestVirtAddr::new(syms.sys_call_table).unwrap();
    assert_eq!(space.translate(sct), Ok(loc.phys_of(sct.value()).unwrap()));

    // The static list heads (LIST_HEAD(modules), ima_measurements) point at
    // themselves in the image: empty lists through the kernel's own tables.
    let offsets = &profile.offsets;
    let modules_head = GuestVirtAddr::new(syms.modules).unwrap();
    assert_eq!(
        vmi::linux::modules(&space, modules_head, &offsets.module, 16).count(),
        0
    );
    let ima_head = GuestVirtAddr::new(syms.ima_measurements).unwrap();
    let ima = vmi::linux::measurements(
        &space,
        ima_head,
        &offsets.ima,
        &vmi::linux::ImaLimits::default(),
        16,
    );
    assert_eq!(ima.count(), 0);

    init_task_through_profile(&space, profile);

    // KASLR: loaded at 78 MiB, slid by 0x2a000000.
    let p = 0x4e0_0000u64;
    let runtime = link + 0x2a00_0000;
    let mut ram = load_kernel(elf, p, ram_size + 0x400_0000);
    let put = |ram: &mut Vec<u8>, va: u64, v: u64| {
        let at = (p + va - link) as usize;
        ram[at..at + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(&mut ram, relative_base_va, runtime);
    put(
        &mut ram,
        phys_base_va,
        (0xffff_ffff_8000_0000 + p).wrapping_sub(runtime),
    );
    // A copy of the banner elsewhere (page cache, dmesg buffer) is no
    // candidate unless it sits at the banner's offset from a 2 MiB boundary.
    let decoy = 0x20_1000;
    ram[decoy..decoy + banner.len()].copy_from_slice(banner.as_bytes());
    let mem = SliceMemory::flat(&ram);
    let loc = locate_kernel(&mem, mem.layout().regions(), &image).unwrap();
    assert_eq!(loc.phys_text, GuestPhysAddr(p));
    assert_eq!(loc.slide(), 0x2a00_0000);
    assert_eq!(
        loc.runtime_of(image.banner_va).unwrap().value(),
        image.banner_va + 0x2a00_0000
    );
    // A relocated base that phys_base contradicts is refused.
    put(&mut ram, phys_base_va, 0);
    let mem = SliceMemory::flat(&ram);
    assert!(matches!(
        locate_kernel(&mem, mem.layout().regions(), &image),
        Err(KaslrError::Inconsistent { .. })
    ));
}

/// Places the ELF's load segments at a physical load address above 4 GiB
/// in a two-region RAM image and recovers kallsyms from guest memory.
fn from_ram_image(elf: &Vmlinux<'_>, from_file: &Kallsyms) {
    const LOW: u64 = 16 << 20;
    const HIGH: u64 = 128 << 20;
    const LOAD: u64 = 0x1_0020_0000;
    let layout = RamLayout::new(&[
        RamRegion::new(0, LOW, 0),
        RamRegion::new(0x1_0000_0000, HIGH, LOW),
    ])
    .unwrap();
    let mut backing = vec![0u8; (LOW + HIGH) as usize];
    let segments = elf.segments();
    let first_paddr = segments.iter().map(|s| s.paddr).min().unwrap();
    for s in segments {
        let phys = LOAD + (s.paddr - first_paddr);
        let file_at = (phys - 0x1_0000_0000 + LOW) as usize;
        let (off, filesz) = (s.offset as usize, s.filesz as usize);
        backing[file_at..file_at + filesz].copy_from_slice(&elf.data()[off..off + filesz]);
    }
    let memory = LayoutMemory::new(backing.as_slice(), layout).unwrap();
    let t = Instant::now();
    // Scan the whole high region (the low one holds nothing).
    let k = Kallsyms::from_memory(&memory, GuestPhysAddr(0), LOW, &Limits::default());
    assert!(k.is_err(), "nothing in low memory");
    let k = Kallsyms::from_memory(
        &memory,
        GuestPhysAddr(0x1_0000_0000),
        HIGH,
        &Limits::default(),
    )
    .unwrap();
    eprintln!(
        "  from a {} MB RAM image: {} symbols in {:?}",
        HIGH >> 20,
        k.symbols.len(),
        t.elapsed()
    );
    assert_eq!(k.symbols, from_file.symbols);
    assert_eq!(k.layout, from_file.layout);
    // Locations are guest-physical now: the token table is where the load
    // put it.
    let tt = k.locations.token_table;
    let mut head = [0u8; 2];
    memory.read(GuestPhysAddr(tt), &mut head).unwrap();
    assert!(head[0].is_ascii_graphic() && tt > LOAD);
}

#[test]
fn kallsyms_of_debian_6_1_cloud() {
    check_kernel(&Expect {
        series: "6.1",
        count: 80_000..=100_000,
        layout: Layout::OffsetsFirst {
            seqs_of_names: true,
        },
        syscalls: 451,
    });
}

#[test]
fn kallsyms_of_debian_6_12_cloud() {
    check_kernel(&Expect {
        series: "6.12",
        count: 140_000..=175_000,
        layout: Layout::OffsetsLast,
        syscalls: 463,
    });
}

/// The profile's task and cred offsets (from the image's own BTF): the
/// static `init_task` reads as pid 0 "swapper", its own parent, `init_cred`
/// (uid 0) as both credentials, no mm, alone on its task list.
fn init_task_through_profile<M: GuestMemory>(
    space: &vmi::AddressSpace<'_, M>,
    profile: &KernelProfile,
) {
    let o = &profile.offsets;
    let init_task = GuestVirtAddr::new(profile.symbols.init_task).unwrap();
    let all: Vec<_> = vmi::linux::tasks(space, init_task, &o.task, &o.cred, 16)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(all.len(), 1, "only init_task before boot");
    let t = &all[0];
    assert_eq!((t.pid, t.tgid), (0, 0));
    assert_eq!(t.comm.as_str(), Some("swapper"));
    assert_eq!(t.parent, Some(init_task));
    assert!(t.is_kernel_thread());
    let creds = t.creds.expect("init_cred");
    assert_eq!(creds.address.value(), profile.symbols.init_cred);
    assert_eq!(t.real_cred, Some(creds.address));
    assert_eq!((creds.uid, creds.gid, creds.euid, creds.egid), (0, 0, 0, 0));
    eprintln!("  init_task through the profile's offsets: {:?}", o.task);
}

/// The 6.1 kernel's bzImage with its payload replaced by `stream` (the size
/// trailer appended unless the format carries it, as gzip does).
fn rewrap(vmlinuz: &[u8], stream: &[u8], size: Option<usize>) -> Vec<u8> {
    let setup_sects = usize::from(vmlinuz[0x1f1]);
    let payload_offset = u32::from_le_bytes(vmlinuz[0x248..0x24c].try_into().unwrap()) as usize;
    let start = (setup_sects + 1) * 512 + payload_offset;
    let mut out = vmlinuz[..start].to_vec();
    out.extend_from_slice(stream);
    if let Some(size) = size {
        out.extend_from_slice(&(size as u32).to_le_bytes());
    }
    let len = (out.len() - start) as u32;
    out[0x24c..0x250].copy_from_slice(&len.to_le_bytes());
    out
}

/// `xz` with the kernel's filter chain (scripts/xz_wrap.sh: x86 BCJ, CRC32
/// check; a fast preset here instead of the kernel's 32 MiB dictionary).
fn xz_like_the_kernel(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("xz")
        .args([
            "--format=xz",
            "--check=crc32",
            "--x86",
            "--lzma2=preset=0",
            "-T1",
            "-c",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("xz (xz-utils) is needed to make an XZ kernel payload");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(move || stdin.write_all(data).unwrap());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        out.stdout
    })
}

/// The same profile, byte for byte, whatever the payload's compression:
/// the 6.1 kernel (LZ4 as packaged) recompressed with gzip (as `gzip -9`
/// would frame it) and XZ with the x86 BCJ filter.
#[test]
fn same_profile_from_every_compression() {
    use std::io::Write;
    use vmi::kernel_image::{BzImage, Compression};
    let kernel = monvm_kernel("6.1");
    let original = vmi::profile::build::from_vmlinuz(&kernel.vmlinuz).unwrap();
    assert_eq!(original.compression, Some(Compression::Lz4Legacy));
    let vmlinux = extract_vmlinux(&kernel.vmlinuz).unwrap();

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&vmlinux).unwrap();
    let gzip = rewrap(&kernel.vmlinuz, &gz.finish().unwrap(), None);
    let xz = rewrap(
        &kernel.vmlinuz,
        &xz_like_the_kernel(&vmlinux),
        Some(vmlinux.len()),
    );
    for (image, format) in [(gzip, Compression::Gzip), (xz, Compression::Xz)] {
        assert_eq!(BzImage::parse(&image).unwrap().compression, format);
        let t = Instant::now();
        let built = vmi::profile::build::from_vmlinuz(&image).unwrap();
        eprintln!(
            "{format}: {} MB payload, profile in {:?} ({:?})",
            image.len() >> 20,
            t.elapsed(),
            built.timings
        );
        assert_eq!(built.compression, Some(format));
        assert_eq!(built.encoded, original.encoded, "{format}");
    }
}

/// Where the name of section `name` is in the ELF's section-name table.
fn section_name_offset(elf: &[u8], name: &str) -> usize {
    let u16_at = |at: usize| usize::from(u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()));
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize) = (u64_at(0x28), u16_at(0x3a));
    let (shnum, shstrndx) = (u16_at(0x3c), u16_at(0x3e));
    let strtab = u64_at(shoff + shstrndx * shentsize + 0x18);
    (0..shnum)
        .map(|i| {
            strtab
                + u32::from_le_bytes(elf[shoff + i * shentsize..][..4].try_into().unwrap()) as usize
        })
        .find(|&at| elf[at..].starts_with(name.as_bytes()) && elf[at + name.len()] == 0)
        .unwrap()
}

/// Broken packages give the error that names what is wrong.
#[test]
fn broken_images_give_clear_errors() {
    use vmi::kernel_image::ImageError;
    use vmi::profile::build::{BuildError, from_vmlinux, from_vmlinuz};
    let kernel = monvm_kernel("6.1");
    let message = |r: Result<Built, BuildError>| match r {
        Ok(_) => panic!("built a profile from a broken image"),
        Err(e) => e.to_string(),
    };

    // Cut short: the payload runs past the end of the file.
    let cut = &kernel.vmlinuz[..kernel.vmlinuz.len() / 2];
    let e = from_vmlinuz(cut);
    assert!(
        matches!(e, Err(BuildError::Image(ImageError::Truncated { .. }))),
        "{e:?}"
    );
    assert!(message(from_vmlinuz(cut)).starts_with("truncated image"));
    // Cut inside the setup header, empty, garbage, a vmlinux given as vmlinuz.
    let vmlinux = extract_vmlinux(&kernel.vmlinuz).unwrap();
    for bad in [
        &kernel.vmlinuz[..0x204],
        &[][..],
        &[0x5au8; 8192][..],
        &vmlinux[..],
    ] {
        let e = message(from_vmlinuz(bad));
        assert!(e.starts_with("not a bzImage"), "{e}");
    }
    // A payload whose bytes are damaged.
    let mut damaged = kernel.vmlinuz.clone();
    let mid = damaged.len() / 2;
    damaged[mid..mid + 4096].fill(0xa5);
    let e = message(from_vmlinuz(&damaged));
    assert!(
        e.contains("lz4 payload does not decompress") || e.contains("decompressed"),
        "{e}"
    );
    // A payload in an unknown format.
    let unknown = rewrap(&kernel.vmlinuz, b"what is this?", Some(100));
    assert_eq!(
        message(from_vmlinuz(&unknown)),
        "unknown kernel compression (payload starts 77 68 61 74)"
    );

    // No .BTF: the section renamed.
    let elf = Vmlinux::parse(&vmlinux).unwrap();
    assert!(elf.section(".BTF").is_some());
    let mut no_btf = vmlinux.clone();
    let at = section_name_offset(&vmlinux, ".BTF");
    no_btf[at + 1] = b'X';
    assert!(matches!(from_vmlinux(&no_btf), Err(BuildError::NoBtf)));
    assert!(message(from_vmlinux(&no_btf)).contains("no .BTF section"));

    // No kallsyms: every "0".."9" token run (the token table) wiped.
    let mut no_kallsyms = vmlinux.clone();
    let run = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";
    let mut wiped = 0;
    while let Some(at) = no_kallsyms.windows(run.len()).position(|w| w == run) {
        no_kallsyms[at..at + run.len()].fill(0);
        wiped += 1;
    }
    assert!(wiped >= 1);
    let e = message(from_vmlinux(&no_kallsyms));
    assert!(e.starts_with("kallsyms not found"), "{e}");
}
