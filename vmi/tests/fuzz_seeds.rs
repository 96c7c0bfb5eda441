//! The seed corpora of the fuzz targets in vmi/fuzz/seeds/<target>/, made
//! here from crafted images. The test checks that the committed seeds are
//! what the builders make today (so they follow format changes);
//! `VMI_WRITE_SEEDS=1 cargo test -p vmi --test fuzz_seeds` rewrites them.
//! The profile target also has a real seed, the profile of the Debian 6.1
//! kernel `make deps` fetched: it must decode; the same command rewrites it
//! from that kernel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use vmi::PagingMode;
use vmi::craft::{KallsymsBuilder, PageTableBuilder, WalkInput};
use vmi::kallsyms::Layout;

const DIRECT_MAP: u64 = 0xffff_8880_0000_0000;

/// A list of `n` nodes 0x40 apart at `phys` (mapped at `va`), with a head
/// first; `lasso` makes the last node point back at node 1, not the head.
fn write_list(b: &mut PageTableBuilder, va: u64, phys: u64, n: u64, lasso: bool) {
    for i in 0..=n {
        let next = if i == n {
            if lasso { 1 } else { 0 }
        } else {
            i + 1
        };
        let prev = if i == 0 { n } else { i - 1 };
        b.write_u64(phys + 0x40 * i, va + 0x40 * next);
        b.write_u64(phys + 0x40 * i + 8, va + 0x40 * prev);
    }
}

fn walk_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();

    // A 4-level kernel-like space: a direct-map window over the low 16 KiB,
    // a 5-node list in it, a read across a page boundary.
    let mut b = PageTableBuilder::new(0x8000, PagingMode::FourLevel);
    b.map_range(DIRECT_MAP, 0, 0x4000);
    write_list(&mut b, DIRECT_MAP + 0x1000, 0x1000, 5, false);
    seeds.push((
        "four-level-list",
        WalkInput {
            five_level: false,
            check_prev: true,
            split_ram: false,
            root: b.root().value(),
            list_head: DIRECT_MAP + 0x1000,
            read_at: DIRECT_MAP + 0xff8,
            read_len: 16,
            image: b.finish(),
        }
        .encode(),
    ));

    // 5-level paging, an LA57 address, a 2 MiB kernel page.
    let mut b = PageTableBuilder::new(0x8000, PagingMode::FiveLevel);
    b.map_range(0xff11_0000_0000_0000, 0, 0x4000);
    b.map_2m(0xffff_ffff_8100_0000, 0, false, true);
    write_list(&mut b, 0xff11_0000_0000_2000, 0x2000, 3, false);
    seeds.push((
        "five-level-list",
        WalkInput {
            five_level: true,
            check_prev: false,
            split_ram: false,
            root: b.root().value(),
            list_head: 0xff11_0000_0000_2000,
            read_at: 0xffff_ffff_8100_0ff0,
            read_len: 0x40,
            image: b.finish(),
        }
        .encode(),
    ));

    // A list that cycles without coming back to its head.
    let mut b = PageTableBuilder::new(0x8000, PagingMode::FourLevel);
    b.map_range(DIRECT_MAP, 0, 0x4000);
    write_list(&mut b, DIRECT_MAP + 0x1000, 0x1000, 6, true);
    seeds.push((
        "lasso-list",
        WalkInput {
            five_level: false,
            check_prev: false,
            split_ram: false,
            root: b.root().value(),
            list_head: DIRECT_MAP + 0x1000,
            read_at: DIRECT_MAP,
            read_len: 8,
            image: b.finish(),
        }
        .encode(),
    ));

    // A PML4 whose entry 0 points at itself (recursive mapping).
    let mut image = vec![0u8; 0x2000];
    image[0x1000..0x1008].copy_from_slice(&(0x1000u64 | 3).to_le_bytes());
    seeds.push((
        "self-referencing-table",
        WalkInput {
            five_level: false,
            check_prev: true,
            split_ram: false,
            root: 0x1000,
            list_head: 0x1000,
            read_at: 0,
            read_len: 0x100,
            image,
        }
        .encode(),
    ));

    // Split RAM: the tables in the low half, data mapped above 4 GiB.
    let mut b = PageTableBuilder::new(0x1000, PagingMode::FourLevel);
    b.map_range(DIRECT_MAP + 0x1_0000_0000, 0x1_0000_0000, 0x2000);
    let mut image = b.finish();
    let low = 0x8000usize;
    image.resize(low, 0);
    image.extend_from_slice(&[0u8; 0x8000]);
    // The high half starts at image offset `low` = phys 4 GiB: a 2-node list.
    let va = DIRECT_MAP + 0x1_0000_0000;
    for (i, next, prev) in [(0u64, 1u64, 2u64), (1, 2, 0), (2, 0, 1)] {
        let at = low + 0x40 * i as usize;
        image[at..at + 8].copy_from_slice(&(va + 0x40 * next).to_le_bytes());
        image[at + 8..at + 16].copy_from_slice(&(va + 0x40 * prev).to_le_bytes());
    }
    seeds.push((
        "split-ram",
        WalkInput {
            five_level: false,
            check_prev: true,
            split_ram: true,
            root: b.root().value(),
            list_head: va,
            read_at: va + 0xffc,
            read_len: 8,
            image,
        }
        .encode(),
    ));

    // An executable's path across three mounts, and the same tree with a
    // dentry loop (the walk target takes the list head as an mm_struct).
    for (name, looped) in [("exe-path", false), ("exe-path-loop", true)] {
        let mut b = PageTableBuilder::new(0x8000, PagingMode::FourLevel);
        b.map_range(DIRECT_MAP, 0, 0x4000);
        let mm = write_exe_path(&mut b, looped);
        seeds.push((
            name,
            WalkInput {
                five_level: false,
                check_prev: false,
                split_ram: false,
                root: b.root().value(),
                list_head: DIRECT_MAP + mm,
                read_at: DIRECT_MAP + mm,
                read_len: 8,
                image: b.finish(),
            }
            .encode(),
        ));
    }
    seeds
}

