//! The TCG PC Client crypto-agile event log (the format SeaBIOS leaves).
//!
//! Layout (all integers little-endian):
//!
//! 1. One header record in the old SHA-1 format (`TCG_PCClientPCREvent`):
//!    pcrIndex u32, eventType u32 (`EV_NO_ACTION`), digest\[20\] (zeros),
//!    eventSize u32, event = `TCG_EfiSpecIdEvent` ("Spec ID Event03", the
//!    platform class, spec version, and the list of (algorithmId,
//!    digestSize) pairs the rest of the log uses).
//! 2. Then `TCG_PCR_EVENT2` records: pcrIndex u32, eventType u32,
//!    `TPML_DIGEST_VALUES` (count u32, then count x (hashAlg u16, digest of
//!    the size the header gives)), eventSize u32, event bytes.
//!
//! Firmware writes the log into a fixed-size area (the ACPI TPM2 table's
//! LAML bytes) that is zero beyond the last record, so a run of zero bytes
//! where a record would start ends the log; see [`EventLog::used_len`].
//!
//! The parser is bounded ([`MAX_EVENTS`], [`MAX_EVENT_DATA_LEN`],
//! [`MAX_ALGORITHMS`]) and never panics on any input.

use alloc::vec::Vec;
use sha2::{Digest, Sha256};

use crate::reader::Reader;

/// Most records accepted after the header; a longer log is rejected.
pub const MAX_EVENTS: usize = 4096;
/// Largest event data accepted in one record.
pub const MAX_EVENT_DATA_LEN: usize = 64 * 1024;
/// Most hash algorithms the Spec ID header may announce.
pub const MAX_ALGORITHMS: usize = 8;
/// Largest digest size the Spec ID header may announce (SHA-512).
pub const MAX_DIGEST_LEN: usize = 64;
/// Number of PCRs of a PC Client TPM; records for other indices are rejected.
pub const PCR_COUNT: usize = 24;

/// The signature at the start of the Spec ID event data.
pub const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";

/// TPM_ALG_ID values used in logs.
pub mod alg {
    pub const SHA1: u16 = 0x0004;
    pub const SHA256: u16 = 0x000B;
    pub const SHA384: u16 = 0x000C;
    pub const SHA512: u16 = 0x000D;
    pub const SM3_256: u16 = 0x0012;
}

/// Event types of the PC Client firmware profile that matter here.
pub mod event_type {
    pub const EV_PREBOOT_CERT: u32 = 0x0000_0000;
    pub const EV_POST_CODE: u32 = 0x0000_0001;
    /// Informational record, never extended into a PCR.
    pub const EV_NO_ACTION: u32 = 0x0000_0003;
    pub const EV_SEPARATOR: u32 = 0x0000_0004;
    pub const EV_ACTION: u32 = 0x0000_0005;
    pub const EV_EVENT_TAG: u32 = 0x0000_0006;
    pub const EV_S_CRTM_CONTENTS: u32 = 0x0000_0007;
    pub const EV_S_CRTM_VERSION: u32 = 0x0000_0008;
    pub const EV_IPL: u32 = 0x0000_000D;
    pub const EV_TABLE_OF_DEVICES: u32 = 0x0000_000B;
    pub const EV_COMPACT_HASH: u32 = 0x0000_000C;
    pub const EV_NONHOST_CODE: u32 = 0x0000_000F;
    pub const EV_NONHOST_CONFIG: u32 = 0x0000_0010;
    pub const EV_NONHOST_INFO: u32 = 0x0000_0011;
    pub const EV_OMIT_BOOT_DEVICE_EVENTS: u32 = 0x0000_0012;

