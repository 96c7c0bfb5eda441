//! The Linux IMA measurement list in its binary form
//! (`binary_runtime_measurements`), with the `ima-ng` and `ima-sig`
//! templates: the A-VM writes its own measurement log in this format, so
//! standard IMA tooling (`evmctl ima_measurement`) replays it, and the
//! Mon-VM's IMA entries it anchors keep their kernel form.
//!
//! A record (little-endian, as the kernel writes it):
//! `u32 pcr | 20-byte SHA-1 template hash | u32 len + template name |
//! u32 len + template data`. The template data of `ima-ng` is two
//! length-prefixed fields, `d-ng` (`"sha256:" NUL digest`) and `n-ng` (the
//! name with its NUL); `ima-sig` adds a third, `sig` (empty when unsigned).
//!
//! Each PCR bank is extended with that bank's hash of the template data;
//! the SHA-1 template hash in the record is SHA-1 of the template data. A
//! violation record (IMA could not measure) has an all-zero template hash,
//! and replay extends all-ones instead, as the kernel does.
//!
//! Parsing is a checked view: every length is bounded, nothing panics.

use alloc::vec::Vec;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::eventlog::extend_sha256;
use crate::reader::Reader;

/// The PCR IMA extends by default (CONFIG_IMA_MEASURE_PCR_IDX).
pub const IMA_PCR: u32 = 10;
/// Longest template name (IMA_TEMPLATE_NAME_LEN_MAX is 15 + NUL).
pub const MAX_TEMPLATE_NAME_LEN: usize = 16;
/// Longest template data accepted: a path of PATH_MAX, a digest and a
/// signature of a few KiB fit with room to spare.
pub const MAX_TEMPLATE_DATA_LEN: usize = 32 * 1024;
/// Most fields in a template (the kernel allows IMA_TEMPLATE_NUM_FIELDS_MAX, 15).
pub const MAX_TEMPLATE_FIELDS: usize = 15;
/// The highest PCR a record may name (PC Client TPMs have 24).
pub const MAX_PCR: u32 = 23;

/// Why an IMA list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImaError {
    /// A record is cut short (its byte offset in the list).
    Truncated { offset: usize },
    /// A record names a PCR above 23.
    BadPcr { offset: usize, pcr: u32 },
    /// A template name is empty, too long or not printable ASCII.
    BadTemplateName { offset: usize },
    /// Template data over [`MAX_TEMPLATE_DATA_LEN`].
    TemplateDataTooLong { offset: usize, len: u32 },
    /// More records than the caller allows.
    TooManyRecords { limit: usize },
}

impl core::fmt::Display for ImaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated { offset } => write!(f, "IMA record at byte {offset} is truncated"),
            Self::BadPcr { offset, pcr } => {
                write!(f, "IMA record at byte {offset} names PCR {pcr}")
            }
            Self::BadTemplateName { offset } => {
                write!(f, "IMA record at byte {offset} has a bad template name")
            }
            Self::TemplateDataTooLong { offset, len } => write!(
                f,
                "IMA record at byte {offset} has {len} bytes of template data (at most {MAX_TEMPLATE_DATA_LEN})"
            ),
            Self::TooManyRecords { limit } => write!(f, "more than {limit} IMA records"),
        }
    }
}

/// One record of a binary measurement list, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImaRecord<'a> {
    pub pcr: u32,
    /// SHA-1 of the template data, or all zeros for a violation.
    pub template_hash: [u8; 20],
    pub template_name: &'a str,
    pub template_data: &'a [u8],
}

impl<'a> ImaRecord<'a> {
    /// Parses the record at the reader's position (`offset` for errors).
    fn read(r: &mut Reader<'a>) -> Result<Self, ImaError> {
        let offset = r.position();
        let truncated = ImaError::Truncated { offset };
        let pcr = r.u32_le().ok_or(truncated)?;
        if pcr > MAX_PCR {
            return Err(ImaError::BadPcr { offset, pcr });
        }
        let template_hash = r.array::<20>().ok_or(truncated)?;
        let name_len = r.u32_le().ok_or(truncated)? as usize;
        if name_len == 0 || name_len > MAX_TEMPLATE_NAME_LEN {
            return Err(ImaError::BadTemplateName { offset });
        }
        let name = r.bytes(name_len).ok_or(truncated)?;
        let template_name = known_template(name)
            .or_else(|| {
                core::str::from_utf8(name)
                    .ok()
                    .filter(|n| n.bytes().all(|b| b.is_ascii_graphic()))
            })
            .ok_or(ImaError::BadTemplateName { offset })?;
        let data_len = r.u32_le().ok_or(truncated)?;
        if data_len as usize > MAX_TEMPLATE_DATA_LEN {
            return Err(ImaError::TemplateDataTooLong {
                offset,
                len: data_len,
            });
        }
        let template_data = r.bytes(data_len as usize).ok_or(truncated)?;
        Ok(Self {
            pcr,
            template_hash,
            template_name,
            template_data,
        })
    }

