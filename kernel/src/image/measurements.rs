//! The A-VM's own measurement log: every measurement is extended into a
//! PCR and appended as an `ima-ng` record (the IMA binary format, so
//! `evmctl ima_measurement` replays it against the quoted PCRs). What is
//! extended is SHA-256 of the record's template data, as IMA does.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use avm_attest::ima;
use avm_attest::wire::{LogChunk, PushedEvent, cut_event_name};
use sha2::Digest;

use crate::tpm_boot::KernelTpm;

/// PCR of the A-VM's configuration (profile, policy), measured before use.
pub const CONFIG_PCR: u8 = 8;

/// PCR of the monitoring events (`monvm:event:...`, extended by
/// `monvm.rs`): every record measured into it is also queued for the
/// attestation server to push to subscribed verifiers.
pub const EVENT_PCR: u8 = 12;

/// Events queued between two main-loop rounds (a check round makes a few);
/// beyond this they are counted as dropped, never buffered without bound.
const MAX_QUEUED_EVENTS: usize = 64;

/// Most records the log holds by default, and most bytes: far above what
/// a node records (a few hundred at start-up, then events and new IMA
/// entries), far below what would exhaust the A-VM's heap, which also holds
/// the copy of the Mon-VM's kernel text.
pub const MAX_LOG_RECORDS: usize = 200_000;
pub const MAX_LOG_BYTES: usize = 16 << 20;
/// Bytes always kept free for [`LOG_FULL_RECORD`]'s record, so that ending
/// a full log needs no allocation.
const FULL_ROOM: usize = 1024;
/// Name of the record that ends a full log (in PCR 12, as an event): the
/// A-VM records nothing after it, and a verifier that sees it treats the
/// node as untrusted until it is attested from scratch (rebooted).
pub use avm_attest::verify::LOG_FULL_RECORD;

/// Why a record was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogError {
    Tpm(tpm_crb::TpmError),
    /// The log is full (it ends with [`LOG_FULL_RECORD`]).
    Full,
}

impl core::fmt::Display for LogError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LogError::Tpm(e) => write!(f, "{}", e),
            LogError::Full => write!(f, "the measurement log is full"),
        }
    }
}

impl From<tpm_crb::TpmError> for LogError {
    fn from(e: tpm_crb::TpmError) -> Self {
        LogError::Tpm(e)
    }
}

/// The log, in binary IMA form.
#[derive(Debug)]
pub struct MeasurementLog {
    bytes: Vec<u8>,
    /// Most records before [`LOG_FULL_RECORD`] (one is kept for it).
    max_records: usize,
    full: bool,
    /// Byte offset of each record in `bytes`.
    starts: Vec<usize>,
    /// Events recorded and not yet taken by [`Self::take_events`].
    events: VecDeque<PushedEvent>,
    /// Events that found the queue full.
    events_dropped: u32,
}

impl Default for MeasurementLog {
    fn default() -> Self {
        Self::with_max_records(MAX_LOG_RECORDS)
    }
}

impl MeasurementLog {
    /// A log that holds at most `max` records (the last of them
    /// [`LOG_FULL_RECORD`] once it fills up).
    pub fn with_max_records(max: usize) -> Self {
        Self {
            bytes: Vec::new(),
            max_records: max.clamp(2, MAX_LOG_RECORDS),
            full: false,
            starts: Vec::new(),
            events: VecDeque::new(),
            events_dropped: 0,
        }
    }

    /// Whether the log is full.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Extends `pcr` with the record of `digest` named `name` and appends
    /// the record. The log only grows once the TPM took the extend, so it
    /// never claims what the PCR does not hold.
    pub fn measure(
        &mut self,
        tpm: &mut KernelTpm,
        pcr: u8,
        digest: &[u8; 32],
        name: &[u8],
    ) -> Result<(), LogError> {
        let data = ima::ng_template_data("sha256", digest, name, None);
        self.anchor(
            tpm,
            &ima::ImaRecord {
                pcr: u32::from(pcr),
                template_hash: ima::template_sha1(&data),
                template_name: "ima-ng",
                template_data: &data,
            },
        )?;
        if pcr == EVENT_PCR {
            self.queue_event(pcr, name);
        }
        Ok(())
    }

