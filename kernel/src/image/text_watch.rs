//! Sweeps the Mon-VM kernel's text and read-only data against the
//! profile's reference ([`vmi::linux::text`]): once in full at start-up
//! (measured into PCR 11), then continuously, a bounded number of chunks
//! per main-loop call so attestation requests are still answered while it
//! runs. It only keeps the verdicts; `monvm` turns their changes into
//! events.
//!
//! Hashing is what costs (SHA-256 runs at about 16 MB/s under TCG), so the
//! start-up pass keeps a copy of every chunk it checked and later passes
//! compare the chunk with that copy; only a chunk that changed (a jump
//! label flipped, a static call retargeted, or an attack) is checked
//! against the reference again, and the copy takes its new bytes. A chunk
//! is thus always judged on its current bytes, by the full rules, whenever
//! they differ from what was last judged. Without room for the copy the
//! sweep hashes every chunk every pass.
//!
//! An fentry site that calls into the module area passes only if the
//! target is a verified ftrace trampoline
//! ([`vmi::linux::text::ftrace::check_trampoline`], read through the
//! Mon-VM's page tables). Tens of thousands of sites call the same
//! trampoline while the function tracer runs, so the verdict is kept per
//! target; at the start of every sweep round each kept trampoline is read
//! and checked again, and if its bytes or verdict changed, every chunk
//! whose sites call it is judged again in that round (its bytes did not
//! change, so the comparison with the copy would skip it). Targets no
//! chunk calls any more are forgotten then.
//!
//! Linux rewrites a live site with `text_poke_bp`: `int3` on its first
//! byte, then the rest of the new instruction, then its first byte, with
//! the CPUs synchronised in between; turning the function tracer on or off
//! rewrites some 35-40k sites this way in batches, over seconds under TCG.
//! A sweep that reads a site between those steps sees `cc` and four bytes
//! of the old or new instruction. Such a site is given one sweep round to
//! finish: its chunk is judged again in the next round, and if the site
//! still holds an `int3` form then, it is reported.
//!
//! A refused trampoline is reported once, not once per site that calls it
//! (some 35-40k while the function tracer runs: as many events would flood
//! PCR 12 and its log): `fentry@SITE:BYTES:trampoline@TARGET`, naming the
//! lowest site that calls it.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;
use sha2::{Digest, Sha256};
use vmi::addr::GuestPhysAddr;
use vmi::linux::text::ftrace::{Trampoline, TrampolineError, check_trampoline};
use vmi::linux::text::{
    Area, ChunkOutcome, SiteKind, SiteViolation, TextChecker, TextError, TextReference,
    boot_patches_digest, ro_after_init_digest, ro_after_init_digest_of,
};
use vmi::linux::{KernelLocation, MappingError, check_image_mapping};
use vmi::memory::GuestMemory;
use vmi::paging::{AddressSpace, PagingMode};
use vmi::profile::KernelProfile;

use crate::arch::x86_64::smp;
use crate::monvm::text;
use avm_kernel::sweep_pace::SweepPace;

/// A whole sweep of text and rodata takes this long (default).
pub const SWEEP_PERIOD_US: u64 = 1_000_000;
/// Most steps (chunks) in one call: bounds the time an attestation request
/// may wait behind the sweep.
const MAX_STEPS_PER_CALL: usize = 256;
/// The share of the start-up check's chunks this CPU takes when a helper
/// CPU takes the rest (text chunks first, then rodata).
const HELPER_SPLIT_PERCENT: usize = 47;
/// Bytes per chunk.
const CHUNK: usize = vmi::linux::text::CHUNK as usize;
/// Most distinct fentry call targets in the module area kept at once (the
/// function tracer uses one trampoline; each further tracing instance or
/// ops alone on some functions, one more). A target beyond them is
/// reported without being read.
const MAX_TRAMPOLINES: usize = 32;
/// Most bad pages kept as findings at once (a whole image remapped page
/// by page would otherwise be thousands of events).
const MAX_MAPPING_FINDINGS: usize = 64;

