//! Building the [`TextReference`] from the package's vmlinux (host side):
//! the KASLR relocation tables appended to the decompressed image, the
//! kernel's patch tables (sections and kallsyms-bounded tables), and the
//! digest of every chunk of text and rodata with its patch sites blanked.
//!
//! Table formats (x86-64, Linux 6.1 and 6.12; offsets are "relative to the
//! field itself" unless stated):
//! - relocations, read backwards from the end of the payload: 32-bit
//!   entries (each a sign-extended link address) up to a zero, then the
//!   inverse 32-bit ones up to a zero, then the 64-bit ones up to a zero;
//!   the three tables exactly fill the bytes after the ELF;
//! - `.return_sites`, `.retpoline_sites`, `.smp_locks`, `.ibt_endbr_seal`,
//!   `runtime_ptr_*` / `runtime_shift_*`: one s32 per site;
//! - `__mcount_loc` (`__start_mcount_loc..__stop_mcount_loc`): one u64 link
//!   address per site;
//! - `.altinstructions`: `{s32 instr, s32 repl, cpuid/flags, u8 instrlen, u8
//!   replacementlen}`, 12 bytes on 6.1, 14 on 6.12 (the stride whose every
//!   entry is sane is taken);
//! - `.parainstructions` (6.1): `{u64 instr, u8 type, u8 len}`, 16 bytes;
//! - `__jump_table`: `{s32 code, s32 target, s64 key}`, 16 bytes; the site is
//!   2 bytes if the file holds a 2-byte NOP or short jump there, else 5;
//! - `.static_call_sites`: `{s32 addr, s32 key}`; the `__SCT__*` trampolines
//!   and `ftrace_call`/`ftrace_regs_call`/`ftrace_graph_call` by symbol;
//! - the ftrace trampoline templates (`ftrace_caller..ftrace_caller_end`,
//!   `ftrace_regs_caller..ftrace_regs_caller_end`) and their fields, by
//!   symbol (`vmi::linux::text::ftrace`).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::KernelSymbols;
use super::build::BuildError;
use crate::kallsyms::SymbolTable;
use crate::kernel_image::Vmlinux;
use crate::linux::text::ftrace::{FtraceReference, JNZ8, MAX_TEMPLATE, OP_REF, Template};
use crate::linux::text::{
    CHUNK, JumpSites, MAX_OFFSETS, MAX_SITE_LEN, NOP2, Offsets, PatchSites, Region, Relocations,
    Rules, SiteKind, SizedSites, TextReference, blank,
};

/// Symbols a return site may jump to instead of returning.
const RETURN_THUNKS: &[&str] = &[
    "__x86_return_thunk",
    "retbleed_return_thunk",
    "srso_return_thunk",
    "srso_alias_return_thunk",
    "its_return_thunk",
    "call_depth_return_thunk",
];
/// What an fentry site may call besides being a NOP.
const FENTRY_TARGETS: &[&str] = &["__fentry__", "ftrace_caller", "ftrace_regs_caller"];
/// The trampoline templates: start, end, ops pointer load, tracer call,
/// and the direct-call `jnz` a trampoline drops (regs variant).
const FTRACE_TEMPLATES: [(&str, &str, &str, &str, Option<&str>); 2] = [
    (
        "ftrace_caller",
        "ftrace_caller_end",
        "ftrace_caller_op_ptr",
        "ftrace_call",
        None,
    ),
    (
        "ftrace_regs_caller",
        "ftrace_regs_caller_end",
        "ftrace_regs_caller_op_ptr",
        "ftrace_regs_call",
        Some("ftrace_regs_caller_jmp"),
    ),
];
/// What a trampoline may call: `ftrace_ops_get_func()` returns the list
/// function, the recursion-protecting assist function, or the ops' own
/// callback, and an ops defined outside the kernel image always gets the
/// list function (`FTRACE_OPS_FL_DYNAMIC`); so the callbacks of the
/// kernel's own static ops (tracers, kprobes, perf, livepatch, fprobe, the
/// graph tracer, the stack tracer, direct calls) are the whole set.
const FTRACE_TRACERS: &[&str] = &[
    "ftrace_ops_list_func",
    "arch_ftrace_ops_list_func",
    "ftrace_ops_assist_func",
    "ftrace_ops_no_ops",
    "ftrace_pid_func",
    "ftrace_stub",
    "function_trace_call",
    "function_stack_trace_call",
    "function_no_repeats_trace_call",
    "function_stack_no_repeats_trace_call",
    "function_trace_probe_call",
    "ftrace_graph_func",
    "stack_trace_call",
    "irqsoff_tracer_call",
    "wakeup_tracer_call",
    "kprobe_ftrace_handler",
    "perf_ftrace_function_call",
    "klp_ftrace_handler",
    "fprobe_handler",
    "fprobe_kprobe_handler",
    "fprobe_ftrace_entry",
    "call_direct_funcs",
];
/// Call/jump sites ftrace rewrites that are in no table.
const FTRACE_CALL_SITES: &[&str] = &["ftrace_call", "ftrace_regs_call", "ftrace_graph_call"];

