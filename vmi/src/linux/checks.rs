//! Integrity checks of the kernel's dispatch tables against the profile:
//! `sys_call_table` and the IDT. Pure functions over the kernel's address
//! space (a [`KernelView`](super::KernelView) gives it); the A-VM schedules
//! them and records what they report.
//!
//! # `sys_call_table`
//!
//! Every one of the profile's `NR_syscalls` slots must hold the runtime
//! address (link address + KASLR slide) of the handler the image puts
//! there. Each slot that differs is a [`SyscallFinding`] naming the slot,
//! the handler expected there and where the slot points now ([`Target`]:
//! kernel text, with the profile symbol at exactly that address if there is
//! one, the kernel image outside its text, the module area, another kernel
//! address, user space, non-canonical). On Debian's 6.1 and 6.12 kernels
//! native 64-bit system calls are dispatched by `x64_sys_call` (direct
//! jumps) and never read the table: a redirected slot changes nothing that
//! runs, but it is what a rootkit written for older kernels does, and what
//! forensic tools look at, so it is reported like any other violation.
//!
//! # The IDT
//!
//! `idt_table` holds 256 x86-64 gate descriptors of 16 bytes. Every present
//! gate is decoded; a present gate is a violation ([`IdtFindingKind`]) when
//! - its target is outside the kernel text `[_text, _etext)` (+ slide)
//!   ([`IdtFindingKind::OutsideText`]), except for the rule below;
//! - it is neither an interrupt nor a trap gate, or its code segment is not
//!   the kernel's (`__KERNEL_CS` = 0x10) ([`IdtFindingKind::BadGate`]);
//! - the profile lists the vector's entry symbol ([`IdtReference`], from
//!   the image's `idt_data` tables and irq stubs) and the gate is absent or
//!   points elsewhere in the text ([`IdtFindingKind::NotExpected`]; a gate
//!   of such a vector outside the text is [`IdtFindingKind::OutsideText`]);
//! - the profile gives the vector's attribute word and the gate's differs
//!   ([`IdtFindingKind::Attributes`]): DPL 3 on a vector only the CPU
//!   should raise lets user space call the handler with `int N`, another
//!   IST entry runs it on another stack.
//!
//! **Leftover early handlers (a note, not a violation).** At boot the
//! kernel points all 32 exception vectors at `early_idt_handler_array` in
//! its init text, then installs the real handlers of the exceptions it
//! supports; a vector it has no handler for keeps the early one, whose init
//! text is freed after boot (mapped non-executable and poisoned with 0xcc,
//! or unmapped). On the Debian 6.1 cloud kernel (`X86_MCE` off) vector 0x12
//! is such a gate on every clean boot. Such a gate cannot run code: the
//! instruction fetch faults. So a present gate is reported as
//! [`IdtFindingKind::LeftoverEarlyHandler`] (not a violation) exactly when
//! its vector is an exception vector (< 32) the profile has no expected
//! entry for, its target is that vector's early handler (the profile's
//! `early_handlers`, from the image; without them, anywhere in the kernel
//! image past the end of rodata and before `_end`, where the image's init
//! sections are, never text or rodata), its attribute word is what
//! `idt_setup_early_handler` wrote (an interrupt gate, DPL 0, no IST), and
//! the kernel's own page tables (`init_top_pgt`, whose kernel half every
//! process shares) map the target non-executable or not at all. A target
//! there that is mapped executable, or whose translation fails in any
//! other way, is a violation. So is a referenced vector's gate there: the
//! kernel installs the handler of every vector its `idt_data` tables list,
//! so such a gate was redirected (to a leftover handler's address or
//! anywhere else past rodata), whatever the page tables say of the target.
//!
//! Such a vector's gate anywhere else (another vector's early handler, a
//! place in the text) is a violation: [`IdtFindingKind::NotExpected`] in
//! the text, [`IdtFindingKind::OutsideText`] out of it.
//!
//! The report also carries the SHA-256 of the whole table (4 KiB, present
//! and non-present gates alike): the IDT is written at run time, so its
//! exact contents are baselined per boot and any later change to any gate
//! shows as a different digest.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use sha2::{Digest, Sha256};

