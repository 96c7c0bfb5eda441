//! The kernel profile: what the A-VM needs to know about the Mon-VM's kernel
//! to introspect it, built by the verifier from the stock kernel package
//! alone (`avm-verifier profile`; the builder is `build`, feature
//! `builder`) and decoded by the A-VM (`no_std`).
//!
//! It holds link-time facts only: the kernel's identity and banner (which
//! [`locate_kernel`](crate::linux::locate_kernel) looks for in RAM), the
//! addresses of the symbols the A-VM reads (from kallsyms), what each
//! `sys_call_table` slot holds in the image, and the struct member offsets
//! of the Linux layer (from BTF), in exactly the types [`crate::linux`]
//! takes. Reference data for the kernel text (patch sites) and the IDT are
//! reserved sections, empty in this format version.
//!
//! # Encoding
//!
//! [`MAGIC`] (8 bytes), the format version (u16, little-endian), then the
//! [`KernelProfile`] in postcard. Decoding is bounded ([`MAX_PROFILE_LEN`]
//! bytes, every count and string bounded by [`KernelProfile::validate`]),
//! refuses trailing bytes and non-canonical encodings (the profile must
//! re-encode to exactly its input), so one profile has one encoding and
//! its [`digest`] (SHA-256 of the encoding) names it: the A-VM extends that
//! digest into a PCR before using the profile.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kallsyms::KERNEL_TEXT_PREFIX;
use crate::linux::crossview::{CrossViewReference, MAX_TABLE_ENTRIES};
use crate::linux::kaslr::{KERNEL_ALIGN, KERNEL_IMAGE_END, KernelImage, MAX_BANNER};
use crate::linux::text::{self, Offsets, TextReference};
use crate::linux::{CredOffsets, ImaOffsets, ModuleOffsets, PathOffsets, TaskOffsets};

#[cfg(feature = "builder")]
pub mod build;
#[cfg(feature = "builder")]
mod text_build;

/// The first bytes of every encoded profile.
pub const MAGIC: [u8; 8] = *b"AVMKPROF";
/// The format this code writes and reads.
pub const FORMAT_VERSION: u16 = 25;
/// Largest encoded profile accepted (a Debian kernel's is about 1.5 MiB,
/// most of it the text reference).
pub const MAX_PROFILE_LEN: usize = 8 << 20;
/// Most `sys_call_table` slots (Linux 6.12 has 463).
pub const MAX_SYSCALLS: usize = 1024;
/// Longest symbol name kept (the kernel's `KSYM_NAME_LEN` is 512).
pub const MAX_SYMBOL_NAME: usize = 512;
/// Longest kernel release (`uname -r`) and version (`uname -v`).
pub const MAX_RELEASE_LEN: usize = 64;
pub const MAX_VERSION_LEN: usize = 256;
/// Largest struct accepted (`task_struct` is about 10 KiB).
pub const MAX_STRUCT_SIZE: u64 = 64 << 10;
/// Largest offset of a per-CPU variable in a CPU's area (both kernels'
/// areas are about 230 KB).
pub const MAX_PER_CPU_OFFSET: u64 = 16 << 20;

const HEADER_LEN: usize = MAGIC.len() + 2;

/// The kernel's identity, as its banner states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelIdentity {
    /// `uname -r`, e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    /// `uname -v`, e.g. `#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-1 (...)`.
    pub version: String,
    /// `linux_banner` as in the image, without its NUL ("Linux version
    /// ...\n"): the bytes `locate_kernel` compares in RAM.
    pub banner: String,
}