/// The areas this module reports on, in the order of [`TextWatch::found`].
pub const AREAS: [&str; 4] = ["text", "patch_site", "rodata", "ro_after_init"];
const TEXT: usize = 0;
const SITES: usize = 1;
const RODATA: usize = 2;
const RO_AFTER_INIT: usize = 3;

/// The start-up measurement: digests for PCR 11 and what it took.
pub struct Startup {
    /// SHA-256 over the checked digests of every text chunk.
    pub text: [u8; 32],
    pub rodata: [u8; 32],
    /// What alternatives and paravirt chose at boot (learned by verifiers).
    pub boot_patches: [u8; 32],
    pub ro_after_init: [u8; 32],
    pub chunks: usize,
    /// Bytes checked (text and rodata).
    pub bytes: u64,
    /// Microseconds the check took (the copy filled on the way).
    pub check_us: u64,
    /// Whether later sweeps compare with a copy (else they hash).
    pub copied: bool,
    /// The CPUs that checked (2 when the helper CPU took its part).
    pub cpus: u8,
    /// Microseconds from the start of the check to the end of this CPU's
    /// part and of the helper's (its wake-up included; 0 without it), and
    /// of the work after both (findings judged, chunks with trampolines
    /// checked again, ro_after_init): where the time of a check goes.
    pub parts_us: [u64; 3],
}

/// Sweep state.
pub struct TextWatch {
    location: KernelLocation,
    text_chunks: usize,
    rodata_chunks: usize,
    /// Text length, rodata start (offset from `_text`) and length.
    lens: (u64, u64, u64),
    /// ro_after_init as offsets from `_text`.
    ro: Range<u64>,
    /// Per text chunk: the boot-patched and boot-constant bytes at start-up
    /// (they never change after boot).
    frozen: Vec<[u8; 32]>,
    /// The next step: text chunks, rodata chunks, then ro_after_init.
    cursor: usize,
    /// Whole passes begun after the start-up check.
    passes: u64,
    /// Steps due (a stall of the loop is caught up, one sweep at most).
    pace: SweepPace,
    /// Violation texts per area, keyed by step.
    found: [BTreeMap<usize, Vec<String>>; 4],
    /// The raw bytes each step held when last judged, [`CHUNK`] apart, then
    /// ro_after_init; empty without room for it.
    copy: Vec<u8>,
    /// Pages (offsets from `_text`) the kernel's page tables do not map
    /// where the checks read them, with their finding texts.
    mapping: BTreeMap<u64, (u64, String)>,
    /// ro_after_init's start-up digest (KASLR undone), what later sweeps
    /// compare it with when there is no copy (`None`: not readable then).
    ro_after_init: Option<[u8; 32]>,
    /// The Mon-VM's paging mode, for reading trampolines (`None`: not
    /// known, every call into the module area is reported).
    paging: Option<PagingMode>,
    /// The verdict on each module-area target fentry sites call.
    trampolines: BTreeMap<u64, Result<Trampoline, TrampolineError>>,
    /// Per text step, the module-area targets its sites called when last
    /// judged.
    calls: BTreeMap<usize, Vec<u64>>,
    /// Steps to judge again although their bytes did not change (a
    /// trampoline they call changed, a site was caught mid-rewrite).
    dirty: BTreeSet<usize>,
    /// Per text step, the sites seen in the middle of a `text_poke_bp`
    /// rewrite (first byte `int3`) when last judged, not yet reported.
    rewriting: BTreeMap<usize, Vec<SiteViolation>>,
    /// Per refused module-area target, per text step calling it: the
    /// lowest site there and its violation text.
    refused: BTreeMap<u64, BTreeMap<usize, (u32, String)>>,
}

