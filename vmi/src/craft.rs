//! Builders of synthetic guest memory images: page tables and kallsyms
//! tables; and a sample kernel profile. For tests, fuzzing and examples; the builders are plain code on
//! `Vec<u8>`, trust their caller (they may panic on nonsense such as an
//! address beyond memory) and never touch a real guest.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::addr::GuestPhysAddr;
use crate::kallsyms::Layout;
use crate::paging::PagingMode;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Builds x86-64 page tables inside a memory image. Tables are allocated one
/// 4 KiB frame after another from `table_base` on; the image grows to hold
/// them and whatever is written with [`PageTableBuilder::write`].
#[derive(Clone, Debug)]
pub struct PageTableBuilder {
    image: Vec<u8>,
    root: u64,
    next_table: u64,
    mode: PagingMode,
}

impl PageTableBuilder {
    pub fn new(table_base: u64, mode: PagingMode) -> Self {
        let table_base = table_base & ADDR_MASK;
        let mut b = PageTableBuilder {
            image: Vec::new(),
            root: table_base,
            next_table: table_base,
            mode,
        };
        b.root = b.alloc_table();
        b
    }

    /// Physical address of the top-level table.
    pub fn root(&self) -> GuestPhysAddr {
        GuestPhysAddr(self.root)
    }

    fn alloc_table(&mut self) -> u64 {
        let at = self.next_table;
        self.next_table += 0x1000;
        self.grow(self.next_table);
        at
    }

    fn grow(&mut self, end: u64) {
        let end = end as usize;
        if self.image.len() < end {
            self.image.resize(end, 0);
        }
    }

    fn entry(&self, at: u64) -> u64 {
        let at = at as usize;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.image[at..at + 8]);
        u64::from_le_bytes(b)
    }

    fn set_entry(&mut self, at: u64, value: u64) {
        self.write(at, &value.to_le_bytes());
    }

    /// Writes raw bytes at a physical address, growing the image.
    pub fn write(&mut self, phys: u64, bytes: &[u8]) {
        self.grow(phys + bytes.len() as u64);
        let at = phys as usize;
        self.image[at..at + bytes.len()].copy_from_slice(bytes);
    }

    pub fn write_u64(&mut self, phys: u64, value: u64) {
        self.write(phys, &value.to_le_bytes());
    }

    /// Sets the entry for `va` at `level` (1 = PT .. 5 = PML5), creating the
    /// tables above it as needed.
    fn map(&mut self, va: u64, level: u8, leaf: u64) {
        let mut table = self.root;
        let mut l = self.mode.levels();
        loop {
            let index = (va >> (12 + 9 * (u32::from(l) - 1))) & 0x1ff;
            let at = table + index * 8;
            if l == level {
                self.set_entry(at, leaf);
                return;
            }
            let e = self.entry(at);
            table = if e & PRESENT != 0 && e & PAGE_SIZE_BIT == 0 {
                e & ADDR_MASK
            } else {
                let t = self.alloc_table();
                // Upper levels grant everything; the leaf decides.
                self.set_entry(at, t | PRESENT | WRITABLE | (1 << 2));
                t
            };
            l -= 1;
        }
    }

    fn flags(writable: bool, executable: bool) -> u64 {
        PRESENT | if writable { WRITABLE } else { 0 } | if executable { 0 } else { NO_EXECUTE }
    }

    pub fn map_4k(&mut self, va: u64, phys: u64, writable: bool, executable: bool) {
        self.map(
            va,
            1,
            (phys & ADDR_MASK) | Self::flags(writable, executable),
        );
    }

    pub fn map_2m(&mut self, va: u64, phys: u64, writable: bool, executable: bool) {
        let leaf = (phys & ADDR_MASK & !0x1f_ffff) | PAGE_SIZE_BIT;
        self.map(va, 2, leaf | Self::flags(writable, executable));
    }

    pub fn map_1g(&mut self, va: u64, phys: u64, writable: bool, executable: bool) {
        let leaf = (phys & ADDR_MASK & !0x3fff_ffff) | PAGE_SIZE_BIT;
        self.map(va, 3, leaf | Self::flags(writable, executable));
    }

    /// Maps `len` bytes (rounded up to pages) of `va` to `phys` with 4 KiB
    /// pages, read-write, no-execute.
    pub fn map_range(&mut self, va: u64, phys: u64, len: u64) {
        let mut off = 0;
        while off < len {
            self.map_4k(va + off, phys + off, true, false);
            off += 0x1000;
        }
    }

    /// A copy of the image as built so far.
    pub fn finish(&self) -> Vec<u8> {
        self.image.clone()
    }

    pub fn into_image(self) -> Vec<u8> {
        self.image
    }
}