    /// Appends the record's binary form.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.pcr.to_le_bytes());
        out.extend_from_slice(&self.template_hash);
        out.extend_from_slice(&(self.template_name.len() as u32).to_le_bytes());
        out.extend_from_slice(self.template_name.as_bytes());
        out.extend_from_slice(&(self.template_data.len() as u32).to_le_bytes());
        out.extend_from_slice(self.template_data);
    }

    /// The length of the record's binary form.
    pub fn encoded_len(&self) -> usize {
        4 + 20 + 4 + self.template_name.len() + 4 + self.template_data.len()
    }

    /// Whether this is a violation record (IMA could not measure a file).
    pub fn is_violation(&self) -> bool {
        self.template_hash == [0; 20]
    }

    /// Whether the template hash is SHA-1 of the template data (violation
    /// records have none to check).
    pub fn template_hash_matches(&self) -> bool {
        self.is_violation() || template_sha1(self.template_data) == self.template_hash
    }

    /// What this record extends into a SHA-256 PCR.
    pub fn sha256_extend_value(&self) -> [u8; 32] {
        if self.is_violation() {
            [0xff; 32]
        } else {
            Sha256::digest(self.template_data).into()
        }
    }

    /// The `ima-ng` / `ima-sig` fields of the template data.
    pub fn ng_fields(&self) -> Result<NgFields<'a>, TemplateError> {
        NgFields::parse(self.template_name, self.template_data)
    }
}

/// The templates nearly every record has, without a UTF-8 check each.
fn known_template(name: &[u8]) -> Option<&'static str> {
    match name {
        b"ima-ng" => Some("ima-ng"),
        b"ima-sig" => Some("ima-sig"),
        _ => None,
    }
}

/// SHA-1 of template data: the record's template hash.
pub fn template_sha1(template_data: &[u8]) -> [u8; 20] {
    Sha1::digest(template_data).into()
}

/// Parses a whole binary list, at most `max_records` records.
pub fn parse_list(bytes: &[u8], max_records: usize) -> Result<Vec<ImaRecord<'_>>, ImaError> {
    let mut r = Reader::new(bytes);
    // A typical record (a path of some 50 bytes) is over 100 bytes: room
    // for most lists without growing (a record takes 56 bytes here).
    let mut records = Vec::with_capacity((bytes.len() / 100).min(max_records));
    while !r.is_empty() {
        if records.len() == max_records {
            return Err(ImaError::TooManyRecords { limit: max_records });
        }
        records.push(ImaRecord::read(&mut r)?);
    }
    Ok(records)
}

/// Replays records into a SHA-256 PCR bank starting from `initial`
/// (PCRs 0-23): each record extends its PCR with SHA-256 of its template
/// data (all-ones for a violation).
pub fn replay_sha256(records: &[ImaRecord<'_>], initial: &[[u8; 32]; 24]) -> [[u8; 32]; 24] {
    let mut pcrs = *initial;
    for record in records {
        // `read` refused PCRs above 23; a hand-built record is skipped.
        if let Some(pcr) = pcrs.get_mut(record.pcr as usize) {
            *pcr = extend_sha256(pcr, &record.sha256_extend_value());
        }
    }
    pcrs
}

/// Why template data is not a well-formed `ima-ng` / `ima-sig` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateError {
    /// Not `ima-ng` or `ima-sig`.
    UnknownTemplate,
    /// A field's length runs past the data, or too many fields.
    BadFieldLengths,
    /// Not the number of fields the template has.
    FieldCount,
    /// `d-ng` is not `ALGO:` NUL digest.
    BadDigestField,
    /// `n-ng` is not NUL-terminated.
    BadNameField,
}

impl core::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::UnknownTemplate => "template is neither ima-ng nor ima-sig",
            Self::BadFieldLengths => "template field lengths do not add up",
            Self::FieldCount => "wrong number of template fields",
            Self::BadDigestField => "malformed d-ng digest field",
            Self::BadNameField => "malformed n-ng name field",
        })
    }
}

/// The fields of an `ima-ng` or `ima-sig` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NgFields<'a> {
    /// The file-digest algorithm (`sha256`, `sha1`, ...).
    pub algorithm: &'a str,
    pub digest: &'a [u8],
    /// The file name, without its NUL.
    pub name: &'a [u8],
    /// The signature field of `ima-sig` (empty when unsigned); `None` for `ima-ng`.
    pub signature: Option<&'a [u8]>,
}