impl TextWatch {
    /// Checks everything once, on both CPUs if there is a helper;
    /// `None` without a (usable) text reference.
    pub fn start<M: GuestMemory + Sync + ?Sized>(
        memory: &M,
        profile: &KernelProfile,
        location: KernelLocation,
        now_us: u64,
    ) -> Option<(Self, Startup)> {
        let reference = profile.text_reference.as_ref()?;
        let ro_link = ro_range(profile);
        let mut checker = match TextChecker::new(reference, location, ro_link.clone()) {
            Ok(c) => c,
            Err(e) => {
                warn!("monvm: text reference unusable: {}", e);
                return None;
            }
        };
        let link = location.link_text;
        let mut watch = Self {
            location,
            text_chunks: checker.chunks(Area::Text),
            rodata_chunks: checker.chunks(Area::Rodata),
            lens: (
                reference.text.len,
                reference.rodata.start.wrapping_sub(link),
                reference.rodata.len,
            ),
            ro: ro_link.start.wrapping_sub(link)..ro_link.end.wrapping_sub(link),
            frozen: Vec::new(),
            cursor: 0,
            passes: 0,
            pace: SweepPace::starting(now_us),
            found: Default::default(),
            copy: Vec::new(),
            ro_after_init: None,
            mapping: BTreeMap::new(),
            paging: location
                .paging_mode(memory, profile.symbols.pgdir_shift)
                .ok(),
            trampolines: BTreeMap::new(),
            calls: BTreeMap::new(),
            dirty: BTreeSet::new(),
            rewriting: BTreeMap::new(),
            refused: BTreeMap::new(),
        };
        let (mut text_h, mut rodata_h) = (Sha256::new(), Sha256::new());
        let mut boot = Vec::new();
        let chunks = watch.text_chunks + watch.rodata_chunks;
        // The copy for later sweeps is filled by the same reads the check
        // judges: no second pass over the BAR, and no window in which a
        // change could slip into the copy unjudged.
        let mut copy = watch.allocate_copy();
        // Both CPUs check, each its part of the steps (this one the first;
        // rodata has no patch sites to check, so its chunks are cheaper
        // and the helper's part is larger) without the trampoline cache:
        // a chunk whose sites call into the module area is checked again
        // here, below, with it.
        let mid = chunks * HELPER_SPLIT_PERCENT / 100;
        let steps_of = |steps: Range<usize>| -> Vec<(Area, usize, usize)> {
            steps
                .map(|step| {
                    let (area, index) = watch.split(step);
                    (area, index, watch.step_range(step).1)
                })
                .collect()
        };
        let (near_steps, far_steps) = (steps_of(0..mid), steps_of(mid..chunks));
        let near_len = (mid * CHUNK).min(copy.len());
        let (near_copy, far_copy) = copy.split_at_mut(near_len);
        let ((near, near_us), (far, far_us), helped) = smp::join(
            || {
                let near = check_steps(
                    memory,
                    reference,
                    location,
                    &ro_link,
                    &near_steps,
                    near_copy,
                );
                (near, crate::time::now_us())
            },
            || {
                let far = check_steps(memory, reference, location, &ro_link, &far_steps, far_copy);
                (far, crate::time::now_us())
            },
        );
        let (mut near, mut far) = (near.into_iter(), far.into_iter());
        for step in 0..chunks {
            let (area, _) = watch.split(step);
            let checked = if step < mid { near.next() } else { far.next() };
            let outcome = match checked {
                Some(Ok(o)) if o.trampolines.is_empty() => Ok(o),
                Some(Err(e)) => Err(e),
                _ => {
                    let raw = watch.copy_of(&mut copy, step);
                    watch.check_step(&mut checker, memory, profile, step, raw)
                }
            };
            let (digest, boot_digest, frozen) = match &outcome {
                Ok(o) => (o.digest, o.boot, o.frozen),
                Err(_) => ([0; 32], [0; 32], [0; 32]),
            };
            if area == Area::Text {
                text_h.update(digest);
                boot.push(boot_digest);
                watch.frozen.push(frozen);
            } else {
                rodata_h.update(digest);
            }
            watch.judge(step, outcome, reference);
        }
        let ro_after_init = watch
            .ro_after_init_into(&mut copy, memory, ro_link, reference)
            .ok();
        watch.ro_after_init = ro_after_init;
        let ro_after_init = ro_after_init.unwrap_or([0; 32]);
        watch.copy = copy;
        let checked_us = crate::time::now_us();
        let startup = Startup {
            text: text_h.finalize().into(),
            rodata: rodata_h.finalize().into(),
            boot_patches: boot_patches_digest(&boot),
            ro_after_init,
            chunks,
            bytes: reference.text.len + reference.rodata.len,
            check_us: checked_us.saturating_sub(now_us),
            copied: !watch.copy.is_empty(),
            cpus: if helped { 2 } else { 1 },
            parts_us: [
                near_us.saturating_sub(now_us),
                if helped {
                    far_us.saturating_sub(now_us)
                } else {
                    0
                },
                checked_us.saturating_sub(near_us.max(far_us)),
            ],
        };
        Some((watch, startup))
    }

