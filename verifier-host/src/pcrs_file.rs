//! tpm2-tools' PCR output file (`tpm2_quote -o`, read by `tpm2_checkquote
//! -f`), in its default `serialized` format: C structures dumped in
//! little-endian order.
//!
//! ```text
//! TPML_PCR_SELECTION  u32 count, 16 x { u16 hash, u8 sizeofSelect,
//!                     u8 pcrSelect[4], u8 pad }             = 132 bytes
//! u32 number of TPML_DIGEST that follow
//! TPML_DIGEST         u32 count, 8 x { u16 size, u8 buffer[64] } = 532 bytes
//! ...
//! ```
//! The digests appear in selection order (banks in order, PCR indices
//! ascending), at most 8 per TPML_DIGEST (one TPM2_PCR_Read's worth).
//! The `values` format (`-F values`: the digests concatenated) is read too.
//!
//! The file comes from outside: parsing is bounds-checked and never panics.

use avm_attest::tpm::alg;
use avm_attest::wire::PcrValue;

const SELECTION_SLOTS: usize = 16;
const SELECTION_SLOT_LEN: usize = 8;
const PCR_SELECT_MAX: usize = 4;
const TPML_PCR_SELECTION_LEN: usize = 4 + SELECTION_SLOTS * SELECTION_SLOT_LEN;
const DIGEST_SLOTS: usize = 8;
const DIGEST_SLOT_LEN: usize = 2 + 64;
const TPML_DIGEST_LEN: usize = 4 + DIGEST_SLOTS * DIGEST_SLOT_LEN;
/// tpm2-tools' `tpm2_pcrs` holds at most this many TPML_DIGEST.
const MAX_DIGEST_LISTS: usize = 16;

/// Why a PCR file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcrsFileError {
    #[error("PCR file is truncated")]
    Truncated,
    #[error("PCR file has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    #[error("PCR file field out of range: {0}")]
    Invalid(&'static str),
    #[error("PCR file selects no SHA-256 PCRs")]
    NoSha256Bank,
}

