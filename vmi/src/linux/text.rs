//! The kernel's code and read-only data, checked against the image it was
//! booted from, in spite of KASLR and of Linux patching its own text.
//!
//! The reference ([`TextReference`], part of the kernel profile) is built
//! from the package's vmlinux alone: the SHA-256 of every 4 KiB chunk of
//! `_text.._etext` and of the read-only data, with every *patch site*
//! blanked, plus the lists a checker needs to undo what the kernel changes
//! legitimately:
//!
//! - **KASLR relocations** (the `vmlinux.relocs` tables the decompressor
//!   applies): in RAM each such field holds its file value plus (or, for
//!   the inverse table, minus) the virtual slide; the checker subtracts the
//!   slide again before hashing, so one reference serves every boot.
//! - **Patch sites**, from the kernel's own patch tables, each with a rule
//!   for what it may hold ([`SiteKind`]): return thunks (`.return_sites`),
//!   fentry calls (`__mcount_loc`), static calls (`.static_call_sites`, the
//!   `__SCT__` trampolines, `ftrace_call`), jump labels (`__jump_table`),
//!   lock prefixes (`.smp_locks`) and sealed ENDBRs (`.ibt_endbr_seal`) are
//!   checked byte for byte against their rule on every pass; what
//!   alternatives, paravirt and retpoline patching chose at boot depends on
//!   the CPU, so those sites ([`PatchSites::boot`]) are summarised in one
//!   digest a verifier learns from a known-good boot, and the kernel's
//!   run-time constants ([`PatchSites::boot_constants`]) vary per boot;
//!   both are frozen once measured (they never change after boot).
//! - `__start_ro_after_init..__end_ro_after_init` is written during boot
//!   (and differs between boots): it is blanked in the rodata digests and
//!   baselined per boot by the caller ([`ro_after_init_digest`]).
//!
//! The checker works one chunk at a time ([`TextChecker::check_chunk`]) so
//! the A-VM can sweep in bounded slices between attestation requests.
//! Every read is checked; a chunk that cannot be read is an error, not a
//! pass.
//!
//! Chunks are read by physical address (`phys_text + offset`), not through
//! the kernel's page tables: that the CPU runs those very pages is checked
//! apart, by [`super::mapping::check_image_mapping`].

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::addr::GuestPhysAddr;
use crate::memory::{GuestMemory, MemoryError};

use super::kaslr::KernelLocation;

pub mod ftrace;

/// Bytes per reference chunk.
pub const CHUNK: u64 = 4096;
/// The longest patch site (an alternative's `instrlen` is a u8).
pub const MAX_SITE_LEN: u64 = 255;
/// How far before a chunk a site or relocation that reaches into it may
/// start.
const MARGIN: u64 = MAX_SITE_LEN + 1;
/// Most offsets in one list (a Debian kernel has about 200k relocations).
pub const MAX_OFFSETS: usize = 1 << 20;
/// Largest checked region (text or rodata).
pub const MAX_REGION: u64 = 256 << 20;

/// `nopl 0x0(%rax,%rax,1)`: the 5-byte NOP of fentry, static call and jump
/// label sites.
pub const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];
/// `xchg %ax,%ax`: the 2-byte jump label NOP.
pub const NOP2: [u8; 2] = [0x66, 0x90];
/// `ret; int3 x4`: a return site or static call patched to return.
pub const RET5: [u8; 5] = [0xc3, 0xcc, 0xcc, 0xcc, 0xcc];
/// `cs cs cs xor %eax,%eax`: a static call to `__static_call_return0`,
/// inlined.
pub const XOR_EAX5: [u8; 5] = [0x2e, 0x2e, 0x2e, 0x31, 0xc0];
/// `endbr64` and the NOP a sealed one becomes.
pub const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
pub const SEALED_ENDBR: [u8; 4] = [0x66, 0x0f, 0x1f, 0x00];
const LOCK: u8 = 0xf0;
/// The `ds` prefix a lock prefix becomes when only one CPU is possible.
const DS: u8 = 0x3e;
const CALL: u8 = 0xe8;
const JMP: u8 = 0xe9;
const JMP8: u8 = 0xeb;

/// Strictly increasing offsets from `_text`, encoded as deltas (the first
/// one absolute) so that postcard's varints keep them small.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u32>", into = "Vec<u32>")]
pub struct Offsets(Vec<u32>);

