//! The few facts the verifier needs from a marshaled TPMT_PUBLIC: the key
//! (ECC P-256 point or RSA modulus/exponent), its nameAlg and its TPM name.
//!
//! TEMPORARY: `avm_attest::tpm::Public` is the shared parser being written in
//! `attest/`; once it lands this module becomes a thin adapter over it.
//! Input is untrusted (it comes from the node's Hello): every read is
//! checked and errors are returned, never panics.

use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use openssl::sha::sha256;

const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ECC_NIST_P256: u16 = 0x0003;

/// The public key carried by a TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// ECC NIST P-256 point, 32-byte big-endian coordinates.
    EccP256 { x: [u8; 32], y: [u8; 32] },
    /// RSA key: big-endian modulus and public exponent (65537 when the TPM
    /// encodes the default exponent as 0).
    Rsa { modulus: Vec<u8>, exponent: u32 },
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
    marshaled: Vec<u8>,
}

/// Why a TPMT_PUBLIC was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicError {
    #[error("TPMT_PUBLIC is truncated")]
    Truncated,
    #[error("TPMT_PUBLIC has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("unsupported key type 0x{0:04x} (only ECC P-256 and RSA)")]
    UnsupportedType(u16),
    #[error("unsupported nameAlg 0x{0:04x} (only SHA-256)")]
    UnsupportedNameAlg(u16),
    #[error("unsupported ECC curve 0x{0:04x} (only NIST P-256)")]
    UnsupportedCurve(u16),
    #[error("bad key field: {0}")]
    BadKey(&'static str),
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PublicError> {
        if self.data.len() < n {
            return Err(PublicError::Truncated);
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, PublicError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PublicError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn tpm2b(&mut self) -> Result<&'a [u8], PublicError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

impl TpmPublic {
    /// Parses a marshaled TPMT_PUBLIC (no TPM2B size prefix); all of
    /// `bytes` must be consumed.
    pub fn parse(bytes: &[u8]) -> Result<Self, PublicError> {
        let mut r = Reader { data: bytes };
        let key_type = r.u16()?;
        let name_alg = r.u16()?;
        if name_alg != TPM_ALG_SHA256 {
            return Err(PublicError::UnsupportedNameAlg(name_alg));
        }
        let object_attributes = r.u32()?;
        let _auth_policy = r.tpm2b()?;
        // TPMT_SYM_DEF_OBJECT: algorithm, then keyBits and mode unless NULL.
        let symmetric_alg = r.u16()?;
        let mut symmetric_key_bits = 0;
        if symmetric_alg != TPM_ALG_NULL {
            symmetric_key_bits = r.u16()?;
            let _mode = r.u16()?;
        }
        // TPMT_*_SCHEME: scheme, then its hash algorithm unless NULL.
        let scheme = r.u16()?;
        if scheme != TPM_ALG_NULL {
            let _scheme_hash = r.u16()?;
        }
        let key = match key_type {
            TPM_ALG_ECC => {
                let curve = r.u16()?;
                if curve != TPM_ECC_NIST_P256 {
                    return Err(PublicError::UnsupportedCurve(curve));
                }
                let kdf = r.u16()?;
                if kdf != TPM_ALG_NULL {
                    let _kdf_hash = r.u16()?;
                }
                let x = coordinate(r.tpm2b()?)?;
                let y = coordinate(r.tpm2b()?)?;
                PublicKey::EccP256 { x, y }
            }
            TPM_ALG_RSA => {
                let _key_bits = r.u16()?;
                let exponent = match r.u32()? {
                    0 => 65537,
                    e => e,
                };
                let modulus = r.tpm2b()?;
                if modulus.is_empty() {
                    return Err(PublicError::BadKey("empty RSA modulus"));
                }
                PublicKey::Rsa {
                    modulus: modulus.to_vec(),
                    exponent,
                }
            }
            other => return Err(PublicError::UnsupportedType(other)),
        };
        if !r.data.is_empty() {
            return Err(PublicError::TrailingBytes(r.data.len()));
        }
        Ok(Self {
            name_alg,
            object_attributes,
            symmetric_alg,
            symmetric_key_bits,
            key,
            marshaled: bytes.to_vec(),
        })
    }

    /// Parses a TPM2B_PUBLIC (tpm2-tools' `-f tss` public file).
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<Self, PublicError> {
        let mut r = Reader { data: bytes };
        let inner = r.tpm2b()?;
        if !r.data.is_empty() {
            return Err(PublicError::TrailingBytes(r.data.len()));
        }
        Self::parse(inner)
    }

    /// The marshaled TPMT_PUBLIC this was parsed from.
    pub fn marshaled(&self) -> &[u8] {
        &self.marshaled
    }

    /// The TPM name: nameAlg (big-endian) || SHA-256(TPMT_PUBLIC).
    pub fn name(&self) -> Vec<u8> {
        let mut name = self.name_alg.to_be_bytes().to_vec();
        name.extend_from_slice(&sha256(&self.marshaled));
        name
    }

    /// The key as an OpenSSL public key (for PEM export and comparisons).
    pub fn to_pkey(&self) -> Result<PKey<Public>, openssl::error::ErrorStack> {
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
    use proptest::prelude::*;

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
            Err(PublicError::TrailingBytes(1))
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
