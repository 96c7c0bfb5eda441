//! Checked views of the TPM 2.0 structures that make up evidence:
//! TPMS_ATTEST (the quoted message), TPMT_SIGNATURE, TPMT_PUBLIC (EK and AK),
//! TPM names and PCR selections.
//!
//! All TPM structures are big-endian. Every `parse` reads its input through
//! a bounds-checked cursor, rejects trailing bytes, and returns a borrowed
//! view: nothing here panics or allocates on untrusted input.

use alloc::vec::Vec;
use sha2::{Digest, Sha256};

use crate::pcr::PcrMask;
use crate::reader::Reader;

/// `TPM_GENERATED_VALUE`: every TPMS_ATTEST the TPM signs starts with it.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

/// TPM_ALG_ID values.
pub mod alg {
    pub const RSA: u16 = 0x0001;
    pub const SHA1: u16 = 0x0004;
    pub const AES: u16 = 0x0006;
    pub const MGF1: u16 = 0x0007;
    pub const KEYEDHASH: u16 = 0x0008;
    pub const XOR: u16 = 0x000A;
    pub const SHA256: u16 = 0x000B;
    pub const SHA384: u16 = 0x000C;
    pub const SHA512: u16 = 0x000D;
    pub const NULL: u16 = 0x0010;
    pub const SM4: u16 = 0x0013;
    pub const RSASSA: u16 = 0x0014;
    pub const RSAES: u16 = 0x0015;
    pub const RSAPSS: u16 = 0x0016;
    pub const OAEP: u16 = 0x0017;
    pub const ECDSA: u16 = 0x0018;
    pub const ECDH: u16 = 0x0019;
    pub const ECDAA: u16 = 0x001A;
    pub const SM2: u16 = 0x001B;
    pub const ECSCHNORR: u16 = 0x001C;
    pub const KDF1_SP800_56A: u16 = 0x0020;
    pub const KDF2: u16 = 0x0021;
    pub const KDF1_SP800_108: u16 = 0x0022;
    pub const ECC: u16 = 0x0023;
    pub const SYMCIPHER: u16 = 0x0025;
    pub const CAMELLIA: u16 = 0x0026;
    pub const CFB: u16 = 0x0043;
}

/// `TPM_ECC_NIST_P256`.
pub const ECC_NIST_P256: u16 = 0x0003;

/// Largest selection bitmap accepted (32 PCRs; PC Client TPMs have 24).
pub const MAX_PCR_SELECT_LEN: usize = 4;
/// Most banks accepted in one TPML_PCR_SELECTION (TPM has at most a few).
pub const MAX_PCR_BANKS: usize = 8;

/// Why a TPM structure was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmParseError {
    /// The input ended inside the structure.
    Truncated,
    /// Bytes remain after the structure.
    TrailingBytes,
    /// A selector (algorithm, type, scheme) this parser does not know.
    Unsupported { what: &'static str, value: u16 },
    /// A field is out of its allowed range.
    Invalid { what: &'static str },
}

impl core::fmt::Display for TpmParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("structure truncated"),
            Self::TrailingBytes => f.write_str("trailing bytes after the structure"),
            Self::Unsupported { what, value } => write!(f, "unsupported {what} {value:#06x}"),
            Self::Invalid { what } => write!(f, "invalid {what}"),
        }
    }
}

type Result<T> = core::result::Result<T, TpmParseError>;

const TRUNCATED: TpmParseError = TpmParseError::Truncated;

fn finish(r: &Reader<'_>) -> Result<()> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(TpmParseError::TrailingBytes)
    }
}

/// A TPML_PCR_SELECTION: (hash algorithm, bitmap) per bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// (hash, the selected PCRs) per TPMS_PCR_SELECTION, in the order of
    /// the structure.
    pub banks: Vec<(u16, PcrMask)>,
}