impl Offsets {
    /// Sorts and deduplicates.
    pub fn new(mut offsets: Vec<u32>) -> Self {
        crate::sort::heapsort(&mut offsets);
        offsets.dedup();
        Self(offsets)
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The indices of the offsets in `[from, to)`.
    pub fn range(&self, from: u64, to: u64) -> Range<usize> {
        let lo = self.0.partition_point(|&o| u64::from(o) < from);
        let hi = self.0.partition_point(|&o| u64::from(o) < to);
        lo..hi.max(lo)
    }

    pub fn contains(&self, offset: u64) -> bool {
        u32::try_from(offset).is_ok_and(|o| self.0.binary_search(&o).is_ok())
    }
}

/// Why a delta list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadOffsets;

impl fmt::Display for BadOffsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offsets not strictly increasing or too many")
    }
}

impl TryFrom<Vec<u32>> for Offsets {
    type Error = BadOffsets;

    fn try_from(mut deltas: Vec<u32>) -> Result<Self, BadOffsets> {
        if deltas.len() > MAX_OFFSETS {
            return Err(BadOffsets);
        }
        let mut at: Option<u32> = None;
        for d in deltas.iter_mut() {
            let next = match at {
                None => *d,
                Some(_) if *d == 0 => return Err(BadOffsets),
                Some(prev) => prev.checked_add(*d).ok_or(BadOffsets)?,
            };
            *d = next;
            at = Some(next);
        }
        Ok(Self(deltas))
    }
}

impl From<Offsets> for Vec<u32> {
    fn from(o: Offsets) -> Vec<u32> {
        let mut prev = 0;
        o.0.into_iter()
            .map(|x| {
                let d = x - prev;
                prev = x;
                d
            })
            .collect()
    }
}

/// Sites of varying length (each `lens[i]` bytes at `offsets[i]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizedSites {
    pub offsets: Offsets,
    pub lens: Vec<u8>,
}

impl SizedSites {
    /// The end offsets of the sites that start in `[from, to)`.
    fn ends_in(&self, from: u64, to: u64) -> impl Iterator<Item = u64> + '_ {
        self.offsets.range(from, to).filter_map(|i| {
            Some(u64::from(*self.offsets.as_slice().get(i)?) + u64::from(*self.lens.get(i)?))
        })
    }
}

/// Jump label sites: 2 or 5 bytes, a NOP or a jump to `targets[i]`
/// (relative to the site's offset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JumpSites {
    pub offsets: Offsets,
    pub lens: Vec<u8>,
    pub targets: Vec<i32>,
}

/// Every place in the text the kernel may patch, by rule. Offsets are from
/// `_text`; the lists do not overlap (the builder folds overlapping sites
/// into the more permissive rule, and any site inside a boot-patched range
/// into that range).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchSites {
    /// 5 bytes: `ret; int3 x4`, or `jmp` to a return thunk.
    pub returns: Offsets,
    /// 5 bytes: NOP5, or `call` to an fentry target.
    pub fentry: Offsets,
    /// 5 bytes: NOP5, `ret; int3 x4`, an inlined `return 0`, or
    /// `call`/`jmp` to a function entry
    /// in the kernel text (static calls and their trampolines, the ftrace
    /// call sites).
    pub calls: Offsets,
    /// 1 byte: `lock` or `ds`.
    pub locks: Offsets,
    /// 4 bytes: `endbr64` or its sealed NOP.
    pub endbr: Offsets,
    pub jumps: JumpSites,
    /// Alternatives, paravirt and retpoline sites: chosen at boot for the
    /// CPU; learned, then frozen.
    pub boot: SizedSites,
    /// Run-time constants (`runtime_ptr_*`, `runtime_shift_*`): set at
    /// boot, different every boot, then frozen.
    pub boot_constants: SizedSites,
}

/// KASLR relocations inside the checked regions (offsets from `_text`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relocations {
    /// 32-bit fields that hold an address (+ slide at boot).
    pub abs32: Offsets,
    /// 32-bit fields that hold minus an address (- slide at boot).
    pub inv32: Offsets,
    /// 64-bit fields that hold an address (+ slide at boot).
    pub abs64: Offsets,
}

