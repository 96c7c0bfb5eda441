//! The function tracer's trampolines: what an fentry site may call besides
//! the kernel's own ftrace entry points.
//!
//! When one `ftrace_ops` alone traces a function (the function tracer
//! switched on: `echo function > current_tracer`), x86-64 Linux
//! (`arch_ftrace_update_trampoline` / `create_trampoline` in
//! `arch/x86/kernel/ftrace.c`) points the function's fentry site at a
//! trampoline of its own in the module area: a copy of the running
//! kernel's `ftrace_caller..ftrace_caller_end` (or of
//! `ftrace_regs_caller..ftrace_regs_caller_end` for an ops that saves all
//! registers) in which
//!
//! - the `movq function_trace_op(%rip), %rdx` at `ftrace_caller_op_ptr`
//!   has its displacement re-targeted to a slot after the code that holds
//!   the ops pointer;
//! - the call at `ftrace_call` calls the ops' tracer function;
//! - (regs variant) the 2-byte `jnz` at `ftrace_regs_caller_jmp` (to the
//!   direct-call path, which is not copied) is the 2-byte NOP `66 90`;
//!
//! followed by the return (`ret; int3`, or `jmp` to the return thunk when
//! the CPU needs one), padding up to the kernel's `RET_SIZE` (1, 2 or 5
//! bytes, by configuration), and the 8-byte ops pointer.
//!
//! Measured on Debian 6.1 and 6.12 under QEMU TCG (function tracer on):
//! every traced fentry site (35,051 of 35,609 on 6.1, 40,339 of 40,339 on
//! 6.12) called one trampoline, a copy of `ftrace_caller` (194 and 216
//! bytes), read-only and executable in the module area; it differed from
//! the running kernel's bytes only in the two fields above, called
//! `function_trace_call`, ended `c3 cc 00 00 00` and held the address of
//! the kernel's `global_ops`.
//!
//! [`check_trampoline`] verifies such a trampoline byte for byte against
//! the template the profile took from the image ([`FtraceReference`]):
//! every byte outside the fields above equals the image's (or, where the
//! kernel itself patches the template at boot or run time, a patch site or
//! a KASLR field, the running kernel's byte there, which the text check
//! judges by its own rule); the displacement must point exactly at the
//! ops slot the tail leaves; the call must go to one of the profile's
//! tracer functions; the ops pointer must be an aligned kernel-half
//! address outside the text. Every read goes through the Mon-VM's page
//! tables and is bounded by the template's length.

use alloc::vec::Vec;
use core::ops::Range;

use serde::{Deserialize, Serialize};

use crate::addr::{GuestPhysAddr, GuestVirtAddr};
use crate::linux::KERNEL_HALF;
use crate::linux::kaslr::KernelLocation;
use crate::memory::GuestMemory;
use crate::paging::{AddressSpace, VirtualMemory};

use super::TextReference;

/// Where x86-64 Linux maps modules and the trampolines it allocates
/// (`MODULES_VADDR` without KASLR .. `MODULES_END`); the kernel image
/// itself is excluded separately (with KASLR it may reach into this range).
pub const MODULE_AREA: Range<u64> = 0xffff_ffff_a000_0000..0xffff_ffff_ff00_0000;
/// Longest template the profile may hold (`ftrace_regs_caller` is 327
/// bytes on 6.1).
pub const MAX_TEMPLATE: usize = 1024;
/// Most templates (`ftrace_caller`, `ftrace_regs_caller`).
pub const MAX_TEMPLATES: usize = 2;
/// Most tracer functions a trampoline may call.
pub const MAX_TRACERS: usize = 64;
/// The tail after the copied code: at most `RET_SIZE` (5) bytes, then the
/// 8-byte ops pointer.
const TAIL: usize = 5 + 8;
/// `movq disp32(%rip), %rdx`: the ops pointer load.
pub const OP_REF: [u8; 3] = [0x48, 0x8b, 0x15];
/// The instruction at `ftrace_regs_caller_jmp` in the image (`jnz rel8`)
/// and what a trampoline holds there.
pub const JNZ8: u8 = 0x75;
pub const NOP2: [u8; 2] = [0x66, 0x90];

/// One template: the image's `ftrace_caller..ftrace_caller_end` (or the
/// regs variant) and where a trampoline may differ from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// Offset of the first byte from `_text`.
    pub start: u32,
    /// The image's bytes.
    pub bytes: Vec<u8>,
    /// `(offset, len)` ranges inside the template that the kernel patches
    /// (patch sites, KASLR fields): a copy holds the running kernel's bytes
    /// there. They never include the fields below.
    pub live: Vec<(u16, u16)>,
    /// Offset of the 7-byte ops pointer load (`ftrace_caller_op_ptr`).
    pub op_ptr: u16,
    /// Offset of the 5-byte call to the tracer (`ftrace_call`).
    pub call: u16,
    /// Offset of the 2-byte `jnz` a trampoline turns into a NOP
    /// (`ftrace_regs_caller_jmp`; regs variant only).
    pub direct_jmp: Option<u16>,
}