/// The path offsets of the walk fuzz target.
const PATH: vmi::linux::PathOffsets = vmi::craft::WALK_PATH_OFFSETS;

/// `/dev/shm/evade` (rootfs, ext4 on it, devtmpfs on `/dev`, tmpfs on
/// `/dev/shm`) in the low 16 KiB at the direct map: mm at 0x100, file at
/// 0x200, mounts from 0x400, dentries from 0x1000, names from 0x3000.
/// Returns the mm's physical address.
fn write_exe_path(b: &mut PageTableBuilder, looped: bool) -> u64 {
    let mut next_dentry = 0x1000u64;
    let mut next_name = 0x3000u64;
    let mut dentry = |b: &mut PageTableBuilder, parent: Option<u64>, name: &[u8]| {
        let d = next_dentry;
        next_dentry += 0x80;
        b.write(next_name, name);
        b.write_u64(d + PATH.dentry_d_parent, DIRECT_MAP + parent.unwrap_or(d));
        let q = d + PATH.dentry_d_name;
        b.write(q + PATH.qstr_len, &(name.len() as u32).to_le_bytes());
        b.write_u64(q + PATH.qstr_name, DIRECT_MAP + next_name);
        next_name += name.len() as u64 + 1;
        d
    };
    let mount = |b: &mut PageTableBuilder, m: u64, root: u64, parent: (u64, u64)| {
        b.write_u64(m + PATH.mount_mnt_parent, DIRECT_MAP + parent.0);
        b.write_u64(m + PATH.mount_mnt_mountpoint, DIRECT_MAP + parent.1);
        b.write_u64(
            m + PATH.mount_mnt + PATH.vfsmount_mnt_root,
            DIRECT_MAP + root,
        );
    };
    let rootfs_root = dentry(b, None, b"/");
    mount(b, 0x400, rootfs_root, (0x400, rootfs_root));
    let ext4_root = dentry(b, None, b"/");
    mount(b, 0x480, ext4_root, (0x400, rootfs_root));
    let dev = dentry(b, Some(ext4_root), b"dev");
    let devtmpfs_root = dentry(b, None, b"/");
    mount(b, 0x500, devtmpfs_root, (0x480, dev));
    let shm = dentry(b, Some(devtmpfs_root), b"shm");
    let tmpfs_root = dentry(b, None, b"/");
    mount(b, 0x580, tmpfs_root, (0x500, shm));
    let dir = dentry(b, Some(tmpfs_root), b"dir");
    let evade = dentry(b, Some(dir), b"evade");
    if looped {
        b.write_u64(dir + PATH.dentry_d_parent, DIRECT_MAP + evade);
    }
    let (mm, file) = (0x100u64, 0x200u64);
    b.write_u64(mm + PATH.mm_exe_file, DIRECT_MAP + file);
    b.write_u64(
        file + PATH.file_f_path + PATH.path_mnt,
        DIRECT_MAP + 0x580 + PATH.mount_mnt,
    );
    b.write_u64(
        file + PATH.file_f_path + PATH.path_dentry,
        DIRECT_MAP + evade,
    );
    mm
}