impl PcrSelection {
    /// A selection of the SHA-256 bank only, as the A-VM quotes it.
    pub fn sha256(mask: PcrMask) -> Self {
        Self {
            banks: alloc::vec![(alg::SHA256, mask)],
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let count = r.u32_be().ok_or(TRUNCATED)?;
        if count as usize > MAX_PCR_BANKS {
            return Err(TpmParseError::Invalid {
                what: "PCR selection count",
            });
        }
        let mut banks = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let hash = r.u16_be().ok_or(TRUNCATED)?;
            let size = usize::from(r.u8().ok_or(TRUNCATED)?);
            if size > MAX_PCR_SELECT_LEN {
                return Err(TpmParseError::Invalid {
                    what: "PCR selection size",
                });
            }
            let bitmap = r.bytes(size).ok_or(TRUNCATED)?;
            // Byte i, bit j selects PCR 8*i + j.
            let mask = bitmap
                .iter()
                .enumerate()
                .fold(0u32, |m, (i, &b)| m | (u32::from(b) << (8 * i)));
            banks.push((hash, PcrMask::from_bits(mask)));
        }
        Ok(Self { banks })
    }

    /// Parses a marshaled TPML_PCR_SELECTION.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let sel = Self::read(&mut r)?;
        finish(&r)?;
        Ok(sel)
    }

    /// Marshals the selection (3-byte bitmaps, 4 if a PCR above 23 is set).
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.banks.len() as u32).to_be_bytes());
        for &(hash, mask) in &self.banks {
            let bits = mask.bits();
            let size = if bits >> 24 != 0 { 4 } else { 3 };
            out.extend_from_slice(&hash.to_be_bytes());
            out.push(size as u8);
            out.extend_from_slice(&bits.to_le_bytes()[..size]);
        }
        out
    }

    /// The selected PCRs if the selection covers the SHA-256 bank only
    /// (other banks may appear with empty bitmaps); `None` otherwise.
    pub fn sha256_mask(&self) -> Option<PcrMask> {
        let mut mask = None;
        for &(hash, bits) in &self.banks {
            match (hash, mask) {
                (alg::SHA256, None) => mask = Some(bits),
                (_, _) if bits.is_empty() => {}
                _ => return None,
            }
        }
        mask
    }
}

/// `pcrDigest` of a quote over the SHA-256 bank: SHA-256 of the selected
/// PCR values concatenated in selection order.
pub fn pcr_digest<'a>(values: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in values {
        h.update(v);
    }
    h.finalize().into()
}

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// TPMS_QUOTE_INFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo<'a> {
    pub pcr_select: PcrSelection,
    pub pcr_digest: &'a [u8],
}

/// A TPMS_ATTEST. The header is always parsed; the type-specific part is
/// parsed only for quotes (`quote`), since a verifier has no use for the
/// others and must reject them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest<'a> {
    pub magic: u32,
    pub attest_type: u16,
    pub qualified_signer: &'a [u8],
    pub extra_data: &'a [u8],
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    /// The TPMU_ATTEST bytes as they came.
    pub attested: &'a [u8],
    /// The parsed TPMS_QUOTE_INFO when `attest_type` is a quote.
    pub quote: Option<QuoteInfo<'a>>,
}