use crate::addr::GuestVirtAddr;
use crate::memory::GuestMemory;
use crate::paging::{AddressSpace, VirtualMemory, WalkError};
use crate::profile::{KernelProfile, MAX_SYSCALLS};

use super::kaslr::{KERNEL_IMAGE_END, KernelLocation};

/// Start of the module area (`MODULES_VADDR`: right after the 1 GiB kernel
/// image mapping).
pub const MODULES_START: u64 = KERNEL_IMAGE_END;
/// End of the module area (`MODULES_END`).
pub const MODULES_END: u64 = 0xffff_ffff_ff00_0000;
/// Gates in the IDT.
pub const IDT_GATES: usize = 256;
/// Bytes of one x86-64 gate descriptor.
pub const GATE_SIZE: usize = 16;
/// Bytes of the whole IDT.
pub const IDT_SIZE: usize = IDT_GATES * GATE_SIZE;
/// The kernel's code segment selector (`__KERNEL_CS`).
pub const KERNEL_CS: u16 = 0x10;
/// Exception vectors (`NUM_EXCEPTION_VECTORS`): the ones with early handlers.
pub const EXCEPTION_VECTORS: u8 = 32;
/// Gate type of a 64-bit interrupt gate and of a trap gate.
pub const GATE_INTERRUPT: u8 = 0xe;
pub const GATE_TRAP: u8 = 0xf;

/// Why a check could not run (as opposed to what it found).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// A profile address is outside the kernel image, or the profile has
    /// more syscall slots than any kernel.
    BadProfile,
    /// The table could not be read through the kernel's page tables.
    Unreadable(WalkError),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::BadProfile => write!(f, "profile addresses outside the kernel image"),
            CheckError::Unreadable(e) => write!(f, "table unreadable: {e}"),
        }
    }
}

impl From<WalkError> for CheckError {
    fn from(e: WalkError) -> Self {
        CheckError::Unreadable(e)
    }
}

/// Where a code pointer read from the kernel points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Inside the kernel text `[_text, _etext)`; `symbol` is the profile's
    /// symbol at exactly this address (a syscall handler, a named symbol,
    /// an IDT entry), if it has one.
    KernelText { symbol: Option<String> },
    /// In the kernel image mapping, outside its text (rodata, data, bss,
    /// init memory).
    KernelImage,
    /// In the module area (`MODULES_VADDR..MODULES_END`).
    ModuleArea,
    /// Another kernel address (direct map, vmalloc, fixmap, ...): outside
    /// the kernel image.
    OtherKernel,
    /// A user-space (lower-half) address.
    User,
    /// Not a canonical address.
    NonCanonical,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::KernelText { symbol: Some(s) } => write!(f, "kernel text ({s})"),
            Target::KernelText { symbol: None } => write!(f, "kernel text (no profile symbol)"),
            Target::KernelImage => write!(f, "the kernel image outside its text"),
            Target::ModuleArea => write!(f, "the module area"),
            Target::OtherKernel => write!(f, "outside the kernel image"),
            Target::User => write!(f, "user space"),
            Target::NonCanonical => write!(f, "a non-canonical address"),
        }
    }
}

/// Runtime ranges of the kernel and the profile's symbols, to classify
/// targets.
struct Classifier<'p> {
    slide: u64,
    text: Range<u64>,
    profile: &'p KernelProfile,
    /// (link address, name), sorted; built on first use.
    index: Option<Vec<(u64, &'p str)>>,
}

impl<'p> Classifier<'p> {
    fn new(location: &KernelLocation, profile: &'p KernelProfile) -> Result<Self, CheckError> {
        let s = &profile.symbols;
        let start = location.runtime_of(s.text).ok_or(CheckError::BadProfile)?;
        let end = location.runtime_of(s.etext).ok_or(CheckError::BadProfile)?;
        if start.value() >= end.value() {
            return Err(CheckError::BadProfile);
        }
        Ok(Classifier {
            slide: location.slide(),
            text: start.value()..end.value(),
            profile,
            index: None,
        })
    }