    /// Queues the record just appended as an event to push.
    fn queue_event(&mut self, pcr: u8, name: &[u8]) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events_dropped = self.events_dropped.saturating_add(1);
            return;
        }
        let index = u32::try_from(self.starts.len().saturating_sub(1)).unwrap_or(u32::MAX);
        let name = String::from_utf8_lossy(name);
        self.events.push_back(PushedEvent {
            index,
            pcr,
            name: String::from(cut_event_name(&name)),
            uptime_ms: crate::time::now_us() / 1000,
        });
    }

    /// The events recorded since the last call, oldest first.
    pub fn take_events(&mut self) -> VecDeque<PushedEvent> {
        core::mem::take(&mut self.events)
    }

    /// Events that could not be queued since boot.
    pub fn events_dropped(&self) -> u32 {
        self.events_dropped
    }

    /// Anchors a record made elsewhere (a Mon-VM IMA entry) as it is:
    /// extends its PCR with what IMA extends for it and appends it.
    /// A full log takes nothing more: the record that would pass a bound
    /// is replaced by [`LOG_FULL_RECORD`] (extended and appended like any
    /// other, so the quote proves the log ended), and every later call
    /// fails with [`LogError::Full`].
    pub fn anchor(
        &mut self,
        tpm: &mut KernelTpm,
        record: &ima::ImaRecord<'_>,
    ) -> Result<(), LogError> {
        if self.full {
            return Err(LogError::Full);
        }
        let (before, len) = (self.bytes.len(), record.encoded_len());
        let fits = before
            .checked_add(len)
            .is_some_and(|end| end <= MAX_LOG_BYTES - FULL_ROOM)
            && self.starts.len() + 1 < self.max_records
            && self.room_for(len + FULL_ROOM);
        if !fits {
            self.end_full(tpm);
            return Err(LogError::Full);
        }
        record.emit(&mut self.bytes);
        let pcr = u8::try_from(record.pcr).unwrap_or(u8::MAX);
        if let Err(e) = tpm.pcr_extend(pcr, &record.sha256_extend_value()) {
            self.bytes.truncate(before);
            return Err(LogError::Tpm(e));
        }
        self.starts.push(before);
        Ok(())
    }

    /// Makes room for `extra` more bytes without the buffer ever holding
    /// more than [`MAX_LOG_BYTES`] (a doubling `Vec` would take up to twice
    /// that, and the heap also holds the copy of the Mon-VM's text); false
    /// if the heap has no room: the log then ends as full.
    fn room_for(&mut self, extra: usize) -> bool {
        let need = self.bytes.len().saturating_add(extra);
        if need <= self.bytes.capacity() {
            return true;
        }
        let target = self
            .bytes
            .capacity()
            .saturating_mul(2)
            .clamp(need, MAX_LOG_BYTES.max(need));
        self.bytes
            .try_reserve_exact(target - self.bytes.len())
            .is_ok()
    }

    /// Appends the record that ends a full log.
    fn end_full(&mut self, tpm: &mut KernelTpm) {
        let digest: [u8; 32] = sha2::Sha256::digest(LOG_FULL_RECORD).into();
        let data = ima::ng_template_data("sha256", &digest, LOG_FULL_RECORD, None);
        let record = ima::ImaRecord {
            pcr: u32::from(EVENT_PCR),
            template_hash: ima::template_sha1(&data),
            template_name: "ima-ng",
            template_data: &data,
        };
        match tpm.pcr_extend(EVENT_PCR, &record.sha256_extend_value()) {
            Ok(()) => {
                self.full = true;
                self.starts.push(self.bytes.len());
                record.emit(&mut self.bytes);
                self.queue_event(EVENT_PCR, LOG_FULL_RECORD);
                warn!("measurement log full: nothing more is recorded until the A-VM restarts");
                println!("AVM-LOG-FULL records={}", self.starts.len());
            }
            // Not full until the quote can prove it: the next record
            // that does not fit tries again.
            Err(e) => warn!("measurement log full; its last record not extended: {}", e),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn records(&self) -> usize {
        self.starts.len()
    }

    /// Whole records from index `from`, at most `max_bytes` of them but
    /// at least one if any remain.
    pub fn chunk(&self, from: u32, max_bytes: usize) -> LogChunk {
        let total = u32::try_from(self.starts.len()).unwrap_or(u32::MAX);
        let first = usize::try_from(from).unwrap_or(usize::MAX);
        let Some(&start) = self.starts.get(first) else {
            return LogChunk {
                first: from,
                total,
                records: Vec::new(),
            };
        };
        // The end of the last record that still fits (or of the first).
        let mut end = self
            .starts
            .get(first + 1)
            .copied()
            .unwrap_or(self.bytes.len());
        for &next_end in self
            .starts
            .iter()
            .skip(first + 2)
            .chain([&self.bytes.len()])
        {
            if next_end - start > max_bytes {
                break;
            }
            end = next_end;
        }
        LogChunk {
            first: from,
            total,
            records: self.bytes.get(start..end).unwrap_or_default().to_vec(),
        }
    }
}