impl<'a> Attest<'a> {
    /// Parses a marshaled TPMS_ATTEST (tpm2-tools' `quote.msg`). A quote
    /// must end exactly after its pcrDigest; other types are kept raw.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let magic = r.u32_be().ok_or(TRUNCATED)?;
        let attest_type = r.u16_be().ok_or(TRUNCATED)?;
        let qualified_signer = r.tpm2b().ok_or(TRUNCATED)?;
        let extra_data = r.tpm2b().ok_or(TRUNCATED)?;
        let clock_info = ClockInfo {
            clock: r.u64_be().ok_or(TRUNCATED)?,
            reset_count: r.u32_be().ok_or(TRUNCATED)?,
            restart_count: r.u32_be().ok_or(TRUNCATED)?,
            safe: match r.u8().ok_or(TRUNCATED)? {
                0 => false,
                1 => true,
                _ => {
                    return Err(TpmParseError::Invalid {
                        what: "clock safe flag",
                    });
                }
            },
        };
        let firmware_version = r.u64_be().ok_or(TRUNCATED)?;
        let attested = r.rest();
        let quote = if attest_type == TPM_ST_ATTEST_QUOTE {
            let pcr_select = PcrSelection::read(&mut r)?;
            let pcr_digest = r.tpm2b().ok_or(TRUNCATED)?;
            finish(&r)?;
            Some(QuoteInfo {
                pcr_select,
                pcr_digest,
            })
        } else {
            None
        };
        Ok(Self {
            magic,
            attest_type,
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            attested,
            quote,
        })
    }

    /// Whether this is a TPM-generated quote (magic and type).
    pub fn is_quote(&self) -> bool {
        self.magic == TPM_GENERATED_VALUE && self.quote.is_some()
    }

    /// Marshals the structure (inverse of [`Self::parse`]).
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.magic.to_be_bytes());
        out.extend_from_slice(&self.attest_type.to_be_bytes());
        put_tpm2b(&mut out, self.qualified_signer);
        put_tpm2b(&mut out, self.extra_data);
        out.extend_from_slice(&self.clock_info.clock.to_be_bytes());
        out.extend_from_slice(&self.clock_info.reset_count.to_be_bytes());
        out.extend_from_slice(&self.clock_info.restart_count.to_be_bytes());
        out.push(u8::from(self.clock_info.safe));
        out.extend_from_slice(&self.firmware_version.to_be_bytes());
        match &self.quote {
            Some(q) => {
                out.extend_from_slice(&q.pcr_select.emit());
                put_tpm2b(&mut out, q.pcr_digest);
            }
            None => out.extend_from_slice(self.attested),
        }
        out
    }
}

fn put_tpm2b(out: &mut Vec<u8>, data: &[u8]) {
    // TPM2B sizes are u16; callers never hold more (parsed from a TPM2B).
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&data[..usize::from(len)]);
}

/// A TPMT_SIGNATURE of the kinds a quote can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature<'a> {
    /// TPM_ALG_ECDSA: big-endian r and s.
    Ecdsa { hash: u16, r: &'a [u8], s: &'a [u8] },
    /// TPM_ALG_RSASSA (PKCS#1 v1.5).
    RsaSsa { hash: u16, signature: &'a [u8] },
    /// TPM_ALG_RSAPSS.
    RsaPss { hash: u16, signature: &'a [u8] },
}

impl<'a> Signature<'a> {
    /// Parses a marshaled TPMT_SIGNATURE (tpm2-tools' `quote.sig`).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let sig_alg = r.u16_be().ok_or(TRUNCATED)?;
        let hash = r.u16_be().ok_or(TRUNCATED)?;
        let sig = match sig_alg {
            alg::ECDSA => Self::Ecdsa {
                hash,
                r: r.tpm2b().ok_or(TRUNCATED)?,
                s: r.tpm2b().ok_or(TRUNCATED)?,
            },
            alg::RSASSA => Self::RsaSsa {
                hash,
                signature: r.tpm2b().ok_or(TRUNCATED)?,
            },
            alg::RSAPSS => Self::RsaPss {
                hash,
                signature: r.tpm2b().ok_or(TRUNCATED)?,
            },
            other => {
                return Err(TpmParseError::Unsupported {
                    what: "signature algorithm",
                    value: other,
                });
            }
        };
        finish(&r)?;
        Ok(sig)
    }

    /// The hash algorithm the signature was made over.
    pub fn hash(&self) -> u16 {
        match *self {
            Self::Ecdsa { hash, .. } | Self::RsaSsa { hash, .. } | Self::RsaPss { hash, .. } => {
                hash
            }
        }
    }

    /// Marshals the signature (inverse of [`Self::parse`]).
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let (sig_alg, hash) = match *self {
            Self::Ecdsa { hash, .. } => (alg::ECDSA, hash),
            Self::RsaSsa { hash, .. } => (alg::RSASSA, hash),
            Self::RsaPss { hash, .. } => (alg::RSAPSS, hash),
        };
        out.extend_from_slice(&sig_alg.to_be_bytes());
        out.extend_from_slice(&hash.to_be_bytes());
        match *self {
            Self::Ecdsa { r, s, .. } => {
                put_tpm2b(&mut out, r);
                put_tpm2b(&mut out, s);
            }
            Self::RsaSsa { signature, .. } | Self::RsaPss { signature, .. } => {
                put_tpm2b(&mut out, signature)
            }
        }
        out
    }
}