    /// The spec's name of an event type, for people reading verdicts.
    pub fn name(event_type: u32) -> Option<&'static str> {
        Some(match event_type {
            EV_PREBOOT_CERT => "EV_PREBOOT_CERT",
            EV_POST_CODE => "EV_POST_CODE",
            0x0000_0002 => "EV_UNUSED",
            EV_NO_ACTION => "EV_NO_ACTION",
            EV_SEPARATOR => "EV_SEPARATOR",
            EV_ACTION => "EV_ACTION",
            EV_EVENT_TAG => "EV_EVENT_TAG",
            EV_S_CRTM_CONTENTS => "EV_S_CRTM_CONTENTS",
            EV_S_CRTM_VERSION => "EV_S_CRTM_VERSION",
            0x0000_0009 => "EV_CPU_MICROCODE",
            0x0000_000A => "EV_PLATFORM_CONFIG_FLAGS",
            EV_TABLE_OF_DEVICES => "EV_TABLE_OF_DEVICES",
            EV_COMPACT_HASH => "EV_COMPACT_HASH",
            EV_IPL => "EV_IPL",
            0x0000_000E => "EV_IPL_PARTITION_DATA",
            EV_NONHOST_CODE => "EV_NONHOST_CODE",
            EV_NONHOST_CONFIG => "EV_NONHOST_CONFIG",
            EV_NONHOST_INFO => "EV_NONHOST_INFO",
            EV_OMIT_BOOT_DEVICE_EVENTS => "EV_OMIT_BOOT_DEVICE_EVENTS",
            _ => return None,
        })
    }
}

/// Why an event log was rejected. Offsets are byte offsets into the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventLogError {
    /// The input ended inside the record starting at `offset`.
    Truncated { offset: usize },
    /// The first record is not a Spec ID (`EV_NO_ACTION`, "Spec ID
    /// Event03") header: not a crypto-agile log.
    NotCryptoAgile,
    /// The Spec ID header announces no algorithms, too many, a duplicate,
    /// or a digest size of 0 or above [`MAX_DIGEST_LEN`].
    BadAlgorithmList,
    /// A record names a PCR index of 24 or above.
    BadPcrIndex { offset: usize, pcr: u32 },
    /// A record's digest list does not carry exactly the header's
    /// algorithms, each once.
    BadDigestList { offset: usize },
    /// A record's event data is larger than [`MAX_EVENT_DATA_LEN`].
    EventTooLarge { offset: usize, len: u32 },
    /// More than [`MAX_EVENTS`] records.
    TooManyEvents,
    /// Non-zero bytes follow the zero padding that ended the log.
    TrailingData { offset: usize },
}

impl core::fmt::Display for EventLogError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated { offset } => write!(f, "log truncated in the record at byte {offset}"),
            Self::NotCryptoAgile => f.write_str("first record is not a Spec ID Event03 header"),
            Self::BadAlgorithmList => f.write_str("invalid algorithm list in the Spec ID header"),
            Self::BadPcrIndex { offset, pcr } => {
                write!(f, "record at byte {offset} names PCR {pcr}")
            }
            Self::BadDigestList { offset } => {
                write!(
                    f,
                    "record at byte {offset} has a digest list not matching the header"
                )
            }
            Self::EventTooLarge { offset, len } => {
                write!(f, "record at byte {offset} has {len} bytes of event data")
            }
            Self::TooManyEvents => write!(f, "more than {MAX_EVENTS} records"),
            Self::TrailingData { offset } => {
                write!(f, "non-zero bytes at {offset} after the end of the log")
            }
        }
    }
}

/// One (algorithmId, digestSize) pair of the Spec ID header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgorithmSize {
    pub algorithm: u16,
    pub digest_size: u16,
}

/// The Spec ID header record (`TCG_EfiSpecIdEvent` in a SHA-1 format record).
///
/// The event data is kept verbatim so that [`EventLog::emit`] reproduces
/// the input byte for byte; the fields below are parsed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecIdHeader {
    /// pcrIndex of the header record (0 in every known log).
    pub pcr_index: u32,
    /// The SHA-1 digest field of the header record (zeros by the spec).
    pub sha1_digest: [u8; 20],
    pub platform_class: u32,
    pub spec_version_major: u8,
    pub spec_version_minor: u8,
    pub spec_errata: u8,
    pub uintn_size: u8,
    pub algorithms: Vec<AlgorithmSize>,
    /// The whole `TCG_EfiSpecIdEvent` as it appeared in the log.
    pub raw_event: Vec<u8>,
}