    fn in_text(&self, runtime: u64) -> bool {
        self.text.contains(&runtime)
    }

    fn symbol_at(&mut self, runtime: u64) -> Option<&'p str> {
        let profile = self.profile;
        let index = self.index.get_or_insert_with(|| {
            let mut index: Vec<(u64, &'p str)> = profile
                .syscalls
                .slots
                .iter()
                .map(|s| (s.address, s.name.as_str()))
                .chain(
                    profile
                        .symbols
                        .named()
                        .into_iter()
                        .filter_map(|(name, a)| a.map(|a| (a, name))),
                )
                .chain(
                    profile
                        .idt
                        .iter()
                        .flat_map(|r| r.gates.iter())
                        .map(|(_, e)| (e.address, e.name.as_str())),
                )
                .collect();
            crate::sort::heapsort(&mut index);
            index.dedup_by_key(|(a, _)| *a);
            index
        });
        let link = runtime.wrapping_sub(self.slide);
        index
            .binary_search_by_key(&link, |(a, _)| *a)
            .ok()
            .and_then(|i| index.get(i))
            .map(|(_, name)| *name)
    }

    fn classify(&mut self, runtime: u64) -> Target {
        let Ok(va) = GuestVirtAddr::new(runtime) else {
            return Target::NonCanonical;
        };
        let v = va.value();
        if self.in_text(v) {
            Target::KernelText {
                symbol: self.symbol_at(v).map(ToString::to_string),
            }
        } else if (crate::kallsyms::KERNEL_TEXT_PREFIX..KERNEL_IMAGE_END).contains(&v) {
            Target::KernelImage
        } else if (MODULES_START..MODULES_END).contains(&v) {
            Target::ModuleArea
        } else if v >> 63 == 1 {
            Target::OtherKernel
        } else {
            Target::User
        }
    }
}

/// One `sys_call_table` slot that does not hold its handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallFinding {
    /// The system call number.
    pub slot: usize,
    /// The handler the image puts there (`__x64_sys_*`).
    pub expected_name: String,
    /// Its runtime address.
    pub expected: u64,
    /// What the slot holds.
    pub found: u64,
    pub target: Target,
}

impl fmt::Display for SyscallFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sys_call_table slot {} ({}) points to {:#x} in {} instead of {:#x}",
            self.slot, self.expected_name, self.found, self.target, self.expected
        )
    }
}

/// What [`syscall_table`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallReport {
    /// Runtime address of `sys_call_table`.
    pub table: GuestVirtAddr,
    /// Slots checked (`NR_syscalls`).
    pub slots: usize,
    /// Every slot that differs, in slot order.
    pub findings: Vec<SyscallFinding>,
}

impl SyscallReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Checks every slot of `sys_call_table` against the profile's handlers.
/// One read of `8 * NR_syscalls` bytes (at most 8 KiB).
pub fn syscall_table<M: GuestMemory + ?Sized>(
    space: &AddressSpace<'_, M>,
    location: &KernelLocation,
    profile: &KernelProfile,
) -> Result<SyscallReport, CheckError> {
    let slots = &profile.syscalls.slots;
    if slots.is_empty() || slots.len() > MAX_SYSCALLS {
        return Err(CheckError::BadProfile);
    }
    let mut classifier = Classifier::new(location, profile)?;
    let table = location
        .runtime_of(profile.symbols.sys_call_table)
        .ok_or(CheckError::BadProfile)?;
    let mut bytes = alloc::vec![0u8; slots.len() * 8];
    space.read_virt(table, &mut bytes)?;
    let mut findings = Vec::new();
    for (slot, (handler, raw)) in slots.iter().zip(bytes.chunks_exact(8)).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(raw);
        let found = u64::from_le_bytes(word);
        let expected = location
            .runtime_of(handler.address)
            .ok_or(CheckError::BadProfile)?
            .value();
        if found != expected {
            findings.push(SyscallFinding {
                slot,
                expected_name: handler.name.clone(),
                expected,
                found,
                target: classifier.classify(found),
            });
        }
    }
    Ok(SyscallReport {
        table,
        slots: slots.len(),
        findings,
    })
}

