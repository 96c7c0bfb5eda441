//! Which PCRs of the SHA-256 bank a command reads or quotes.

use tpm2_protocol::data::{TpmAlgId, TpmlPcrSelection, TpmsPcrSelect, TpmsPcrSelection};

use crate::error::{Result, TpmError};

/// Number of PCRs in a PC Client TPM bank.
pub const PCR_COUNT: u8 = 24;

/// A SHA-256 PCR value.
pub type PcrDigest = [u8; 32];

/// A set of PCR indices (0..24) of the SHA-256 bank, as a bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PcrSelection(u32);

impl PcrSelection {
    /// No PCR selected.
    pub const EMPTY: Self = Self(0);

    /// The selection of `pcrs` (order and duplicates do not matter).
    ///
    /// # Errors
    ///
    /// [`TpmError::InvalidArgument`] when an index is 24 or more.
    pub fn new(pcrs: &[u8]) -> Result<Self> {
        pcrs.iter().try_fold(Self::EMPTY, |sel, &pcr| {
            if pcr < PCR_COUNT {
                Ok(Self(sel.0 | 1 << pcr))
            } else {
                Err(TpmError::InvalidArgument("PCR index must be below 24"))
            }
        })
    }

    /// The selection from the 3-byte `pcrSelect` bitmap of a TPM structure
    /// (bit `i % 8` of byte `i / 8` selects PCR `i`); bits beyond PCR 23
    /// are ignored.
    #[must_use]
    pub fn from_bitmap(bitmap: &[u8]) -> Self {
        let mut bits = 0u32;
        for (i, byte) in bitmap.iter().take(3).enumerate() {
            bits |= u32::from(*byte) << (8 * i);
        }
        Self(bits)
    }

    /// The 3-byte `pcrSelect` bitmap.
    #[must_use]
    pub fn to_bitmap(self) -> [u8; 3] {
        let [a, b, c, _] = self.0.to_le_bytes();
        [a, b, c]
    }

    /// True when `pcr` is selected.
    #[must_use]
    pub fn contains(self, pcr: u8) -> bool {
        pcr < PCR_COUNT && self.0 & (1 << pcr) != 0
    }

    /// Number of selected PCRs.
    #[must_use]
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// True when no PCR is selected.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The PCRs in `self` but not in `other`.
    #[must_use]
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The selected indices in ascending order, the order in which the TPM
    /// returns and hashes PCR values.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..PCR_COUNT).filter(move |&pcr| self.contains(pcr))
    }

    /// As a `TPML_PCR_SELECTION` with one SHA-256 entry.
    pub(crate) fn to_tpml(self) -> Result<TpmlPcrSelection> {
        let pcr_select =
            TpmsPcrSelect::try_from(&self.to_bitmap()[..]).map_err(TpmError::Marshal)?;
        let mut list = TpmlPcrSelection::new();
        list.try_push(TpmsPcrSelection {
            hash: TpmAlgId::Sha256,
            pcr_select,
        })
        .map_err(TpmError::Marshal)?;
        Ok(list)
    }
}

/// PCR values of the SHA-256 bank, in ascending PCR order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrValues {
    /// The PCRs the values belong to.
    pub selection: PcrSelection,
    /// One digest per selected PCR, ascending by index.
    pub values: heapless::Vec<PcrDigest, 24>,
}

impl PcrValues {
    /// The value of `pcr`, if it was read.
    #[must_use]
    pub fn get(&self, pcr: u8) -> Option<&PcrDigest> {
        let position = self.selection.iter().position(|p| p == pcr)?;
        self.values.get(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn indices_map_to_the_tpm_bitmap() {
        let sel = PcrSelection::new(&[0, 7, 8, 23, 7]).unwrap();
        assert_eq!(sel.to_bitmap(), [0x81, 0x01, 0x80]);
        assert_eq!(sel.len(), 4);
        assert!(PcrSelection::new(&[24]).is_err());
    }

    proptest! {
        #[test]
        fn bitmap_round_trips(pcrs in proptest::collection::vec(0u8..24, 0..30)) {
            let sel = PcrSelection::new(&pcrs).unwrap();
            prop_assert_eq!(PcrSelection::from_bitmap(&sel.to_bitmap()), sel);
            let listed: std::vec::Vec<u8> = sel.iter().collect();
            let mut expected = pcrs.clone();
            expected.sort_unstable();
            expected.dedup();
            prop_assert_eq!(listed, expected);
        }
    }
}