/// Builds kallsyms tables as `scripts/kallsyms.c` lays them out, in either
/// order, for symbols given in any order (they are sorted by address).
#[derive(Clone, Debug)]
pub struct KallsymsBuilder {
    pub layout: Layout,
    pub relative_base: u64,
    /// Per-CPU symbols below the base are stored as absolute offsets
    /// (`CONFIG_KALLSYMS_ABSOLUTE_PERCPU`), the rest as base - 1 - offset.
    pub absolute_percpu: bool,
    /// 4 (current kernels) or 8.
    pub marker_width: u8,
    /// Bytes of filler before the first table (a multiple of 8).
    pub lead: usize,
    symbols: Vec<(u8, String, u64)>,
}

/// Positions of the tables in a built image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuiltTables {
    pub offsets: usize,
    pub relative_base: usize,
    pub num_syms: usize,
    pub names: usize,
    pub markers: usize,
    pub seqs_of_names: Option<usize>,
    pub token_table: usize,
    pub token_index: usize,
    pub end: usize,
}

/// Two-character tokens for the indices that are not printable characters.
const PAIR_CHARS: &[u8] = b"_etaoinsrcdlmpu";

fn token_strings() -> Vec<Vec<u8>> {
    let mut pairs = PAIR_CHARS
        .iter()
        .flat_map(|&a| PAIR_CHARS.iter().map(move |&b| vec![a, b]));
    (0..=255u8)
        .map(|i| {
            if i.is_ascii_graphic() {
                vec![i]
            } else {
                pairs.next().unwrap_or_else(|| vec![b'?', b'?'])
            }
        })
        .collect()
}

impl KallsymsBuilder {
    pub fn new(layout: Layout) -> Self {
        KallsymsBuilder {
            layout,
            relative_base: 0xffff_ffff_8100_0000,
            absolute_percpu: true,
            marker_width: 4,
            lead: 64,
            symbols: Vec::new(),
        }
    }

    pub fn symbol(&mut self, kind: u8, name: &str, address: u64) -> &mut Self {
        self.symbols.push((kind, String::from(name), address));
        self
    }

    fn encode(expanded: &[u8], tokens: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut j = 0;
        while j < expanded.len() {
            let pair = expanded
                .get(j..j + 2)
                .and_then(|p| tokens.iter().position(|t| t.as_slice() == p));
            match pair {
                Some(i) => {
                    out.push(i as u8);
                    j += 2;
                }
                _ => {
                    let b = expanded[j];
                    out.push(if b.is_ascii_graphic() { b } else { b'?' });
                    j += 1;
                }
            }
        }
        out
    }

    fn offset_of(&self, address: u64) -> i32 {
        let base = self.relative_base;
        if self.absolute_percpu {
            if address < base {
                address as i32
            } else {
                (base.wrapping_sub(1).wrapping_sub(address)) as i64 as i32
            }
        } else {
            address.wrapping_sub(base) as i32
        }
    }

    /// The image and where each table went.
    pub fn build(&self) -> (Vec<u8>, BuiltTables) {
        let mut symbols = self.symbols.clone();
        symbols.sort_by_key(|s| s.2);
        let n = symbols.len();
        let tokens = token_strings();
        let mut img = vec![0x5au8; self.lead];
        let mut at = BuiltTables::default();
        let align = |img: &mut Vec<u8>| {
            while !img.len().is_multiple_of(8) {
                img.push(0);
            }
        };
        let offsets = |img: &mut Vec<u8>, at: &mut BuiltTables| {
            align(img);
            at.offsets = img.len();
            for s in &symbols {
                img.extend_from_slice(&self.offset_of(s.2).to_le_bytes());
            }
            align(img);
            at.relative_base = img.len();
            img.extend_from_slice(&self.relative_base.to_le_bytes());
        };
        let seqs = |img: &mut Vec<u8>, at: &mut BuiltTables| {
            align(img);
            at.seqs_of_names = Some(img.len());
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| symbols[a].1.cmp(&symbols[b].1).then(a.cmp(&b)));
            for i in order {
                img.extend_from_slice(&(i as u32).to_be_bytes()[1..]);
            }
        };
        if matches!(self.layout, Layout::OffsetsFirst { .. }) {
            offsets(&mut img, &mut at);
        }
        align(&mut img);
        at.num_syms = img.len();
        img.extend_from_slice(&(n as u32).to_le_bytes());
        align(&mut img);
        at.names = img.len();
        let mut markers = Vec::new();
        for (i, (kind, name, _)) in symbols.iter().enumerate() {
            if i % 256 == 0 {
                markers.push((img.len() - at.names) as u64);
            }
            let mut expanded = vec![*kind];
            expanded.extend_from_slice(name.as_bytes());
            let body = Self::encode(&expanded, &tokens);
            if body.len() < 0x80 {
                img.push(body.len() as u8);
            } else {
                img.push((body.len() & 0x7f) as u8 | 0x80);
                img.push((body.len() >> 7) as u8);
            }
            img.extend_from_slice(&body);
        }
        align(&mut img);
        at.markers = img.len();
        for m in markers {
            if self.marker_width == 8 {
                img.extend_from_slice(&m.to_le_bytes());
            } else {
                img.extend_from_slice(&(m as u32).to_le_bytes());
            }
        }
        if self.layout
            == (Layout::OffsetsFirst {
                seqs_of_names: true,
            })
        {
            seqs(&mut img, &mut at);
        }
        align(&mut img);
        at.token_table = img.len();
        let mut index = Vec::new();
        for t in &tokens {
            index.push((img.len() - at.token_table) as u16);
            img.extend_from_slice(t);
            img.push(0);
        }
        align(&mut img);
        at.token_index = img.len();
        for i in index {
            img.extend_from_slice(&i.to_le_bytes());
        }
        if self.layout == Layout::OffsetsLast {
            offsets(&mut img, &mut at);
            seqs(&mut img, &mut at);
        }
        align(&mut img);
        at.end = img.len();
        img.extend_from_slice(&[0xa5; 64]);
        (img, at)
    }
}