fn bad(why: impl Into<String>) -> BuildError {
    BuildError::Inconsistent(format!("text reference: {}", why.into()))
}

/// The KASLR relocations appended to the image: (abs32, inv32, abs64) as
/// link addresses.
/// The three relocation tables (abs32, inv32, abs64), link addresses.
type RelocationTables = (Vec<u64>, Vec<u64>, Vec<u64>);

fn relocations(elf: &Vmlinux<'_>) -> Result<RelocationTables, BuildError> {
    let data = elf.data();
    let start = usize::try_from(elf.content_end()).map_err(|_| bad("ELF end"))?;
    if start >= data.len() {
        // A kernel built without relocations cannot be moved by KASLR.
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    }
    let tail = &data[start..];
    if !tail.len().is_multiple_of(4) {
        return Err(bad("relocation tables are not whole u32s"));
    }
    let mut words = tail
        .chunks_exact(4)
        .rev()
        .map(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    let mut table = || -> Result<Vec<u64>, BuildError> {
        let mut out = Vec::new();
        loop {
            match words.next() {
                None => return Err(bad("relocation table without its terminator")),
                Some(0) => return Ok(out),
                // Sign-extended kernel addresses.
                Some(v) => out.push(i64::from(v) as u64),
            }
            if out.len() > MAX_OFFSETS {
                return Err(bad("too many relocations"));
            }
        }
    };
    let abs32 = table()?;
    let inv32 = table()?;
    let abs64 = table()?;
    if words.next().is_some() {
        return Err(bad("bytes between the ELF and its relocation tables"));
    }
    Ok((abs32, inv32, abs64))
}

/// A link address's offset from `_text`, if inside `[_text, _text + len)`.
fn offset_in(address: u64, text: u64, len: u64) -> Option<u32> {
    address
        .checked_sub(text)
        .filter(|&o| o < len)
        .and_then(|o| u32::try_from(o).ok())
}

/// The link addresses a table of s32 self-relative entries points to.
fn relative_entries(base: u64, data: &[u8]) -> impl Iterator<Item = u64> + '_ {
    data.chunks_exact(4).enumerate().map(move |(i, w)| {
        let rel = i32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        (base + 4 * i as u64).wrapping_add(i64::from(rel) as u64)
    })
}

