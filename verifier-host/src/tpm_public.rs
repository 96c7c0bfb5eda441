//! The facts the verifier needs from a marshaled TPMT_PUBLIC, owned: the key
//! (ECC P-256 point or RSA modulus/exponent), its symmetric definition and
//! its TPM name.
//!
//! Parsing is `avm_attest::tpm::Public` (the shared, checked parser); this
//! module only turns its borrowed view into an owned value the verifier
//! can keep, and adds the OpenSSL conversions.

use avm_attest::tpm::{self, Public};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public as PublicPkey};
use openssl::rsa::Rsa;

/// The public key carried by a TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// ECC NIST P-256 point, 32-byte big-endian coordinates.
    EccP256 { x: [u8; 32], y: [u8; 32] },
    /// RSA key: big-endian modulus and public exponent (65537 when the TPM
    /// encodes the default exponent as 0).
    Rsa { modulus: Vec<u8>, exponent: u32 },
}

impl PublicKey {
    /// The borrowed form `avm_attest::verify` checks signatures with.
    pub fn verifying_key(&self) -> tpm::VerifyingKey<'_> {
        match self {
            PublicKey::EccP256 { x, y } => tpm::VerifyingKey::EccP256 { x, y },
            PublicKey::Rsa { modulus, exponent } => tpm::VerifyingKey::Rsa {
                modulus,
                exponent: *exponent,
            },
        }
    }
}

/// A parsed TPMT_PUBLIC, keeping the marshaled bytes for the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    pub name_alg: u16,
    pub object_attributes: u32,
    /// Symmetric algorithm of a storage parent (EKs: AES), TPM_ALG_NULL else.
    pub symmetric_alg: u16,
    pub symmetric_key_bits: u16,
    pub key: PublicKey,
    name: [u8; 34],
    marshaled: Vec<u8>,
}

/// Why a TPMT_PUBLIC was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicError {
    #[error("malformed TPMT_PUBLIC: {0}")]
    Malformed(tpm::TpmParseError),
    #[error("unsupported nameAlg 0x{0:04x} (only SHA-256)")]
    UnsupportedNameAlg(u16),
    #[error("unsupported ECC curve 0x{0:04x} (only NIST P-256)")]
    UnsupportedCurve(u16),
    #[error("bad key field: {0}")]
    BadKey(&'static str),
}

impl TpmPublic {
    /// Parses a marshaled TPMT_PUBLIC (no TPM2B size prefix); all of
    /// `bytes` must be consumed.
    pub fn parse(bytes: &[u8]) -> Result<Self, PublicError> {
        Self::from_view(&Public::parse(bytes).map_err(PublicError::Malformed)?)
    }

    /// Parses a TPM2B_PUBLIC (tpm2-tools' `-f tss` public file).
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<Self, PublicError> {
        Self::from_view(&Public::parse_tpm2b(bytes).map_err(PublicError::Malformed)?)
    }

    fn from_view(public: &Public<'_>) -> Result<Self, PublicError> {
        if public.name_alg != tpm::alg::SHA256 {
            return Err(PublicError::UnsupportedNameAlg(public.name_alg));
        }
        let name = public.name().map_err(PublicError::Malformed)?;
        let key = match public.key {
            tpm::PublicKey::Ecc { curve, x, y, .. } => {
                if curve != tpm::ECC_NIST_P256 {
                    return Err(PublicError::UnsupportedCurve(curve));
                }
                PublicKey::EccP256 {
                    x: coordinate(x)?,
                    y: coordinate(y)?,
                }
            }
            tpm::PublicKey::Rsa {
                exponent, modulus, ..
            } => {
                if modulus.is_empty() {
                    return Err(PublicError::BadKey("empty RSA modulus"));
                }
                PublicKey::Rsa {
                    modulus: modulus.to_vec(),
                    exponent: if exponent == 0 { 65537 } else { exponent },
                }
            }
        };
        let (symmetric_alg, symmetric_key_bits) = public
            .symmetric
            .map_or((tpm::alg::NULL, 0), |s| (s.algorithm, s.key_bits));
        Ok(Self {
            name_alg: public.name_alg,
            object_attributes: public.object_attributes,
            symmetric_alg,
            symmetric_key_bits,
            key,
            name,
            marshaled: public.raw.to_vec(),
        })
    }

