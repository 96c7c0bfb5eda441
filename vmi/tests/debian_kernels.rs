//! kallsyms recovery on the stock Debian 12 Mon-VM kernels fetched by `make
//! deps` (6.1 cloud: LZ4, tables in the old order; 6.12 cloud: ZSTD, the new
//! order), from the decompressed image and from a RAM image of it. The
//! kernels must be there: a missing one fails the test and says to run
//! `make deps`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::{
    elf_file_offset, elf_load_segments, elf_section, elf_va_of_offset, extract_vmlinux,
    load_kernel, monvm_kernel,
};
use vmi::kallsyms::{Kallsyms, Layout, Limits};
use vmi::linux::{KaslrError, KernelImage, locate_kernel};
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
}

fn check_kernel(expect: &Expect) {
    let kernel = monvm_kernel(expect.series);
    let t = Instant::now();
    let vmlinux = extract_vmlinux(&kernel.vmlinuz);
    let unpack = t.elapsed();

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
    let at = |name: &str| elf_file_offset(&vmlinux, syms.address_of(name).unwrap()).unwrap() as u64;
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

    // The same kernel loaded into a RAM image above 4 GiB (a split RAM
    // layout like QEMU pc with 4 GiB), found by scanning guest memory.
    from_ram_image(&vmlinux, &k);
    kaslr_and_kernel_page_tables(&vmlinux, &k, &banner);
}

/// The kernel loaded where it was linked (P = 16 MiB, no slide): located by
/// its banner, its own `init_top_pgt` from the image (as linked: 2 MiB pages
/// of the kernel mapping) translates its addresses, and `pgdir_shift` says 4
/// levels. Then loaded elsewhere with a slide written into the relocated
/// kallsyms base and `phys_base`, as the kernel's boot code would.
fn kaslr_and_kernel_page_tables(vmlinux: &[u8], k: &Kallsyms, banner: &str) {
    let syms = &k.symbols;
    let link = k.relative_base;
    let relative_base_va = elf_va_of_offset(vmlinux, k.locations.relative_base).unwrap();
    let phys_base_va = syms.address_of("phys_base").unwrap();
    let image = KernelImage {
        link_text: link,
        banner_va: syms.address_of("linux_banner").unwrap(),
        banner: banner.as_bytes(),
        relative_base_va,
        phys_base_va: Some(phys_base_va),
    };
    let segments = elf_load_segments(vmlinux);
    let span = segments.iter().map(|s| s.2 + s.3).max().unwrap()
        - segments.iter().map(|s| s.2).min().unwrap();
    let ram_size = (0x1000000 + span as usize + (8 << 20)) & !0xfffff;

    let ram = load_kernel(vmlinux, 0x100_0000, ram_size);
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
    let mode = loc
        .paging_mode(&mem, syms.address_of("pgdir_shift"))
        .unwrap();
    assert_eq!(mode, PagingMode::FourLevel);
    let space = loc
        .address_space(&mem, syms.address_of("init_top_pgt").unwrap(), mode)
        .unwrap();
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
    let sct = GuestVirtAddr::new(syms.address_of("sys_call_table").unwrap()).unwrap();
    assert_eq!(space.translate(sct), Ok(loc.phys_of(sct.value()).unwrap()));

    // The static list heads (LIST_HEAD(modules), ima_measurements) point at
    // themselves in the image: empty lists through the kernel's own tables.
    let modules_head = GuestVirtAddr::new(syms.address_of("modules").unwrap()).unwrap();
    let offsets = vmi::linux::ModuleOffsets {
        state: 0,
        list: 8,
        name: 24,
        text_base: 0x140,
        text_size: 0x148,
        taints: 0x150,
    };
    assert_eq!(
        vmi::linux::modules(&space, modules_head, &offsets, 16).count(),
        0
    );
    let ima_head = GuestVirtAddr::new(syms.address_of("ima_measurements").unwrap()).unwrap();
    let ima = vmi::linux::measurements(
        &space,
        ima_head,
        &vmi::linux::ImaOffsets::LINUX_6,
        &vmi::linux::ImaLimits::default(),
        16,
    );
    assert_eq!(ima.count(), 0);

    init_task_through_btf_offsets(vmlinux, &space, syms);

    // KASLR: loaded at 78 MiB, slid by 0x2a000000.
    let p = 0x4e0_0000u64;
    let runtime = link + 0x2a00_0000;
    let mut ram = load_kernel(vmlinux, p, ram_size + 0x400_0000);
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
fn from_ram_image(vmlinux: &[u8], from_file: &Kallsyms) {
    const LOW: u64 = 16 << 20;
    const HIGH: u64 = 128 << 20;
    const LOAD: u64 = 0x1_0020_0000;
    let layout = RamLayout::new(&[
        RamRegion::new(0, LOW, 0),
        RamRegion::new(0x1_0000_0000, HIGH, LOW),
    ])
    .unwrap();
    let mut backing = vec![0u8; (LOW + HIGH) as usize];
    let segments = elf_load_segments(vmlinux);
    let first_paddr = segments.iter().map(|s| s.2).min().unwrap();
    for &(off, _, paddr, filesz) in &segments {
        let phys = LOAD + (paddr - first_paddr);
        let file_at = (phys - 0x1_0000_0000 + LOW) as usize;
        backing[file_at..file_at + filesz as usize]
            .copy_from_slice(&vmlinux[off as usize..(off + filesz) as usize]);
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
    });
}