fn u16_le(bytes: &[u8], at: usize) -> Result<u16, PcrsFileError> {
    let b = bytes.get(at..at + 2).ok_or(PcrsFileError::Truncated)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_le(bytes: &[u8], at: usize) -> Result<u32, PcrsFileError> {
    let b = bytes.get(at..at + 4).ok_or(PcrsFileError::Truncated)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses a `serialized` PCR file and returns the SHA-256 PCR values in
/// ascending index order. Other banks are read past and dropped.
pub fn parse_serialized(bytes: &[u8]) -> Result<Vec<PcrValue>, PcrsFileError> {
    let bank_count = u32_le(bytes, 0)? as usize;
    if bank_count > SELECTION_SLOTS {
        return Err(PcrsFileError::Invalid("more than 16 PCR banks"));
    }
    // (hash, PCR index) for every selected PCR, in file order.
    let mut selected: Vec<(u16, u8)> = Vec::new();
    for bank in 0..bank_count {
        let at = 4 + bank * SELECTION_SLOT_LEN;
        let hash = u16_le(bytes, at)?;
        let size = usize::from(*bytes.get(at + 2).ok_or(PcrsFileError::Truncated)?);
        if size > PCR_SELECT_MAX {
            return Err(PcrsFileError::Invalid("sizeofSelect over 4"));
        }
        let select = bytes
            .get(at + 3..at + 3 + size)
            .ok_or(PcrsFileError::Truncated)?;
        for (byte_index, byte) in select.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    // byte_index < 4, so the index is < 32.
                    selected.push((hash, (byte_index * 8 + bit) as u8));
                }
            }
        }
    }
    let list_count = u32_le(bytes, TPML_PCR_SELECTION_LEN)? as usize;
    if list_count > MAX_DIGEST_LISTS {
        return Err(PcrsFileError::Invalid("more than 16 digest lists"));
    }
    let lists_at = TPML_PCR_SELECTION_LEN + 4;
    let expected_len = lists_at + list_count * TPML_DIGEST_LEN;
    if bytes.len() < expected_len {
        return Err(PcrsFileError::Truncated);
    }
    if bytes.len() > expected_len {
        return Err(PcrsFileError::TrailingBytes(bytes.len() - expected_len));
    }
    let mut digests: Vec<&[u8]> = Vec::new();
    for list in 0..list_count {
        let at = lists_at + list * TPML_DIGEST_LEN;
        let count = u32_le(bytes, at)? as usize;
        if count > DIGEST_SLOTS {
            return Err(PcrsFileError::Invalid("TPML_DIGEST count over 8"));
        }
        for slot in 0..count {
            let slot_at = at + 4 + slot * DIGEST_SLOT_LEN;
            let size = usize::from(u16_le(bytes, slot_at)?);
            if size > 64 {
                return Err(PcrsFileError::Invalid("digest size over 64"));
            }
            digests.push(
                bytes
                    .get(slot_at + 2..slot_at + 2 + size)
                    .ok_or(PcrsFileError::Truncated)?,
            );
        }
    }
    if digests.len() != selected.len() {
        return Err(PcrsFileError::Invalid(
            "number of digests differs from the selection",
        ));
    }
    let mut pcrs = Vec::new();
    for ((hash, index), digest) in selected.into_iter().zip(digests) {
        if hash != alg::SHA256 {
            continue;
        }
        let digest: [u8; 32] = digest
            .try_into()
            .map_err(|_| PcrsFileError::Invalid("SHA-256 digest is not 32 bytes"))?;
        pcrs.push(PcrValue { index, digest });
    }
    if pcrs.is_empty() {
        return Err(PcrsFileError::NoSha256Bank);
    }
    pcrs.sort_by_key(|p| p.index);
    if pcrs.windows(2).any(|w| w[0].index == w[1].index) {
        return Err(PcrsFileError::Invalid("a PCR is selected twice"));
    }
    Ok(pcrs)
}

/// Parses a PCR file in either format: `values` needs the selection
/// (`sha256_mask`, e.g. from the quote) to know which PCR each digest is.
pub fn parse_any(
    bytes: &[u8],
    sha256_mask: Option<avm_attest::pcr::PcrMask>,
) -> Result<Vec<PcrValue>, PcrsFileError> {
    let serialized_len =
        |lists: usize| TPML_PCR_SELECTION_LEN + 4 + lists * TPML_DIGEST_LEN == bytes.len();
    if (0..=MAX_DIGEST_LISTS).any(serialized_len) {
        return parse_serialized(bytes);
    }
    let mask = sha256_mask.ok_or(PcrsFileError::Invalid(
        "values-format PCR file without a known selection",
    ))?;
    let indices: Vec<u8> = mask.indices().collect();
    if bytes.len() != indices.len() * 32 {
        return Err(PcrsFileError::Invalid(
            "values-format PCR file does not match the selection",
        ));
    }
    Ok(indices
        .into_iter()
        .zip(bytes.chunks_exact(32))
        .filter_map(|(index, chunk)| {
            let digest: [u8; 32] = chunk.try_into().ok()?;
            Some(PcrValue { index, digest })
        })
        .collect())
}

