//! Values the command layer hands back: key public areas and names, quotes,
//! credentials. All are fixed-capacity (no allocator) and keep the exact
//! bytes the TPM produced, because signatures and names are computed over
//! those bytes.

use sha2::{Digest, Sha256};
use tpm2_protocol::basic::Tpm2b;
use tpm2_protocol::constant::MAX_ECC_KEY_BYTES;
use tpm2_protocol::data::{TpmAlgId, TpmtPublic, TpmuPublicIdView};
use tpm2_protocol::{TpmField, TpmUnmarshal};

use crate::error::{MalformedResponse, Result, TpmError, body_error};

/// Capacity for a marshaled `TPMT_PUBLIC` (an RSA-4096 key with a SHA-512
/// policy needs about 600 bytes).
pub const MAX_PUBLIC_LEN: usize = 1024;
/// Capacity for a marshaled `TPMS_ATTEST` or `TPMT_SIGNATURE`.
pub const MAX_ATTEST_LEN: usize = 1024;
/// Capacity for a TPM object name (hash algorithm id + the largest digest).
pub const MAX_NAME_LEN: usize = 66;

/// A TPM object name: `nameAlg || H(TPMT_PUBLIC)`.
pub type Name = heapless::Vec<u8, MAX_NAME_LEN>;

/// Copies `bytes` into a fixed-capacity vector, or reports which value was
/// too large.
pub(crate) fn bounded<const N: usize>(
    bytes: &[u8],
    what: &'static str,
) -> Result<heapless::Vec<u8, N>> {
    heapless::Vec::from_slice(bytes)
        .map_err(|_| TpmError::MalformedResponse(MalformedResponse::TooLarge(what)))
}

/// A marshaled `TPMT_PUBLIC`, exactly as the TPM returned it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublicArea(heapless::Vec<u8, MAX_PUBLIC_LEN>);

impl PublicArea {
    /// Wraps marshaled `TPMT_PUBLIC` bytes after checking they parse as one.
    ///
    /// # Errors
    ///
    /// [`TpmError::MalformedResponse`] when `bytes` is not exactly one
    /// `TPMT_PUBLIC` or is too large.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (_, rest) = TpmtPublic::unmarshal(bytes).map_err(body_error)?;
        if !rest.is_empty() {
            return Err(MalformedResponse::Inconsistent("trailing bytes after TPMT_PUBLIC").into());
        }
        Ok(Self(bounded(bytes, "TPMT_PUBLIC")?))
    }

    /// The marshaled `TPMT_PUBLIC`.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The marshaled `TPM2B_PUBLIC` (a big-endian u16 size, then the
    /// `TPMT_PUBLIC`), as tpm2-tools writes `*.pub` files.
    #[must_use]
    pub fn to_tpm2b(&self) -> heapless::Vec<u8, { MAX_PUBLIC_LEN + 2 }> {
        let mut out = heapless::Vec::new();
        // `MAX_PUBLIC_LEN` fits in a u16 and `out` has room for both parts.
        let len = u16::try_from(self.0.len()).unwrap_or(u16::MAX);
        let _ = out.extend_from_slice(&len.to_be_bytes());
        let _ = out.extend_from_slice(&self.0);
        out
    }

    /// The nameAlg field.
    #[must_use]
    pub fn name_alg(&self) -> Option<TpmAlgId> {
        let raw = u16::from_be_bytes([*self.0.get(2)?, *self.0.get(3)?]);
        TpmAlgId::try_from(raw).ok()
    }

    /// The object's name, `nameAlg || H(TPMT_PUBLIC)`.
    ///
    /// # Errors
    ///
    /// [`TpmError::InvalidArgument`] for a nameAlg other than SHA-256.
    pub fn name(&self) -> Result<Name> {
        if self.name_alg() != Some(TpmAlgId::Sha256) {
            return Err(TpmError::InvalidArgument(
                "only SHA-256 object names are supported",
            ));
        }
        let mut name = Name::new();
        let _ = name.extend_from_slice(&(TpmAlgId::Sha256 as u16).to_be_bytes());
        let _ = name.extend_from_slice(&Sha256::digest(&self.0));
        Ok(name)
    }

    /// The parsed public area (owned; about 1 KiB on the stack).
    ///
    /// # Errors
    ///
    /// Never for a value built by [`PublicArea::from_bytes`].
    pub fn parse(&self) -> Result<TpmtPublic> {
        TpmtPublic::unmarshal(&self.0)
            .map(|(public, _)| public)
            .map_err(body_error)
    }

    /// The public key, borrowed from the public area: an ECC point `(x, y)`
    /// or an RSA modulus.
    ///
    /// # Errors
    ///
    /// [`TpmError::InvalidArgument`] for a symmetric or keyed-hash object.
    pub fn public_key(&self) -> Result<PublicKey<'_>> {
        let (view, _) = <TpmtPublic as TpmField>::cast_prefix_field(&self.0).map_err(body_error)?;
        match view.unique {
            TpmuPublicIdView::Rsa(modulus) => Ok(PublicKey::Rsa {
                modulus: modulus.data(),
            }),
            TpmuPublicIdView::Ecc(point) => {
                let (x, rest) = Tpm2b::<MAX_ECC_KEY_BYTES>::cast_prefix(point.as_bytes())
                    .map_err(body_error)?;
                let (y, _) = Tpm2b::<MAX_ECC_KEY_BYTES>::cast_prefix(rest).map_err(body_error)?;
                Ok(PublicKey::Ecc {
                    x: x.data(),
                    y: y.data(),
                })
            }
            _ => Err(TpmError::InvalidArgument("not an asymmetric key")),
        }
    }
}