#[test]
fn kallsyms_of_debian_6_12_cloud() {
    check_kernel(&Expect {
        series: "6.12",
        count: 140_000..=175_000,
        layout: Layout::OffsetsLast,
    });
}

/// A `.BTF` section as btfparse reads it.
struct Btf<'a>(&'a [u8]);

impl btfparse::Readable for Btf<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = offset as usize;
        match self.0.get(start..start + buffer.len()) {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::EOF,
                "beyond .BTF",
            )),
        }
    }
}

/// Task and cred offsets from the image's own BTF (what the profile will
/// supply): the static `init_task` reads as pid 0 "swapper", its own parent,
/// `init_cred` (uid 0), no mm, alone on its task list.
fn init_task_through_btf_offsets<M: GuestMemory>(
    vmlinux: &[u8],
    space: &vmi::AddressSpace<'_, M>,
    syms: &vmi::kallsyms::SymbolTable,
) {
    let btf = Btf(elf_section(vmlinux, ".BTF").expect(".BTF section"));
    let types = btfparse::TypeInformation::new(&btf).expect("BTF parses");
    let offset = |ty: &str, path: &str| -> u64 {
        let id = types.id_of(ty).unwrap_or_else(|| panic!("BTF type {ty}"));
        match types.offset_of(id, path) {
            Ok((_, btfparse::Offset::ByteOffset(o))) => u64::from(o),
            other => panic!("{ty}.{path}: {other:?}"),
        }
    };
    let tasks = vmi::linux::TaskOffsets {
        tasks: offset("task_struct", "tasks"),
        pid: offset("task_struct", "pid"),
        tgid: offset("task_struct", "tgid"),
        comm: offset("task_struct", "comm"),
        real_parent: offset("task_struct", "real_parent"),
        cred: offset("task_struct", "cred"),
        mm: offset("task_struct", "mm"),
    };
    let cred = vmi::linux::CredOffsets {
        uid: offset("cred", "uid"),
        gid: offset("cred", "gid"),
        euid: offset("cred", "euid"),
        egid: offset("cred", "egid"),
    };
    let init_task = GuestVirtAddr::new(syms.address_of("init_task").unwrap()).unwrap();
    let all: Vec<_> = vmi::linux::tasks(space, init_task, &tasks, &cred, 16)
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
    assert_eq!(creds.address.value(), syms.address_of("init_cred").unwrap());
    assert_eq!((creds.uid, creds.gid, creds.euid, creds.egid), (0, 0, 0, 0));
    eprintln!("  init_task through BTF offsets: {tasks:?}");

    // The IMA layout vmi assumes is this kernel's.
    let ima = vmi::linux::ImaOffsets::LINUX_6;
    for (ty, path, assumed) in [
        ("ima_queue_entry", "later", ima.queue_later),
        ("ima_queue_entry", "entry", ima.queue_entry),
        ("ima_template_entry", "pcr", ima.entry_pcr),
        ("ima_template_entry", "digests", ima.entry_digests),
        (
            "ima_template_entry",
            "template_desc",
            ima.entry_template_desc,
        ),
        (
            "ima_template_entry",
            "template_data_len",
            ima.entry_template_data_len,
        ),
        (
            "ima_template_entry",
            "template_data",
            ima.entry_template_data,
        ),
        ("ima_field_data", "data", ima.field_data),
        ("ima_field_data", "len", ima.field_len),
        ("tpm_digest", "digest", ima.tpm_digest_digest),
        ("ima_template_desc", "name", ima.desc_name),
        ("ima_template_desc", "num_fields", ima.desc_num_fields),
    ] {
        assert_eq!(offset(ty, path), assumed, "{ty}.{path}");
    }
}