    /// Checks the steps due since the last call (a whole sweep per
    /// [`SWEEP_PERIOD_US`], at most [`MAX_STEPS_PER_CALL`] at once; what a
    /// stalled loop could not take is owed to the next calls, see
    /// [`SweepPace`]).
    /// Returns whether it checked any.
    pub fn sweep<M: GuestMemory + ?Sized>(
        &mut self,
        memory: &M,
        profile: &KernelProfile,
        now_us: u64,
    ) -> bool {
        let Some(reference) = profile.text_reference.as_ref() else {
            return false;
        };
        let Ok(mut checker) = TextChecker::new(reference, self.location, ro_range(profile)) else {
            return false;
        };
        let steps = self.steps();
        let due = self
            .pace
            .take(now_us, steps, SWEEP_PERIOD_US, MAX_STEPS_PER_CALL);
        if due == 0 {
            return false;
        }
        // The kernel's own page tables, walked once per slice: the checks
        // read the image by physical address, the CPU runs it through
        // these.
        let space = self.paging.and_then(|mode| {
            self.location
                .address_space(memory, profile.symbols.init_top_pgt, mode)
                .ok()
        });
        let mut known_good = 0..0;
        for _ in 0..due {
            let step = self.cursor;
            if step == 0 {
                self.passes += 1;
                self.recheck_trampolines(memory, profile);
            }
            self.cursor = (self.cursor + 1) % steps;
            let (offset, len, _) = self.step_range(step);
            let range = offset..offset + len as u64;
            if !(known_good.start <= range.start && range.end <= known_good.end) {
                known_good = self.check_mapping(space.as_ref(), range);
            }
            if step == steps - 1 {
                // ro_after_init never changes after boot: it is compared
                // with its start-up copy, which stays as it was, or without
                // a copy, its digest with the start-up digest.
                let changed = if self.copy.is_empty() {
                    ro_after_init_digest(
                        memory,
                        &self.location,
                        ro_range(profile),
                        &reference.relocations,
                    )
                    .ok()
                        != self.ro_after_init
                } else {
                    self.changed(memory, step)
                };
                let texts = if changed {
                    alloc::vec![text(format_args!(
                        "changed:{:#x}",
                        self.location.link_text + self.ro.start
                    ))]
                } else {
                    Vec::new()
                };
                set(&mut self.found[RO_AFTER_INIT], step, texts);
                continue;
            }
            // Compare first, then judge a step that changed or that a
            // changed trampoline made dirty. The judging read is the one
            // that fills the copy: a copy taken from the compare's read
            // could keep bytes the check never saw (the guest can change
            // them between two reads), and later compares would pass them.
            let changed = self.changed(memory, step);
            if !self.dirty.remove(&step) && !changed {
                continue;
            }
            let (area, index) = self.split(step);
            let mut copy = core::mem::take(&mut self.copy);
            let raw = self.copy_of(&mut copy, step);
            let outcome = self.check_step(&mut checker, memory, profile, step, raw);
            self.copy = copy;
            if let Ok(o) = &outcome
                && area == Area::Text
                && self.frozen.get(index).is_some_and(|f| *f != o.frozen)
            {
                let at = reference.text.start + (index * CHUNK) as u64;
                self.judge(step, outcome, reference);
                self.found[TEXT]
                    .entry(step)
                    .or_default()
                    .push(text(format_args!("boot-patched:{:#x}", at)));
                continue;
            }
            self.judge(step, outcome, reference);
        }
        true
    }

