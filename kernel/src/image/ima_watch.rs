//! The Mon-VM's IMA list, anchored in the A-VM's TPM and watched.
//!
//! The Mon-VM has no TPM: its kernel keeps the list in memory, where a
//! rootkit could rewrite it. Each entry the kernel appends is anchored as
//! IMA would (PCR 10, extended with SHA-256 of its template data, appended
//! to the A-VM's log as it is); an entry whose template hash is not SHA-1
//! of its template data is not anchored (IMA did not make it).
//!
//! A round costs what changed, not what the list holds: new entries are
//! read from the last known one on (the kernel only appends), at most
//! [`MAX_NEW_PER_ROUND`]; and [`RECHECKS_PER_ROUND`] known entries are read
//! again, in turn, each checked against what was taken (same template
//! hash, still SHA-1 of its data) and against its links to the one before
//! it, so that every entry and every link of the list is checked once per
//! `ceil(n / RECHECKS_PER_ROUND)` rounds. Reading each entry every round
//! cost some 20 ms per 2,000 entries under TCG, twice a second: a real
//! node's list (thousands of entries) would have taken a tenth of a host
//! core. What was anchored is in the TPM already: rewriting the Mon-VM's
//! copy afterwards changes no evidence, so a rewrite seen a few rounds
//! later loses nothing; it is reported (a rootkit at work) until the entry
//! reads as it was again.

use alloc::string::String;
use alloc::vec::Vec;
use avm_attest::ima;
use avm_kernel::findings::{CappedFindings, MAX_AREA_FINDINGS};
use vmi::GuestVirtAddr;
use vmi::linux::{ImaEntry, ImaLimits, KernelView};
use vmi::memory::LayoutMemory;
use vmi::profile::KernelProfile;

use crate::measurements::{LogError, MAX_LOG_RECORDS, MeasurementLog};
use crate::monvm::{ImaFiles, IvshmemRam, made_by_ima, text};
use crate::tpm_boot::KernelTpm;

/// Most new entries taken in one round. Each is a TPM extend (about 0.4 ms
/// here), and a rootkit can link tens of thousands of entries into the list
/// at once: without a bound that one round would hold up the loop (every
/// other check, every challenge) for as many seconds. The rest are taken by
/// the next rounds, which come at once until the list is caught up.
pub const MAX_NEW_PER_ROUND: usize = 256;

/// Known entries read again per round (about 10 us each under TCG): a list
/// of up to this many is checked whole every round.
pub const RECHECKS_PER_ROUND: usize = 128;

/// What became of an entry when it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    /// Anchored in PCR 10 (or the log was full: nothing is recorded after
    /// that, which the log says).
    Anchored,
    /// Its template hash is not SHA-1 of its data: not anchored, reported.
    Inconsistent,
    /// Larger than any verifier parses: not anchored, reported.
    Oversized,
}