/// A TPMT_SYM_DEF_OBJECT that is not TPM_ALG_NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymmetricDef {
    pub algorithm: u16,
    pub key_bits: u16,
    pub mode: u16,
}

/// A scheme selector with its hash (TPMT_RSA_SCHEME, TPMT_ECC_SCHEME,
/// TPMT_KDF_SCHEME that is not TPM_ALG_NULL). ECDAA's count is kept too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    pub scheme: u16,
    pub hash: Option<u16>,
    pub count: Option<u16>,
}

/// The key-specific part of a TPMT_PUBLIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicKey<'a> {
    Rsa {
        key_bits: u16,
        /// As stored: 0 means the default 65537.
        exponent: u32,
        modulus: &'a [u8],
    },
    Ecc {
        curve: u16,
        kdf: Option<Scheme>,
        x: &'a [u8],
        y: &'a [u8],
    },
}

/// A TPMT_PUBLIC of an RSA or ECC key (EK or AK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Public<'a> {
    /// The whole marshaled structure (what the name hashes).
    pub raw: &'a [u8],
    pub object_type: u16,
    pub name_alg: u16,
    pub object_attributes: u32,
    pub auth_policy: &'a [u8],
    pub symmetric: Option<SymmetricDef>,
    pub scheme: Option<Scheme>,
    pub key: PublicKey<'a>,
}

/// TPMA_OBJECT bits a verifier looks at.
pub mod object_attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN_ENCRYPT: u32 = 1 << 18;
}

/// A key a quote signature can be checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyingKey<'a> {
    /// Uncompressed point coordinates, big-endian.
    EccP256 { x: &'a [u8], y: &'a [u8] },
    /// Modulus big-endian; exponent already mapped (never 0).
    Rsa { modulus: &'a [u8], exponent: u32 },
}

fn read_symmetric(r: &mut Reader<'_>) -> Result<Option<SymmetricDef>> {
    let algorithm = r.u16_be().ok_or(TRUNCATED)?;
    match algorithm {
        alg::NULL => Ok(None),
        alg::AES | alg::SM4 | alg::CAMELLIA => Ok(Some(SymmetricDef {
            algorithm,
            key_bits: r.u16_be().ok_or(TRUNCATED)?,
            mode: r.u16_be().ok_or(TRUNCATED)?,
        })),
        other => Err(TpmParseError::Unsupported {
            what: "symmetric algorithm",
            value: other,
        }),
    }
}

fn read_scheme(r: &mut Reader<'_>, what: &'static str) -> Result<Option<Scheme>> {
    let scheme = r.u16_be().ok_or(TRUNCATED)?;
    let (hash, count) = match scheme {
        alg::NULL => return Ok(None),
        alg::RSAES => (None, None),
        alg::ECDAA => (
            Some(r.u16_be().ok_or(TRUNCATED)?),
            Some(r.u16_be().ok_or(TRUNCATED)?),
        ),
        alg::RSASSA
        | alg::RSAPSS
        | alg::OAEP
        | alg::ECDSA
        | alg::ECDH
        | alg::SM2
        | alg::ECSCHNORR
        | alg::MGF1
        | alg::KDF1_SP800_56A
        | alg::KDF2
        | alg::KDF1_SP800_108 => (Some(r.u16_be().ok_or(TRUNCATED)?), None),
        other => return Err(TpmParseError::Unsupported { what, value: other }),
    };
    Ok(Some(Scheme {
        scheme,
        hash,
        count,
    }))
}