impl SpecIdHeader {
    /// A header like SeaBIOS writes (PC Client class 0, spec 2.0 errata 0,
    /// uintnSize 2 (8-byte UINTN), no vendor info) for the given banks.
    pub fn new(algorithms: &[AlgorithmSize]) -> Self {
        let mut raw = Vec::new();
        raw.extend_from_slice(SPEC_ID_SIGNATURE);
        raw.extend_from_slice(&0u32.to_le_bytes()); // platformClass
        raw.extend_from_slice(&[0, 2, 0, 2]); // minor, major, errata, uintnSize
        raw.extend_from_slice(&(algorithms.len() as u32).to_le_bytes());
        for a in algorithms {
            raw.extend_from_slice(&a.algorithm.to_le_bytes());
            raw.extend_from_slice(&a.digest_size.to_le_bytes());
        }
        raw.push(0); // vendorInfoSize
        Self {
            pcr_index: 0,
            sha1_digest: [0; 20],
            platform_class: 0,
            spec_version_major: 2,
            spec_version_minor: 0,
            spec_errata: 0,
            uintn_size: 2,
            algorithms: algorithms.to_vec(),
            raw_event: raw,
        }
    }

    /// Digest size of `algorithm` in this log, if the header announces it.
    pub fn digest_size(&self, algorithm: u16) -> Option<usize> {
        self.algorithms
            .iter()
            .find(|a| a.algorithm == algorithm)
            .map(|a| usize::from(a.digest_size))
    }

    fn parse_event(
        pcr_index: u32,
        sha1_digest: [u8; 20],
        raw: &[u8],
    ) -> Result<Self, EventLogError> {
        let mut r = Reader::new(raw);
        let bad = EventLogError::NotCryptoAgile;
        if r.bytes(16).ok_or(bad)? != SPEC_ID_SIGNATURE {
            return Err(bad);
        }
        let platform_class = r.u32_le().ok_or(bad)?;
        let spec_version_minor = r.u8().ok_or(bad)?;
        let spec_version_major = r.u8().ok_or(bad)?;
        let spec_errata = r.u8().ok_or(bad)?;
        let uintn_size = r.u8().ok_or(bad)?;
        let count = r.u32_le().ok_or(bad)?;
        if count == 0 || count as usize > MAX_ALGORITHMS {
            return Err(EventLogError::BadAlgorithmList);
        }
        let mut algorithms: Vec<AlgorithmSize> = Vec::new();
        for _ in 0..count {
            let algorithm = r.u16_le().ok_or(bad)?;
            let digest_size = r.u16_le().ok_or(bad)?;
            if digest_size == 0
                || usize::from(digest_size) > MAX_DIGEST_LEN
                || algorithms.iter().any(|a| a.algorithm == algorithm)
            {
                return Err(EventLogError::BadAlgorithmList);
            }
            algorithms.push(AlgorithmSize {
                algorithm,
                digest_size,
            });
        }
        let vendor_len = r.u8().ok_or(bad)?;
        r.bytes(usize::from(vendor_len)).ok_or(bad)?;
        // Bytes after vendorInfo are tolerated (and kept in raw_event).
        Ok(Self {
            pcr_index,
            sha1_digest,
            platform_class,
            spec_version_major,
            spec_version_minor,
            spec_errata,
            uintn_size,
            algorithms,
            raw_event: raw.to_vec(),
        })
    }
}

/// One digest of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDigest {
    pub algorithm: u16,
    pub digest: Vec<u8>,
}

/// One `TCG_PCR_EVENT2` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pcr_index: u32,
    pub event_type: u32,
    /// One digest per algorithm of the header, in the order of the record.
    pub digests: Vec<EventDigest>,
    pub data: Vec<u8>,
}