impl Template {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the fields lie inside the template and hold what the kernel
    /// expects, and the live ranges are inside it.
    fn is_valid(&self, text_len: u64) -> bool {
        let n = self.len();
        let field = |at: u16, len: usize, expect: &[u8]| {
            let at = usize::from(at);
            at + len <= n && self.bytes.get(at..at + expect.len()) == Some(expect)
        };
        n > 0
            && n <= MAX_TEMPLATE
            && u64::from(self.start) + n as u64 <= text_len
            && field(self.op_ptr, 7, &OP_REF)
            && field(self.call, 5, &[0xe8])
            && self.direct_jmp.is_none_or(|j| field(j, 2, &[JNZ8]))
            && self.live.len() <= n
            && self
                .live
                .iter()
                .all(|&(o, l)| usize::from(o) + usize::from(l) <= n)
    }
}

/// What the profile holds about ftrace trampolines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FtraceReference {
    pub templates: Vec<Template>,
    /// Offsets from `_text` of the functions a trampoline may call (the
    /// kernel's ftrace callbacks present in this image), sorted.
    pub tracers: Vec<u32>,
}

impl FtraceReference {
    /// Structural checks for a decoded profile.
    pub fn is_valid(&self, text_len: u64) -> bool {
        self.templates.len() <= MAX_TEMPLATES
            && self.templates.iter().all(|t| t.is_valid(text_len))
            && self.tracers.len() <= MAX_TRACERS
            && self.tracers.windows(2).all(|w| w[0] < w[1])
            && self.tracers.iter().all(|&o| u64::from(o) < text_len)
    }
}

/// A verified trampoline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trampoline {
    /// Which template it copies.
    pub template: usize,
    /// Offset from `_text` of the tracer function it calls.
    pub tracer: u32,
    /// The ops pointer it passes.
    pub ops: u64,
    /// The bytes read (code, tail, ops pointer).
    pub bytes: Vec<u8>,
}

/// Why a call target is no trampoline of this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrampolineError {
    /// The profile has no templates.
    NoReference,
    /// Outside the module area, or inside the kernel image.
    OutsideModuleArea,
    /// Not mapped, or the running kernel's template not readable.
    Unreadable,
    /// Mapped writable or not executable (the kernel maps trampolines
    /// read-only and executable).
    Rights,
    /// A byte of the copied code differs from the template (offset).
    Body(u16),
    /// The ops pointer load does not point at the slot after the return.
    OpsSlot,
    /// Neither `ret; int3` nor a `jmp` to a return thunk after the code.
    Tail,
    /// The ops pointer is no aligned kernel-half data address.
    Ops(u64),
    /// The call goes elsewhere than to a tracer function (runtime target).
    Tracer(u64),
}