/// Link-time addresses (kallsyms of the package's vmlinux) of the symbols
/// the A-VM reads. KASLR moves them all by one slide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelSymbols {
    /// `_text`: the start of the kernel image (2 MiB-aligned).
    pub text: u64,
    /// `_etext`: the end of the kernel text.
    pub etext: u64,
    /// `__start_rodata` .. `__end_rodata` (contains ro_after_init).
    pub start_rodata: u64,
    pub end_rodata: u64,
    /// `__start_ro_after_init` .. `__end_ro_after_init`: data written once
    /// at boot, then read-only (baselined per boot, not from the image).
    pub start_ro_after_init: u64,
    pub end_ro_after_init: u64,
    /// `_end`: the end of the kernel image (after its bss and brk area);
    /// nothing of the kernel's own lies in its mapping from here up.
    pub end: u64,
    pub sys_call_table: u64,
    /// The 64-bit dispatcher (a tree of direct jumps to the handlers).
    pub x64_sys_call: u64,
    /// The 32-bit dispatcher, when the kernel has IA32 emulation.
    pub ia32_sys_call: Option<u64>,
    pub idt_table: u64,
    pub init_task: u64,
    pub init_top_pgt: u64,
    pub init_cred: u64,
    /// The `modules` list head.
    pub modules: u64,
    /// The IMA measurement list head.
    pub ima_measurements: u64,
    pub linux_banner: u64,
    /// `kallsyms_relative_base` (on 6.1 not listed by kallsyms itself: its
    /// table location in the image, mapped to its link address); in RAM it
    /// holds the runtime `_text`.
    pub kallsyms_relative_base: u64,
    pub phys_base: u64,
    pub page_offset_base: u64,
    /// `pgdir_shift` (39: 4-level, 48: 5-level paging); absent on kernels
    /// without 5-level support.
    pub pgdir_shift: Option<u64>,
    /// `__per_cpu_offset[NR_CPUS]`.
    pub per_cpu_offset: u64,
    /// `jiffies_64`: the tick count since boot, only ever rising while the
    /// kernel runs; lower than last read means the Mon-VM booted again
    /// (also when its new kernel landed where the old one was).
    pub jiffies_64: u64,
}

crate::words::deserialize_members!(KernelSymbols {
    words [
        text, etext, start_rodata, end_rodata, start_ro_after_init, end_ro_after_init, end,
        sys_call_table, x64_sys_call
    ],
    one [ia32_sys_call],
    words [
        idt_table, init_task, init_top_pgt, init_cred, modules, ima_measurements, linux_banner,
        kallsyms_relative_base, phys_base, page_offset_base
    ],
    one [pgdir_shift],
    words [
        per_cpu_offset, jiffies_64
    ],
});

impl KernelSymbols {
    /// Every symbol by its kernel name (for listings and for comparing with
    /// a running kernel's `/proc/kallsyms`).
    pub fn named(&self) -> [(&'static str, Option<u64>); 23] {
        [
            ("_text", Some(self.text)),
            ("_etext", Some(self.etext)),
            ("__start_rodata", Some(self.start_rodata)),
            ("__end_rodata", Some(self.end_rodata)),
            ("__start_ro_after_init", Some(self.start_ro_after_init)),
            ("__end_ro_after_init", Some(self.end_ro_after_init)),
            ("_end", Some(self.end)),
            ("sys_call_table", Some(self.sys_call_table)),
            ("x64_sys_call", Some(self.x64_sys_call)),
            ("ia32_sys_call", self.ia32_sys_call),
            ("idt_table", Some(self.idt_table)),
            ("init_task", Some(self.init_task)),
            ("init_top_pgt", Some(self.init_top_pgt)),
            ("init_cred", Some(self.init_cred)),
            ("modules", Some(self.modules)),
            ("ima_measurements", Some(self.ima_measurements)),
            ("linux_banner", Some(self.linux_banner)),
            ("kallsyms_relative_base", Some(self.kallsyms_relative_base)),
            ("phys_base", Some(self.phys_base)),
            ("page_offset_base", Some(self.page_offset_base)),
            ("pgdir_shift", self.pgdir_shift),
            ("__per_cpu_offset", Some(self.per_cpu_offset)),
            ("jiffies_64", Some(self.jiffies_64)),
        ]
    }
}

/// A symbol: its name and link-time address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedAddress {
    pub name: String,
    pub address: u64,
}

/// `sys_call_table` as the image holds it: slot `i` is system call `i`
/// (`NR_syscalls` = the number of slots), each a handler in the text
/// (`__x64_sys_*`, `__x64_sys_ni_syscall` for unused numbers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallTable {
    /// The table's link address (= `KernelSymbols::sys_call_table`).
    pub address: u64,
    pub slots: Vec<NamedAddress>,
}

/// Sizes of the structures whose members the Linux layer reads (bounds for
/// the offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StructSizes {
    pub task_struct: u64,
    pub cred: u64,
    pub module: u64,
    pub mm_struct: u64,
    pub file: u64,
    pub dentry: u64,
    pub mount: u64,
}