/// One checked region: where it is (link address) and the digest of each
/// of its chunks (the last one may be short).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub start: u64,
    pub len: u64,
    pub digests: Vec<[u8; 32]>,
}

impl Region {
    pub fn chunks(&self) -> usize {
        self.digests.len()
    }

    /// `[start, end)` of chunk `index`, as offsets from the region start.
    fn chunk_range(&self, index: usize) -> Option<Range<u64>> {
        let from = (index as u64).checked_mul(CHUNK)?;
        (from < self.len).then(|| from..(from + CHUNK).min(self.len))
    }
}

/// Reference data for the kernel's text and read-only data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextReference {
    /// `_text.._etext`.
    pub text: Region,
    /// `__start_rodata` to the end of the last section in it, with
    /// ro_after_init blanked.
    pub rodata: Region,
    pub relocations: Relocations,
    pub sites: PatchSites,
    /// Function entries in the text (offsets from `_text`): where a static
    /// call may point.
    pub functions: Offsets,
    /// Offsets of the return thunks a return site may jump to.
    pub return_thunks: Vec<u32>,
    /// Offsets of what an fentry site may call (`__fentry__`,
    /// `ftrace_caller`, `ftrace_regs_caller`).
    pub fentry_targets: Vec<u32>,
    /// The templates of the function tracer's trampolines, which an fentry
    /// site may call too once verified ([`ftrace`]); `None` for a kernel
    /// without them.
    pub ftrace: Option<ftrace::FtraceReference>,
}

/// Which region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    Text,
    Rodata,
}

impl Area {
    pub fn name(self) -> &'static str {
        match self {
            Area::Text => "text",
            Area::Rodata => "rodata",
        }
    }
}

/// The rule a patch site is checked with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteKind {
    Return,
    Fentry,
    Call,
    Lock,
    Endbr,
    Jump,
}

impl SiteKind {
    /// The site's length in bytes (jump labels: 2 or 5, per site).
    pub fn size(self) -> u64 {
        match self {
            SiteKind::Return | SiteKind::Fentry | SiteKind::Call | SiteKind::Jump => 5,
            SiteKind::Lock => 1,
            SiteKind::Endbr => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SiteKind::Return => "return",
            SiteKind::Fentry => "fentry",
            SiteKind::Call => "static-call",
            SiteKind::Lock => "lock",
            SiteKind::Endbr => "endbr",
            SiteKind::Jump => "jump-label",
        }
    }
}

/// A patch site holding what its rule does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteViolation {
    pub kind: SiteKind,
    /// Offset from `_text` (add the link `_text` for the address in the
    /// package's System.map, the runtime one for the guest's).
    pub offset: u32,
    /// The site's bytes (`len` of them).
    pub bytes: [u8; 5],
    pub len: u8,
}

/// What one chunk holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkOutcome {
    pub area: Area,
    pub index: usize,
    /// The chunk differs from the image outside every patch site.
    pub modified: bool,
    /// SHA-256 of the chunk as checked (relocations undone, sites blanked):
    /// the reference digest when not `modified`.
    pub digest: [u8; 32],
    pub sites: Vec<SiteViolation>,
    /// SHA-256 of the boot-patched bytes in this chunk (the bytes of each
    /// [`PatchSites::boot`] site starting here, in order; the reference
    /// fixes their offsets and lengths), all zero without such sites:
    /// their concatenation over the text is what a verifier learns
    /// ([`boot_patches_digest`]).
    pub boot: [u8; 32],
    /// SHA-256 of every boot-patched and then every boot-constant site's
    /// bytes starting here, all zero without such sites: what must not
    /// change after the first measurement.
    pub frozen: [u8; 32],
    /// The distinct module-area addresses fentry sites in this chunk call,
    /// each judged by the caller's trampoline check
    /// ([`TextChecker::check_chunk_with`]), in order of first use.
    pub trampolines: Vec<u64>,
}

impl ChunkOutcome {
    pub fn is_clean(&self) -> bool {
        !self.modified && self.sites.is_empty()
    }
}

/// Why a chunk was not checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextError {
    /// No such chunk.
    NoChunk {
        area: Area,
        index: usize,
    },
    /// The reference is inconsistent with the kernel's location.
    BadReference(&'static str),
    Memory(MemoryError),
}