impl<'a> NgFields<'a> {
    /// Splits template data of `template_name` into its fields.
    pub fn parse(template_name: &str, data: &'a [u8]) -> Result<Self, TemplateError> {
        let expected = match template_name {
            "ima-ng" => 2,
            "ima-sig" => 3,
            _ => return Err(TemplateError::UnknownTemplate),
        };
        // Only the first three fields are kept; the others are counted.
        let mut fields: [&[u8]; 3] = [&[]; 3];
        let mut count = 0;
        let mut r = Reader::new(data);
        while !r.is_empty() {
            if count == MAX_TEMPLATE_FIELDS {
                return Err(TemplateError::BadFieldLengths);
            }
            let len = r.u32_le().ok_or(TemplateError::BadFieldLengths)? as usize;
            let field = r.bytes(len).ok_or(TemplateError::BadFieldLengths)?;
            if let Some(slot) = fields.get_mut(count) {
                *slot = field;
            }
            count += 1;
        }
        if count != expected {
            return Err(TemplateError::FieldCount);
        }
        let (algorithm, digest) = split_digest_field(fields[0])?;
        let name = fields[1]
            .strip_suffix(&[0])
            // No early exit: a loop the compiler vectorises (names are
            // short; a search call costs more).
            .filter(|n| !n.iter().fold(false, |nul, &b| nul | (b == 0)))
            .ok_or(TemplateError::BadNameField)?;
        Ok(Self {
            algorithm,
            digest,
            name,
            signature: (expected == 3).then_some(fields[2]),
        })
    }
}

/// `d-ng`: `ALGO:` NUL then the digest.
fn split_digest_field(field: &[u8]) -> Result<(&str, &[u8]), TemplateError> {
    // What nearly every record holds, as the general case reads it.
    if let Some(digest) = field.strip_prefix(b"sha256:\0")
        && !digest.is_empty()
    {
        return Ok(("sha256", digest));
    }
    split_any_digest_field(field)
}

/// [`split_digest_field`] for any algorithm.
fn split_any_digest_field(field: &[u8]) -> Result<(&str, &[u8]), TemplateError> {
    let nul = field
        .iter()
        .position(|&b| b == 0)
        .ok_or(TemplateError::BadDigestField)?;
    let (prefix, rest) = field.split_at(nul);
    let algorithm = prefix
        .strip_suffix(b":")
        .and_then(|a| core::str::from_utf8(a).ok())
        .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or(TemplateError::BadDigestField)?;
    let digest = rest.get(1..).unwrap_or_default();
    if digest.is_empty() {
        return Err(TemplateError::BadDigestField);
    }
    Ok((algorithm, digest))
}

/// Template data of an `ima-ng` record (`ima-sig` with `Some(signature)`):
/// `d-ng` = `algorithm:` NUL digest, `n-ng` = name NUL.
pub fn ng_template_data(
    algorithm: &str,
    digest: &[u8],
    name: &[u8],
    signature: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let d_len = algorithm.len() + 2 + digest.len();
    out.extend_from_slice(&(d_len as u32).to_le_bytes());
    out.extend_from_slice(algorithm.as_bytes());
    out.extend_from_slice(b":\0");
    out.extend_from_slice(digest);
    out.extend_from_slice(&((name.len() + 1) as u32).to_le_bytes());
    out.extend_from_slice(name);
    out.push(0);
    if let Some(sig) = signature {
        out.extend_from_slice(&(sig.len() as u32).to_le_bytes());
        out.extend_from_slice(sig);
    }
    out
}