crate::words::deserialize_members!(StructSizes {
    words [
        task_struct, cred, module, mm_struct, file, dentry, mount
    ],
});

/// Struct member offsets (from the package's BTF), in the types the Linux
/// layer takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StructOffsets {
    pub task: TaskOffsets,
    pub cred: CredOffsets,
    pub module: ModuleOffsets,
    pub ima: ImaOffsets,
    pub path: PathOffsets,
    pub sizes: StructSizes,
}

/// The entry symbol each IDT vector must point to: what the kernel installs
/// at boot, from the image's `idt_data` tables and irq stubs (the
/// builder's `idt_reference`). Vectors it does not list may keep their
/// early boot handlers ([`crate::linux::checks`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdtReference {
    /// `(vector, entry symbol)`, vectors strictly increasing.
    pub gates: Vec<(u8, NamedAddress)>,
    /// The attribute word of each gate of `gates`, in the same order:
    /// `struct idt_bits` (IST index in bits 0..2, gate type in 8..12, DPL
    /// in 13..14, present in 15), which is the gate's bytes 4 and 5. From
    /// the image's `idt_data` tables, and what `set_intr_gate` writes for
    /// the irq stubs. Empty only in hand-made test profiles (not checked).
    pub attributes: Vec<u16>,
    /// The early boot handler of each exception vector,
    /// `early_idt_handler_array[v]` (link addresses, 32 of them; empty if
    /// the image has none). The kernel points all 32 there at boot
    /// (`idt_setup_early_handler`, an interrupt gate, DPL 0, no IST) before
    /// it installs the handlers of `gates`: a vector `gates` does not name
    /// keeps its early handler ([`crate::linux::checks`]).
    pub early_handlers: Vec<u64>,
}

/// The present bit of `struct idt_bits`.
pub const IDT_GATE_PRESENT: u16 = 0x8000;

/// `struct idt_bits` of an interrupt gate, DPL 0, no IST, present: what
/// the kernel writes for every vector it gives an irq stub
/// (`idt_setup_apic_and_irq_gates` -> `set_intr_gate`).
pub const IDT_INTERRUPT_GATE_BITS: u16 = 0x8e00;

/// Everything the A-VM knows about one kernel build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelProfile {
    pub kernel: KernelIdentity,
    pub symbols: KernelSymbols,
    pub syscalls: SyscallTable,
    pub offsets: StructOffsets,
    /// See [`IdtReference`]; `None` only for hand-made test profiles.
    pub idt: Option<IdtReference>,
    /// Reference data for the kernel text and rodata
    /// ([`crate::linux::text`]); `None` only for hand-made test profiles.
    pub text_reference: Option<TextReference>,
    /// What the cross-views read ([`crate::linux::crossview`]): hidden
    /// modules and processes, credentials, function-pointer tables; `None`
    /// only for hand-made test profiles.
    pub cross_view: Option<CrossViewReference>,
}

/// Why a profile was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileError {
    /// Longer than [`MAX_PROFILE_LEN`].
    TooLarge {
        len: usize,
        max: usize,
    },
    /// Shorter than the header.
    Truncated,
    BadMagic,
    UnsupportedVersion(u16),
    /// The body is not a well-formed profile (postcard).
    Malformed,
    /// Bytes after the profile.
    TrailingBytes(usize),
    /// The body decodes but re-encodes differently (e.g. an overlong
    /// varint): refused so that one profile has one digest.
    NotCanonical,
    /// A value outside its bounds or inconsistent with another.
    Invalid(&'static str),
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileError::TooLarge { len, max } => {
                write!(f, "profile of {len} bytes exceeds {max}")
            }
            ProfileError::Truncated => write!(f, "profile shorter than its header"),
            ProfileError::BadMagic => write!(f, "not a kernel profile (bad magic)"),
            ProfileError::UnsupportedVersion(v) => write!(
                f,
                "profile format version {v} (this build reads version {FORMAT_VERSION})"
            ),
            ProfileError::Malformed => write!(f, "malformed profile"),
            ProfileError::TrailingBytes(n) => write!(f, "{n} bytes after the profile"),
            ProfileError::NotCanonical => write!(f, "profile encoding is not canonical"),
            ProfileError::Invalid(what) => write!(f, "invalid profile: {what}"),
        }
    }
}

