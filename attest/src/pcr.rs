//! [`PcrMask`]: a set of PCRs of the SHA-256 bank, the one form a PCR set
//! takes from the verifier's challenge through the A-VM's quote and the
//! TPMS_ATTEST selection to the verdict.

use serde::{Deserialize, Serialize};

/// The most PCRs a `pcrSelect` bitmap can name (4 bytes).
pub const MAX_PCRS: u8 = 32;

/// A set of PCR indices 0..32 (bit n = PCR n). Any 32-bit value is a valid
/// set, so decoding one never fails; what a party accepts (a PC Client
/// TPM has PCRs 0-23, see [`PcrMask::PC_CLIENT`]) is its own check. On the
/// wire it is the plain `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PcrMask(u32);

impl PcrMask {
    /// No PCR.
    pub const EMPTY: Self = Self(0);
    /// PCRs 0-7: what firmware measures (the measured launch).
    pub const FIRMWARE: Self = Self(0xff);
    /// PCRs 0-23: every PCR of a PC Client TPM bank.
    pub const PC_CLIENT: Self = Self(0x00ff_ffff);

    /// The set whose bit n is PCR n.
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The bitmap (bit n = PCR n).
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The set of `pcrs`; `None` if an index is 32 or more.
    pub fn from_indices(pcrs: impl IntoIterator<Item = u8>) -> Option<Self> {
        pcrs.into_iter()
            .try_fold(Self::EMPTY, |set, pcr| set.with(pcr))
    }

    /// The set plus `pcr`; `None` if `pcr` is 32 or more.
    pub fn with(self, pcr: u8) -> Option<Self> {
        (pcr < MAX_PCRS).then(|| Self(self.0 | 1 << pcr))
    }

    /// Whether `pcr` is in the set.
    pub fn contains(self, pcr: u8) -> bool {
        pcr < MAX_PCRS && self.0 & (1 << pcr) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of PCRs in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The PCRs in `self` but not in `other`.
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Whether every PCR of `self` is in `other`.
    pub fn is_within(self, other: Self) -> bool {
        self.without(other).is_empty()
    }

    /// The indices in ascending order: the order in which a TPM returns
    /// and digests PCR values.
    pub fn indices(self) -> impl Iterator<Item = u8> {
        (0..MAX_PCRS).filter(move |&pcr| self.contains(pcr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[test]
    fn sets_of_pcrs() {
        assert_eq!(
            PcrMask::from_bits(0x81).indices().collect::<Vec<_>>(),
            [0, 7]
        );
        assert_eq!(
            PcrMask::from_indices([7, 0, 7]),
            Some(PcrMask::from_bits(0x81))
        );
        assert_eq!(PcrMask::from_indices([32]), None);
        assert!(PcrMask::FIRMWARE.is_within(PcrMask::PC_CLIENT));
        assert!(!PcrMask::from_bits(1 << 24).is_within(PcrMask::PC_CLIENT));
        assert_eq!(
            PcrMask::from_bits(0x1ff)
                .without(PcrMask::FIRMWARE)
                .indices()
                .collect::<Vec<_>>(),
            [8]
        );
        assert_eq!(PcrMask::FIRMWARE.len(), 8);
        assert!(!PcrMask::FIRMWARE.contains(40));
    }

    #[test]
    fn on_the_wire_it_is_the_plain_u32() {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        let mask = postcard::to_slice(&PcrMask::from_bits(0x00ab_cdef), &mut a)
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let raw = postcard::to_slice(&0x00ab_cdefu32, &mut b)
            .map(|s| s.to_vec())
            .unwrap_or_default();
        assert_eq!(mask, raw);
        assert!(!mask.is_empty());
    }

    proptest! {
        #[test]
        fn indices_round_trip(bits in any::<u32>()) {
            let mask = PcrMask::from_bits(bits);
            prop_assert_eq!(PcrMask::from_indices(mask.indices()), Some(mask));
            prop_assert_eq!(mask.indices().count(), mask.len());
        }
    }
}