/// A complete `ima-ng` record over a SHA-256 file digest, ready to append
/// to a list (what the A-VM logs for each of its own measurements).
pub fn ng_record(pcr: u32, digest: &[u8; 32], name: &[u8]) -> Vec<u8> {
    let data = ng_template_data("sha256", digest, name, None);
    let mut out = Vec::new();
    ImaRecord {
        pcr,
        template_hash: template_sha1(&data),
        template_name: "ima-ng",
        template_data: &data,
    }
    .emit(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    #[test]
    fn a_record_round_trips_and_replays() {
        let digest = [7u8; 32];
        let bytes = ng_record(IMA_PCR, &digest, b"/usr/bin/true");
        let records = parse_list(&bytes, 10).unwrap();
        assert_eq!(records.len(), 1);
        let r = records[0];
        assert_eq!((r.pcr, r.template_name), (10, "ima-ng"));
        assert!(r.template_hash_matches());
        let fields = r.ng_fields().unwrap();
        assert_eq!(fields.algorithm, "sha256");
        assert_eq!(fields.digest, &digest);
        assert_eq!(fields.name, b"/usr/bin/true");
        assert_eq!(fields.signature, None);
        let mut again = Vec::new();
        r.emit(&mut again);
        assert_eq!(again, bytes);
        assert_eq!(r.encoded_len(), bytes.len());

        let pcrs = replay_sha256(&records, &[[0; 32]; 24]);
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(Sha256::digest(r.template_data));
        assert_eq!(pcrs[10], <[u8; 32]>::from(h.finalize()));
        assert_eq!(pcrs[9], [0; 32]);
    }

    #[test]
    fn ima_sig_and_violations() {
        let data = ng_template_data("sha256", &[1; 32], b"/lib/x.so", Some(b""));
        let fields = NgFields::parse("ima-sig", &data).unwrap();
        assert_eq!(fields.signature, Some(&b""[..]));
        assert_eq!(
            NgFields::parse("ima-ng", &data),
            Err(TemplateError::FieldCount)
        );
        assert_eq!(
            NgFields::parse("ima", &data),
            Err(TemplateError::UnknownTemplate)
        );
        let violation = ImaRecord {
            pcr: 10,
            template_hash: [0; 20],
            template_name: "ima-ng",
            template_data: &data,
        };
        assert!(violation.is_violation() && violation.template_hash_matches());
        assert_eq!(violation.sha256_extend_value(), [0xff; 32]);
    }

    #[test]
    fn malformed_lists_are_refused_with_their_offset() {
        let good = ng_record(10, &[2; 32], b"/x");
        for cut in 1..good.len() {
            assert_eq!(
                parse_list(&good[..cut], 10),
                Err(ImaError::Truncated { offset: 0 }),
                "cut at {cut}"
            );
        }
        let mut two = good.clone();
        two.extend_from_slice(&good);
        assert_eq!(
            parse_list(&two, 1),
            Err(ImaError::TooManyRecords { limit: 1 })
        );
        let mut bad_pcr = good.clone();
        bad_pcr[0] = 24;
        assert_eq!(
            parse_list(&bad_pcr, 10),
            Err(ImaError::BadPcr { offset: 0, pcr: 24 })
        );
        let mut huge = good.clone();
        let at = 4 + 20 + 4 + 6;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_list(&huge, 10),
            Err(ImaError::TemplateDataTooLong { .. })
        ));
        let mut tampered = good.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        assert!(!parse_list(&tampered, 10).unwrap()[0].template_hash_matches());
        assert_eq!(
            NgFields::parse("ima-ng", &[1, 0, 0]),
            Err(TemplateError::BadFieldLengths)
        );
        // At most 15 fields (empty ones here), then too many.
        assert_eq!(
            NgFields::parse("ima-ng", &[0; 4 * MAX_TEMPLATE_FIELDS]),
            Err(TemplateError::FieldCount)
        );
        assert_eq!(
            NgFields::parse("ima-ng", &[0; 4 * (MAX_TEMPLATE_FIELDS + 1)]),
            Err(TemplateError::BadFieldLengths)
        );
        let no_colon = ng_template_data("", &[1], b"a", None);
        assert_eq!(
            NgFields::parse("ima-ng", &no_colon),
            Err(TemplateError::BadDigestField)
        );
        let mut no_nul = ng_template_data("sha1", &[1], b"a", None);
        let end = no_nul.len() - 1;
        no_nul[end] = b'b';
        assert_eq!(
            NgFields::parse("ima-ng", &no_nul),
            Err(TemplateError::BadNameField)
        );
        assert_eq!(parse_list(&[], 0), Ok(vec![]));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(records) = parse_list(&bytes, 8) {
                for r in &records {
                    let _ = r.ng_fields();
                    let _ = r.template_hash_matches();
                }
                let _ = replay_sha256(&records, &[[0; 32]; 24]);
            }
            let _ = NgFields::parse("ima-sig", &bytes);
        }

        /// The shortcut for `sha256:` reads what the general case reads.
        #[test]
        fn the_sha256_digest_field_is_read_as_any_other(
            prefix in proptest::sample::select(vec![
                &b"sha256:\0"[..], b"sha256:", b"sha256", b"sha256\0", b"sha1:\0", b"sha256::\0", b"",
            ]),
            rest in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let field = [prefix, &rest[..]].concat();
            prop_assert_eq!(split_digest_field(&field), split_any_digest_field(&field));
        }

        #[test]
        fn generated_records_round_trip(
            entries in proptest::collection::vec(
                (any::<[u8; 32]>(), proptest::collection::vec(1u8..=255, 1..40)), 0..20),
        ) {
            let mut list = Vec::new();
            for (digest, name) in &entries {
                list.extend(ng_record(IMA_PCR, digest, name));
            }
            let records = parse_list(&list, 100).unwrap();
            prop_assert_eq!(records.len(), entries.len());
            for (r, (digest, name)) in records.iter().zip(&entries) {
                prop_assert!(r.template_hash_matches());
                let f = r.ng_fields().unwrap();
                prop_assert_eq!(f.digest, &digest[..]);
                prop_assert_eq!(f.name, &name[..]);
            }
        }
    }
}