/// SHA-256 of an encoded profile: what the A-VM extends into its PCR.
pub fn digest(encoded: &[u8]) -> [u8; 32] {
    Sha256::digest(encoded).into()
}

fn in_image(va: u64) -> bool {
    (KERNEL_TEXT_PREFIX..KERNEL_IMAGE_END).contains(&va)
}

fn check(ok: bool, what: &'static str) -> Result<(), ProfileError> {
    if ok {
        Ok(())
    } else {
        Err(ProfileError::Invalid(what))
    }
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SYMBOL_NAME && s.bytes().all(|b| b.is_ascii_graphic())
}

impl KernelProfile {
    /// Checks every bound and the consistency of the addresses: what
    /// [`decode`](Self::decode) and [`encode`](Self::encode) require.
    pub fn validate(&self) -> Result<(), ProfileError> {
        self.validate_identity()?;
        self.validate_symbols()?;
        self.validate_syscalls()?;
        self.validate_offsets()?;
        if let Some(idt) = &self.idt {
            check(idt.gates.len() <= 256, "more than 256 IDT gates")?;
            check(
                idt.attributes.is_empty() || idt.attributes.len() == idt.gates.len(),
                "IDT attributes not one per gate",
            )?;
            check(
                idt.attributes
                    .iter()
                    .all(|bits| bits & IDT_GATE_PRESENT != 0),
                "IDT attributes of a gate that is not present",
            )?;
            check(
                idt.early_handlers.is_empty() || idt.early_handlers.len() == 32,
                "IDT early handlers not one per exception vector",
            )?;
            let mut last: Option<u8> = None;
            for (vector, entry) in &idt.gates {
                check(
                    last.is_none_or(|l| *vector > l),
                    "IDT vectors not increasing",
                )?;
                last = Some(*vector);
                check(valid_name(&entry.name), "IDT entry name")?;
                check(
                    (self.symbols.text..self.symbols.etext).contains(&entry.address),
                    "IDT entry outside the kernel text",
                )?;
            }
        }
        if let Some(t) = &self.text_reference {
            self.validate_text(t)?;
        }
        if let Some(c) = &self.cross_view {
            check(in_image(c.module_kset), "module_kset outside the image")?;
            check(in_image(c.init_cred), "init_cred outside the image")?;
            for o in [
                c.kset_list,
                c.kobject_entry,
                c.module_kobject_kobj,
                c.module_kobject_mod,
                c.task_children,
                c.task_sibling,
                c.inode_i_mode,
                c.inode_i_uid,
                c.cred_user,
                c.user_struct_uid,
                c.cred_ucounts,
                c.ucounts_ns,
                c.ucounts_uid,
                c.ucounts_rlimit,
                c.user_ns_ucounts,
                c.task_nsproxy,
                c.nsproxy_net_ns,
                c.task_signal,
                c.signal_thread_head,
                c.task_thread_node,
                c.signal_nr_threads,
                c.pid_ns_xa_head,
                c.xa_node_shift,
                c.pid_tasks,
                c.task_pid_links,
                c.rq_curr,
                c.rq_idle,
                c.css_set_hlist,
                c.css_set_tasks,
                c.css_set_mg_tasks,
                c.css_set_dying_tasks,
                c.task_cg_list,
                c.vmap_node_size,
                c.vmap_node_busy_head,
                c.vmap_area_list_node,
                c.vmap_area_va_start,
                c.vmap_area_va_end,
                c.task_stack,
                c.vm_struct_addr,
                c.class_subsys,
                c.subsys_private_kobj,
                c.subsys_private_class,
                c.subsys_private_devices,
                c.device_private_knode_class,
                c.device_private_device,
                c.netdev_dev,
                c.netdev_nd_net,
            ] {
                check(o <= MAX_STRUCT_SIZE, "cross-view member offset")?;
            }
            // An aligned 8-byte member within its structure.
            let word_in = |offset: u64, size: u64| {
                offset.is_multiple_of(8) && offset.saturating_add(8) <= size
            };
            let sizes = &self.offsets.sizes;
            check(
                word_in(c.mm_pgd, sizes.mm_struct),
                "mm_struct.pgd outside mm_struct",
            )?;
            check(
                word_in(c.mm_flags, sizes.mm_struct),
                "mm_struct.flags outside mm_struct",
            )?;
            check(
                word_in(c.file_f_inode, sizes.file),
                "file.f_inode outside file",
            )?;
            check(
                word_in(c.file_f_cred, sizes.file),
                "file.f_cred outside file",
            )?;
            check(in_image(c.init_pid_ns), "init_pid_ns outside the image")?;
            check(
                in_image(c.per_cpu_offset) && in_image(c.nr_cpu_ids),
                "__per_cpu_offset or nr_cpu_ids outside the image",
            )?;
            check(in_image(c.css_set_table), "css_set_table outside the image")?;
            // The `net` class: off, or found one way (6.1: `class.p`; 6.4
            // and later: `class_kset`).
            if c.net_class != 0 {
                check(in_image(c.net_class), "net_class outside the image")?;
                check(
                    (c.class_subsys != 0) != (c.class_kset != 0),
                    "the net class's devices found neither or both ways",
                )?;
                check(
                    c.class_kset == 0 || in_image(c.class_kset),
                    "class_kset outside the image",
                )?;
            }
            // The busy vmalloc areas: one global list (6.1) or nodes (6.12).
            check(
                match (c.vmap_area_list, c.vmap_nodes) {
                    (list, 0) => in_image(list),
                    (0, nodes) => in_image(nodes) && in_image(c.nr_vmap_nodes),
                    _ => false,
                },
                "vmap_area_list or vmap_nodes",
            )?;
            check(
                c.cached_stacks < MAX_PER_CPU_OFFSET,
                "cached_stacks past the per-CPU area",
            )?;
            check(
                c.runqueues < MAX_PER_CPU_OFFSET,
                "runqueues past the per-CPU area",
            )?;
            check(
                c.xa_node_slots.is_multiple_of(8) && c.xa_node_slots <= MAX_STRUCT_SIZE,
                "xa_node.slots",
            )?;
            check(
                c.nf_entries_hooks <= 64
                    && (8..=64).contains(&c.nf_entry_size)
                    && c.nf_entry_size.is_multiple_of(8),
                "netfilter hook entry layout",
            )?;
            let hook_points = c.pointer_tables.iter().any(|t| t.hook_points);
            check(
                !hook_points
                    || (in_image(c.net_namespace_list)
                        && in_image(c.init_net)
                        && c.net_list <= MAX_STRUCT_SIZE
                        && c.net_list.is_multiple_of(8)
                        && c.net_inum <= MAX_STRUCT_SIZE
                        && c.net_inum.is_multiple_of(4)
                        && c.net_dev_base_head <= MAX_STRUCT_SIZE
                        && c.netdev_name <= MAX_STRUCT_SIZE
                        && [
                            c.net_dev_base_head,
                            c.netdev_dev_list,
                            c.netdev_nf_hooks_ingress,
                            c.netdev_nf_hooks_egress,
                        ]
                        .iter()
                        .all(|&o| o <= MAX_STRUCT_SIZE && o.is_multiple_of(8))),
                "network namespaces",
            )?;
            check(c.pointer_tables.len() <= 16, "too many pointer tables")?;
            for t in &c.pointer_tables {
                check(valid_name(&t.name), "pointer table name")?;
                check(
                    in_image(t.address)
                        && t.address.is_multiple_of(8)
                        && t.entries > 0
                        && t.entries as usize <= MAX_TABLE_ENTRIES
                        && t.pointee_entries as usize <= MAX_TABLE_ENTRIES
                        && !(t.structure && t.pointee_entries > 0),
                    "pointer table",
                )?;
                let words = if t.structure {
                    t.entries
                } else {
                    t.pointee_entries
                };
                check(
                    t.functions.windows(2).all(|w| w[0] < w[1])
                        && t.functions.last().is_none_or(|&w| w < words),
                    "pointer table function words",
                )?;
                check(
                    !t.hook_points
                        || (!t.structure
                            && t.pointee_entries == 0
                            && t.functions.is_empty()
                            && t.entries <= 16
                            && t.address
                                .checked_sub(c.init_net)
                                .is_some_and(|o| o <= MAX_STRUCT_SIZE)),
                    "netfilter hook points",
                )?;
            }
        }
        Ok(())
    }