impl Event {
    /// The digest of the given bank, if the record carries one.
    pub fn digest(&self, algorithm: u16) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|d| d.algorithm == algorithm)
            .map(|d| d.digest.as_slice())
    }

    /// The SHA-256 digest (the bank the verifier replays).
    pub fn sha256(&self) -> Option<[u8; 32]> {
        self.digest(alg::SHA256)?.try_into().ok()
    }

    /// Whether replay extends this record into its PCR.
    pub fn is_extended(&self) -> bool {
        self.event_type != event_type::EV_NO_ACTION
    }

    /// A record whose SHA-256 (and, for every other given bank, the
    /// matching) digest is that of `data`, as firmware would measure it.
    /// Banks other than SHA-1 and SHA-256 get a zero digest of their size.
    pub fn measured(header: &SpecIdHeader, pcr_index: u32, event_type: u32, data: &[u8]) -> Self {
        let digests = header
            .algorithms
            .iter()
            .map(|a| {
                let digest = match a.algorithm {
                    alg::SHA256 => Sha256::digest(data).to_vec(),
                    _ => alloc::vec![0; usize::from(a.digest_size)],
                };
                EventDigest {
                    algorithm: a.algorithm,
                    digest,
                }
            })
            .collect();
        Self {
            pcr_index,
            event_type,
            digests,
            data: data.to_vec(),
        }
    }
}

/// Why a replay could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// The log has no SHA-256 bank.
    NoSha256Bank,
}

/// A parsed crypto-agile event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    pub header: SpecIdHeader,
    /// The records after the header, in log order.
    pub events: Vec<Event>,
    used_len: usize,
}

impl EventLog {
    /// An empty log (header only) for the given banks.
    pub fn new(header: SpecIdHeader) -> Self {
        let mut log = Self {
            header,
            events: Vec::new(),
            used_len: 0,
        };
        log.used_len = log.emit().len();
        log
    }

    /// Parses a log. Zero bytes where a record would start end the log (the
    /// rest of the firmware's log area); they must be zero to the end.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventLogError> {
        let mut r = Reader::new(bytes);
        let truncated = EventLogError::Truncated { offset: 0 };
        let pcr_index = r.u32_le().ok_or(truncated)?;
        let header_type = r.u32_le().ok_or(truncated)?;
        let sha1_digest = r.array::<20>().ok_or(truncated)?;
        let header_len = r.u32_le().ok_or(truncated)?;
        if header_type != event_type::EV_NO_ACTION {
            return Err(EventLogError::NotCryptoAgile);
        }
        let raw = r.bytes(header_len as usize).ok_or(truncated)?;
        let header = SpecIdHeader::parse_event(pcr_index, sha1_digest, raw)?;