impl From<MemoryError> for TextError {
    fn from(e: MemoryError) -> Self {
        TextError::Memory(e)
    }
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::NoChunk { area, index } => {
                write!(f, "no {} chunk {}", area.name(), index)
            }
            TextError::BadReference(what) => write!(f, "bad text reference: {what}"),
            TextError::Memory(e) => write!(f, "{e}"),
        }
    }
}

/// Checks chunks of a located kernel against its reference. Holds one
/// reusable buffer.
pub struct TextChecker<'r> {
    reference: &'r TextReference,
    location: KernelLocation,
    /// `__start_ro_after_init..__end_ro_after_init` as offsets from `_text`.
    ro_after_init: Range<u64>,
    buf: Vec<u8>,
    /// Scratch room for the bytes of a chunk's boot-patched and
    /// boot-constant sites ([`frozen_digests`]).
    sites: Vec<u8>,
}

impl<'r> TextChecker<'r> {
    /// `ro_after_init` as link addresses.
    pub fn new(
        reference: &'r TextReference,
        location: KernelLocation,
        ro_after_init: Range<u64>,
    ) -> Result<Self, TextError> {
        let link = location.link_text;
        let ro = ro_after_init.start.wrapping_sub(link)..ro_after_init.end.wrapping_sub(link);
        if reference.text.start != link {
            return Err(TextError::BadReference("text does not start at _text"));
        }
        for region in [&reference.text, &reference.rodata] {
            let chunks = region.len.div_ceil(CHUNK);
            if region.len > MAX_REGION
                || region.start < link
                || chunks != region.digests.len() as u64
            {
                return Err(TextError::BadReference("region size"));
            }
        }
        Ok(Self {
            reference,
            location,
            ro_after_init: ro,
            buf: Vec::new(),
            sites: Vec::new(),
        })
    }

    pub fn chunks(&self, area: Area) -> usize {
        self.region(area).chunks()
    }