    fn validate_text(&self, t: &TextReference) -> Result<(), ProfileError> {
        let s = &self.symbols;
        let text_len = s.etext - s.text;
        check(
            t.text.start == s.text && t.text.len == text_len,
            "text region is not _text.._etext",
        )?;
        check(
            t.rodata.start == s.start_rodata
                && t.rodata.len > 0
                && t.rodata
                    .start
                    .checked_add(t.rodata.len)
                    .is_some_and(|e| e <= s.end_rodata),
            "rodata region outside __start_rodata..__end_rodata",
        )?;
        for r in [&t.text, &t.rodata] {
            check(
                r.len <= text::MAX_REGION && r.len.div_ceil(text::CHUNK) == r.digests.len() as u64,
                "region chunk count",
            )?;
        }
        let image_end = t.rodata.start - s.text + t.rodata.len;
        let within = |list: &Offsets, end: u64, len: u64| {
            list.as_slice()
                .last()
                .is_none_or(|&o| u64::from(o) + len <= end)
        };
        let r = &t.relocations;
        check(
            within(&r.abs32, image_end, 4)
                && within(&r.inv32, image_end, 4)
                && within(&r.abs64, image_end, 8),
            "relocation outside text and rodata",
        )?;
        let p = &t.sites;
        check(
            within(&p.returns, text_len, 5)
                && within(&p.fentry, text_len, 5)
                && within(&p.calls, text_len, 5)
                && within(&p.locks, text_len, 1)
                && within(&p.endbr, text_len, 4)
                && within(&t.functions, text_len, 1),
            "patch site outside the text",
        )?;
        let j = &p.jumps;
        check(
            j.lens.len() == j.offsets.len() && j.targets.len() == j.offsets.len(),
            "jump label lists differ in length",
        )?;
        check(
            j.lens.iter().all(|&l| l == 2 || l == 5)
                && j.offsets
                    .as_slice()
                    .iter()
                    .zip(&j.lens)
                    .all(|(&o, &l)| u64::from(o) + u64::from(l) <= text_len),
            "jump label site",
        )?;
        for sized in [&p.boot, &p.boot_constants] {
            check(
                sized.lens.len() == sized.offsets.len(),
                "site lists differ in length",
            )?;
            check(
                sized
                    .offsets
                    .as_slice()
                    .iter()
                    .zip(&sized.lens)
                    .all(|(&o, &l)| l > 0 && u64::from(o) + u64::from(l) <= text_len),
                "boot-patched site",
            )?;
        }
        for list in [&t.return_thunks, &t.fentry_targets] {
            check(
                list.len() <= 16 && list.iter().all(|&o| u64::from(o) < text_len),
                "thunk or fentry target",
            )?;
        }
        check(
            t.ftrace.as_ref().is_none_or(|f| f.is_valid(text_len)),
            "ftrace trampoline templates",
        )?;
        Ok(())
    }