    /// Whole passes begun since the start-up check.
    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// Checks that the kernel's page tables map `range` (offsets from
    /// `_text`) onto the pages the checks read. Keeps one finding per bad
    /// page (a remapped 2 MiB page is one finding, not one per chunk) and
    /// drops those of pages found good again. Returns the part of the
    /// image known good now (empty after a finding).
    fn check_mapping<M: GuestMemory + ?Sized>(
        &mut self,
        space: Option<&AddressSpace<'_, M>>,
        range: Range<u64>,
    ) -> Range<u64> {
        let link = self.location.link_text;
        let Some(space) = space else {
            // Without the page tables nothing says what the CPU runs.
            self.mapping
                .insert(u64::MAX, (1, String::from("mapping:unreadable")));
            return 0..0;
        };
        self.mapping.remove(&u64::MAX);
        let (good, bad) = match check_image_mapping(space, &self.location, range.clone()) {
            Ok(end) => (range.start..end, None),
            // The range is the caller's: not a finding about the guest.
            Err(MappingError::BadRange { .. }) => return 0..0,
            Err(e) => {
                let size = match e {
                    MappingError::Remapped { page_size, .. } => page_size.bytes(),
                    MappingError::Unmapped { level, .. } => {
                        1u64 << (12 + 9 * u32::from(level.clamp(1, 3) - 1))
                    }
                    _ => 0x1000,
                };
                let offset = e.offset();
                let page = offset & !(size - 1);
                let what = match e {
                    MappingError::Remapped { found, .. } => {
                        let to = found.0.wrapping_sub(offset - page);
                        text(format_args!("remapped@{:#x}:{:#x}", link + page, to))
                    }
                    MappingError::Unmapped { .. } => {
                        text(format_args!("unmapped@{:#x}", link + page))
                    }
                    _ => text(format_args!("unwalkable@{:#x}", link + page)),
                };
                (range.start..offset, Some((page, size, what)))
            }
        };
        // Findings on pages now seen good are gone.
        self.mapping.retain(|&page, (size, _)| {
            page == u64::MAX || page >= good.end || page.saturating_add(*size) <= good.start
        });
        match bad {
            Some((page, size, what)) => {
                if self.mapping.len() < MAX_MAPPING_FINDINGS || self.mapping.contains_key(&page) {
                    self.mapping.insert(page, (size, what));
                }
                0..0
            }
            None => good,
        }
    }

    /// The current violations of each of [`AREAS`].
    pub fn found(&self) -> [Vec<String>; 4] {
        let mut out: [Vec<String>; 4] = Default::default();
        for (area, map) in self.found.iter().enumerate() {
            out[area] = map.values().flatten().cloned().collect();
        }
        // A mapping finding is the text's if it is in the text, else the
        // read-only data's.
        for (&page, (_, what)) in &self.mapping {
            // (`mapping:unreadable`, keyed u64::MAX, is the text's.)
            let area = if page < self.lens.0 || page == u64::MAX {
                TEXT
            } else {
                RODATA
            };
            out[area].push(what.clone());
        }
        for (target, steps) in &self.refused {
            // Once a recheck accepts the trampoline again, its callers
            // are being judged again: report nothing meanwhile (the lowest
            // caller would change with every chunk).
            if !self.trampolines.get(target).is_some_and(|r| r.is_err()) {
                continue;
            }
            if let Some((_, site)) = steps.values().min_by_key(|(offset, _)| *offset) {
                out[SITES].push(text(format_args!("{}:trampoline@{:#x}", site, target)));
            }
        }
        out
    }