    /// The marshaled TPMT_PUBLIC this was parsed from.
    pub fn marshaled(&self) -> &[u8] {
        &self.marshaled
    }

    /// The TPM name: nameAlg (big-endian) || SHA-256(TPMT_PUBLIC).
    pub fn name(&self) -> Vec<u8> {
        self.name.to_vec()
    }

    /// The key as an OpenSSL public key (for PEM export and comparisons).
    pub fn to_pkey(&self) -> Result<PKey<PublicPkey>, openssl::error::ErrorStack> {
        match &self.key {
            PublicKey::EccP256 { x, y } => {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
                let x = BigNum::from_slice(x)?;
                let y = BigNum::from_slice(y)?;
                PKey::from_ec_key(EcKey::from_public_key_affine_coordinates(&group, &x, &y)?)
            }
            PublicKey::Rsa { modulus, exponent } => {
                let n = BigNum::from_slice(modulus)?;
                let e = BigNum::from_u32(*exponent)?;
                PKey::from_rsa(Rsa::from_public_components(n, e)?)
            }
        }
    }
}

/// A P-256 coordinate: at most 32 bytes, left-padded to 32.
fn coordinate(bytes: &[u8]) -> Result<[u8; 32], PublicError> {
    if bytes.is_empty() || bytes.len() > 32 {
        return Err(PublicError::BadKey("ECC coordinate is not 1..=32 bytes"));
    }
    let mut out = [0u8; 32];
    out[32 - bytes.len()..].copy_from_slice(bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::sha::sha256;
    use proptest::prelude::*;

    const TPM_ALG_SHA256: u16 = tpm::alg::SHA256;
    const TPM_ALG_NULL: u16 = tpm::alg::NULL;
    const TPM_ALG_ECC: u16 = tpm::alg::ECC;
    const TPM_ECC_NIST_P256: u16 = tpm::ECC_NIST_P256;

    /// An ECC AK TPMT_PUBLIC as tpm2_createak writes it (ECDSA/SHA-256).
    pub(crate) fn sample_ecc_public(x: [u8; 32], y: [u8; 32]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&TPM_ALG_ECC.to_be_bytes());
        p.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        p.extend_from_slice(&0x0005_0072u32.to_be_bytes());
        p.extend_from_slice(&0u16.to_be_bytes());
        p.extend_from_slice(&TPM_ALG_NULL.to_be_bytes());
        p.extend_from_slice(&0x0018u16.to_be_bytes()); // ECDSA
        p.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        p.extend_from_slice(&TPM_ECC_NIST_P256.to_be_bytes());
        p.extend_from_slice(&TPM_ALG_NULL.to_be_bytes());
        p.extend_from_slice(&32u16.to_be_bytes());
        p.extend_from_slice(&x);
        p.extend_from_slice(&32u16.to_be_bytes());
        p.extend_from_slice(&y);
        p
    }

    #[test]
    fn parses_ecc_public_and_computes_name() {
        let bytes = sample_ecc_public([1; 32], [2; 32]);
        let public = TpmPublic::parse(&bytes).unwrap();
        assert_eq!(
            public.key,
            PublicKey::EccP256 {
                x: [1; 32],
                y: [2; 32]
            }
        );
        let name = public.name();
        assert_eq!(&name[..2], &[0x00, 0x0b]);
        assert_eq!(&name[2..], &sha256(&bytes));
    }

    #[test]
    fn rejects_truncation_and_trailing_bytes() {
        let bytes = sample_ecc_public([1; 32], [2; 32]);
        for cut in 0..bytes.len() {
            assert!(TpmPublic::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            TpmPublic::parse(&longer),
            Err(PublicError::Malformed(tpm::TpmParseError::TrailingBytes))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = TpmPublic::parse(&data);
            let _ = TpmPublic::parse_tpm2b(&data);
        }

        #[test]
        fn mutated_public_never_panics(pos in 0usize..110, byte in any::<u8>()) {
            let mut bytes = sample_ecc_public([3; 32], [4; 32]);
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            let _ = TpmPublic::parse(&bytes);
        }
    }
}