    fn validate_identity(&self) -> Result<(), ProfileError> {
        let k = &self.kernel;
        check(
            !k.release.is_empty()
                && k.release.len() <= MAX_RELEASE_LEN
                && k.release.bytes().all(|b| b.is_ascii_graphic()),
            "kernel release",
        )?;
        check(
            k.version.len() <= MAX_VERSION_LEN && printable(&k.version),
            "kernel version",
        )?;
        check(
            k.banner.len() <= MAX_BANNER
                && k.banner.starts_with("Linux version ")
                && k.banner.ends_with('\n')
                && printable(k.banner.trim_end_matches('\n')),
            "kernel banner",
        )?;
        check(
            k.banner
                .strip_prefix("Linux version ")
                .and_then(|rest| rest.strip_prefix(k.release.as_str()))
                .is_some_and(|rest| rest.starts_with(' ')),
            "banner does not name the release",
        )
    }

    fn validate_symbols(&self) -> Result<(), ProfileError> {
        let s = &self.symbols;
        for (_, address) in s.named() {
            if let Some(a) = address {
                check(in_image(a), "symbol outside the kernel image")?;
            }
        }
        check(
            s.text.is_multiple_of(KERNEL_ALIGN),
            "_text not 2 MiB-aligned",
        )?;
        let text = s.text..s.etext;
        let rodata = s.start_rodata..s.end_rodata;
        check(s.text < s.etext, "empty kernel text")?;
        check(
            s.etext <= s.start_rodata && s.start_rodata < s.end_rodata,
            "rodata not after the text",
        )?;
        check(
            s.start_ro_after_init <= s.end_ro_after_init,
            "ro_after_init range reversed",
        )?;
        check(
            s.end_rodata < s.end && s.end <= KERNEL_IMAGE_END,
            "_end not after the rodata, in the kernel image mapping",
        )?;
        check(
            text.contains(&s.x64_sys_call),
            "x64_sys_call outside the text",
        )?;
        if let Some(a) = s.ia32_sys_call {
            check(text.contains(&a), "ia32_sys_call outside the text")?;
        }
        check(
            rodata.contains(&s.sys_call_table),
            "sys_call_table outside rodata",
        )?;
        check(
            rodata.contains(&s.linux_banner),
            "linux_banner outside rodata",
        )?;
        check(
            rodata.contains(&s.kallsyms_relative_base),
            "kallsyms_relative_base outside rodata",
        )?;
        check(
            s.kallsyms_relative_base.is_multiple_of(8),
            "kallsyms_relative_base unaligned",
        )?;
        check(
            s.init_top_pgt.is_multiple_of(4096),
            "init_top_pgt not page-aligned",
        )?;
        check(s.idt_table.is_multiple_of(8), "idt_table unaligned")
    }