/// Verifies that the fentry call target `target` (a runtime address) is a
/// trampoline the kernel made from one of the profile's templates; see the
/// module documentation for the rule.
pub fn check_trampoline<M: GuestMemory + ?Sized>(
    space: &AddressSpace<'_, M>,
    reference: &TextReference,
    location: &KernelLocation,
    target: u64,
) -> Result<Trampoline, TrampolineError> {
    let f = reference
        .ftrace
        .as_ref()
        .filter(|f| !f.templates.is_empty())
        .ok_or(TrampolineError::NoReference)?;
    let image_end = reference.rodata.start.wrapping_sub(location.link_text) + reference.rodata.len;
    let image = location.runtime_text..location.runtime_text.wrapping_add(image_end);
    if !MODULE_AREA.contains(&target) || image.contains(&target) {
        return Err(TrampolineError::OutsideModuleArea);
    }
    let mut last = TrampolineError::NoReference;
    for (index, template) in f.templates.iter().enumerate() {
        match check_one(space, reference, f, template, location, target) {
            Ok((tracer, ops, bytes)) => {
                return Ok(Trampoline {
                    template: index,
                    tracer,
                    ops,
                    bytes,
                });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn check_one<M: GuestMemory + ?Sized>(
    space: &AddressSpace<'_, M>,
    reference: &TextReference,
    f: &FtraceReference,
    t: &Template,
    location: &KernelLocation,
    target: u64,
) -> Result<(u32, u64, Vec<u8>), TrampolineError> {
    let n = t.len();
    if n == 0 || n > MAX_TEMPLATE {
        return Err(TrampolineError::NoReference);
    }
    let va = |at: u64| GuestVirtAddr::new(at).map_err(|_| TrampolineError::OutsideModuleArea);
    let last = target
        .checked_add((n + TAIL - 1) as u64)
        .ok_or(TrampolineError::OutsideModuleArea)?;
    for page in [target, last] {
        let tr = space
            .walk(va(page)?)
            .map_err(|_| TrampolineError::Unreadable)?;
        if tr.writable || !tr.executable {
            return Err(TrampolineError::Rights);
        }
    }
    let mut bytes = alloc::vec![0u8; n + TAIL];
    space
        .read_virt(va(target)?, &mut bytes)
        .map_err(|_| TrampolineError::Unreadable)?;
    // The running kernel's template, for the bytes it patches itself.
    let mut live = Vec::new();
    if !t.live.is_empty() {
        live.resize(n, 0);
        let phys = location
            .phys_text
            .0
            .checked_add(u64::from(t.start))
            .ok_or(TrampolineError::Unreadable)?;
        space
            .memory()
            .read(GuestPhysAddr(phys), &mut live)
            .map_err(|_| TrampolineError::Unreadable)?;
    }
    let (op, call) = (usize::from(t.op_ptr), usize::from(t.call));
    let jmp = t.direct_jmp.map(usize::from);
    let is_live = |i: usize| {
        t.live
            .iter()
            .any(|&(o, l)| (usize::from(o)..usize::from(o) + usize::from(l)).contains(&i))
    };
    for i in 0..n {
        let got = bytes.get(i).copied();
        let expect = if (op + 3..op + 7).contains(&i) || (call + 1..call + 5).contains(&i) {
            continue;
        } else if i == call {
            Some(0xe8)
        } else if let Some(j) = jmp.filter(|&j| (j..j + 2).contains(&i)) {
            NOP2.get(i - j).copied()
        } else if is_live(i) {
            live.get(i).copied()
        } else {
            t.bytes.get(i).copied()
        };
        if got.is_none() || got != expect {
            return Err(TrampolineError::Body(i as u16));
        }
    }
    let i32_at = |at: usize| -> Option<i64> {
        let b = bytes.get(at..at + 4)?;
        Some(i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    };
    // The tail and the ops slot the load points to.
    let slot = i32_at(op + 3)
        .and_then(|d| d.checked_add((op + 7) as i64))
        .ok_or(TrampolineError::OpsSlot)?;
    let runtime_offset = |insn_end: usize, rel: i64| {
        target
            .wrapping_add(insn_end as u64)
            .wrapping_add(rel as u64)
            .wrapping_sub(location.runtime_text)
    };
    let n64 = n as i64;
    match bytes.get(n) {
        Some(0xe9) => {
            let rel = i32_at(n + 1).ok_or(TrampolineError::Tail)?;
            let thunk = runtime_offset(n + 5, rel);
            let is_thunk = u32::try_from(thunk).is_ok_and(|o| reference.return_thunks.contains(&o));
            if !is_thunk {
                return Err(TrampolineError::Tail);
            }
            if slot != n64 + 5 {
                return Err(TrampolineError::OpsSlot);
            }
        }
        Some(0xc3) => {
            if ![n64 + 1, n64 + 2, n64 + 5].contains(&slot) {
                return Err(TrampolineError::OpsSlot);
            }
            if slot > n64 + 1 && bytes.get(n + 1) != Some(&0xcc) {
                return Err(TrampolineError::Tail);
            }
        }
        _ => return Err(TrampolineError::Tail),
    }
    let slot = slot as usize;
    let ops = bytes
        .get(slot..slot + 8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .ok_or(TrampolineError::OpsSlot)?;
    let text = location.runtime_text..location.runtime_text.wrapping_add(reference.text.len);
    if ops < KERNEL_HALF || !ops.is_multiple_of(8) || text.contains(&ops) {
        return Err(TrampolineError::Ops(ops));
    }
    let rel = i32_at(call + 1).ok_or(TrampolineError::Tracer(0))?;
    let tracer = runtime_offset(call + 5, rel);
    match u32::try_from(tracer) {
        Ok(o) if f.tracers.binary_search(&o).is_ok() => {
            // Only what the rule looked at (the padding after the tail is
            // not code the trampoline runs).
            bytes.truncate(slot + 8);
            Ok((o, ops, bytes))
        }
        _ => Err(TrampolineError::Tracer(
            location.runtime_text.wrapping_add(tracer),
        )),
    }
}