    /// Checks step `step` (a text or rodata chunk), judging module-area
    /// fentry call targets through the trampoline cache, and notes which
    /// targets a text chunk calls.
    fn check_step<M: GuestMemory + ?Sized>(
        &mut self,
        checker: &mut TextChecker<'_>,
        memory: &M,
        profile: &KernelProfile,
        step: usize,
        raw: Option<&mut [u8]>,
    ) -> Result<ChunkOutcome, TextError> {
        let (area, index) = self.split(step);
        let location = self.location;
        let space = self.paging.and_then(|mode| {
            location
                .address_space(memory, profile.symbols.init_top_pgt, mode)
                .ok()
        });
        let cache = &mut self.trampolines;
        let mut judge = |target: u64| -> bool {
            if let Some(verdict) = cache.get(&target) {
                return verdict.is_ok();
            }
            if cache.len() >= MAX_TRAMPOLINES {
                return false;
            }
            let verdict = match (&space, profile.text_reference.as_ref()) {
                (Some(space), Some(reference)) => {
                    check_trampoline(space, reference, &location, target)
                }
                _ => Err(TrampolineError::Unreadable),
            };
            let ok = verdict.is_ok();
            cache.insert(target, verdict);
            ok
        };
        let outcome = match raw {
            Some(raw) => checker.check_chunk_copying(memory, area, index, &mut judge, raw),
            None => checker.check_chunk_with(memory, area, index, &mut judge),
        };
        if area == Area::Text {
            match &outcome {
                Ok(o) if !o.trampolines.is_empty() => {
                    self.calls.insert(step, o.trampolines.clone());
                }
                _ => {
                    self.calls.remove(&step);
                }
            }
        }
        outcome
    }

    /// At the start of a sweep round: forgets targets no chunk calls any
    /// more, checks every other kept trampoline again, and marks dirty the
    /// chunks that call one whose bytes or verdict changed.
    fn recheck_trampolines<M: GuestMemory + ?Sized>(
        &mut self,
        memory: &M,
        profile: &KernelProfile,
    ) {
        let calls = &self.calls;
        self.trampolines
            .retain(|target, _| calls.values().any(|t| t.contains(target)));
        if self.trampolines.is_empty() {
            return;
        }
        let (Some(reference), Some(mode)) = (profile.text_reference.as_ref(), self.paging) else {
            return;
        };
        let Ok(space) = self
            .location
            .address_space(memory, profile.symbols.init_top_pgt, mode)
        else {
            return;
        };
        for (target, verdict) in self.trampolines.iter_mut() {
            let now = check_trampoline(&space, reference, &self.location, *target);
            if now != *verdict {
                *verdict = now;
                for (&step, targets) in &self.calls {
                    if targets.contains(target) {
                        self.dirty.insert(step);
                    }
                }
            }
        }
    }

    fn steps(&self) -> usize {
        self.text_chunks + self.rodata_chunks + 1
    }

    fn split(&self, step: usize) -> (Area, usize) {
        if step < self.text_chunks {
            (Area::Text, step)
        } else {
            (Area::Rodata, step - self.text_chunks)
        }
    }

    /// Where step `step` is in guest memory and how long it is, and where
    /// it is in the copy.
    fn step_range(&self, step: usize) -> (u64, usize, usize) {
        let (text_len, rodata_start, rodata_len) = self.lens;
        let at_copy = step * CHUNK;
        if step < self.text_chunks {
            let from = (step * CHUNK) as u64;
            (from, (text_len - from).min(CHUNK as u64) as usize, at_copy)
        } else if step < self.text_chunks + self.rodata_chunks {
            let from = ((step - self.text_chunks) * CHUNK) as u64;
            (
                rodata_start + from,
                (rodata_len - from).min(CHUNK as u64) as usize,
                at_copy,
            )
        } else {
            (
                self.ro.start,
                (self.ro.end - self.ro.start) as usize,
                at_copy,
            )
        }
    }