fn kallsyms_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let build = |layout: Layout, marker_width: u8| {
        let mut b = KallsymsBuilder::new(layout);
        b.marker_width = marker_width;
        b.symbol(b'A', "fixed_percpu_data", 0);
        for i in 0..300u64 {
            b.symbol(
                b't',
                &format!("do_thing_{i}"),
                0xffff_ffff_8100_0000 + 0x40 * i,
            );
        }
        b.symbol(b'D', "sys_call_table", 0xffff_ffff_8200_0360);
        b.symbol(b'D', "init_task", 0xffff_ffff_82a1_aa40);
        b.build().0
    };
    vec![
        (
            "offsets-first-seqs",
            build(
                Layout::OffsetsFirst {
                    seqs_of_names: true,
                },
                4,
            ),
        ),
        ("offsets-last", build(Layout::OffsetsLast, 4)),
        (
            "offsets-first-wide-markers",
            build(
                Layout::OffsetsFirst {
                    seqs_of_names: false,
                },
                8,
            ),
        ),
    ]
}

fn profile_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let sample = |n| vmi::craft::sample_profile(n).encode().unwrap();
    vec![
        ("sample-8-syscalls", sample(8)),
        ("sample-1-syscall", sample(1)),
    ]
}

/// The real seed: the 6.1 cloud kernel's profile.
const REAL_PROFILE_SEED: &str = "debian-6.1-cloud";

/// The text target's input: phys (u32) and slide (u64) of the crafted
/// kernel (vmi::craft::TextKernel, with ftrace templates), then the RAM;
/// page tables for trampoline reads at 0x8000.
fn text_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let k = vmi::craft::TextKernel::new().with_ftrace();
    let seed = |phys: u32, slide: u64, ram: Vec<u8>| {
        let mut out = phys.to_le_bytes().to_vec();
        out.extend_from_slice(&slide.to_le_bytes());
        out.extend_from_slice(&ram);
        out
    };
    let mut tampered = k.ram(0x100, 0x2e60_0000);
    tampered[0x100 + 0x600] = 0xeb;
    let (trampoline, _) = k.ram_with_trampoline(
        0x100,
        0x2e60_0000,
        0x8000,
        &k.trampoline(0x2e60_0000),
        false,
    );
    vec![
        (
            "booted",
            seed(0x100, 0x2e60_0000, k.ram(0x100, 0x2e60_0000)),
        ),
        ("tampered-jump", seed(0x100, 0x2e60_0000, tampered)),
        ("ftrace-trampoline", seed(0x100, 0x2e60_0000, trampoline)),
    ]
}

#[test]
fn real_profile_seed_decodes() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds/profile")
        .join(REAL_PROFILE_SEED);
    if std::env::var_os("VMI_WRITE_SEEDS").is_some() {
        let vmlinuz = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/monvm/6.1/vmlinuz"),
        )
        .expect("the 6.1 Mon-VM kernel: run `make deps`");
        let built = vmi::profile::build::from_vmlinuz(&vmlinuz).unwrap();
        // Without its text reference (about 0.6 MiB of digests and
        // offsets): the seed stays small; the text seeds cover the rest.
        let mut profile = built.profile;
        profile.text_reference = None;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, profile.encode().unwrap()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let profile = vmi::profile::KernelProfile::decode(&bytes).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with VMI_WRITE_SEEDS=1 (needs `make deps`)",
            path.display()
        )
    });
    assert!(profile.kernel.release.starts_with("6.1."));
    assert_eq!(profile.syscall_count(), 451);
}