/// One decoded x86-64 gate descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    pub vector: u8,
    /// The handler address (offset bits 0..15, 16..31, 32..63).
    pub target: u64,
    pub selector: u16,
    /// Byte 4 (interrupt stack table index in bits 0..2).
    pub ist_byte: u8,
    /// Byte 5: present (bit 7), DPL (bits 5..6), type (bits 0..3).
    pub type_attr: u8,
    /// Bytes 12..15 (reserved, zero).
    pub reserved: u32,
}

impl Gate {
    /// Decodes the 16 bytes of gate `vector`.
    pub fn decode(vector: u8, raw: &[u8; GATE_SIZE]) -> Self {
        let low = u64::from(u16::from_le_bytes([raw[0], raw[1]]));
        let middle = u64::from(u16::from_le_bytes([raw[6], raw[7]]));
        let high = u64::from(u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]));
        Gate {
            vector,
            target: low | middle << 16 | high << 32,
            selector: u16::from_le_bytes([raw[2], raw[3]]),
            ist_byte: raw[4],
            type_attr: raw[5],
            reserved: u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]),
        }
    }

    /// The 16 bytes of this gate.
    pub fn encode(&self) -> [u8; GATE_SIZE] {
        let mut raw = [0u8; GATE_SIZE];
        raw[0..2].copy_from_slice(&(self.target as u16).to_le_bytes());
        raw[2..4].copy_from_slice(&self.selector.to_le_bytes());
        raw[4] = self.ist_byte;
        raw[5] = self.type_attr;
        raw[6..8].copy_from_slice(&((self.target >> 16) as u16).to_le_bytes());
        raw[8..12].copy_from_slice(&((self.target >> 32) as u32).to_le_bytes());
        raw[12..16].copy_from_slice(&self.reserved.to_le_bytes());
        raw
    }

    pub fn present(&self) -> bool {
        self.type_attr & 0x80 != 0
    }

    pub fn gate_type(&self) -> u8 {
        self.type_attr & 0xf
    }

    pub fn dpl(&self) -> u8 {
        (self.type_attr >> 5) & 3
    }

    pub fn ist(&self) -> u8 {
        self.ist_byte & 7
    }
}

/// What is wrong (or odd) with one IDT gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdtFindingKind {
    /// Violation: a present gate whose target is outside the kernel text
    /// (and not a leftover early handler).
    OutsideText { target: Target },
    /// Violation: neither an interrupt nor a trap gate, or not the
    /// kernel's code segment.
    BadGate { gate_type: u8, selector: u16 },
    /// Violation: the gate's attribute word (IST, type, DPL, present: its
    /// bytes 4 and 5) is not the one the image's tables give its vector: a
    /// gate user space may call (DPL 3), or one switched to another stack.
    Attributes { expected: u16, found: u16 },
    /// Violation: the profile names this vector's entry symbol and the gate
    /// is absent (`found` = None) or points elsewhere.
    NotExpected {
        expected_name: String,
        expected: u64,
        found: Option<Target>,
    },
    /// Note, not a violation: an exception vector the kernel installed no
    /// handler for (the profile expects no entry for it) still points at
    /// its early boot handler, in init text that is freed and not
    /// executable (see the module documentation).
    LeftoverEarlyHandler,
}

/// One IDT gate the check reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdtFinding {
    pub vector: u8,
    /// The gate's target (0 for a non-present gate).
    pub found: u64,
    pub kind: IdtFindingKind,
}

impl IdtFinding {
    /// Whether this finding is a violation (everything but the note).
    pub fn is_violation(&self) -> bool {
        !matches!(self.kind, IdtFindingKind::LeftoverEarlyHandler)
    }
}

