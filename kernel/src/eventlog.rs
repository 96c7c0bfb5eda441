//! A bounded walker over a TCG PC Client crypto-agile event log (the format
//! SeaBIOS leaves in the `TPM2` table's log area): a SHA1-format
//! `TCG_PCClientPCREvent` carrying the "Spec ID Event03" header, then
//! `TCG_PCR_EVENT2` records. The area after the last record is zero-filled.
//!
//! The kernel only needs how many records there are and how many bytes they
//! use (to copy exactly the log into the evidence); full parsing and replay is
//! the verifier's job (`avm-attest`). This walker should be replaced by the
//! shared parser once that exists.

use crate::phys::{le_u16, le_u32};

/// `EV_NO_ACTION`, the type of the Spec ID header event.
pub const EV_NO_ACTION: u32 = 3;
/// Signature at the start of the Spec ID event data.
pub const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// Most digest algorithms accepted in the header.
pub const MAX_ALGORITHMS: usize = 8;
/// Largest digest accepted (SHA-512).
pub const MAX_DIGEST_LEN: u16 = 64;
/// Most records walked.
pub const MAX_EVENTS: usize = 4096;

const SHA1_EVENT_HEADER_LEN: usize = 32; // pcr, type, sha1[20], size
const EVENT2_HEADER_LEN: usize = 12; // pcr, type, digest count

/// Where the walk stopped and how much it had read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogSummary {
    /// Records, counting the Spec ID header event.
    pub entries: usize,
    /// Bytes used by those records, from the start of the log.
    pub used_len: usize,
    /// The digest algorithms (TPM_ALG_ID) the header declares, in order.
    pub algorithms: heapless::Vec<u16, MAX_ALGORITHMS>,
}

/// What was wrong with the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventLogErrorKind {
    /// The first record is not a SHA1-format Spec ID event.
    NoSpecIdEvent,
    /// The header declares no algorithms, too many, or a digest size of 0 or
    /// above [`MAX_DIGEST_LEN`].
    BadAlgorithms,
    /// A record runs past the end of the area.
    Truncated,
    /// A record names an algorithm that the header did not declare.
    UnknownAlgorithm(u16),
    /// A record has more digests than the header declares algorithms.
    TooManyDigests(u32),
    /// More than [`MAX_EVENTS`] records.
    TooManyEvents,
}

/// A malformed log: the error and the valid prefix before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogError {
    /// What was wrong.
    pub kind: EventLogErrorKind,
    /// Offset of the record that was wrong.
    pub offset: usize,
    /// The records before it.
    pub valid_prefix: EventLogSummary,
}

/// Walks the log in `area` (the whole log area, possibly zero-padded).
pub fn walk(area: &[u8]) -> Result<EventLogSummary, EventLogError> {
    let mut summary = EventLogSummary {
        entries: 0,
        used_len: 0,
        algorithms: heapless::Vec::new(),
    };
    let fail = |kind, offset, summary: &EventLogSummary| EventLogError {
        kind,
        offset,
        valid_prefix: summary.clone(),
    };

    // The header event, SHA1 format.
    let (digest_sizes, header_len) =
        parse_spec_id_event(area).map_err(|kind| fail(kind, 0, &summary))?;
    for (alg, _) in &digest_sizes {
        let _ = summary.algorithms.push(*alg);
    }
    summary.entries = 1;
    summary.used_len = header_len;

    let mut off = header_len;
    loop {
        let Some(rest) = area.get(off..) else {
            break;
        };
        // Zero fill (or the exact end) marks the end of the log: a real
        // record always carries at least one digest.
        let count = le_u32(rest, 8).unwrap_or(0);
        if rest.len() < EVENT2_HEADER_LEN || count == 0 {
            break;
        }
        if summary.entries >= MAX_EVENTS {
            return Err(fail(EventLogErrorKind::TooManyEvents, off, &summary));
        }
        let len = event2_len(rest, &digest_sizes, count).map_err(|k| fail(k, off, &summary))?;
        off += len;
        summary.entries += 1;
        summary.used_len = off;
    }
    Ok(summary)
}

type DigestSizes = heapless::Vec<(u16, u16), MAX_ALGORITHMS>;