/// The bytes of a kallsyms-bounded table (`__start_X..__stop_X`).
fn bounded_table<'a>(
    elf: &Vmlinux<'a>,
    symbols: &SymbolTable,
    start: &str,
    stop: &str,
) -> Result<Option<(u64, &'a [u8])>, BuildError> {
    let (Some(a), Some(b)) = (symbols.address_of(start), symbols.address_of(stop)) else {
        return Ok(None);
    };
    let len = b
        .checked_sub(a)
        .ok_or_else(|| bad(format!("{start} after {stop}")))?;
    let bytes = elf
        .read(a, len as usize)
        .ok_or_else(|| bad(format!("{start} is not in the file")))?;
    Ok(Some((a, bytes)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    // Ordered by precedence when two fixed sites start at one offset: the
    // more permissive rule wins (a static call's rule allows a return).
    Call,
    Return,
    Fentry,
    Jump,
    Endbr,
    Lock,
}

/// The patch sites, and how many of each table were inside the text.
struct Sites {
    fixed: BTreeMap<u32, (Kind, u8, i32)>,
    boot: Vec<(u32, u32)>,
    constants: Vec<(u32, u32)>,
}

fn collect_sites(
    elf: &Vmlinux<'_>,
    symbols: &SymbolTable,
    s: &KernelSymbols,
    relocated: &[u64],
) -> Result<Sites, BuildError> {
    let text = s.text;
    let len = s.etext - s.text;
    let at = |va: u64| offset_in(va, text, len);
    let mut sites = Sites {
        fixed: BTreeMap::new(),
        boot: Vec::new(),
        constants: Vec::new(),
    };
    let mut fixed = |offset: u32, kind: Kind, size: u8, target: i32| {
        let entry = sites.fixed.entry(offset).or_insert((kind, size, target));
        if kind < entry.0 {
            *entry = (kind, size, target);
        }
    };
    let file_byte = |offset: u32| elf.read(text + u64::from(offset), 1).map(|b| b[0]);

    for (section, kind, size) in [
        (".return_sites", Kind::Return, 5),
        (".smp_locks", Kind::Lock, 1),
        (".ibt_endbr_seal", Kind::Endbr, 4),
    ] {
        if let Some((base, data)) = elf.section_at(section) {
            for va in relative_entries(base, data) {
                if let Some(o) = at(va) {
                    fixed(o, kind, size, 0);
                }
            }
        }
    }
    if let Some((_, data)) = bounded_table(elf, symbols, "__start_mcount_loc", "__stop_mcount_loc")?
    {
        for w in data.chunks_exact(8) {
            let va = u64::from_le_bytes(w.try_into().unwrap_or_default());
            if let Some(o) = at(va) {
                fixed(o, Kind::Fentry, 5, 0);
            }
        }
    }
    if let Some((base, data)) = bounded_table(
        elf,
        symbols,
        "__start_static_call_sites",
        "__stop_static_call_sites",
    )? {
        for (i, w) in data.chunks_exact(8).enumerate() {
            let rel = i32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            let va = (base + 8 * i as u64).wrapping_add(i64::from(rel) as u64);
            if let Some(o) = at(va) {
                fixed(o, Kind::Call, 5, 0);
            }
        }
    }
    for sym in symbols.iter() {
        let tramp = sym.name.starts_with("__SCT__") && matches!(sym.kind, b't' | b'T');
        if (tramp || FTRACE_CALL_SITES.contains(&sym.name))
            && let Some(o) = at(sym.address)
        {
            fixed(o, Kind::Call, 5, 0);
        }
    }
    if let Some((base, data)) =
        bounded_table(elf, symbols, "__start___jump_table", "__stop___jump_table")?
    {
        for (i, e) in data.chunks_exact(16).enumerate() {
            let entry = base + 16 * i as u64;
            let code = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let target = i32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let code_va = entry.wrapping_add(i64::from(code) as u64);
            let target_va = (entry + 4).wrapping_add(i64::from(target) as u64);
            let Some(o) = at(code_va) else { continue };
            let first = file_byte(o).ok_or_else(|| bad("jump label outside the file"))?;
            let size = if first == NOP2[0] || first == 0xeb {
                2
            } else {
                5
            };
            let rel = i32::try_from(target_va.wrapping_sub(code_va) as i64)
                .ok()
                .ok_or_else(|| bad("jump label target out of range"))?;
            fixed(o, Kind::Jump, size, rel);
        }
    }

    // Boot-patched ranges.
    let mut moving = Vec::new();
    let mut boot = |va: u64, n: u64| {
        if n > 0
            && n <= MAX_SITE_LEN
            && let Some(o) = at(va)
        {
            sites.boot.push((o, n as u32));
        }
    };
    if let Some((base, data)) = elf.section_at(".altinstructions") {
        let repl = elf.section_at(".altinstr_replacement");
        let stride = alt_stride(base, data, repl.map(|(a, d)| (a, d.len() as u64)))?;
        for (i, e) in data.chunks_exact(stride).enumerate() {
            let entry = base + (stride * i) as u64;
            let instr = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let repl = i32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let repl_va = (entry + 4).wrapping_add(i64::from(repl) as u64);
            let (site, n) = (
                entry.wrapping_add(i64::from(instr) as u64),
                u64::from(e[stride - 2]),
            );
            // A replacement with a KASLR relocation (a RIP-relative reference
            // to a per-CPU variable, an absolute address) lands at the site
            // with a value that depends on the slide: such a site is summed
            // up per boot, not learned.
            let from = relocated.partition_point(|&r| r < repl_va);
            let moves = relocated
                .get(from)
                .is_some_and(|&r| r < repl_va + u64::from(e[stride - 1]));
            if moves {
                if let Some(o) = at(site).filter(|_| n > 0 && n <= MAX_SITE_LEN) {
                    moving.push((o, n as u32));
                }
            } else {
                boot(site, n);
            }
        }
    }
    if let Some((_, data)) = elf.section_at(".parainstructions") {
        for e in data.chunks_exact(16) {
            let va = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
            boot(va, u64::from(e[9]));
        }
    }
    if let Some((base, data)) = elf.section_at(".retpoline_sites") {
        for va in relative_entries(base, data) {
            // `call/jmp __x86_indirect_thunk_rXX`: 5 bytes (6 for a Jcc).
            let first = at(va).and_then(file_byte);
            boot(va, if first == Some(0x0f) { 6 } else { 5 });
        }
    }
    sites.constants.extend(moving);
    for (name, _, _) in elf.sections() {
        let width = if name.starts_with("runtime_ptr_") {
            8
        } else if name.starts_with("runtime_shift_") {
            1
        } else {
            continue;
        };
        if let Some((base, data)) = elf.section_at(&name) {
            for va in relative_entries(base, data) {
                if let Some(o) = at(va) {
                    sites.constants.push((o, width));
                }
            }
        }
    }
    Ok(sites)
}

/// The `.altinstructions` entry size: the one of 12 (6.1) and 14 (6.5+)
/// whose every entry points into the image with a sane replacement.
fn alt_stride(
    base: u64,
    data: &[u8],
    replacement: Option<(u64, u64)>,
) -> Result<usize, BuildError> {
    let sane = |stride: usize| {
        data.len().is_multiple_of(stride)
            && data.chunks_exact(stride).enumerate().all(|(i, e)| {
                let entry = base + (stride * i) as u64;
                let repl = i32::from_le_bytes([e[4], e[5], e[6], e[7]]);
                let repl_va = (entry + 4).wrapping_add(i64::from(repl) as u64);
                let (instrlen, repllen) = (e[stride - 2], e[stride - 1]);
                let in_repl = replacement.is_none_or(|(a, n)| {
                    repllen == 0 || (repl_va >= a && repl_va - a + u64::from(repllen) <= n)
                });
                instrlen >= repllen.min(instrlen) && in_repl
            })
    };
    match (sane(12), sane(14)) {
        (true, false) => Ok(12),
        (false, true) => Ok(14),
        (true, true) if data.is_empty() => Ok(12),
        _ => Err(bad(
            ".altinstructions entry size is neither 12 nor 14 bytes",
        )),
    }
}

/// Merges overlapping `(offset, len)` ranges.
fn merge(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (o, n) in ranges {
        match out.last_mut() {
            Some((lo, ln)) if o <= *lo + *ln => *ln = (*ln).max(o + n - *lo),
            _ => out.push((o, n)),
        }
    }
    out
}

fn sized(ranges: &[(u32, u32)]) -> Result<SizedSites, BuildError> {
    let lens = ranges
        .iter()
        .map(|&(_, n)| u8::try_from(n).map_err(|_| bad("merged boot-patched range over 255 bytes")))
        .collect::<Result<Vec<u8>, _>>()?;
    Ok(SizedSites {
        offsets: Offsets::new(ranges.iter().map(|&(o, _)| o).collect()),
        lens,
    })
}

fn overlaps(ranges: &[(u32, u32)], offset: u32, len: u32) -> bool {
    let i = ranges.partition_point(|&(o, _)| o < offset + len);
    ranges[..i].last().is_some_and(|&(o, n)| o + n > offset)
}

/// Folds the collected sites into non-overlapping lists: a fixed site that
/// touches a boot-patched range becomes part of it; two fixed sites that
/// overlap at different offsets are refused (no such pair in the kernels
/// seen).
fn patch_sites(sites: Sites) -> Result<PatchSites, BuildError> {
    let mut boot = merge(sites.boot);
    // Absorb fixed sites that overlap a boot range (repeat: merging grows).
    let mut fixed: Vec<(u32, (Kind, u8, i32))> = sites.fixed.into_iter().collect();
    loop {
        let (inside, rest): (Vec<_>, Vec<_>) = fixed
            .into_iter()
            .partition(|&(o, (_, n, _))| overlaps(&boot, o, u32::from(n)));
        fixed = rest;
        if inside.is_empty() {
            break;
        }
        boot.extend(inside.into_iter().map(|(o, (_, n, _))| (o, u32::from(n))));
        boot = merge(boot);
    }
    // A boot range that touches a per-boot one becomes per-boot too.
    let mut constants = merge(sites.constants);
    loop {
        let (touching, rest): (Vec<_>, Vec<_>) =
            boot.iter().partition(|&&(o, n)| overlaps(&constants, o, n));
        if touching.is_empty() {
            break;
        }
        boot = rest;
        constants.extend(touching);
        constants = merge(constants);
    }
    let (inside, rest): (Vec<_>, Vec<_>) = fixed
        .into_iter()
        .partition(|&(o, (_, n, _))| overlaps(&constants, o, u32::from(n)));
    fixed = rest;
    constants.extend(inside.into_iter().map(|(o, (_, n, _))| (o, u32::from(n))));
    let constants = merge(constants);
    for w in fixed.windows(2) {
        let ((o, (k, n, _)), (next, (k2, _, _))) = (w[0], w[1]);
        if o + u32::from(n) > next {
            return Err(bad(format!(
                "{k:?} site at +{o:#x} overlaps {k2:?} site at +{next:#x}"
            )));
        }
    }
    let mut out = PatchSites {
        boot: sized(&boot)?,
        boot_constants: sized(&constants)?,
        ..PatchSites::default()
    };
    let mut lists: BTreeMap<Kind, Vec<u32>> = BTreeMap::new();
    let mut jumps = (Vec::new(), Vec::new(), Vec::new());
    for (o, (kind, n, target)) in fixed {
        if overlaps(&constants, o, u32::from(n)) {
            return Err(bad(format!(
                "{kind:?} site at +{o:#x} overlaps a run-time constant"
            )));
        }
        if kind == Kind::Jump {
            jumps.0.push(o);
            jumps.1.push(n);
            jumps.2.push(target);
        } else {
            lists.entry(kind).or_default().push(o);
        }
    }
    let mut take = |k: Kind| Offsets::new(lists.remove(&k).unwrap_or_default());
    out.returns = take(Kind::Return);
    out.fentry = take(Kind::Fentry);
    out.calls = take(Kind::Call);
    out.locks = take(Kind::Lock);
    out.endbr = take(Kind::Endbr);
    out.jumps = JumpSites {
        offsets: Offsets::new(jumps.0),
        lens: jumps.1,
        targets: jumps.2,
    };
    Ok(out)
}

/// The chunk digests of `[start, start + len)` (link addresses), with the
/// sites and ro_after_init blanked as the checker blanks them.
fn region(
    elf: &Vmlinux<'_>,
    s: &KernelSymbols,
    start: u64,
    len: u64,
    sites: &PatchSites,
) -> Result<Region, BuildError> {
    let base = start - s.text;
    let ro = (s.start_ro_after_init - s.text)..(s.end_ro_after_init - s.text);
    let mut digests = Vec::new();
    let mut at = 0;
    while at < len {
        let n = CHUNK.min(len - at);
        let bytes = elf
            .read(start + at, n as usize)
            .ok_or_else(|| bad(format!("{:#x} is not in the file", start + at)))?;
        let mut buf = bytes.to_vec();
        let c0 = base + at;
        blank(&mut buf, c0, c0, c0 + n, sites, &ro);
        digests.push(Sha256::digest(&buf).into());
        at += n;
    }
    Ok(Region {
        start,
        len,
        digests,
    })
}

/// The end of the last section that starts in rodata (the rest up to
/// `__end_rodata` is padding the file does not hold).
fn rodata_end(elf: &Vmlinux<'_>, s: &KernelSymbols) -> u64 {
    elf.sections()
        .into_iter()
        .filter(|(_, a, _)| (s.start_rodata..s.end_rodata).contains(a))
        .map(|(_, a, n)| (a + n).min(s.end_rodata))
        .max()
        .unwrap_or(s.start_rodata)
}

/// Builds the text reference of the image.
pub fn text_reference(
    elf: &Vmlinux<'_>,
    symbols: &SymbolTable,
    s: &KernelSymbols,
) -> Result<TextReference, BuildError> {
    let text_len = s.etext - s.text;
    let rodata_len = rodata_end(elf, s) - s.start_rodata;
    // Everything the checker reads is within the text and rodata.
    let image_len = s.start_rodata - s.text + rodata_len;
    let (abs32, inv32, abs64) = relocations(elf)?;
    let mut all_relocated: Vec<u64> = abs32.iter().chain(&inv32).chain(&abs64).copied().collect();
    all_relocated.sort_unstable();
    let inside = |list: Vec<u64>, width: u64| {
        Offsets::new(
            list.into_iter()
                .filter_map(|va| offset_in(va, s.text, image_len.saturating_sub(width - 1)))
                .filter(|&o| {
                    let o = u64::from(o);
                    o + width <= text_len || o >= s.start_rodata - s.text
                })
                .collect(),
        )
    };
    let relocations = Relocations {
        abs32: inside(abs32, 4),
        inv32: inside(inv32, 4),
        abs64: inside(abs64, 8),
    };
    let functions = Offsets::new(
        symbols
            .iter()
            .filter(|sym| matches!(sym.kind, b't' | b'T' | b'w' | b'W'))
            .filter_map(|sym| offset_in(sym.address, s.text, text_len))
            .collect(),
    );
    let offsets_of = |names: &[&str]| -> Vec<u32> {
        let mut v: Vec<u32> = names
            .iter()
            .filter_map(|n| symbols.address_of(n))
            .filter_map(|a| offset_in(a, s.text, text_len))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let return_thunks = offsets_of(RETURN_THUNKS);
    let fentry_targets = offsets_of(FENTRY_TARGETS);
    let rules = Rules {
        functions: &functions,
        return_thunks: &return_thunks,
        fentry_targets: &fentry_targets,
        text_len,
    };
    let sites = keep_patchable(
        elf,
        s.text,
        &rules,
        patch_sites(collect_sites(elf, symbols, s, &all_relocated)?)?,
    );
    let ftrace = ftrace_reference(elf, symbols, s, &sites, &relocations, &offsets_of);
    Ok(TextReference {
        text: region(elf, s, s.text, text_len, &sites)?,
        rodata: region(elf, s, s.start_rodata, rodata_len, &sites)?,
        relocations,
        sites,
        functions,
        return_thunks,
        fentry_targets,
        ftrace,
    })
}

/// The trampoline templates of the image and the tracer functions; `None`
/// for a kernel without them. A template whose symbols are missing or
/// whose fields do not hold what `create_trampoline` expects is left out
/// (calls to such trampolines are then reported).
fn ftrace_reference(
    elf: &Vmlinux<'_>,
    symbols: &SymbolTable,
    s: &KernelSymbols,
    sites: &PatchSites,
    relocations: &Relocations,
    offsets_of: &dyn Fn(&[&str]) -> Vec<u32>,
) -> Option<FtraceReference> {
    let text_len = s.etext - s.text;
    let mut templates = Vec::new();
    for (start, end, op_ptr, call, jmp) in FTRACE_TEMPLATES {
        let at = |name: &str| symbols.address_of(name);
        let (Some(a), Some(b), Some(op), Some(c)) = (at(start), at(end), at(op_ptr), at(call))
        else {
            continue;
        };
        let jmp = match jmp.map(at) {
            None => None,
            Some(None) => continue,
            Some(Some(j)) => Some(j),
        };
        let Some(len) = b
            .checked_sub(a)
            .filter(|&n| n > 0 && n as usize <= MAX_TEMPLATE)
        else {
            continue;
        };
        let Some(offset) = offset_in(a, s.text, text_len) else {
            continue;
        };
        let Some(bytes) = elf.read(a, len as usize) else {
            continue;
        };
        let field = |va: u64, n: u64| {
            va.checked_sub(a)
                .filter(|&o| o + n <= len)
                .and_then(|o| u16::try_from(o).ok())
        };
        let (Some(op), Some(c)) = (field(op, 7), field(c, 5)) else {
            continue;
        };
        let jmp = match jmp.map(|j| field(j, 2)) {
            None => None,
            Some(None) => continue,
            Some(Some(j)) => Some(j),
        };
        // The bytes of the fields have their own rule.
        let mut own = vec![false; len as usize];
        for (o, n) in [(Some(op + 3), 4), (Some(c), 5), (jmp, 2)] {
            if let Some(o) = o {
                for x in own.iter_mut().skip(usize::from(o)).take(n) {
                    *x = true;
                }
            }
        }
        // What the kernel patches inside the template: a copy holds the
        // running kernel's bytes there.
        let base = u64::from(offset);
        let relocated = |o: u64| {
            [
                (&relocations.abs32, 4),
                (&relocations.inv32, 4),
                (&relocations.abs64, 8),
            ]
            .iter()
            .any(|(list, w)| list.range(o.saturating_sub(w - 1), o + 1).next().is_some())
        };
        let mut live: Vec<(u16, u16)> = Vec::new();
        for i in 0..len {
            let patched = sites.covers(base + i) || relocated(base + i);
            if !patched || own[i as usize] {
                continue;
            }
            let i = i as u16;
            match live.last_mut() {
                Some((o, n)) if *o + *n == i => *n += 1,
                _ => live.push((i, 1)),
            }
        }
        let template = Template {
            start: offset,
            bytes: bytes.to_vec(),
            live,
            op_ptr: op,
            call: c,
            direct_jmp: jmp,
        };
        let expected = bytes.get(usize::from(op)..usize::from(op) + 3) == Some(&OP_REF[..])
            && bytes.get(usize::from(c)) == Some(&0xe8)
            && jmp.is_none_or(|j| bytes.get(usize::from(j)) == Some(&JNZ8));
        if expected {
            templates.push(template);
        }
    }
    if templates.is_empty() {
        return None;
    }
    Some(FtraceReference {
        templates,
        tracers: offsets_of(FTRACE_TRACERS),
    })
}

/// Keeps the fixed-rule sites whose bytes in the file pass their rule: the
/// kernel patches only sites that hold what it expects (a lock site that is
/// no `lock` prefix is left alone), so the others stay under the digest.
fn keep_patchable(
    elf: &Vmlinux<'_>,
    text: u64,
    rules: &Rules<'_>,
    mut sites: PatchSites,
) -> PatchSites {
    let file = |o: u32, n: u64| elf.read(text + u64::from(o), n as usize);
    let passes = |kind: SiteKind, o: u32, n: u64, target: i32| {
        file(o, n).is_some_and(|b| rules.allows(kind, u64::from(o), b, target))
    };
    for (kind, list) in [
        (SiteKind::Return, &mut sites.returns),
        (SiteKind::Fentry, &mut sites.fentry),
        (SiteKind::Call, &mut sites.calls),
        (SiteKind::Lock, &mut sites.locks),
        (SiteKind::Endbr, &mut sites.endbr),
    ] {
        *list = Offsets::new(
            list.as_slice()
                .iter()
                .copied()
                .filter(|&o| passes(kind, o, kind.size(), 0))
                .collect(),
        );
    }
    let j = &sites.jumps;
    let kept: Vec<(u32, u8, i32)> = j
        .offsets
        .as_slice()
        .iter()
        .zip(&j.lens)
        .zip(&j.targets)
        .map(|((&o, &n), &t)| (o, n, t))
        .filter(|&(o, n, t)| passes(SiteKind::Jump, o, u64::from(n), t))
        .collect();
    sites.jumps = JumpSites {
        offsets: Offsets::new(kept.iter().map(|k| k.0).collect()),
        lens: kept.iter().map(|k| k.1).collect(),
        targets: kept.iter().map(|k| k.2).collect(),
    };
    sites
}