        let mut events = Vec::new();
        // Each iteration consumes at least one record header (12 bytes) or
        // ends the loop, so the input length also bounds it.
        loop {
            let offset = r.position();
            let rest = r.rest();
            if rest.is_empty() {
                break;
            }
            // A record never starts with 12 zero bytes: its digest count
            // must equal the header's, which is not zero. So zeros there
            // are the padding of the firmware's log area.
            if rest.iter().take(12).all(|&b| b == 0) {
                if let Some(pos) = first_non_zero(rest) {
                    return Err(EventLogError::TrailingData {
                        offset: offset + pos,
                    });
                }
                break;
            }
            if events.len() >= MAX_EVENTS {
                return Err(EventLogError::TooManyEvents);
            }
            events.push(Self::parse_record(&mut r, &header, offset)?);
        }
        // The padding (if any) was not consumed: the position is the end
        // of the last record.
        let used_len = r.position();
        Ok(Self {
            header,
            events,
            used_len,
        })
    }

    fn parse_record(
        r: &mut Reader<'_>,
        header: &SpecIdHeader,
        offset: usize,
    ) -> Result<Event, EventLogError> {
        let truncated = EventLogError::Truncated { offset };
        let pcr_index = r.u32_le().ok_or(truncated)?;
        let event_type = r.u32_le().ok_or(truncated)?;
        if pcr_index as usize >= PCR_COUNT {
            return Err(EventLogError::BadPcrIndex {
                offset,
                pcr: pcr_index,
            });
        }
        let count = r.u32_le().ok_or(truncated)?;
        if count as usize != header.algorithms.len() {
            return Err(EventLogError::BadDigestList { offset });
        }
        let mut digests: Vec<EventDigest> = Vec::with_capacity(header.algorithms.len());
        for _ in 0..count {
            let algorithm = r.u16_le().ok_or(truncated)?;
            let size = header
                .digest_size(algorithm)
                .ok_or(EventLogError::BadDigestList { offset })?;
            if digests.iter().any(|d| d.algorithm == algorithm) {
                return Err(EventLogError::BadDigestList { offset });
            }
            let digest = r.bytes(size).ok_or(truncated)?.to_vec();
            digests.push(EventDigest { algorithm, digest });
        }
        let len = r.u32_le().ok_or(truncated)?;
        if len as usize > MAX_EVENT_DATA_LEN {
            return Err(EventLogError::EventTooLarge { offset, len });
        }
        let data = r.bytes(len as usize).ok_or(truncated)?.to_vec();
        Ok(Event {
            pcr_index,
            event_type,
            digests,
            data,
        })
    }

    /// Number of records after the Spec ID header (the header is not
    /// counted; `EV_NO_ACTION` records after it are).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the log has no records after the header.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes the log occupies: header and records, without the zero
    /// padding that followed them in the parsed input. For a log built in
    /// memory with [`Self::new`] and [`Self::push`], the length of
    /// [`Self::emit`] (editing `events` directly does not update it).
    pub fn used_len(&self) -> usize {
        self.used_len
    }

    /// Serialises header and records (no padding). `parse(emit())` gives
    /// the same log back, and `emit(parse(x))` is `x` without its padding.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.header.pcr_index.to_le_bytes());
        out.extend_from_slice(&event_type::EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&self.header.sha1_digest);
        out.extend_from_slice(&(self.header.raw_event.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.header.raw_event);
        for event in &self.events {
            out.extend_from_slice(&event.pcr_index.to_le_bytes());
            out.extend_from_slice(&event.event_type.to_le_bytes());
            out.extend_from_slice(&(event.digests.len() as u32).to_le_bytes());
            for d in &event.digests {
                out.extend_from_slice(&d.algorithm.to_le_bytes());
                out.extend_from_slice(&d.digest);
            }
            out.extend_from_slice(&(event.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&event.data);
        }
        out
    }

    /// Appends a record (for building logs; [`Self::used_len`] follows).
    pub fn push(&mut self, event: Event) {
        self.used_len += 12
            + event
                .digests
                .iter()
                .map(|d| 2 + d.digest.len())
                .sum::<usize>()
            + 4
            + event.data.len();
        self.events.push(event);
    }

    /// Replays the SHA-256 bank: starting from `initial` (index = PCR),
    /// every extended record does `pcr = SHA256(pcr || digest)`. PCR 0 of
    /// a measured launch starts from [`hcrtm_pcr0_start`], the others from
    /// zero (see [`initial_pcrs`]).
    pub fn replay_sha256(
        &self,
        initial: &[[u8; 32]; PCR_COUNT],
    ) -> Result<[[u8; 32]; PCR_COUNT], ReplayError> {
        if self.header.digest_size(alg::SHA256) != Some(32) {
            return Err(ReplayError::NoSha256Bank);
        }
        let mut pcrs = *initial;
        for event in self.events.iter().filter(|e| e.is_extended()) {
            // Parse guarantees the index is below PCR_COUNT and that every
            // record carries each header bank; a hand-built event may not.
            let (Some(pcr), Some(digest)) =
                (pcrs.get_mut(event.pcr_index as usize), event.sha256())
            else {
                return Err(ReplayError::NoSha256Bank);
            };
            *pcr = extend_sha256(pcr, &digest);
        }
        Ok(pcrs)
    }

    /// The records for one PCR with their position in [`Self::events`].
    pub fn events_for_pcr(&self, pcr: u32) -> impl Iterator<Item = (usize, &Event)> {
        self.events
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.pcr_index == pcr)
    }
}

/// Position of the first non-zero byte. The padding of a firmware log area
/// is tens of KiB: OR-folding 64-byte chunks lets the compiler vectorise
/// the scan (a byte-wise `position` was most of the parse time).
fn first_non_zero(bytes: &[u8]) -> Option<usize> {
    const CHUNK: usize = 64;
    let chunk = bytes
        .chunks(CHUNK)
        .position(|c| c.iter().fold(0u8, |acc, &b| acc | b) != 0)?;
    let start = chunk * CHUNK;
    let offset = bytes.get(start..)?.iter().position(|&b| b != 0)?;
    Some(start + offset)
}