#[test]
fn committed_seeds_are_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let write = std::env::var_os("VMI_WRITE_SEEDS").is_some();
    for (target, seeds) in [
        ("walk", walk_seeds()),
        ("kallsyms", kallsyms_seeds()),
        ("profile", profile_seeds()),
        ("text", text_seeds()),
    ] {
        let dir = root.join(target);
        for (name, bytes) in seeds {
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            } else {
                let committed = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!("{}: {e}; regenerate with VMI_WRITE_SEEDS=1", path.display())
                });
                assert!(
                    committed == bytes,
                    "{} is stale; regenerate with VMI_WRITE_SEEDS=1 cargo test -p vmi --test fuzz_seeds",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn seeds_parse_as_intended() {
    use vmi::kallsyms::{Kallsyms, Limits};
    use vmi::{AddressSpace, GuestPhysAddr, GuestVirtAddr, LayoutMemory, ListOptions, list_len};
    for (name, seed) in kallsyms_seeds() {
        let k = Kallsyms::parse(&seed, &Limits::default()).unwrap();
        assert_eq!(k.symbols.len(), 303, "{name}");
    }
    for (name, seed) in profile_seeds() {
        let p = vmi::profile::KernelProfile::decode(&seed).unwrap();
        assert!(p.syscall_count() >= 1, "{name}");
    }
    let expected = [
        ("four-level-list", Ok(5)),
        ("five-level-list", Ok(3)),
        ("lasso-list", Err(())),
        ("self-referencing-table", Err(())),
        ("split-ram", Ok(2)),
        ("exe-path", Err(())),
        ("exe-path-loop", Err(())),
    ];
    for ((name, seed), (want_name, want)) in walk_seeds().into_iter().zip(expected) {
        assert_eq!(name, want_name);
        let input = WalkInput::decode(&seed);
        assert_eq!(input.encode(), seed);
        let memory = LayoutMemory::new(input.image.as_slice(), input.layout().unwrap()).unwrap();
        let space = AddressSpace::new(&memory, GuestPhysAddr(input.root), input.mode());
        let head = GuestVirtAddr::new(input.list_head).unwrap();
        let mut options = ListOptions::new(100);
        if input.check_prev {
            options = options.with_prev_check();
        }
        assert_eq!(
            list_len(&space, head, options).map_err(|_| ()),
            want,
            "{name}"
        );
        if name.starts_with("exe-path") {
            let path = vmi::linux::exe_path(&space, head, &PATH);
            if name == "exe-path" {
                assert_eq!(path.unwrap().as_str(), Some("/dev/shm/dir/evade"));
            } else {
                assert!(matches!(path, Err(vmi::linux::PathError::Loop { .. })));
            }
        }
    }
}

/// The text seeds check as their names say, with the fuzz target's
/// trampoline judge (page tables at 0x8000): booted clean, the fentry site
/// calling a genuine trampoline clean.
#[test]
fn text_seeds_check_as_intended() {
    use vmi::linux::text::ftrace::check_trampoline;
    use vmi::linux::text::{Area, TextChecker};
    use vmi::{AddressSpace, GuestPhysAddr, PagingMode, SliceMemory};
    let k = vmi::craft::TextKernel::new().with_ftrace();
    for (name, seed) in text_seeds() {
        let (header, ram) = seed.split_at(12);
        let phys = u64::from(u32::from_le_bytes(header[..4].try_into().unwrap()));
        let slide = u64::from_le_bytes(header[4..].try_into().unwrap());
        let memory = SliceMemory::flat(ram);
        let location = k.location(phys, slide);
        let space = AddressSpace::new(&memory, GuestPhysAddr(0x8000), PagingMode::FourLevel);
        let mut checker =
            TextChecker::new(&k.reference, location, k.ro_after_init.clone()).unwrap();
        let (mut sites, mut calls) = (0, Vec::new());
        for index in 0..checker.chunks(Area::Text) {
            let mut judge = |t| check_trampoline(&space, &k.reference, &location, t).is_ok();
            let o = checker
                .check_chunk_with(&memory, Area::Text, index, &mut judge)
                .unwrap();
            assert!(!o.modified, "{name}");
            sites += o.sites.len();
            calls.extend(o.trampolines);
        }
        match name {
            "booted" => assert_eq!((sites, calls), (0, vec![]), "{name}"),
            "ftrace-trampoline" => assert_eq!(
                (sites, calls),
                (0, vec![vmi::craft::TextKernel::TRAMPOLINE_VA]),
                "{name}"
            ),
            _ => assert!(calls.is_empty(), "{name}"),
        }
    }
}