/// Parses the first record; returns the declared digest sizes and its length.
fn parse_spec_id_event(area: &[u8]) -> Result<(DigestSizes, usize), EventLogErrorKind> {
    use EventLogErrorKind::*;
    let event_type = le_u32(area, 4).ok_or(NoSpecIdEvent)?;
    let event_size = le_u32(area, 28).ok_or(NoSpecIdEvent)? as usize;
    let end = SHA1_EVENT_HEADER_LEN
        .checked_add(event_size)
        .ok_or(Truncated)?;
    let data = area.get(SHA1_EVENT_HEADER_LEN..end).ok_or(Truncated)?;
    if event_type != EV_NO_ACTION || data.get(..16) != Some(&SPEC_ID_SIGNATURE[..]) {
        return Err(NoSpecIdEvent);
    }
    // signature[16], platformClass u32, minor, major, errata, uintnSize: 24 bytes
    let n = le_u32(data, 24).ok_or(Truncated)? as usize;
    if n == 0 || n > MAX_ALGORITHMS {
        return Err(BadAlgorithms);
    }
    let mut sizes = DigestSizes::new();
    for i in 0..n {
        let at = 28 + 4 * i;
        let alg = le_u16(data, at).ok_or(Truncated)?;
        let size = le_u16(data, at + 2).ok_or(Truncated)?;
        if size == 0 || size > MAX_DIGEST_LEN {
            return Err(BadAlgorithms);
        }
        sizes.push((alg, size)).map_err(|_| BadAlgorithms)?;
    }
    // vendorInfoSize u8 follows; it must fit in the event data.
    let vendor_size = *data.get(28 + 4 * n).ok_or(Truncated)? as usize;
    if 28 + 4 * n + 1 + vendor_size > data.len() {
        return Err(Truncated);
    }
    Ok((sizes, end))
}

/// The length of the `TCG_PCR_EVENT2` at the start of `rec`.
fn event2_len(rec: &[u8], sizes: &DigestSizes, count: u32) -> Result<usize, EventLogErrorKind> {
    use EventLogErrorKind::*;
    if count as usize > sizes.len() {
        return Err(TooManyDigests(count));
    }
    let mut off = EVENT2_HEADER_LEN;
    for _ in 0..count {
        let alg = le_u16(rec, off).ok_or(Truncated)?;
        let (_, size) = sizes
            .iter()
            .find(|(a, _)| *a == alg)
            .ok_or(UnknownAlgorithm(alg))?;
        off += 2 + usize::from(*size);
    }
    let event_size = le_u32(rec, off).ok_or(Truncated)? as usize;
    let end = (off + 4).checked_add(event_size).ok_or(Truncated)?;
    if end > rec.len() {
        return Err(Truncated);
    }
    Ok(end)
}

/// Test and fuzz helpers that build well-formed logs.
pub mod build {
    use super::*;

    /// TPM_ALG_SHA1.
    pub const ALG_SHA1: u16 = 0x0004;
    /// TPM_ALG_SHA256.
    pub const ALG_SHA256: u16 = 0x000b;