impl Taken {
    /// What entry `index`, taken this way, shows for as long as it reads
    /// as it was taken (its template data `data_len` bytes).
    fn finding(self, index: usize, data_len: usize) -> Option<String> {
        match self {
            Taken::Anchored => None,
            Taken::Inconsistent => Some(text(format_args!("entry {index} inconsistent"))),
            Taken::Oversized => Some(text(format_args!(
                "entry {index} oversized ({data_len} bytes)"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Known {
    node: GuestVirtAddr,
    template_hash: [u8; 20],
    taken: Taken,
}

/// The watched list: the entries taken so far, in list order.
#[derive(Debug, Default)]
pub struct ImaWatch {
    known: Vec<Known>,
    /// The next known entry to read again.
    cursor: usize,
    /// What the last reading of a known entry found, by index, sorted
    /// (kept between its readings: a finding stands until the entry reads
    /// right again).
    findings: Vec<(usize, String)>,
}

impl ImaWatch {
    /// Anchors the entries of the start-up survey's walk, in order.
    pub fn start(
        entries: &[ImaEntry],
        files: &mut ImaFiles,
        tpm: &mut KernelTpm,
        log: &mut MeasurementLog,
    ) -> Self {
        let mut watch = ImaWatch::default();
        let (mut anchored, mut inconsistent) = (0usize, 0usize);
        for (index, entry) in entries.iter().enumerate() {
            let data = entry.template_data();
            if data.len() > ima::MAX_TEMPLATE_DATA_LEN {
                // The first round takes it (and reports it) and anchors
                // what follows.
                warn!("monvm: IMA entry {} is oversized", index);
                break;
            }
            let Some(record) = made_by_ima(entry, &data) else {
                inconsistent += 1;
                warn!("monvm: IMA entry {} is inconsistent (template hash)", index);
                watch.take(entry, data.len(), Taken::Inconsistent);
                continue;
            };
            match log.anchor(tpm, &record) {
                Ok(()) => {}
                // Nothing is recorded after a full log (that is in it).
                Err(LogError::Full) if log.is_full() => {}
                Err(e) => {
                    // Taken only up to here: the first round anchors the
                    // rest, in order.
                    warn!("monvm: anchoring IMA entry failed: {}", e);
                    break;
                }
            }
            watch.take(entry, data.len(), Taken::Anchored);
            files.add(entry);
            anchored += 1;
        }
        let pcr10 = tpm
            .pcr_read(tpm_crb::PcrSelection::new(&[10]).unwrap_or(tpm_crb::PcrSelection::EMPTY))
            .ok()
            .and_then(|values| values.get(10).copied());
        println!(
            "AVM-MONVM-IMA anchored={} inconsistent={} log_records={} pcr10={}",
            anchored,
            inconsistent,
            log.records(),
            avm_attest::hex::Hex(&pcr10.unwrap_or([0; 32]))
        );
        watch
    }

    /// Appends `entry` (template data `data_len` bytes) as taken.
    fn take(&mut self, entry: &ImaEntry, data_len: usize, taken: Taken) {
        let index = self.known.len();
        self.known.push(Known {
            node: entry.node,
            template_hash: entry.template_hash,
            taken,
        });
        if let Some(finding) = taken.finding(index, data_len) {
            self.set_finding(index, Some(finding));
        }
    }

    /// Keeps (or with `None` drops) what entry `index` showed.
    fn set_finding(&mut self, index: usize, finding: Option<String>) {
        match (
            self.findings.binary_search_by_key(&index, |(i, _)| *i),
            finding,
        ) {
            (Ok(at), Some(f)) => self.findings[at].1 = f,
            (Ok(at), None) => {
                self.findings.remove(at);
            }
            (Err(at), Some(f)) => self.findings.insert(at, (index, f)),
            (Err(_), None) => {}
        }
    }

    /// One round: known entries read again in turn, then the new ones
    /// anchored as they appear. Returns the violations (those standing from
    /// earlier readings included) and whether the list was taken to its
    /// end (or to where it broke) rather than stopping at
    /// [`MAX_NEW_PER_ROUND`] (then a round is due at once, and the files of
    /// the entries not taken yet are not known).
    pub fn round(
        &mut self,
        view: &KernelView<'_, LayoutMemory<IvshmemRam>>,
        profile: &KernelProfile,
        files: &mut ImaFiles,
        tpm: &mut KernelTpm,
        log: &mut MeasurementLog,
    ) -> (Vec<String>, bool) {
        let Some(head) = view.location.runtime_of(profile.symbols.ima_measurements) else {
            return (Vec::new(), true);
        };
        let limits = ImaLimits::default();
        self.recheck(view, head, profile, &limits);
        let after = self.known.last().map_or(head, |k| k.node);
        // At most as many entries kept as the log has records: an entry
        // past that could not be anchored (the log is full, and says so),
        // and a million of them would take 32 MiB of the heap. The walk
        // past it is an error, reported as the list's.
        let max = MAX_LOG_RECORDS.saturating_sub(self.known.len());
        let walk = vmi::linux::ima::entries_after(
            &view.space,
            head,
            after,
            &profile.offsets.ima,
            &limits,
            max,
        );
        let mut new_entries = 0usize;
        let mut caught_up = true;
        for (taken, entry) in walk.enumerate() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    let broken = text(format_args!(
                        "list broken after entry {}: {e}",
                        self.known.len()
                    ));
                    return (self.violations(Some(broken)), true);
                }
            };
            if taken >= MAX_NEW_PER_ROUND {
                caught_up = false;
                break;
            }
            let data = entry.template_data();
            let outcome = if data.len() > ima::MAX_TEMPLATE_DATA_LEN {
                // Never anchored, so the A-VM's log stays fetchable.
                Taken::Oversized
            } else {
                match made_by_ima(&entry, &data).map(|r| log.anchor(tpm, &r)) {
                    Some(Ok(())) => {
                        new_entries += 1;
                        Taken::Anchored
                    }
                    Some(Err(LogError::Full)) if log.is_full() => Taken::Anchored,
                    Some(Err(e)) => {
                        // Not taken: this entry and those after it are
                        // anchored, in order, by a later round.
                        warn!("monvm: anchoring IMA entry failed: {}", e);
                        break;
                    }
                    None => Taken::Inconsistent,
                }
            };
            self.take(&entry, data.len(), outcome);
            if outcome == Taken::Anchored {
                files.add(&entry);
            }
        }
        if new_entries > 0 {
            println!(
                "AVM-MONVM-IMA-NEW anchored={} total_seen={}",
                new_entries,
                self.known.len()
            );
        }
        (self.violations(None), caught_up)
    }

    /// What the known entries show, in list order, then `last`: the first
    /// [`MAX_AREA_FINDINGS`] as texts, the rest counted (a rootkit that
    /// rewrites 200,000 anchored entries must not have each text copied
    /// every round).
    fn violations(&self, last: Option<String>) -> Vec<String> {
        let mut out = CappedFindings::default();
        for (_, f) in self.findings.iter().take(MAX_AREA_FINDINGS) {
            out.push_with(|| f.clone());
        }
        out.count(self.findings.len().saturating_sub(MAX_AREA_FINDINGS));
        if let Some(last) = last {
            out.push_with(|| last);
        }
        out.finish()
    }

    /// Reads [`RECHECKS_PER_ROUND`] known entries again, from the cursor
    /// on, and keeps what each shows.
    fn recheck(
        &mut self,
        view: &KernelView<'_, LayoutMemory<IvshmemRam>>,
        head: GuestVirtAddr,
        profile: &KernelProfile,
        limits: &ImaLimits,
    ) {
        let n = self.known.len();
        if n == 0 {
            return;
        }
        let start = if self.cursor < n { self.cursor } else { 0 };
        for index in (start..n).chain(0..start).take(RECHECKS_PER_ROUND) {
            let known = self.known[index];
            let prev = index
                .checked_sub(1)
                .and_then(|i| self.known.get(i))
                .map_or(head, |k| k.node);
            let now = vmi::linux::ima::reread_linked(
                &view.space,
                prev,
                known.node,
                &profile.offsets.ima,
                limits,
            );
            let finding = match now {
                Err(e) => Some(text(format_args!("entry {index} {e}"))),
                Ok(entry) if entry.template_hash != known.template_hash => {
                    Some(text(format_args!("entry {index} rewritten")))
                }
                Ok(entry) => {
                    let data = entry.template_data();
                    match known.taken {
                        Taken::Anchored if made_by_ima(&entry, &data).is_some() => None,
                        // Same hash over other data.
                        Taken::Anchored => Some(text(format_args!("entry {index} rewritten"))),
                        taken => taken.finding(index, data.len()),
                    }
                }
            };
            self.set_finding(index, finding);
        }
        self.cursor = (start + RECHECKS_PER_ROUND.min(n)) % n;
    }
}