impl<'a> Public<'a> {
    /// Parses a marshaled TPMT_PUBLIC (the contents of a TPM2B_PUBLIC).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let object_type = r.u16_be().ok_or(TRUNCATED)?;
        let name_alg = r.u16_be().ok_or(TRUNCATED)?;
        let object_attributes = r.u32_be().ok_or(TRUNCATED)?;
        let auth_policy = r.tpm2b().ok_or(TRUNCATED)?;
        let symmetric = read_symmetric(&mut r)?;
        let (scheme, key) = match object_type {
            alg::RSA => {
                let scheme = read_scheme(&mut r, "RSA scheme")?;
                let key_bits = r.u16_be().ok_or(TRUNCATED)?;
                let exponent = r.u32_be().ok_or(TRUNCATED)?;
                let modulus = r.tpm2b().ok_or(TRUNCATED)?;
                (
                    scheme,
                    PublicKey::Rsa {
                        key_bits,
                        exponent,
                        modulus,
                    },
                )
            }
            alg::ECC => {
                let scheme = read_scheme(&mut r, "ECC scheme")?;
                let curve = r.u16_be().ok_or(TRUNCATED)?;
                let kdf = read_scheme(&mut r, "KDF scheme")?;
                let x = r.tpm2b().ok_or(TRUNCATED)?;
                let y = r.tpm2b().ok_or(TRUNCATED)?;
                (scheme, PublicKey::Ecc { curve, kdf, x, y })
            }
            other => {
                return Err(TpmParseError::Unsupported {
                    what: "object type",
                    value: other,
                });
            }
        };
        finish(&r)?;
        Ok(Self {
            raw: bytes,
            object_type,
            name_alg,
            object_attributes,
            auth_policy,
            symmetric,
            scheme,
            key,
        })
    }

    /// Parses a TPM2B_PUBLIC (size-prefixed TPMT_PUBLIC, tpm2-tools' `.pub`).
    pub fn parse_tpm2b(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let inner = r.tpm2b().ok_or(TRUNCATED)?;
        finish(&r)?;
        Self::parse(inner)
    }

    /// The TPM name: nameAlg (big-endian) || SHA-256(TPMT_PUBLIC). Only
    /// SHA-256 name algorithms are supported.
    pub fn name(&self) -> Result<[u8; 34]> {
        if self.name_alg != alg::SHA256 {
            return Err(TpmParseError::Unsupported {
                what: "name algorithm",
                value: self.name_alg,
            });
        }
        let mut name = [0u8; 34];
        name[..2].copy_from_slice(&alg::SHA256.to_be_bytes());
        name[2..].copy_from_slice(&Sha256::digest(self.raw));
        Ok(name)
    }

    /// The key in the form signature checks take, for ECC NIST P-256 and
    /// RSA-2048 keys; `None` for anything else.
    pub fn verifying_key(&self) -> Option<VerifyingKey<'a>> {
        match self.key {
            PublicKey::Ecc { curve, x, y, .. }
                if curve == ECC_NIST_P256 && x.len() == 32 && y.len() == 32 =>
            {
                Some(VerifyingKey::EccP256 { x, y })
            }
            PublicKey::Rsa {
                key_bits: 2048,
                exponent,
                modulus,
            } if modulus.len() == 256 => Some(VerifyingKey::Rsa {
                modulus,
                exponent: if exponent == 0 { 65537 } else { exponent },
            }),
            _ => None,
        }
    }

    /// Whether the object has all the given TPMA_OBJECT bits.
    pub fn has_attributes(&self, bits: u32) -> bool {
        self.object_attributes & bits == bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn sample_attest(extra: &[u8], mask: u32) -> Vec<u8> {
        Attest {
            magic: TPM_GENERATED_VALUE,
            attest_type: TPM_ST_ATTEST_QUOTE,
            qualified_signer: &[0, 0x0b, 1, 2, 3],
            extra_data: extra,
            clock_info: ClockInfo {
                clock: 1234,
                reset_count: 1,
                restart_count: 2,
                safe: true,
            },
            firmware_version: 0x2019_0801_0000_0000,
            attested: &[],
            quote: Some(QuoteInfo {
                pcr_select: PcrSelection::sha256(PcrMask::from_bits(mask)),
                pcr_digest: &[0xab; 32],
            }),
        }
        .emit()
    }

    #[test]
    fn quote_round_trip() {
        let bytes = sample_attest(b"nonce", 0xff);
        let a = Attest::parse(&bytes).unwrap();
        assert!(a.is_quote());
        assert_eq!(a.extra_data, b"nonce");
        assert_eq!(a.clock_info.clock, 1234);
        let q = a.quote.as_ref().unwrap();
        assert_eq!(q.pcr_select.sha256_mask(), Some(PcrMask::FIRMWARE));
        assert_eq!(q.pcr_digest, [0xab; 32]);
        assert_eq!(a.emit(), bytes);
    }

    #[test]
    fn attest_rejects_truncation_trailing_bytes_and_bad_flags() {
        let bytes = sample_attest(b"n", 0x3);
        for cut in 0..bytes.len() {
            assert_eq!(
                Attest::parse(&bytes[..cut]),
                Err(TpmParseError::Truncated),
                "cut {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Attest::parse(&long), Err(TpmParseError::TrailingBytes));
        // The clock's safe flag is a TPMI_YES_NO.
        let safe_at = 4 + 2 + 2 + 5 + 2 + 1 + 8 + 4 + 4;
        let mut flag = bytes.clone();
        flag[safe_at] = 2;
        assert!(matches!(
            Attest::parse(&flag),
            Err(TpmParseError::Invalid { .. })
        ));
    }

    #[test]
    fn non_quote_types_keep_their_body_raw() {
        let mut bytes = sample_attest(b"n", 1);
        bytes[5] = 0x17; // TPM_ST_ATTEST_CERTIFY
        let a = Attest::parse(&bytes).unwrap();
        assert!(!a.is_quote());
        assert!(a.quote.is_none());
        assert_eq!(a.emit(), bytes);
    }

    #[test]
    fn pcr_selection_masks() {
        let sel = PcrSelection::sha256(PcrMask::from_bits(0x00_0081));
        let bytes = sel.emit();
        assert_eq!(bytes, [0, 0, 0, 1, 0, 0x0b, 3, 0x81, 0, 0]);
        assert_eq!(PcrSelection::parse(&bytes).unwrap(), sel);
        // A SHA-1 bank with an empty bitmap is fine, a selected one is not.
        let two = PcrSelection {
            banks: vec![
                (alg::SHA1, PcrMask::EMPTY),
                (alg::SHA256, PcrMask::FIRMWARE),
            ],
        };
        assert_eq!(two.sha256_mask(), Some(PcrMask::FIRMWARE));
        let both = PcrSelection {
            banks: vec![
                (alg::SHA1, PcrMask::from_bits(1)),
                (alg::SHA256, PcrMask::FIRMWARE),
            ],
        };
        assert_eq!(both.sha256_mask(), None);
        let twice = PcrSelection {
            banks: vec![
                (alg::SHA256, PcrMask::from_bits(1)),
                (alg::SHA256, PcrMask::from_bits(2)),
            ],
        };
        assert_eq!(twice.sha256_mask(), None);
        // Oversized bitmaps and counts are rejected.
        assert!(PcrSelection::parse(&[0, 0, 0, 1, 0, 0x0b, 5, 0, 0, 0, 0, 0]).is_err());
        assert!(PcrSelection::parse(&[0, 0, 0, 9]).is_err());
        let high = PcrSelection::sha256(PcrMask::from_bits(1 << 30));
        assert_eq!(PcrSelection::parse(&high.emit()).unwrap(), high);
    }

    #[test]
    fn pcr_digest_is_sha256_of_the_concatenation() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let mut cat = [0u8; 64];
        cat[..32].copy_from_slice(&a);
        cat[32..].copy_from_slice(&b);
        assert_eq!(pcr_digest([&a, &b]), <[u8; 32]>::from(Sha256::digest(cat)));
    }

    #[test]
    fn signatures_round_trip_and_reject_unknown_schemes() {
        let ecdsa = Signature::Ecdsa {
            hash: alg::SHA256,
            r: &[1; 32],
            s: &[2; 31],
        };
        let rsa = Signature::RsaSsa {
            hash: alg::SHA256,
            signature: &[3; 256],
        };
        for sig in [ecdsa, rsa] {
            let bytes = sig.emit();
            assert_eq!(Signature::parse(&bytes).unwrap(), sig);
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(Signature::parse(&long), Err(TpmParseError::TrailingBytes));
            assert_eq!(
                Signature::parse(&bytes[..bytes.len() - 1]),
                Err(TpmParseError::Truncated)
            );
        }
        assert!(matches!(
            Signature::parse(&[0, 0x1c, 0, 0x0b]),
            Err(TpmParseError::Unsupported { value: 0x1c, .. })
        ));
    }

    fn ecc_public(curve: u16, x_len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&alg::ECC.to_be_bytes());
        v.extend_from_slice(&alg::SHA256.to_be_bytes());
        v.extend_from_slice(&0x0005_0072u32.to_be_bytes());
        v.extend_from_slice(&[0, 0]); // authPolicy
        v.extend_from_slice(&alg::NULL.to_be_bytes()); // symmetric
        v.extend_from_slice(&alg::ECDSA.to_be_bytes());
        v.extend_from_slice(&alg::SHA256.to_be_bytes());
        v.extend_from_slice(&curve.to_be_bytes());
        v.extend_from_slice(&alg::NULL.to_be_bytes()); // kdf
        v.extend_from_slice(&(x_len as u16).to_be_bytes());
        v.extend(core::iter::repeat_n(7u8, x_len));
        v.extend_from_slice(&[0, 32]);
        v.extend_from_slice(&[8; 32]);
        v
    }

    #[test]
    fn ecc_public_name_and_key() {
        let bytes = ecc_public(ECC_NIST_P256, 32);
        let p = Public::parse(&bytes).unwrap();
        assert_eq!(
            p.scheme,
            Some(Scheme {
                scheme: alg::ECDSA,
                hash: Some(alg::SHA256),
                count: None
            })
        );
        let name = p.name().unwrap();
        assert_eq!(name[..2], [0, 0x0b]);
        assert_eq!(name[2..], Sha256::digest(&bytes)[..]);
        assert_eq!(
            p.verifying_key(),
            Some(VerifyingKey::EccP256 {
                x: &[7; 32],
                y: &[8; 32]
            })
        );
        // Other curves and odd coordinate sizes parse but cannot verify.
        assert_eq!(
            Public::parse(&ecc_public(0x0004, 32))
                .unwrap()
                .verifying_key(),
            None
        );
        assert_eq!(
            Public::parse(&ecc_public(ECC_NIST_P256, 31))
                .unwrap()
                .verifying_key(),
            None
        );
        // TPM2B wrapper.
        let mut wrapped = (bytes.len() as u16).to_be_bytes().to_vec();
        wrapped.extend_from_slice(&bytes);
        assert_eq!(Public::parse_tpm2b(&wrapped).unwrap(), p);
        for cut in 0..bytes.len() {
            assert!(Public::parse(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn non_sha256_names_are_unsupported() {
        let mut bytes = ecc_public(ECC_NIST_P256, 32);
        bytes[3] = 0x0c; // SHA-384
        assert!(matches!(
            Public::parse(&bytes).unwrap().name(),
            Err(TpmParseError::Unsupported { .. })
        ));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(a) = Attest::parse(&data) {
                // emit normalises bitmap sizes, so compare what they mean.
                let emitted = a.emit();
                let b = Attest::parse(&emitted).unwrap();
                prop_assert_eq!(&b.quote, &a.quote);
                prop_assert_eq!(b.extra_data, a.extra_data);
                prop_assert_eq!(b.emit(), emitted);
            }
            if let Ok(s) = Signature::parse(&data) {
                prop_assert_eq!(s.emit(), data.clone());
            }
            if let Ok(p) = Public::parse(&data) {
                let _ = p.name();
                let _ = p.verifying_key();
            }
            let _ = Public::parse_tpm2b(&data);
            let _ = PcrSelection::parse(&data);
        }

        #[test]
        fn mutated_quotes_never_panic(extra in proptest::collection::vec(any::<u8>(), 0..64),
                                      mask in any::<u32>(),
                                      flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6)) {
            let mut bytes = sample_attest(&extra, mask);
            let clean = Attest::parse(&bytes).unwrap();
            prop_assert_eq!(clean.quote.unwrap().pcr_select.sha256_mask(), Some(PcrMask::from_bits(mask)));
            for (at, v) in flips {
                let len = bytes.len();
                bytes[at % len] ^= v;
            }
            let _ = Attest::parse(&bytes);
        }
    }
}