/// The input of the `walk` fuzz target and its seeds: a memory image plus
/// where to walk in it. Encoded as a 27-byte header and the image:
/// `flags: u8` (bit 0 five-level paging, bit 1 check `prev` links, bit 2
/// split RAM: the image's second half at 4 GiB), `root: u64`, `list_head:
/// u64`, `read_at: u64`, `read_len: u16` (all little-endian), image bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkInput {
    pub five_level: bool,
    pub check_prev: bool,
    pub split_ram: bool,
    pub root: u64,
    pub list_head: u64,
    pub read_at: u64,
    pub read_len: u16,
    pub image: Vec<u8>,
}

impl WalkInput {
    pub const HEADER_LEN: usize = 27;

    /// Any byte string decodes (a short one as an empty image).
    pub fn decode(data: &[u8]) -> Self {
        let mut header = [0u8; Self::HEADER_LEN];
        let n = data.len().min(Self::HEADER_LEN);
        header[..n].copy_from_slice(&data[..n]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        WalkInput {
            five_level: header[0] & 1 != 0,
            check_prev: header[0] & 2 != 0,
            split_ram: header[0] & 4 != 0,
            root: u64_at(1),
            list_head: u64_at(9),
            read_at: u64_at(17),
            read_len: u16::from_le_bytes([header[25], header[26]]),
            image: data.get(Self::HEADER_LEN..).unwrap_or(&[]).to_vec(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let flags = u8::from(self.five_level)
            | (u8::from(self.check_prev) << 1)
            | (u8::from(self.split_ram) << 2);
        let mut out = vec![flags];
        out.extend_from_slice(&self.root.to_le_bytes());
        out.extend_from_slice(&self.list_head.to_le_bytes());
        out.extend_from_slice(&self.read_at.to_le_bytes());
        out.extend_from_slice(&self.read_len.to_le_bytes());
        out.extend_from_slice(&self.image);
        out
    }

    pub fn mode(&self) -> PagingMode {
        if self.five_level {
            PagingMode::FiveLevel
        } else {
            PagingMode::FourLevel
        }
    }

    /// The RAM layout of the image: flat, or split in two halves with the
    /// second at 4 GiB (like QEMU `pc` with RAM above the PCI hole).
    pub fn layout(&self) -> Option<crate::memory::RamLayout> {
        use crate::memory::{RamLayout, RamRegion};
        let len = self.image.len() as u64;
        if self.split_ram && len >= 2 {
            let low = len / 2;
            RamLayout::new(&[
                RamRegion::new(0, low, 0),
                RamRegion::new(0x1_0000_0000, len - low, low),
            ])
            .ok()
        } else {
            RamLayout::flat(len).ok()
        }
    }
}

/// The executable-path offsets of a Debian 6.1 cloud kernel (those of
/// [`sample_profile`]).
pub const SAMPLE_PATH_OFFSETS: crate::linux::PathOffsets = crate::linux::PathOffsets {
    mm_exe_file: 0x3b0,
    file_f_path: 0x10,
    path_mnt: 0,
    path_dentry: 8,
    dentry_d_name: 0x20,
    dentry_d_parent: 0x18,
    qstr_name: 8,
    qstr_len: 4,
    mount_mnt: 0x20,
    mount_mnt_parent: 0x10,
    mount_mnt_mountpoint: 0x18,
    vfsmount_mnt_root: 0,
};

/// Task offsets for walks of random memory (fuzz target, property tests).
pub const WALK_TASK_OFFSETS: crate::linux::TaskOffsets = crate::linux::TaskOffsets {
    tasks: 0x10,
    pid: 0x20,
    tgid: 0x24,
    comm: 0x28,
    real_parent: 0x38,
    cred: 0x40,
    real_cred: 0x50,
    flags: 0x5c,
    mm: 0x48,
};

/// Cred offsets for walks of random memory, with [`WALK_TASK_OFFSETS`].
pub const WALK_CRED_OFFSETS: crate::linux::CredOffsets = crate::linux::CredOffsets {
    uid: 4,
    gid: 8,
    euid: 20,
    egid: 24,
};

/// The path offsets the `walk` fuzz target reads its list head with as an
/// `mm_struct` (the `exe-path` seeds are laid out for them): the sample
/// ones with `exe_file` early, so small images reach it.
pub const WALK_PATH_OFFSETS: crate::linux::PathOffsets = crate::linux::PathOffsets {
    mm_exe_file: 0x30,
    ..SAMPLE_PATH_OFFSETS
};

/// A cross-view reference holding only what the set-uid check reads
/// (`linux::crossview::setuid_exec`) and the exec's credentials
/// (`exec_ids`): `mm_struct.flags` at 0x58, `file.f_inode` at 0x8,
/// `file.f_cred` at 0x20, `inode.i_mode` at 0x2 and `inode.i_uid` at 0x8,
/// clear of the sample path offsets, and the per-user task counts
/// (`process_counts`: `cred.ucounts` at 0x90, `ucounts.ns` at 0x10,
/// `ucounts.uid` at 0x18, `ucounts.rlimit` at 0x20,
/// `user_namespace.ucounts` at 0x8); for its tests and the `walk` fuzz
/// target.
pub const SETUID_REFERENCE: crate::linux::crossview::CrossViewReference =
    crate::linux::crossview::CrossViewReference {
        module_kset: 0,
        kset_list: 0,
        kobject_entry: 0,
        module_kobject_kobj: 0,
        module_kobject_mod: 0,
        task_children: 0,
        task_sibling: 0,
        init_cred: 0,
        pointer_tables: Vec::new(),
        nf_entries_hooks: 8,
        nf_entry_size: 16,
        net_namespace_list: 0,
        init_net: 0,
        net_list: 0,
        net_inum: 0,
        net_dev_base_head: 0,
        netdev_dev_list: 0,
        netdev_name: 0,
        netdev_nf_hooks_ingress: 0,
        netdev_nf_hooks_egress: 0,
        task_nsproxy: 0,
        nsproxy_net_ns: 0,
        task_signal: 0,
        signal_thread_head: 0,
        task_thread_node: 0,
        signal_nr_threads: 0,
        init_pid_ns: 0,
        pid_ns_xa_head: 0,
        xa_node_shift: 0,
        xa_node_slots: 0x28,
        pid_tasks: 0x8,
        task_pid_links: 0x10,
        runqueues: 0x100,
        per_cpu_offset: 0,
        nr_cpu_ids: 0,
        rq_curr: 0x8,
        rq_idle: 0x10,
        css_set_table: 0,
        css_set_hlist: 0x10,
        css_set_tasks: 0x20,
        css_set_mg_tasks: 0x30,
        css_set_dying_tasks: 0x40,
        task_cg_list: 0x90,
        vmap_area_list: 0,
        vmap_nodes: 0,
        nr_vmap_nodes: 0,
        vmap_node_size: 0,
        vmap_node_busy_head: 0,
        vmap_area_list_node: 0x28,
        vmap_area_va_start: 0,
        vmap_area_va_end: 0x8,
        task_stack: 0x20,
        cached_stacks: 0x200,
        vm_struct_addr: 0x8,
        mm_pgd: 0,
        mm_flags: 0x58,
        file_f_inode: 0x8,
        inode_i_mode: 0x2,
        inode_i_uid: 0x8,
        cred_user: 0x88,
        user_struct_uid: 0x4,
        file_f_cred: 0x20,
        net_class: 0,
        class_subsys: 0,
        class_kset: 0,
        subsys_private_kobj: 0,
        subsys_private_class: 0,
        subsys_private_devices: 0,
        device_private_knode_class: 0,
        device_private_device: 0,
        netdev_dev: 0,
        netdev_nd_net: 0,
        cred_ucounts: 0x90,
        ucounts_ns: 0x10,
        ucounts_uid: 0x18,
        ucounts_rlimit: 0x20,
        user_ns_ucounts: 0x8,
        pgd_user_copy: false,
    };

/// A plausible kernel profile (addresses and offsets of a Debian 6.1 cloud
/// kernel, `syscalls` slots) that validates: for tests, fuzz seeds and
/// benchmarks of the decoder.
pub fn sample_profile(syscalls: usize) -> crate::profile::KernelProfile {
    use alloc::string::ToString;

    use crate::linux::{CredOffsets, ImaOffsets, ModuleOffsets, TaskOffsets};
    use crate::profile::{
        KernelIdentity, KernelProfile, KernelSymbols, NamedAddress, StructOffsets, StructSizes,
        SyscallTable,
    };

    const TEXT: u64 = 0xffff_ffff_8100_0000;
    let release = "6.1.0-57-cloud-amd64";
    let version = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)";
    let slots = (0..syscalls)
        .map(|i| NamedAddress {
            name: alloc::format!("__x64_sys_call_{i}"),
            address: TEXT + 0x10_0000 + 0x40 * i as u64,
        })
        .collect();
    KernelProfile {
        kernel: KernelIdentity {
            release: release.to_string(),
            version: version.to_string(),
            banner: alloc::format!(
                "Linux version {release} (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) {version}\n"
            ),
        },
        symbols: KernelSymbols {
            text: TEXT,
            etext: 0xffff_ffff_81e0_1ef2,
            start_rodata: 0xffff_ffff_8200_0000,
            end_rodata: 0xffff_ffff_8282_7000,
            start_ro_after_init: 0xffff_ffff_8239_8470,
            end_ro_after_init: 0xffff_ffff_823d_ad78,
            end: 0xffff_ffff_8383_0000,
            sys_call_table: 0xffff_ffff_8200_0360,
            x64_sys_call: 0xffff_ffff_8100_3320,
            ia32_sys_call: Some(0xffff_ffff_8100_5600),
            idt_table: 0xffff_ffff_832b_4000,
            init_task: 0xffff_ffff_82a1_aa40,
            init_top_pgt: 0xffff_ffff_82a1_0000,
            init_cred: 0xffff_ffff_82a5_99a0,
            modules: 0xffff_ffff_82b2_7160,
            ima_measurements: 0xffff_ffff_82b9_ee30,
            linux_banner: 0xffff_ffff_8211_ffe0,
            kallsyms_relative_base: 0xffff_ffff_8217_5580,
            phys_base: 0xffff_ffff_82a1_a010,
            page_offset_base: 0xffff_ffff_8239_8480,
            pgdir_shift: Some(0xffff_ffff_8239_848c),
            per_cpu_offset: 0xffff_ffff_8239_eb60,
            jiffies_64: 0xffff_ffff_82a0_9900,
        },
        syscalls: SyscallTable {
            address: 0xffff_ffff_8200_0360,
            slots,
        },
        offsets: StructOffsets {
            task: TaskOffsets {
                tasks: 0x890,
                pid: 0x970,
                tgid: 0x974,
                comm: 0xba0,
                real_parent: 0x980,
                cred: 0xb90,
                real_cred: 0xb88,
                mm: 0x8e0,
                flags: 0x2c,
            },
            cred: CredOffsets {
                uid: 8,
                gid: 12,
                euid: 24,
                egid: 28,
            },
            module: ModuleOffsets {
                state: 0,
                list: 8,
                name: 24,
                text_base: 0x140,
                text_size: 0x14c,
                taints: 0x1f8,
            },
            ima: ImaOffsets::LINUX_6,
            path: SAMPLE_PATH_OFFSETS,
            sizes: StructSizes {
                task_struct: 0x2600,
                cred: 0xb0,
                module: 0x380,
                mm_struct: 0x448,
                file: 0xe8,
                dentry: 0xc0,
                mount: 0x140,
            },
        },
        idt: None,
        text_reference: None,
        cross_view: None,
    }
}

/// A small kernel image with one patch site of every kind, KASLR
/// relocations in text and rodata, and its [`TextReference`]: for the text
/// checker's tests, fuzzing and benchmarks.
///
/// [`TextReference`]: crate::linux::text::TextReference
pub struct TextKernel {
    /// Link `_text`.
    pub link_text: u64,
    /// The image from `_text` to the end of rodata, as in the file.
    pub file: Vec<u8>,
    pub reference: crate::linux::text::TextReference,
    /// `__start_ro_after_init..__end_ro_after_init` (link addresses).
    pub ro_after_init: core::ops::Range<u64>,
}

impl TextKernel {
    pub const LINK_TEXT: u64 = 0xffff_ffff_8100_0000;
    pub const TEXT_LEN: u64 = 3 * 4096 + 100;
    pub const RODATA: u64 = 0x4000;
    pub const RODATA_LEN: u64 = 2 * 4096 + 50;
    pub const RO_AFTER_INIT: u64 = Self::RODATA + 0x1000;
    // Site offsets from _text.
    pub const RETURN: u32 = 0x100;
    pub const FENTRY: u32 = 0x200;
    pub const CALL: u32 = 0x300;
    pub const LOCK: u32 = 0x400;
    pub const ENDBR: u32 = 0x500;
    pub const JUMP2: u32 = 0x600;
    /// A 5-byte jump label across the first chunk boundary.
    pub const JUMP5: u32 = 0xffe;
    pub const BOOT: u32 = 0x700;
    /// A boot-patched range across the third chunk boundary.
    pub const BOOT2: u32 = 0x2ff0;
    pub const CONSTANT: u32 = 0x800;
    pub const THUNK: u32 = 0x2000;
    pub const FENTRY_TARGET: u32 = 0x2100;
    pub const FUNCTIONS: [u32; 2] = [0x2200, 0x2300];
    /// Relocated fields: abs32, inv32, abs64, abs64 across a chunk
    /// boundary, abs64 in rodata.
    pub const RELOCS: [(u32, u8); 5] = [
        (0x900, 32),
        (0x904, 33),
        (0x908, 64),
        (0x1ffc, 64),
        (Self::RODATA as u32 + 0x10, 64),
    ];

    pub fn new() -> Self {
        use crate::linux::text::{
            CHUNK, ENDBR64, JumpSites, NOP2, NOP5, Offsets, PatchSites, Region, Relocations,
            SizedSites, TextReference, blank,
        };
        use sha2::{Digest, Sha256};
        let end = (Self::RODATA + Self::RODATA_LEN) as usize;
        let mut file = alloc::vec![0u8; end];
        let mut x: u32 = 0x1234_5678;
        for b in file.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let put = |file: &mut Vec<u8>, at: u32, bytes: &[u8]| {
            file[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        };
        let rel32 = |from: u32, to: u32| (to as i32 - (from as i32 + 5)).to_le_bytes();
        let insn = |op: u8, from: u32, to: u32| {
            let mut i = [op; 5];
            i[1..].copy_from_slice(&rel32(from, to));
            i
        };
        put(
            &mut file,
            Self::RETURN,
            &insn(0xe9, Self::RETURN, Self::THUNK),
        );
        put(
            &mut file,
            Self::FENTRY,
            &insn(0xe8, Self::FENTRY, Self::FENTRY_TARGET),
        );
        put(
            &mut file,
            Self::CALL,
            &insn(0xe8, Self::CALL, Self::FUNCTIONS[0]),
        );
        put(&mut file, Self::LOCK, &[0xf0]);
        put(&mut file, Self::ENDBR, &ENDBR64);
        // The ftrace template's fields (see `with_ftrace`).
        put(
            &mut file,
            Self::FTRACE_START + u32::from(Self::FTRACE_OP_PTR),
            &[0x48, 0x8b, 0x15],
        );
        put(
            &mut file,
            Self::FTRACE_START + u32::from(Self::FTRACE_CALL),
            &[0xe8],
        );
        put(&mut file, Self::JUMP2, &NOP2);
        put(&mut file, Self::JUMP5, &NOP5);
        // Link values of the relocated fields: kernel addresses.
        for (at, kind) in Self::RELOCS {
            let value = Self::LINK_TEXT + 0x1234;
            match kind {
                32 => put(&mut file, at, &(value as u32).to_le_bytes()),
                33 => put(&mut file, at, &(value.wrapping_neg() as u32).to_le_bytes()),
                _ => put(&mut file, at, &value.to_le_bytes()),
            }
        }
        let reloc = |k: u8| {
            Offsets::new(
                Self::RELOCS
                    .iter()
                    .filter(|r| r.1 == k)
                    .map(|r| r.0)
                    .collect(),
            )
        };
        let sites = PatchSites {
            returns: Offsets::new(alloc::vec![Self::RETURN]),
            fentry: Offsets::new(alloc::vec![Self::FENTRY]),
            calls: Offsets::new(alloc::vec![Self::CALL]),
            locks: Offsets::new(alloc::vec![Self::LOCK]),
            endbr: Offsets::new(alloc::vec![Self::ENDBR]),
            jumps: JumpSites {
                offsets: Offsets::new(alloc::vec![Self::JUMP2, Self::JUMP5]),
                lens: alloc::vec![2, 5],
                targets: alloc::vec![0x20, 0x40],
            },
            boot: SizedSites {
                offsets: Offsets::new(alloc::vec![Self::BOOT, Self::BOOT2]),
                lens: alloc::vec![10, 40],
            },
            boot_constants: SizedSites {
                offsets: Offsets::new(alloc::vec![Self::CONSTANT]),
                lens: alloc::vec![8],
            },
        };
        let ro = Self::RO_AFTER_INIT..Self::RO_AFTER_INIT + 0x100;
        let region = |start: u64, len: u64| {
            let mut digests = Vec::new();
            let mut at = 0;
            while at < len {
                let n = CHUNK.min(len - at);
                let c0 = start + at;
                let mut buf = file[c0 as usize..(c0 + n) as usize].to_vec();
                blank(&mut buf, c0, c0, c0 + n, &sites, &ro);
                digests.push(Sha256::digest(&buf).into());
                at += n;
            }
            Region {
                start: Self::LINK_TEXT + start,
                len,
                digests,
            }
        };
        let reference = TextReference {
            text: region(0, Self::TEXT_LEN),
            rodata: region(Self::RODATA, Self::RODATA_LEN),
            relocations: Relocations {
                abs32: reloc(32),
                inv32: reloc(33),
                abs64: reloc(64),
            },
            sites,
            functions: Offsets::new(Self::FUNCTIONS.to_vec()),
            return_thunks: alloc::vec![Self::THUNK],
            fentry_targets: alloc::vec![Self::FENTRY_TARGET],
            ftrace: None,
        };
        Self {
            link_text: Self::LINK_TEXT,
            file,
            reference,
            ro_after_init: Self::LINK_TEXT + ro.start..Self::LINK_TEXT + ro.end,
        }
    }

    /// Guest RAM with the image at `phys`, relocated by `slide` and patched
    /// as a booted kernel patches it (returns to `ret`, fentry NOPs, the
    /// static call retargeted, the lock prefix dropped, the ENDBR sealed,
    /// the 2-byte jump label on, boot sites and constants set).
    pub fn ram(&self, phys: u64, slide: u64) -> Vec<u8> {
        use crate::linux::text::{NOP5, RET5, SEALED_ENDBR};
        let mut image = self.file.clone();
        for (at, kind) in Self::RELOCS {
            let at = at as usize;
            match kind {
                32 | 33 => {
                    let v = u32::from_le_bytes(image[at..at + 4].try_into().unwrap_or([0; 4]));
                    let v = if kind == 32 {
                        v.wrapping_add(slide as u32)
                    } else {
                        v.wrapping_sub(slide as u32)
                    };
                    image[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                _ => {
                    let v = u64::from_le_bytes(image[at..at + 8].try_into().unwrap_or([0; 8]));
                    image[at..at + 8].copy_from_slice(&v.wrapping_add(slide).to_le_bytes());
                }
            }
        }
        let put = |image: &mut Vec<u8>, at: u32, bytes: &[u8]| {
            image[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        };
        put(&mut image, Self::RETURN, &RET5);
        put(&mut image, Self::FENTRY, &NOP5);
        let to = (Self::FUNCTIONS[1] as i32 - (Self::CALL as i32 + 5)).to_le_bytes();
        put(&mut image, Self::CALL, &[0xe9, to[0], to[1], to[2], to[3]]);
        put(&mut image, Self::LOCK, &[0x3e]);
        put(&mut image, Self::ENDBR, &SEALED_ENDBR);
        put(&mut image, Self::JUMP2, &[0xeb, 0x20 - 2]);
        put(&mut image, Self::BOOT, &[0x90; 10]);
        put(&mut image, Self::BOOT2, &[0x90; 40]);
        put(&mut image, Self::CONSTANT, &slide.to_le_bytes());
        let mut ram = alloc::vec![0u8; phys as usize];
        ram.extend_from_slice(&image);
        ram.extend_from_slice(&[0u8; 4096]);
        ram
    }

    /// Where the kernel is in [`ram`](Self::ram).
    pub fn location(&self, phys: u64, slide: u64) -> crate::linux::KernelLocation {
        crate::linux::KernelLocation {
            phys_text: crate::addr::GuestPhysAddr(phys),
            link_text: self.link_text,
            runtime_text: self.link_text.wrapping_add(slide),
        }
    }
}

/// The function tracer's trampolines on the crafted kernel: a template
/// over the boot-patched range at [`TextKernel::BOOT`] (a live range), and
/// a trampoline made from it the way `create_trampoline` makes one.
impl TextKernel {
    pub const FTRACE_START: u32 = 0x6c0;
    pub const FTRACE_LEN: usize = 0x60;
    /// The ops pointer load and the tracer call, inside the template.
    pub const FTRACE_OP_PTR: u16 = 0x10;
    pub const FTRACE_CALL: u16 = 0x20;
    /// Where the trampoline is mapped, and the ops pointer it holds.
    pub const TRAMPOLINE_VA: u64 = 0xffff_ffff_c000_0000;
    pub const OPS: u64 = 0xffff_8880_0123_4560;

    /// This kernel with trampoline templates in its reference: the
    /// tracer functions are [`FUNCTIONS`](Self::FUNCTIONS)`[0]` only.
    pub fn with_ftrace(mut self) -> Self {
        use crate::linux::text::ftrace::{FtraceReference, Template};
        let start = Self::FTRACE_START as usize;
        self.reference.ftrace = Some(FtraceReference {
            templates: alloc::vec![Template {
                start: Self::FTRACE_START,
                bytes: self.file[start..start + Self::FTRACE_LEN].to_vec(),
                live: alloc::vec![((Self::BOOT - Self::FTRACE_START) as u16, 10)],
                op_ptr: Self::FTRACE_OP_PTR,
                call: Self::FTRACE_CALL,
                direct_jmp: None,
            }],
            tracers: alloc::vec![Self::FUNCTIONS[0]],
        });
        self
    }

    /// The trampoline the kernel booted at `slide` makes at
    /// [`TRAMPOLINE_VA`](Self::TRAMPOLINE_VA): the running template, the
    /// ops load pointed at the slot after `ret; int3` and 3 bytes of
    /// padding (`RET_SIZE` 5), the call to `FUNCTIONS[0]`, the ops pointer.
    pub fn trampoline(&self, slide: u64) -> Vec<u8> {
        let start = Self::FTRACE_START as usize;
        let n = Self::FTRACE_LEN;
        let mut t = self.ram(0, slide)[start..start + n].to_vec();
        let op = usize::from(Self::FTRACE_OP_PTR);
        let disp = (n + 5) as i32 - (op + 7) as i32;
        t[op..op + 3].copy_from_slice(&[0x48, 0x8b, 0x15]);
        t[op + 3..op + 7].copy_from_slice(&disp.to_le_bytes());
        let call = usize::from(Self::FTRACE_CALL);
        let tracer = self.link_text.wrapping_add(slide) + u64::from(Self::FUNCTIONS[0]);
        let rel = tracer.wrapping_sub(Self::TRAMPOLINE_VA + call as u64 + 5) as i32;
        t[call] = 0xe8;
        t[call + 1..call + 5].copy_from_slice(&rel.to_le_bytes());
        t.extend_from_slice(&[0xc3, 0xcc, 0, 0, 0]);
        t.extend_from_slice(&Self::OPS.to_le_bytes());
        t
    }

    /// [`ram`](Self::ram) with 4-level page tables at `tables` (returned:
    /// their root) that map [`TRAMPOLINE_VA`](Self::TRAMPOLINE_VA) to
    /// `tables + 0x8000` (read-only and executable unless `writable`),
    /// `trampoline` at the start of that page, and the fentry site calling
    /// it. `tables` must lie above the kernel in RAM.
    pub fn ram_with_trampoline(
        &self,
        phys: u64,
        slide: u64,
        tables: u64,
        trampoline: &[u8],
        writable: bool,
    ) -> (Vec<u8>, GuestPhysAddr) {
        let mut ram = self.ram(phys, slide);
        let at = phys as usize + Self::FENTRY as usize;
        let site = self.link_text.wrapping_add(slide) + u64::from(Self::FENTRY);
        let rel = Self::TRAMPOLINE_VA.wrapping_sub(site + 5) as i32;
        ram[at] = 0xe8;
        ram[at + 1..at + 5].copy_from_slice(&rel.to_le_bytes());
        let mut pt = PageTableBuilder::new(tables, PagingMode::FourLevel);
        let page = tables + 0x8000;
        pt.map_4k(Self::TRAMPOLINE_VA, page, writable, true);
        // A whole page, as the kernel allocates one.
        pt.write(page, &[0; 4096]);
        pt.write(page, trampoline);
        let root = pt.root();
        let image = pt.into_image();
        if ram.len() < image.len() {
            ram.resize(image.len(), 0);
        }
        let from = tables as usize;
        ram[from..image.len()].copy_from_slice(&image[from..]);
        (ram, root)
    }
}

impl Default for TextKernel {
    fn default() -> Self {
        Self::new()
    }
}