    fn region(&self, area: Area) -> &'r Region {
        match area {
            Area::Text => &self.reference.text,
            Area::Rodata => &self.reference.rodata,
        }
    }

    /// Checks chunk `index` of `area` in `mem`; an fentry site that calls
    /// into the module area is a violation.
    pub fn check_chunk<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        area: Area,
        index: usize,
    ) -> Result<ChunkOutcome, TextError> {
        self.check_chunk_with(mem, area, index, &mut |_| false)
    }

    /// [`check_chunk`](Self::check_chunk), where an fentry site that calls
    /// the module-area address `target` (runtime) passes if
    /// `trampoline(target)` says it is a verified ftrace trampoline (see
    /// [`ftrace::check_trampoline`]; the caller caches its verdicts). It is
    /// asked at most once per distinct target in the chunk.
    pub fn check_chunk_with<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        area: Area,
        index: usize,
        trampoline: &mut dyn FnMut(u64) -> bool,
    ) -> Result<ChunkOutcome, TextError> {
        self.check_chunk_inner(mem, area, index, trampoline, None)
    }

    /// [`check_chunk_with`](Self::check_chunk_with), also copying the
    /// chunk's raw bytes, exactly those judged, into `raw` (which must be
    /// the chunk's length): a caller that keeps a copy to notice later
    /// changes gets it from the same read, with no window in which the
    /// memory could change between the verdict and the copy.
    pub fn check_chunk_copying<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        area: Area,
        index: usize,
        trampoline: &mut dyn FnMut(u64) -> bool,
        raw: &mut [u8],
    ) -> Result<ChunkOutcome, TextError> {
        self.check_chunk_inner(mem, area, index, trampoline, Some(raw))
    }

    fn check_chunk_inner<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        area: Area,
        index: usize,
        trampoline: &mut dyn FnMut(u64) -> bool,
        raw: Option<&mut [u8]>,
    ) -> Result<ChunkOutcome, TextError> {
        let region = self.region(area);
        let range = region
            .chunk_range(index)
            .ok_or(TextError::NoChunk { area, index })?;
        let base = region.start - self.location.link_text;
        let region_end = base + region.len;
        // Offsets from _text: the chunk, and the buffer around it.
        let c0 = base + range.start;
        let c1 = base + range.end;
        // The buffer reaches back over a relocated field that starts
        // before the chunk, and forward over the fields and boot-patched
        // sites that start in it.
        let b0 = c0.saturating_sub(8).max(base);
        let sites = &self.reference.sites;
        let boot_end = sites
            .boot
            .ends_in(c0, c1)
            .chain(sites.boot_constants.ends_in(c0, c1))
            .max()
            .unwrap_or(0);
        let b1 = (c1 + 8).max(boot_end).min(region_end);
        // No clearing: the read below overwrites every byte.
        self.buf.resize((b1 - b0) as usize, 0);
        let phys = self
            .location
            .phys_text
            .0
            .checked_add(b0)
            .ok_or(TextError::BadReference("address overflow"))?;
        mem.read(GuestPhysAddr(phys), &mut self.buf)?;
        if let Some(raw) = raw {
            let chunk = &self.buf[(c0 - b0) as usize..(c1 - b0) as usize];
            if raw.len() != chunk.len() {
                return Err(TextError::BadReference("copy length"));
            }
            raw.copy_from_slice(chunk);
        }

        let sites = &self.reference.sites;
        let mut outcome = ChunkOutcome {
            area,
            index,
            modified: false,
            digest: [0; 32],
            sites: Vec::new(),
            boot: [0; 32],
            frozen: [0; 32],
            trampolines: Vec::new(),
        };
        if area == Area::Text {
            self.check_sites(c0, c1, b0, &mut outcome, trampoline);
        }
        normalize(
            &mut self.buf,
            b0,
            self.location.slide(),
            &self.reference.relocations,
        );
        if area == Area::Text {
            let (boot, frozen) = frozen_digests(&self.buf, b0, c0, c1, sites, &mut self.sites);
            outcome.boot = boot;
            outcome.frozen = frozen;
        }
        blank(&mut self.buf, b0, c0, c1, sites, &self.ro_after_init);
        let chunk = &self.buf[(c0 - b0) as usize..(c1 - b0) as usize];
        let digest: [u8; 32] = Sha256::digest(chunk).into();
        outcome.modified = region.digests.get(index) != Some(&digest);
        outcome.digest = digest;
        Ok(outcome)
    }

    /// Checks every fixed-rule site that starts in `[c0, c1)` on the live
    /// (not yet normalized) bytes.
    fn check_sites(
        &self,
        c0: u64,
        c1: u64,
        b0: u64,
        outcome: &mut ChunkOutcome,
        trampoline: &mut dyn FnMut(u64) -> bool,
    ) {
        let r = self.reference;
        let s = &r.sites;
        let rules = Rules::of(r);
        let bytes_at = |offset: u64, len: u64| -> Option<&[u8]> {
            let from = offset.checked_sub(b0)? as usize;
            self.buf.get(from..from + len as usize)
        };
        // Verdicts on module-area targets within this chunk.
        let mut verdicts: Vec<(u64, bool)> = Vec::new();
        let runtime_text = self.location.runtime_text;
        let mut check = |kind: SiteKind, offset: u64, len: u64, jump_target: i32| {
            let live = bytes_at(offset, len);
            if live.is_some_and(|live| rules.allows(kind, offset, live, jump_target)) {
                return;
            }
            if kind == SiteKind::Fentry
                && let Some(target) = live.and_then(|b| module_call(runtime_text, offset, b))
            {
                let ok = match verdicts.iter().find(|v| v.0 == target) {
                    Some(&(_, ok)) => ok,
                    None => {
                        let ok = trampoline(target);
                        verdicts.push((target, ok));
                        ok
                    }
                };
                if ok {
                    return;
                }
            }
            let live = live.unwrap_or_default();
            let mut bytes = [0u8; 5];
            let n = live.len().min(5);
            bytes[..n].copy_from_slice(&live[..n]);
            outcome.sites.push(SiteViolation {
                kind,
                offset: offset as u32,
                bytes,
                len: n as u8,
            });
        };
        for (kind, list) in s.fixed() {
            for &offset in &list.as_slice()[list.range(c0, c1)] {
                check(kind, u64::from(offset), kind.size(), 0);
            }
        }
        let j = &s.jumps;
        for i in j.offsets.range(c0, c1) {
            let (Some(&offset), Some(&len), Some(&target)) =
                (j.offsets.as_slice().get(i), j.lens.get(i), j.targets.get(i))
            else {
                break;
            };
            check(SiteKind::Jump, u64::from(offset), u64::from(len), target);
        }
        outcome.trampolines = verdicts.into_iter().map(|v| v.0).collect();
    }
}