/// `SHA256(pcr || digest)`: one TPM2_PCR_Extend of the SHA-256 bank.
pub fn extend_sha256(pcr: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    // The message is exactly one block, and its padding block is the same
    // every time: both compressed in one call, without the hasher's
    // buffering (a replay is a chain of these, nothing else).
    const IV: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    let mut message = [0u8; 64];
    message[..32].copy_from_slice(pcr);
    message[32..].copy_from_slice(digest);
    let mut padding = [0u8; 64];
    padding[0] = 0x80;
    // The message length in bits (512), big-endian.
    padding[62] = 0x02;
    let mut state = IV;
    sha2::compress256(&mut state, &[message.into(), padding.into()]);
    let mut out = [0u8; 32];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// PCR 0 after the host measured the A-VM image as H-CRTM through swtpm's
/// control channel, before firmware ran: the TPM resets PCR 0 to locality
/// 4 (31 zero bytes, then 4) and extends the image's SHA-256 into it.
/// Firmware's log has no record for this; replay of PCR 0 starts here.
pub fn hcrtm_pcr0_start(image_sha256: &[u8; 32]) -> [u8; 32] {
    let mut locality4 = [0u8; 32];
    locality4[31] = 4;
    extend_sha256(&locality4, image_sha256)
}

/// Initial PCR values for a replay: PCR 0 = `pcr0`, all others zero.
pub fn initial_pcrs(pcr0: [u8; 32]) -> [[u8; 32]; PCR_COUNT] {
    let mut pcrs = [[0u8; 32]; PCR_COUNT];
    pcrs[0] = pcr0;
    pcrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn banks() -> SpecIdHeader {
        SpecIdHeader::new(&[
            AlgorithmSize {
                algorithm: alg::SHA1,
                digest_size: 20,
            },
            AlgorithmSize {
                algorithm: alg::SHA256,
                digest_size: 32,
            },
        ])
    }

    fn sample_log() -> EventLog {
        let header = banks();
        let mut log = EventLog::new(header.clone());
        log.push(Event::measured(
            &header,
            0,
            event_type::EV_S_CRTM_VERSION,
            b"SeaBIOS",
        ));
        log.push(Event::measured(
            &header,
            2,
            event_type::EV_ACTION,
            b"Start Option ROM Scan",
        ));
        log.push(Event::measured(
            &header,
            0,
            event_type::EV_NO_ACTION,
            b"not extended",
        ));
        for pcr in 0..8 {
            log.push(Event::measured(
                &header,
                pcr,
                event_type::EV_SEPARATOR,
                &[0xff; 4],
            ));
        }
        log
    }

    #[test]
    fn emit_parse_round_trip_and_padding() {
        let log = sample_log();
        let mut bytes = log.emit();
        assert_eq!(bytes.len(), log.used_len());
        let used = bytes.len();
        bytes.resize(used + 1000, 0);
        let parsed = EventLog::parse(&bytes).unwrap();
        assert_eq!(parsed, log);
        assert_eq!(parsed.used_len(), used);
        assert_eq!(parsed.len(), 11);
        assert_eq!(parsed.emit(), bytes[..used]);
    }

    #[test]
    fn replay_extends_in_order_and_skips_no_action() {
        let log = sample_log();
        let start = hcrtm_pcr0_start(&[0x11; 32]);
        let pcrs = log.replay_sha256(&initial_pcrs(start)).unwrap();
        let sep = sha256(&[0xff; 4]);
        let expected0 = extend_sha256(&extend_sha256(&start, &sha256(b"SeaBIOS")), &sep);
        assert_eq!(pcrs[0], expected0);
        let expected2 = extend_sha256(
            &extend_sha256(&[0; 32], &sha256(b"Start Option ROM Scan")),
            &sep,
        );
        assert_eq!(pcrs[2], expected2);
        assert_eq!(pcrs[5], extend_sha256(&[0; 32], &sep));
        assert_eq!(pcrs[8], [0; 32]);
    }

    #[test]
    fn hcrtm_start_is_locality_4_extended_with_the_image_digest() {
        let image = sha256(b"avm image");
        let mut init = [0u8; 64];
        init[31] = 4;
        init[32..].copy_from_slice(&image);
        assert_eq!(hcrtm_pcr0_start(&image), sha256(&init));
    }

    #[test]
    fn removed_changed_or_reordered_entries_change_the_replay() {
        let log = sample_log();
        let reference = log.replay_sha256(&initial_pcrs([0; 32])).unwrap();
        let mut removed = log.clone();
        removed.events.remove(0);
        let mut changed = log.clone();
        changed.events[1].digests[1].digest[0] ^= 1;
        let mut reordered = log.clone();
        reordered.events.swap(0, 3);
        for tampered in [removed, changed, reordered] {
            let reparsed = EventLog::parse(&tampered.emit()).unwrap();
            assert_ne!(
                reparsed.replay_sha256(&initial_pcrs([0; 32])).unwrap()[..3],
                reference[..3]
            );
        }
    }

    #[test]
    fn rejects_structural_errors() {
        let log = sample_log();
        let bytes = log.emit();
        assert_eq!(
            EventLog::parse(&[]),
            Err(EventLogError::Truncated { offset: 0 })
        );
        // Truncated inside the last record.
        let last = bytes.len() - 4 - 1;
        assert!(matches!(
            EventLog::parse(&bytes[..last]),
            Err(EventLogError::Truncated { .. })
        ));
        // Not a Spec ID header.
        let mut not_agile = bytes.clone();
        not_agile[32] = b'X';
        assert_eq!(
            EventLog::parse(&not_agile),
            Err(EventLogError::NotCryptoAgile)
        );
        // Header event type must be EV_NO_ACTION.
        let mut bad_type = bytes.clone();
        bad_type[4] = 4;
        assert_eq!(
            EventLog::parse(&bad_type),
            Err(EventLogError::NotCryptoAgile)
        );
        // PCR index 24 in the first record.
        let first = log.emit().len() - EventLog::new(banks()).emit().len();
        let record0 = bytes.len() - first;
        let mut bad_pcr = bytes.clone();
        bad_pcr[record0] = 24;
        assert_eq!(
            EventLog::parse(&bad_pcr),
            Err(EventLogError::BadPcrIndex {
                offset: record0,
                pcr: 24
            })
        );
        // Digest count different from the header's.
        let mut bad_count = bytes.clone();
        bad_count[record0 + 8] = 1;
        assert_eq!(
            EventLog::parse(&bad_count),
            Err(EventLogError::BadDigestList { offset: record0 })
        );
        // Unknown algorithm in a record.
        let mut bad_alg = bytes.clone();
        bad_alg[record0 + 12] = 0x42;
        assert_eq!(
            EventLog::parse(&bad_alg),
            Err(EventLogError::BadDigestList { offset: record0 })
        );
        // Garbage after the padding.
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(&[0; 20]);
        trailing.push(1);
        assert_eq!(
            EventLog::parse(&trailing),
            Err(EventLogError::TrailingData {
                offset: bytes.len() + 20
            })
        );
    }

    #[test]
    fn event_type_names() {
        assert_eq!(event_type::name(4), Some("EV_SEPARATOR"));
        assert_eq!(event_type::name(0xd), Some("EV_IPL"));
        assert_eq!(event_type::name(0x8000_0001), None);
    }

    #[test]
    fn first_non_zero_finds_the_first_set_byte() {
        assert_eq!(first_non_zero(&[]), None);
        assert_eq!(first_non_zero(&[0; 200]), None);
        for at in [0, 1, 63, 64, 65, 127, 128, 199] {
            let mut bytes = [0u8; 200];
            bytes[at] = 9;
            bytes[199] = 1;
            assert_eq!(first_non_zero(&bytes), Some(at));
        }
    }

    #[test]
    fn huge_event_size_is_rejected_before_allocation() {
        let header = banks();
        let mut log = EventLog::new(header.clone());
        log.push(Event::measured(&header, 1, event_type::EV_ACTION, b"x"));
        let mut bytes = log.emit();
        let size_at = bytes.len() - 1 - 4;
        bytes[size_at..size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            EventLog::parse(&bytes),
            Err(EventLogError::EventTooLarge { len: u32::MAX, .. })
        ));
    }

    #[test]
    fn too_many_events_are_rejected() {
        let header = banks();
        let mut log = EventLog::new(header.clone());
        let event = Event::measured(&header, 1, event_type::EV_ACTION, b"");
        for _ in 0..=MAX_EVENTS {
            log.push(event.clone());
        }
        assert_eq!(
            EventLog::parse(&log.emit()),
            Err(EventLogError::TooManyEvents)
        );
        log.events.pop();
        assert_eq!(EventLog::parse(&log.emit()).unwrap().len(), MAX_EVENTS);
    }

    #[test]
    fn log_without_sha256_cannot_be_replayed() {
        let header = SpecIdHeader::new(&[AlgorithmSize {
            algorithm: alg::SHA1,
            digest_size: 20,
        }]);
        let mut log = EventLog::new(header.clone());
        log.push(Event::measured(&header, 1, event_type::EV_ACTION, b"x"));
        let log = EventLog::parse(&log.emit()).unwrap();
        assert_eq!(
            log.replay_sha256(&initial_pcrs([0; 32])),
            Err(ReplayError::NoSha256Bank)
        );
    }

    #[test]
    fn duplicate_or_empty_algorithm_lists_are_rejected() {
        let sha = AlgorithmSize {
            algorithm: alg::SHA256,
            digest_size: 32,
        };
        let dup = EventLog::new(SpecIdHeader::new(&[sha, sha])).emit();
        assert_eq!(EventLog::parse(&dup), Err(EventLogError::BadAlgorithmList));
        let none = EventLog::new(SpecIdHeader::new(&[])).emit();
        assert_eq!(EventLog::parse(&none), Err(EventLogError::BadAlgorithmList));
        let huge = EventLog::new(SpecIdHeader::new(&[AlgorithmSize {
            algorithm: alg::SHA256,
            digest_size: 65,
        }]))
        .emit();
        assert_eq!(EventLog::parse(&huge), Err(EventLogError::BadAlgorithmList));
    }

    fn arb_event() -> impl Strategy<Value = (u32, u32, Vec<u8>)> {
        (
            0u32..24,
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
    }

    proptest! {
        /// The two-block compression is SHA-256 of the 64 bytes.
        #[test]
        fn extend_is_sha256_of_pcr_and_digest(pcr in any::<[u8; 32]>(), digest in any::<[u8; 32]>()) {
            let mut h = Sha256::new();
            h.update(pcr);
            h.update(digest);
            let want: [u8; 32] = h.finalize().into();
            prop_assert_eq!(extend_sha256(&pcr, &digest), want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(log) = EventLog::parse(&data) {
                prop_assert!(log.used_len() <= data.len());
                let _ = log.replay_sha256(&initial_pcrs([0; 32]));
            }
        }

        #[test]
        fn mutated_logs_never_panic(events in proptest::collection::vec(arb_event(), 0..8),
                                    flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let header = banks();
            let mut log = EventLog::new(header.clone());
            for (pcr, ty, data) in &events {
                log.push(Event::measured(&header, *pcr, *ty, data));
            }
            let mut bytes = log.emit();
            for (at, value) in flips {
                let len = bytes.len();
                bytes[at % len] ^= value;
            }
            if let Ok(log) = EventLog::parse(&bytes) {
                prop_assert!(log.used_len() <= bytes.len());
                let _ = log.replay_sha256(&initial_pcrs([0; 32]));
            }
        }

        #[test]
        fn built_logs_round_trip(events in proptest::collection::vec(arb_event(), 0..16), pad in 0usize..64) {
            let header = banks();
            let mut log = EventLog::new(header.clone());
            for (pcr, ty, data) in &events {
                log.push(Event::measured(&header, *pcr, *ty, data));
            }
            let mut bytes = log.emit();
            prop_assert_eq!(bytes.len(), log.used_len());
            bytes.resize(bytes.len() + pad, 0);
            let parsed = EventLog::parse(&bytes).unwrap();
            prop_assert_eq!(parsed.used_len(), log.used_len());
            prop_assert_eq!(parsed, log);
        }
    }
}