    fn validate_syscalls(&self) -> Result<(), ProfileError> {
        let t = &self.syscalls;
        check(
            t.address == self.symbols.sys_call_table,
            "syscall table address differs from sys_call_table",
        )?;
        check(
            !t.slots.is_empty() && t.slots.len() <= MAX_SYSCALLS,
            "syscall slot count",
        )?;
        let end = (t.slots.len() as u64)
            .checked_mul(8)
            .and_then(|n| t.address.checked_add(n));
        check(
            end.is_some_and(|e| e <= self.symbols.end_rodata),
            "syscall table runs past rodata",
        )?;
        for slot in &t.slots {
            check(valid_name(&slot.name), "syscall handler name")?;
            check(
                (self.symbols.text..self.symbols.etext).contains(&slot.address),
                "syscall handler outside the kernel text",
            )?;
        }
        Ok(())
    }

    fn validate_offsets(&self) -> Result<(), ProfileError> {
        let o = &self.offsets;
        let z = &o.sizes;
        for size in [
            z.task_struct,
            z.cred,
            z.module,
            z.mm_struct,
            z.file,
            z.dentry,
            z.mount,
        ] {
            check(size > 0 && size <= MAX_STRUCT_SIZE, "struct size")?;
        }
        // (offset, bytes read there, size of the struct it is in).
        let t = &o.task;
        let c = &o.cred;
        let m = &o.module;
        let p = &o.path;
        let fields = [
            (t.tasks, 16, z.task_struct),
            (t.pid, 4, z.task_struct),
            (t.tgid, 4, z.task_struct),
            (t.comm, 16, z.task_struct),
            (t.real_parent, 8, z.task_struct),
            (t.cred, 8, z.task_struct),
            (t.real_cred, 8, z.task_struct),
            (t.mm, 8, z.task_struct),
            (t.flags, 4, z.task_struct),
            (c.uid, 4, z.cred),
            (c.gid, 4, z.cred),
            (c.euid, 4, z.cred),
            (c.egid, 4, z.cred),
            (m.state, 4, z.module),
            (m.list, 16, z.module),
            (m.name, 56, z.module),
            (m.text_base, 8, z.module),
            (m.text_size, 4, z.module),
            (m.taints, 8, z.module),
            (p.mm_exe_file, 8, z.mm_struct),
            (p.file_f_path, 16, z.file),
            (p.dentry_d_name, 16, z.dentry),
            (p.dentry_d_parent, 8, z.dentry),
            (p.mount_mnt, 8, z.mount),
            (p.mount_mnt_parent, 8, z.mount),
            (p.mount_mnt_mountpoint, 8, z.mount),
        ];
        for (offset, len, size) in fields {
            check(
                offset.checked_add(len).is_some_and(|end| end <= size),
                "member offset outside its struct",
            )?;
        }
        // Members of small structs (struct path, qstr, vfsmount) and the
        // IMA structures: bounded, not measured against a size.
        let i = &o.ima;
        for offset in [
            p.path_mnt,
            p.path_dentry,
            p.qstr_name,
            p.qstr_len,
            p.vfsmount_mnt_root,
            i.queue_later,
            i.queue_entry,
            i.entry_pcr,
            i.entry_digests,
            i.entry_template_desc,
            i.entry_template_data_len,
            i.entry_template_data,
            i.field_data,
            i.field_len,
            i.tpm_digest_digest,
            i.desc_name,
            i.desc_num_fields,
        ] {
            check(offset <= 4096, "member offset beyond 4 KiB")?;
        }
        check((1..=64).contains(&i.field_data_size), "ima_field_data size")
    }