impl PatchSites {
    /// Whether any patch site covers the byte at `offset` (from `_text`).
    pub fn covers(&self, offset: u64) -> bool {
        let from = offset.saturating_sub(MAX_SITE_LEN);
        let fixed = self.fixed().into_iter().any(|(kind, list)| {
            list.as_slice()[list.range(from, offset + 1)]
                .iter()
                .any(|&o| offset < u64::from(o) + kind.size())
        });
        let sized = |offsets: &Offsets, lens: &[u8]| {
            offsets.range(from, offset + 1).any(|i| {
                let (Some(&o), Some(&n)) = (offsets.as_slice().get(i), lens.get(i)) else {
                    return false;
                };
                offset < u64::from(o) + u64::from(n)
            })
        };
        fixed
            || sized(&self.jumps.offsets, &self.jumps.lens)
            || sized(&self.boot.offsets, &self.boot.lens)
            || sized(&self.boot_constants.offsets, &self.boot_constants.lens)
    }

    /// The fixed-length site lists with their rule.
    pub fn fixed(&self) -> [(SiteKind, &Offsets); 5] {
        [
            (SiteKind::Return, &self.returns),
            (SiteKind::Fentry, &self.fentry),
            (SiteKind::Call, &self.calls),
            (SiteKind::Lock, &self.locks),
            (SiteKind::Endbr, &self.endbr),
        ]
    }
}

/// What the patch-site rules consult (shared by the checker and the
/// builder, which keeps only sites whose file bytes pass their rule).
pub(crate) struct Rules<'a> {
    pub functions: &'a Offsets,
    pub return_thunks: &'a [u32],
    pub fentry_targets: &'a [u32],
    pub text_len: u64,
}

impl<'a> Rules<'a> {
    fn of(r: &'a TextReference) -> Self {
        Self {
            functions: &r.functions,
            return_thunks: &r.return_thunks,
            fentry_targets: &r.fentry_targets,
            text_len: r.text.len,
        }
    }

    /// The text offset the rel32 of the 5-byte instruction at `offset`
    /// points to, if inside the text.
    fn rel32_target(&self, offset: u64, insn: &[u8]) -> Option<u64> {
        let rel = i32::from_le_bytes([*insn.get(1)?, *insn.get(2)?, *insn.get(3)?, *insn.get(4)?]);
        let t = (offset as i64)
            .checked_add(5)?
            .checked_add(i64::from(rel))?;
        u64::try_from(t).ok().filter(|&t| t < self.text_len)
    }

    /// Whether a site of `kind` at `offset` may hold `bytes` (its whole
    /// length). `jump_target` is a jump label's target relative to the
    /// site.
    pub fn allows(&self, kind: SiteKind, offset: u64, bytes: &[u8], jump_target: i32) -> bool {
        let first = bytes.first().copied();
        let to = |set: &dyn Fn(u64) -> bool| self.rel32_target(offset, bytes).is_some_and(set);
        match kind {
            SiteKind::Return => {
                bytes == RET5
                    || (first == Some(JMP) && to(&|t| contains_u32(self.return_thunks, t)))
            }
            SiteKind::Fentry => {
                bytes == NOP5
                    || (first == Some(CALL) && to(&|t| contains_u32(self.fentry_targets, t)))
            }
            SiteKind::Call => {
                bytes == NOP5
                    || bytes == RET5
                    || bytes == XOR_EAX5
                    || ((first == Some(CALL) || first == Some(JMP))
                        && to(&|t| self.functions.contains(t)))
            }
            SiteKind::Lock => bytes == [LOCK] || bytes == [DS],
            SiteKind::Endbr => bytes == ENDBR64 || bytes == SEALED_ENDBR,
            SiteKind::Jump => {
                let rel = i64::from(jump_target) - bytes.len() as i64;
                match bytes {
                    [a, b] => [*a, *b] == NOP2 || (*a == JMP8 && i64::from(*b as i8) == rel),
                    [JMP, r @ ..] if r.len() == 4 => {
                        i64::from(i32::from_le_bytes([r[0], r[1], r[2], r[3]])) == rel
                    }
                    b => b == NOP5,
                }
            }
        }
    }
}