    /// Step `step`'s part of `copy` (the watch's copy, taken out while a
    /// check fills it); `None` without a copy.
    fn copy_of<'c>(&self, copy: &'c mut [u8], step: usize) -> Option<&'c mut [u8]> {
        if copy.is_empty() {
            return None;
        }
        let (_, len, at) = self.step_range(step);
        copy.get_mut(at..at + len)
    }

    /// Whether step `step` holds other bytes than its copy (always true
    /// without a copy, and when unreadable). The copy is left as it is:
    /// only a check's read fills it.
    fn changed<M: GuestMemory + ?Sized>(&self, memory: &M, step: usize) -> bool {
        if self.copy.is_empty() {
            return true;
        }
        let (offset, len, at) = self.step_range(step);
        // ro_after_init is compared piecewise, a chunk's length at a time.
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let phys = GuestPhysAddr(self.location.phys_text.0 + offset + done as u64);
            let Some(old) = self.copy.get(at + done..at + done + n) else {
                return true;
            };
            // Compared in place in the BAR.
            if !matches!(memory.equals(phys, old), Ok(true)) {
                return true;
            }
            done += n;
        }
        false
    }

    /// Room for every step's bytes (zeroed); empty without room.
    fn allocate_copy(&self) -> Vec<u8> {
        let ro_len = (self.ro.end - self.ro.start) as usize;
        let len = (self.steps() - 1) * CHUNK + ro_len;
        let mut copy = Vec::new();
        if copy.try_reserve_exact(len).is_err() {
            warn!("monvm: no room to copy the kernel text: every sweep hashes it");
            return copy;
        }
        copy.resize(len, 0);
        copy
    }

    /// ro_after_init's start-up digest; with a copy, read into its place
    /// there and digested from it (the copy is emptied if unreadable).
    fn ro_after_init_into<M: GuestMemory + ?Sized>(
        &self,
        copy: &mut Vec<u8>,
        memory: &M,
        ro_link: Range<u64>,
        reference: &TextReference,
    ) -> Result<[u8; 32], TextError> {
        let relocations = &reference.relocations;
        if copy.is_empty() {
            return ro_after_init_digest(memory, &self.location, ro_link, relocations);
        }
        let (offset, len, at) = self.step_range(self.steps() - 1);
        let phys = GuestPhysAddr(self.location.phys_text.0 + offset);
        let read = match copy.get_mut(at..at + len) {
            Some(raw) => memory.read(phys, raw).is_ok(),
            None => false,
        };
        if !read {
            *copy = Vec::new();
            return ro_after_init_digest(memory, &self.location, ro_link, relocations);
        }
        ro_after_init_digest_of(&copy[at..at + len], &self.location, ro_link, relocations)
    }

    /// Keeps a chunk's verdicts (link addresses in the texts).
    fn judge(
        &mut self,
        step: usize,
        outcome: Result<ChunkOutcome, TextError>,
        reference: &TextReference,
    ) {
        let (area, index) = self.split(step);
        let (slot, base) = match area {
            Area::Text => (TEXT, reference.text.start),
            Area::Rodata => (RODATA, reference.rodata.start),
        };
        let mut outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                set(
                    &mut self.found[slot],
                    step,
                    alloc::vec![text(format_args!("unreadable:{}", e))],
                );
                return;
            }
        };
        let modified = if outcome.modified {
            alloc::vec![text(format_args!(
                "chunk:{:#x}",
                base + (index * CHUNK) as u64
            ))]
        } else {
            Vec::new()
        };
        set(&mut self.found[slot], step, modified);
        if area == Area::Text {
            self.hold_rewriting(step, &mut outcome.sites);
            for steps in self.refused.values_mut() {
                steps.remove(&step);
            }
            let name = |v: &SiteViolation| {
                let mut hex = String::new();
                for b in &v.bytes[..usize::from(v.len)] {
                    hex.push_str(&text(format_args!("{:02x}", b)));
                }
                text(format_args!(
                    "{}@{:#x}:{}",
                    v.kind.name(),
                    reference.text.start + u64::from(v.offset),
                    hex
                ))
            };
            let mut sites = Vec::new();
            for v in &outcome.sites {
                // A call to a trampoline that was checked and refused:
                // counted once for all its callers.
                let target = self
                    .module_call(v)
                    .filter(|t| self.trampolines.get(t).is_some_and(|r| r.is_err()));
                let Some(target) = target else {
                    sites.push(name(v));
                    continue;
                };
                let entry = self.refused.entry(target).or_default();
                if entry.get(&step).is_none_or(|(o, _)| v.offset < *o) {
                    entry.insert(step, (v.offset, name(v)));
                }
            }
            self.refused.retain(|_, steps| !steps.is_empty());
            set(&mut self.found[SITES], step, sites);
        }
    }
}