/// A public key inside a [`PublicArea`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicKey<'a> {
    /// Affine coordinates, big-endian.
    Ecc { x: &'a [u8], y: &'a [u8] },
    /// Modulus, big-endian; the exponent is 65537 for the keys created here.
    Rsa { modulus: &'a [u8] },
}

/// A key loaded in the TPM (a transient handle) with its public area and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedKey {
    /// The transient object handle; flush it with [`crate::Tpm::flush_context`].
    pub handle: u32,
    /// Its marshaled `TPMT_PUBLIC`.
    pub public: PublicArea,
    /// Its name as the TPM reported it (checked against the public area).
    pub name: Name,
}

/// A TPM2_Quote result, as raw bytes for the verifier to parse. Written to
/// files unchanged they are tpm2-tools' `quote.msg` and `quote.sig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Marshaled `TPMS_ATTEST` (the contents of the `TPM2B_ATTEST`); the AK
    /// signed its SHA-256.
    pub attest: heapless::Vec<u8, MAX_ATTEST_LEN>,
    /// Marshaled `TPMT_SIGNATURE`.
    pub signature: heapless::Vec<u8, MAX_ATTEST_LEN>,
}

/// A credential wrapped for one EK and one key name (TPM2_MakeCredential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Contents of the `TPM2B_ID_OBJECT` (integrity HMAC and encrypted secret).
    pub blob: heapless::Vec<u8, 132>,
    /// Contents of the `TPM2B_ENCRYPTED_SECRET` (the seed, encrypted to the EK).
    pub secret: heapless::Vec<u8, 512>,
}

/// Fixed properties identifying the TPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TpmProperties {
    /// `TPM_PT_MANUFACTURER` as 4 ASCII bytes (e.g. `b"IBM\0"`).
    pub manufacturer: [u8; 4],
    /// `TPM_PT_FIRMWARE_VERSION_1`.
    pub firmware_version_1: u32,
    /// `TPM_PT_FIRMWARE_VERSION_2`.
    pub firmware_version_2: u32,
}

/// Result of `TPM2_Startup(CLEAR)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupOutcome {
    /// This call started the TPM.
    Started,
    /// The TPM was already started (firmware did it): `TPM_RC_INITIALIZE`.
    AlreadyStarted,
}