/// The runtime target of the 5-byte `call` at `offset` (from `_text`) if it
/// lies in the module area.
fn module_call(runtime_text: u64, offset: u64, insn: &[u8]) -> Option<u64> {
    let [CALL, a, b, c, d] = *insn else {
        return None;
    };
    let rel = i64::from(i32::from_le_bytes([a, b, c, d]));
    let target = runtime_text
        .wrapping_add(offset)
        .wrapping_add(5)
        .wrapping_add(rel as u64);
    ftrace::MODULE_AREA.contains(&target).then_some(target)
}

fn contains_u32(list: &[u32], offset: u64) -> bool {
    u32::try_from(offset).is_ok_and(|o| list.contains(&o))
}

/// Undoes KASLR in `buf` (which starts at offset `b0` from `_text`): every
/// relocated field that lies wholly inside the buffer gets its file value
/// back.
fn normalize(buf: &mut [u8], b0: u64, slide: u64, relocs: &Relocations) {
    let end = b0 + buf.len() as u64;
    let lists: [(&Offsets, u64, bool); 3] = [
        (&relocs.abs32, 4, false),
        (&relocs.inv32, 4, true),
        (&relocs.abs64, 8, false),
    ];
    for (list, width, inverse) in lists {
        for &offset in &list.as_slice()[list.range(b0, end.saturating_sub(width - 1))] {
            let at = (u64::from(offset) - b0) as usize;
            let Some(field) = buf.get_mut(at..at + width as usize) else {
                continue;
            };
            if width == 4 {
                let v = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
                let s = slide as u32;
                let v = if inverse {
                    v.wrapping_add(s)
                } else {
                    v.wrapping_sub(s)
                };
                field.copy_from_slice(&v.to_le_bytes());
            } else {
                let mut b = [0u8; 8];
                b.copy_from_slice(field);
                let v = u64::from_le_bytes(b).wrapping_sub(slide);
                field.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Every site of every kind as `(offset, len)` lists, for blanking.
fn all_sites(s: &PatchSites) -> [(&Offsets, Option<&[u8]>, u64); 8] {
    [
        (&s.returns, None, 5),
        (&s.fentry, None, 5),
        (&s.calls, None, 5),
        (&s.locks, None, 1),
        (&s.endbr, None, 4),
        (&s.jumps.offsets, Some(&s.jumps.lens), 0),
        (&s.boot.offsets, Some(&s.boot.lens), 0),
        (&s.boot_constants.offsets, Some(&s.boot_constants.lens), 0),
    ]
}

/// Zeroes, inside the chunk `[c0, c1)`, every byte a patch site covers and
/// ro_after_init (`buf` starts at `b0`, at most [`MARGIN`] before `c0`).
/// The builder blanks the file's bytes the same way.
pub fn blank(
    buf: &mut [u8],
    b0: u64,
    c0: u64,
    c1: u64,
    sites: &PatchSites,
    ro_after_init: &Range<u64>,
) {
    let mut zero = |from: u64, to: u64| {
        let from = from.max(c0);
        let to = to.min(c1);
        if from < to {
            let (a, b) = ((from - b0) as usize, (to - b0) as usize);
            if let Some(s) = buf.get_mut(a..b) {
                s.fill(0);
            }
        }
    };
    for (list, lens, fixed) in all_sites(sites) {
        let range = list.range(c0.saturating_sub(MARGIN), c1);
        for i in range {
            let Some(&offset) = list.as_slice().get(i) else {
                break;
            };
            let len = match lens {
                Some(l) => l.get(i).map_or(0, |&l| u64::from(l)),
                None => fixed,
            };
            zero(u64::from(offset), u64::from(offset) + len);
        }
    }
    zero(ro_after_init.start, ro_after_init.end);
}

/// The boot and frozen digests of the chunk `[c0, c1)` (see
/// [`ChunkOutcome`]), over normalized bytes; `sites` is scratch room.
fn frozen_digests(
    buf: &[u8],
    b0: u64,
    c0: u64,
    c1: u64,
    s: &PatchSites,
    sites: &mut Vec<u8>,
) -> ([u8; 32], [u8; 32]) {
    // The reference fixes every site's offset and length, so the sites'
    // bytes in order are all the digests need. They are gathered first and
    // hashed with one update: under TCG a call per tiny update cost more
    // than the bytes (the start-up check of 6.1 spent 7% of its time here
    // when each site was hashed with its offset and length).
    let gather = |list: &SizedSites, sites: &mut Vec<u8>| {
        let mut here = false;
        for i in list.offsets.range(c0, c1) {
            let (Some(&offset), Some(&len)) = (list.offsets.as_slice().get(i), list.lens.get(i))
            else {
                break;
            };
            let from = (u64::from(offset) - b0) as usize;
            sites.extend_from_slice(buf.get(from..from + usize::from(len)).unwrap_or_default());
            here = true;
        }
        here
    };
    sites.clear();
    let any_boot = gather(&s.boot, sites);
    let boot_len = sites.len();
    let any_constant = gather(&s.boot_constants, sites);
    let mut h = Sha256::new();
    h.update(&sites[..boot_len]);
    match (any_boot, any_constant) {
        (false, false) => ([0; 32], [0; 32]),
        (true, false) => {
            // The frozen bytes are the boot-patched ones alone.
            let boot: [u8; 32] = h.finalize().into();
            (boot, boot)
        }
        (_, true) => {
            let boot = if any_boot {
                h.clone().finalize().into()
            } else {
                [0; 32]
            };
            h.update(&sites[boot_len..]);
            (boot, h.finalize().into())
        }
    }
}

/// The digest a verifier learns: SHA-256 over the per-chunk boot digests of
/// the whole text, in order.
pub fn boot_patches_digest<'a>(chunk_boot: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for d in chunk_boot {
        h.update(d);
    }
    h.finalize().into()
}

/// SHA-256 of ro_after_init as it is in RAM (relocations undone): a
/// per-boot baseline.
pub fn ro_after_init_digest<M: GuestMemory + ?Sized>(
    mem: &M,
    location: &KernelLocation,
    ro_after_init: Range<u64>,
    relocations: &Relocations,
) -> Result<[u8; 32], TextError> {
    ro_digest(location, ro_after_init, relocations, &mut |at, buf| {
        let phys = location
            .phys_text
            .0
            .checked_add(at)
            .ok_or(TextError::BadReference("address overflow"))?;
        Ok(mem.read(GuestPhysAddr(phys), buf)?)
    })
}

/// [`ro_after_init_digest`] of `raw`, the region's bytes as read from
/// the guest (its whole length), for a caller that keeps them as a copy.
pub fn ro_after_init_digest_of(
    raw: &[u8],
    location: &KernelLocation,
    ro_after_init: Range<u64>,
    relocations: &Relocations,
) -> Result<[u8; 32], TextError> {
    let from = ro_after_init.start.wrapping_sub(location.link_text);
    let len = ro_after_init.end.wrapping_sub(ro_after_init.start);
    if raw.len() as u64 != len {
        return Err(TextError::BadReference("copy length"));
    }
    ro_digest(location, ro_after_init, relocations, &mut |at, buf| {
        let start = at.wrapping_sub(from) as usize;
        let piece = raw
            .get(start..start.saturating_add(buf.len()))
            .ok_or(TextError::BadReference("copy length"))?;
        buf.copy_from_slice(piece);
        Ok(())
    })
}

/// Fills a buffer with the raw bytes at an offset from `_text`.
type Fill<'a> = dyn FnMut(u64, &mut [u8]) -> Result<(), TextError> + 'a;

/// Normalizes and hashes ro_after_init piecewise; `fill(offset, buf)`
/// provides the raw bytes at `offset` from `_text`.
fn ro_digest(
    location: &KernelLocation,
    ro_after_init: Range<u64>,
    relocations: &Relocations,
    fill: &mut Fill<'_>,
) -> Result<[u8; 32], TextError> {
    let link = location.link_text;
    let from = ro_after_init.start.wrapping_sub(link);
    let to = ro_after_init.end.wrapping_sub(link);
    if to < from || to - from > MAX_REGION {
        return Err(TextError::BadReference("ro_after_init range"));
    }
    let mut h = Sha256::new();
    let mut buf = Vec::new();
    let mut at = from;
    while at < to {
        let end = (at + 64 * CHUNK).min(to);
        buf.clear();
        buf.resize((end - at) as usize, 0);
        fill(at, &mut buf)?;
        normalize(&mut buf, at, location.slide(), relocations);
        h.update(&buf);
        at = end;
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests;