impl TextWatch {
    /// The runtime target of a violating fentry site's `call`, if any.
    fn module_call(&self, v: &SiteViolation) -> Option<u64> {
        match (v.kind, v.len, v.bytes) {
            (SiteKind::Fentry, 5, [0xe8, a, b, c, d]) => {
                let rel = i64::from(i32::from_le_bytes([a, b, c, d]));
                Some(
                    self.location
                        .runtime_text
                        .wrapping_add(u64::from(v.offset) + 5)
                        .wrapping_add(rel as u64),
                )
            }
            _ => None,
        }
    }

    /// Takes out of `sites` those caught in the middle of a `text_poke_bp`
    /// rewrite (first byte `int3`) that were not in such a state when the
    /// step was last judged, and has the step judged again next round; one
    /// still (or again) in an `int3` form is left in (reported).
    fn hold_rewriting(&mut self, step: usize, sites: &mut Vec<SiteViolation>) {
        const INT3: u8 = 0xcc;
        let before = self.rewriting.remove(&step).unwrap_or_default();
        let mut held = Vec::new();
        sites.retain(|v| {
            // In an `int3` form at two judgements a round apart (whatever
            // the other bytes): no rewrite takes that long.
            if v.len == 0 || v.bytes[0] != INT3 || before.iter().any(|b| b.offset == v.offset) {
                return true;
            }
            held.push(*v);
            false
        });
        if !held.is_empty() {
            self.rewriting.insert(step, held);
            self.dirty.insert(step);
        }
    }
}

/// One CPU's part of the start-up check: `steps` (area, index and length
/// of each), each read into its place in `copy` (empty without a copy). A
/// site that calls into the module area is refused here; the caller
/// checks such chunks again with its trampoline cache. Empty if the
/// reference is unusable.
fn check_steps<M: GuestMemory + ?Sized>(
    memory: &M,
    reference: &TextReference,
    location: KernelLocation,
    ro_link: &Range<u64>,
    steps: &[(Area, usize, usize)],
    copy: &mut [u8],
) -> Vec<Result<ChunkOutcome, TextError>> {
    let Ok(mut checker) = TextChecker::new(reference, location, ro_link.clone()) else {
        return Vec::new();
    };
    let mut refuse = |_target: u64| false;
    let mut at = 0;
    let mut outcomes = Vec::with_capacity(steps.len());
    for &(area, index, len) in steps {
        let raw = if copy.is_empty() {
            None
        } else {
            copy.get_mut(at..at + len)
        };
        at += CHUNK;
        outcomes.push(match raw {
            Some(raw) => checker.check_chunk_copying(memory, area, index, &mut refuse, raw),
            None => checker.check_chunk_with(memory, area, index, &mut refuse),
        });
    }
    outcomes
}

/// Keeps `texts` as step `step`'s findings (none: forgets the step).
fn set(map: &mut BTreeMap<usize, Vec<String>>, step: usize, texts: Vec<String>) {
    if texts.is_empty() {
        map.remove(&step);
    } else {
        map.insert(step, texts);
    }
}

fn ro_range(profile: &KernelProfile) -> Range<u64> {
    profile.symbols.start_ro_after_init..profile.symbols.end_ro_after_init
}