/// Writes SHA-256 PCR values (distinct indices below 32) as a `serialized`
/// PCR file, exactly as `tpm2_quote -o` does.
pub fn emit_serialized(pcrs: &[PcrValue]) -> Vec<u8> {
    let mut sorted: Vec<&PcrValue> = pcrs.iter().filter(|p| p.index < 32).collect();
    sorted.sort_by_key(|p| p.index);
    sorted.dedup_by_key(|p| p.index);
    let mut out = vec![0u8; TPML_PCR_SELECTION_LEN];
    out[0..4].copy_from_slice(&1u32.to_le_bytes());
    out[4..6].copy_from_slice(&alg::SHA256.to_le_bytes());
    // sizeofSelect 3 (24 PCRs) as TPMs report, 4 if a PCR above 23 is used.
    let size = if sorted.iter().any(|p| p.index >= 24) {
        4
    } else {
        3
    };
    out[6] = size;
    for p in &sorted {
        out[7 + usize::from(p.index / 8)] |= 1 << (p.index % 8);
    }
    let lists: Vec<&[&PcrValue]> = sorted.chunks(DIGEST_SLOTS).collect();
    out.extend_from_slice(&(lists.len() as u32).to_le_bytes());
    for list in lists {
        let mut block = vec![0u8; TPML_DIGEST_LEN];
        block[0..4].copy_from_slice(&(list.len() as u32).to_le_bytes());
        for (slot, p) in list.iter().enumerate() {
            let at = 4 + slot * DIGEST_SLOT_LEN;
            block[at..at + 2].copy_from_slice(&32u16.to_le_bytes());
            block[at + 2..at + 34].copy_from_slice(&p.digest);
        }
        out.extend_from_slice(&block);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use avm_attest::pcr::PcrMask;
    use proptest::prelude::*;

    fn sample(indices: &[u8]) -> Vec<PcrValue> {
        indices
            .iter()
            .map(|&index| PcrValue {
                index,
                digest: [index.wrapping_mul(3); 32],
            })
            .collect()
    }

    #[test]
    fn eight_pcrs_fill_one_list_like_tpm2_quote() {
        let bytes = emit_serialized(&sample(&[0, 1, 2, 3, 4, 5, 6, 7]));
        // The size of tpm2_quote's file for sha256:0-7 (see attest fixtures).
        assert_eq!(bytes.len(), 668);
        assert_eq!(&bytes[..8], &[1, 0, 0, 0, 0x0b, 0, 3, 0xff]);
        assert_eq!(
            parse_serialized(&bytes).unwrap(),
            sample(&[0, 1, 2, 3, 4, 5, 6, 7])
        );
    }

    #[test]
    fn values_format_needs_the_selection() {
        let pcrs = sample(&[0, 7, 10]);
        let values: Vec<u8> = pcrs.iter().flat_map(|p| p.digest).collect();
        assert_eq!(
            parse_any(&values, Some(PcrMask::from_bits(0b100_1000_0001))).unwrap(),
            pcrs
        );
        assert!(parse_any(&values, None).is_err());
        assert!(parse_any(&values, Some(PcrMask::from_bits(0b1))).is_err());
    }

    #[test]
    fn count_mismatch_and_truncation_are_errors() {
        let mut bytes = emit_serialized(&sample(&[0, 1]));
        bytes[7] = 0x07; // selects PCR 2 too, but only 2 digests follow
        assert!(matches!(
            parse_serialized(&bytes),
            Err(PcrsFileError::Invalid(_))
        ));
        let bytes = emit_serialized(&sample(&[0, 1]));
        assert_eq!(
            parse_serialized(&bytes[..bytes.len() - 1]),
            Err(PcrsFileError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn round_trip(mask in 1u32.., seed in any::<u8>()) {
            let pcrs: Vec<PcrValue> = (0u8..32)
                .filter(|i| mask & (1 << i) != 0)
                .map(|index| PcrValue { index, digest: [seed ^ index; 32] })
                .collect();
            let bytes = emit_serialized(&pcrs);
            prop_assert_eq!(parse_serialized(&bytes).unwrap(), pcrs.clone());
            prop_assert_eq!(parse_any(&bytes, None).unwrap(), pcrs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let _ = parse_serialized(&data);
            let _ = parse_any(&data, Some(PcrMask::FIRMWARE));
        }

        #[test]
        fn mutated_files_never_panic(pos in 0usize..1200, byte in any::<u8>()) {
            let mut bytes = emit_serialized(&sample(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            let _ = parse_serialized(&bytes);
        }
    }
}