impl fmt::Display for IdtFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.vector;
        match &self.kind {
            IdtFindingKind::OutsideText { target } => write!(
                f,
                "IDT vector {v:#04x} points to {:#x} in {target}, outside the kernel text",
                self.found
            ),
            IdtFindingKind::BadGate {
                gate_type,
                selector,
            } => write!(
                f,
                "IDT vector {v:#04x} is a gate of type {gate_type:#x} with selector {selector:#x}"
            ),
            IdtFindingKind::Attributes { expected, found } => {
                let fields = |bits: u16| (bits >> 13 & 3, bits & 7, bits >> 8 & 0x1f);
                let (dpl, ist, kind) = fields(*found);
                let (want_dpl, want_ist, want_kind) = fields(*expected);
                write!(
                    f,
                    "IDT vector {v:#04x} has DPL {dpl}, IST {ist}, type {kind:#x} ({found:#06x}) instead of DPL {want_dpl}, IST {want_ist}, type {want_kind:#x} ({expected:#06x})"
                )
            }
            IdtFindingKind::NotExpected {
                expected_name,
                expected,
                found: Some(target),
            } => write!(
                f,
                "IDT vector {v:#04x} points to {:#x} in {target} instead of {expected_name} ({expected:#x})",
                self.found
            ),
            IdtFindingKind::NotExpected {
                expected_name,
                expected,
                found: None,
            } => write!(
                f,
                "IDT vector {v:#04x} is not present (expected {expected_name} at {expected:#x})"
            ),
            IdtFindingKind::LeftoverEarlyHandler => write!(
                f,
                "IDT vector {v:#04x} keeps its early boot handler at {:#x} (freed init text, not executable)",
                self.found
            ),
        }
    }
}

/// What [`idt`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdtReport {
    /// Runtime address of `idt_table`.
    pub table: GuestVirtAddr,
    /// SHA-256 of the 4 KiB table as read (for per-boot baselines).
    pub digest: [u8; 32],
    /// The present gates, by vector.
    pub gates: Vec<Gate>,
    /// Violations and notes, by vector.
    pub findings: Vec<IdtFinding>,
}

impl IdtReport {
    /// The findings that are violations.
    pub fn violations(&self) -> impl Iterator<Item = &IdtFinding> {
        self.findings.iter().filter(|f| f.is_violation())
    }

    /// No violation (notes allowed).
    pub fn is_clean(&self) -> bool {
        self.violations().next().is_none()
    }
}