    /// The canonical encoding: header and postcard body. Refuses a profile
    /// that does not [`validate`](Self::validate) or exceeds
    /// [`MAX_PROFILE_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, ProfileError> {
        self.validate()?;
        let mut out = Vec::with_capacity(16 << 10);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let out = postcard::to_extend(self, out).map_err(|_| ProfileError::Malformed)?;
        if out.len() > MAX_PROFILE_LEN {
            return Err(ProfileError::TooLarge {
                len: out.len(),
                max: MAX_PROFILE_LEN,
            });
        }
        Ok(out)
    }

    /// Decodes and validates an encoded profile (bounded: see the module
    /// documentation), refusing any but its canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProfileError> {
        let (profile, body) = Self::decode_body(bytes)?;
        let again = postcard::to_allocvec(&profile).map_err(|_| ProfileError::Malformed)?;
        if again != body {
            return Err(ProfileError::NotCanonical);
        }
        Ok(profile)
    }

    /// [`decode`](Self::decode) for a profile whose exact bytes were
    /// measured first (their [`digest`] extended into a PCR, as the A-VM
    /// does): bounded and validated alike, without the re-encoding that
    /// refuses another encoding of the same content. What the profile
    /// says is a function of those bytes, which their digest names; a
    /// non-canonical encoding has a digest no verifier built, so it is
    /// refused there. (The A-VM leaves the encoder out of its image.)
    pub fn decode_measured(bytes: &[u8]) -> Result<Self, ProfileError> {
        Self::decode_body(bytes).map(|(profile, _)| profile)
    }

    fn decode_body(bytes: &[u8]) -> Result<(Self, &[u8]), ProfileError> {
        if bytes.len() > MAX_PROFILE_LEN {
            return Err(ProfileError::TooLarge {
                len: bytes.len(),
                max: MAX_PROFILE_LEN,
            });
        }
        let (header, body) = bytes
            .split_at_checked(HEADER_LEN)
            .ok_or(ProfileError::Truncated)?;
        let (magic, version) = header.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err(ProfileError::BadMagic);
        }
        let version = u16::from_le_bytes([version[0], version[1]]);
        if version != FORMAT_VERSION {
            return Err(ProfileError::UnsupportedVersion(version));
        }
        let (profile, rest): (KernelProfile, &[u8]) =
            postcard::take_from_bytes(body).map_err(|_| ProfileError::Malformed)?;
        if !rest.is_empty() {
            return Err(ProfileError::TrailingBytes(rest.len()));
        }
        profile.validate()?;
        Ok((profile, body))
    }

    /// The digest of the canonical encoding.
    pub fn digest(&self) -> Result<[u8; 32], ProfileError> {
        Ok(digest(&self.encode()?))
    }

    /// The link-time facts [`locate_kernel`](crate::linux::locate_kernel)
    /// needs.
    pub fn kernel_image(&self) -> KernelImage<'_> {
        KernelImage {
            link_text: self.symbols.text,
            banner_va: self.symbols.linux_banner,
            banner: self.kernel.banner.as_bytes(),
            relative_base_va: self.symbols.kallsyms_relative_base,
            phys_base_va: Some(self.symbols.phys_base),
        }
    }

    /// `NR_syscalls` of this kernel.
    pub fn syscall_count(&self) -> usize {
        self.syscalls.slots.len()
    }
}

#[cfg(test)]
mod tests;
