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

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;
use sha2::{Digest, Sha256};
use vmi::addr::GuestPhysAddr;
use vmi::linux::KernelLocation;
use vmi::linux::text::{
    Area, ChunkOutcome, TextChecker, TextError, TextReference, boot_patches_digest,
    ro_after_init_digest,
};
use vmi::memory::GuestMemory;
use vmi::profile::KernelProfile;

use crate::monvm::text;

/// A whole sweep of text and rodata takes this long (default).
pub const SWEEP_PERIOD_US: u64 = 1_000_000;
/// Most steps (chunks) in one call: bounds the time an attestation request
/// may wait behind the sweep.
const MAX_STEPS_PER_CALL: usize = 256;
/// Bytes per chunk.
const CHUNK: usize = vmi::linux::text::CHUNK as usize;

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
    /// Microseconds the check took, and the copy after it.
    pub check_us: u64,
    pub copy_us: u64,
    /// Whether later sweeps compare with a copy (else they hash).
    pub copied: bool,
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
    last_us: u64,
    /// Violation texts per area, keyed by step.
    found: [BTreeMap<usize, Vec<String>>; 4],
    /// The raw bytes each step held when last judged, [`CHUNK`] apart, then
    /// ro_after_init; empty without room for it.
    copy: Vec<u8>,
    buf: Vec<u8>,
}

impl TextWatch {
    /// Checks everything once; `None` without a (usable) text reference.
    pub fn start<M: GuestMemory + ?Sized>(
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
            last_us: now_us,
            found: Default::default(),
            copy: Vec::new(),
            buf: alloc::vec![0; CHUNK],
        };
        let (mut text_h, mut rodata_h) = (Sha256::new(), Sha256::new());
        let mut boot = Vec::new();
        let chunks = watch.text_chunks + watch.rodata_chunks;
        for step in 0..chunks {
            let (area, index) = watch.split(step);
            let outcome = checker.check_chunk(memory, area, index);
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
        let ro_after_init =
            ro_after_init_digest(memory, &location, ro_link, &reference.relocations)
                .unwrap_or([0; 32]);
        let checked_us = crate::time::now_us();
        watch.take_copy(memory);
        let copied_us = crate::time::now_us();
        let startup = Startup {
            text: text_h.finalize().into(),
            rodata: rodata_h.finalize().into(),
            boot_patches: boot_patches_digest(&boot),
            ro_after_init,
            chunks,
            bytes: reference.text.len + reference.rodata.len,
            check_us: checked_us.saturating_sub(now_us),
            copy_us: copied_us - checked_us,
            copied: !watch.copy.is_empty(),
        };
        Some((watch, startup))
    }

    /// Checks the steps due since the last call (a whole sweep per
    /// [`SWEEP_PERIOD_US`], at most [`MAX_STEPS_PER_CALL`] at once).
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
        let elapsed = now_us.saturating_sub(self.last_us);
        let due = (elapsed.saturating_mul(steps as u64) / SWEEP_PERIOD_US) as usize;
        if due == 0 {
            return false;
        }
        self.last_us = now_us;
        for _ in 0..due.min(MAX_STEPS_PER_CALL) {
            let step = self.cursor;
            self.cursor = (self.cursor + 1) % steps;
            if step == steps - 1 {
                // ro_after_init never changes after boot: it is compared
                // with its start-up copy, which stays as it was.
                let texts = if !self.copy.is_empty() && self.changed(memory, step, false) {
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
            if !self.changed(memory, step, true) {
                continue;
            }
            let (area, index) = self.split(step);
            let outcome = checker.check_chunk(memory, area, index);
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

    /// The current violations of each of [`AREAS`].
    pub fn found(&self) -> [Vec<String>; 4] {
        let mut out: [Vec<String>; 4] = Default::default();
        for (area, map) in self.found.iter().enumerate() {
            out[area] = map.values().flatten().cloned().collect();
        }
        out
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

    /// Whether step `step` holds other bytes than its copy (always true
    /// without a copy, and when unreadable); with `update` the copy takes
    /// the new bytes.
    fn changed<M: GuestMemory + ?Sized>(&mut self, memory: &M, step: usize, update: bool) -> bool {
        if self.copy.is_empty() {
            return true;
        }
        let (offset, len, at) = self.step_range(step);
        // ro_after_init is compared piecewise through the chunk buffer.
        let mut changed = false;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let phys = GuestPhysAddr(self.location.phys_text.0 + offset + done as u64);
            if memory.read(phys, &mut self.buf[..n]).is_err() {
                return true;
            }
            let old = &mut self.copy[at + done..at + done + n];
            if !same(old, &self.buf[..n]) {
                if update {
                    old.copy_from_slice(&self.buf[..n]);
                }
                changed = true;
            }
            done += n;
        }
        changed
    }

    /// Copies every step's bytes; leaves the copy empty without room.
    fn take_copy<M: GuestMemory + ?Sized>(&mut self, memory: &M) {
        let ro_len = (self.ro.end - self.ro.start) as usize;
        let len = (self.steps() - 1) * CHUNK + ro_len;
        if self.copy.try_reserve_exact(len).is_err() {
            warn!("monvm: no room to copy the kernel text: every sweep hashes it");
            return;
        }
        self.copy.resize(len, 0);
        for step in 0..self.steps() {
            let (offset, len, at) = self.step_range(step);
            let phys = GuestPhysAddr(self.location.phys_text.0 + offset);
            if memory.read(phys, &mut self.copy[at..at + len]).is_err() {
                self.copy = Vec::new();
                return;
            }
        }
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
        let outcome = match outcome {
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
            let sites = outcome
                .sites
                .iter()
                .map(|v| {
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
                })
                .collect();
            set(&mut self.found[SITES], step, sites);
        }
    }
}

/// Word-wise comparison (a byte loop is slow under TCG).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.chunks(8).zip(b.chunks(8)).all(|(x, y)| {
            if x.len() == 8 {
                u64::from_ne_bytes(x.try_into().unwrap_or([0; 8]))
                    == u64::from_ne_bytes(y.try_into().unwrap_or([1; 8]))
            } else {
                x == y
            }
        })
}

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