    /// Appends a Spec ID header declaring `algs` (id, digest size).
    pub fn spec_id_event(out: &mut impl Extend<u8>, algs: &[(u16, u16)]) {
        let mut data = [0u8; 28 + 4 * MAX_ALGORITHMS + 1];
        data[..16].copy_from_slice(SPEC_ID_SIGNATURE);
        data[21] = 2; // spec version major
        data[23] = 2; // uintnSize: 64-bit
        let n = algs.len().min(MAX_ALGORITHMS);
        data[24..28].copy_from_slice(&(algs.len() as u32).to_le_bytes());
        for (i, (alg, size)) in algs.iter().take(n).enumerate() {
            data[28 + 4 * i..30 + 4 * i].copy_from_slice(&alg.to_le_bytes());
            data[30 + 4 * i..32 + 4 * i].copy_from_slice(&size.to_le_bytes());
        }
        let data = &data[..28 + 4 * n + 1];
        out.extend(0u32.to_le_bytes());
        out.extend(EV_NO_ACTION.to_le_bytes());
        out.extend([0u8; 20]);
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data.iter().copied());
    }

    /// Appends a `TCG_PCR_EVENT2` with one digest per algorithm (filled with
    /// `fill`) and `event` as its data.
    pub fn event2(out: &mut impl Extend<u8>, pcr: u32, ty: u32, algs: &[(u16, u16)], fill: u8, event: &[u8]) {
        out.extend(pcr.to_le_bytes());
        out.extend(ty.to_le_bytes());
        out.extend((algs.len() as u32).to_le_bytes());
        for (alg, size) in algs {
            out.extend(alg.to_le_bytes());
            out.extend(core::iter::repeat_n(fill, usize::from(*size)));
        }
        out.extend((event.len() as u32).to_le_bytes());
        out.extend(event.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use proptest::prelude::*;

    const ALGS: [(u16, u16); 2] = [(ALG_SHA1, 20), (ALG_SHA256, 32)];

    fn seabios_like_log(events: usize) -> Vec<u8> {
        let mut log = vec![];
        spec_id_event(&mut log, &ALGS);
        for i in 0..events {
            event2(&mut log, (i % 8) as u32, 0x8, &ALGS, i as u8, b"event data");
        }
        log
    }

    #[test]
    fn counts_records_and_stops_at_zero_fill() {
        let log = seabios_like_log(5);
        let used = log.len();
        let mut area = log.clone();
        area.resize(64 * 1024, 0);
        let s = walk(&area).unwrap();
        assert_eq!(s.entries, 6);
        assert_eq!(s.used_len, used);
        assert_eq!(&s.algorithms[..], &[ALG_SHA1, ALG_SHA256]);
        // Without padding the exact end also terminates.
        assert_eq!(walk(&log).unwrap().used_len, used);
    }

    #[test]
    fn header_only_log() {
        let mut area = vec![];
        spec_id_event(&mut area, &ALGS);
        let s = walk(&area).unwrap();
        assert_eq!((s.entries, s.used_len), (1, area.len()));
    }

    #[test]
    fn rejects_sha1_only_or_garbage_header() {
        assert_eq!(walk(&[0u8; 100]).unwrap_err().kind, EventLogErrorKind::NoSpecIdEvent);
        let mut bad = vec![];
        spec_id_event(&mut bad, &[]);
        assert_eq!(walk(&bad).unwrap_err().kind, EventLogErrorKind::BadAlgorithms);
    }

    #[test]
    fn truncated_record_keeps_valid_prefix() {
        let log = seabios_like_log(3);
        let cut = &log[..log.len() - 1];
        let e = walk(cut).unwrap_err();
        assert_eq!(e.kind, EventLogErrorKind::Truncated);
        assert_eq!(e.valid_prefix.entries, 3);
        assert_eq!(e.offset, e.valid_prefix.used_len);
    }

    #[test]
    fn undeclared_algorithm_is_an_error() {
        let mut log = vec![];
        spec_id_event(&mut log, &ALGS[1..]);
        event2(&mut log, 0, 8, &[(0x000c, 48)], 0, b"");
        assert_eq!(walk(&log).unwrap_err().kind, EventLogErrorKind::UnknownAlgorithm(0x000c));
    }

    proptest! {
        #[test]
        fn well_formed_logs_are_counted_exactly(
            events in proptest::collection::vec((0u32..24, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..30),
            pad in 0usize..64,
        ) {
            let mut log = vec![];
            spec_id_event(&mut log, &ALGS);
            for (pcr, ty, data) in &events {
                event2(&mut log, *pcr, *ty, &ALGS, 0xab, data);
            }
            let used = log.len();
            log.resize(used + pad, 0);
            let s = walk(&log).unwrap();
            prop_assert_eq!(s.entries, events.len() + 1);
            prop_assert_eq!(s.used_len, used);
        }

        #[test]
        fn never_panics_and_stays_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..1024), header in any::<bool>()) {
            let mut area = vec![];
            if header {
                spec_id_event(&mut area, &ALGS);
            }
            area.extend_from_slice(&bytes);
            match walk(&area) {
                Ok(s) => prop_assert!(s.used_len <= area.len()),
                Err(e) => prop_assert!(e.valid_prefix.used_len <= area.len()),
            }
        }
    }
}