/// Reads `idt_table` (one 4 KiB read) and checks every present gate.
pub fn idt<M: GuestMemory + ?Sized>(
    space: &AddressSpace<'_, M>,
    location: &KernelLocation,
    profile: &KernelProfile,
) -> Result<IdtReport, CheckError> {
    let mut classifier = Classifier::new(location, profile)?;
    let runtime = |link: u64| {
        location
            .runtime_of(link)
            .map(|a| a.value())
            .ok_or(CheckError::BadProfile)
    };
    // Where the image's init sections are (freed after boot).
    let past_rodata = runtime(profile.symbols.end_rodata)?..runtime(profile.symbols.end)?;
    let table = location
        .runtime_of(profile.symbols.idt_table)
        .ok_or(CheckError::BadProfile)?;
    let mut bytes = alloc::vec![0u8; IDT_SIZE];
    space.read_virt(table, &mut bytes)?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();

    // The profile's expected entries, by vector.
    // On the heap: the A-VM's stacks are small.
    // (entry name, runtime address, attribute word if the profile has
    // them), by vector.
    type Expected<'n> = Option<(&'n str, u64, Option<u16>)>;
    let mut expected: Vec<Expected<'_>> = alloc::vec![None; IDT_GATES];
    if let Some(reference) = &profile.idt {
        for (index, (vector, entry)) in reference.gates.iter().enumerate() {
            let at = location
                .runtime_of(entry.address)
                .ok_or(CheckError::BadProfile)?;
            if let Some(slot) = expected.get_mut(usize::from(*vector)) {
                let bits = reference.attributes.get(index).copied();
                *slot = Some((entry.name.as_str(), at.value(), bits));
            }
        }
    }

    // Each exception vector's early handler (runtime), if the profile has
    // them: what a vector the tables do not name must still hold.
    let mut early: Vec<Option<u64>> = alloc::vec![None; usize::from(EXCEPTION_VECTORS)];
    if let Some(reference) = &profile.idt {
        for (slot, &link) in early.iter_mut().zip(&reference.early_handlers) {
            *slot = Some(runtime(link)?);
        }
    }

    let mut gates = Vec::new();
    let mut findings = Vec::new();
    for ((vector, raw), want) in (0..=u8::MAX)
        .zip(bytes.chunks_exact(GATE_SIZE))
        .zip(expected.iter())
    {
        let mut gate_bytes = [0u8; GATE_SIZE];
        gate_bytes.copy_from_slice(raw);
        let gate = Gate::decode(vector, &gate_bytes);
        if !gate.present() {
            if let Some((name, at, _)) = want {
                findings.push(IdtFinding {
                    vector,
                    found: 0,
                    kind: IdtFindingKind::NotExpected {
                        expected_name: (*name).to_string(),
                        expected: *at,
                        found: None,
                    },
                });
            }
            continue;
        }
        gates.push(gate);
        let found = gate.target;
        if !matches!(gate.gate_type(), GATE_INTERRUPT | GATE_TRAP) || gate.selector != KERNEL_CS {
            findings.push(IdtFinding {
                vector,
                found,
                kind: IdtFindingKind::BadGate {
                    gate_type: gate.gate_type(),
                    selector: gate.selector,
                },
            });
        }
        // An exception vector the tables do not name keeps its early
        // handler, as `idt_setup_early_handler` set it.
        let early = want
            .is_none()
            .then(|| early.get(usize::from(vector)).copied().flatten())
            .flatten();
        let want_bits = match want {
            Some((_, _, bits)) => *bits,
            None => early.map(|_| crate::profile::IDT_INTERRUPT_GATE_BITS),
        };
        let bits = u16::from_le_bytes([gate.ist_byte, gate.type_attr]);
        if let Some(want_bits) = want_bits
            && bits != want_bits
        {
            findings.push(IdtFinding {
                vector,
                found,
                kind: IdtFindingKind::Attributes {
                    expected: want_bits,
                    found: bits,
                },
            });
        }
        if !classifier.in_text(found) {
            // The exemption is for vectors the kernel installs no handler
            // for: a vector the profile expects an entry for (always in the
            // text) is never left at its early handler.
            let kind = if want.is_none()
                && early.is_none_or(|at| at == found)
                && leftover_early_handler(space, vector, found, &past_rodata)
            {
                IdtFindingKind::LeftoverEarlyHandler
            } else {
                IdtFindingKind::OutsideText {
                    target: classifier.classify(found),
                }
            };
            findings.push(IdtFinding {
                vector,
                found,
                kind,
            });
        } else if let Some((at, name)) = want
            .map(|(name, at, _)| (at, Some(name)))
            .or_else(|| early.map(|at| (at, None)))
            && found != at
        {
            findings.push(IdtFinding {
                vector,
                found,
                kind: IdtFindingKind::NotExpected {
                    expected_name: name.map_or_else(|| early_name(vector), str::to_string),
                    expected: at,
                    found: Some(classifier.classify(found)),
                },
            });
        }
    }
    Ok(IdtReport {
        table,
        digest,
        gates,
        findings,
    })
}

/// How a vector's early handler is named in findings.
fn early_name(vector: u8) -> String {
    let mut name = String::from("early_idt_handler_array[");
    let _ = fmt::Write::write_fmt(&mut name, format_args!("{vector}]"));
    name
}

/// The documented rule for a gate left at its early boot handler: an
/// exception vector, a target in the kernel image mapping past rodata, and
/// no executable mapping there in the kernel's own page tables.
fn leftover_early_handler<M: GuestMemory + ?Sized>(
    space: &AddressSpace<'_, M>,
    vector: u8,
    target: u64,
    past_rodata: &core::ops::Range<u64>,
) -> bool {
    if vector >= EXCEPTION_VECTORS || !past_rodata.contains(&target) {
        return false;
    }
    let Ok(va) = GuestVirtAddr::new(target) else {
        return false;
    };
    match space.walk(va) {
        Ok(t) => !t.executable,
        Err(WalkError::NotPresent { .. }) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
