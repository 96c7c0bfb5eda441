//! Public-area templates of the keys the A-VM creates.
//!
//! EK templates are the TCG EK Credential Profile "low range" defaults
//! (L-1 RSA 2048, L-2 ECC NIST P-256), so a TPM's EK created from them is the
//! key its manufacturer (here swtpm_setup) certified in NV.

use tpm2_protocol::basic::{TpmUint16, TpmUint32};
use tpm2_protocol::data::{
    Tpm2bDigest, Tpm2bEccParameter, Tpm2bPublicKeyRsa, TpmAlgId, TpmEccCurve, TpmaObject,
    TpmsEccParms, TpmsEccPoint, TpmsRsaParms, TpmsSchemeHash, TpmtEccScheme, TpmtKdfScheme,
    TpmtPublic, TpmtRsaScheme, TpmtSymDefObject, TpmuAsymScheme, TpmuPublicId, TpmuPublicParms,
    TpmuSymKeyBits, TpmuSymMode,
};

use crate::error::{Result, TpmError};

/// `PolicySecret(TPM_RH_ENDORSEMENT)` with SHA-256: the EK's authPolicy
/// ("policy A" of the EK Credential Profile).
pub const EK_POLICY_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

/// Algorithm of the endorsement key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkAlgorithm {
    /// Template L-2, certificate at NV index 0x01C0000A.
    EccP256,
    /// Template L-1, certificate at NV index 0x01C00002.
    Rsa2048,
}

impl EkAlgorithm {
    /// NV index of the EK certificate for this template.
    #[must_use]
    pub fn certificate_nv_index(self) -> u32 {
        match self {
            Self::EccP256 => 0x01C0_000A,
            Self::Rsa2048 => 0x01C0_0002,
        }
    }
}

/// Algorithm of the attestation key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AkAlgorithm {
    /// ECDSA over NIST P-256 with SHA-256.
    #[default]
    EccP256,
    /// RSASSA-PKCS1-v1_5 2048 with SHA-256.
    Rsa2048,
}

fn digest(bytes: &[u8]) -> Result<Tpm2bDigest> {
    Tpm2bDigest::try_from(bytes).map_err(TpmError::Marshal)
}

fn ecc_parameter(bytes: &[u8]) -> Result<Tpm2bEccParameter> {
    Tpm2bEccParameter::try_from(bytes).map_err(TpmError::Marshal)
}

/// AES-128-CFB, the EK's symmetric algorithm for its storage role.
fn aes_128_cfb() -> TpmtSymDefObject {
    TpmtSymDefObject {
        algorithm: TpmAlgId::Aes,
        key_bits: TpmuSymKeyBits::Aes(TpmUint16::new(128)),
        mode: TpmuSymMode::Aes(TpmAlgId::Cfb),
    }
}

fn no_symmetric() -> TpmtSymDefObject {
    TpmtSymDefObject {
        algorithm: TpmAlgId::Null,
        ..TpmtSymDefObject::default()
    }
}

fn sha256_scheme() -> TpmuAsymScheme {
    TpmuAsymScheme::Hash(TpmsSchemeHash {
        hash_alg: TpmAlgId::Sha256,
    })
}

/// The TCG default EK template for `alg`.
///
/// # Errors
///
/// Only if `tpm2-protocol` rejects a constant (never for these sizes).
pub fn ek_template(alg: EkAlgorithm) -> Result<TpmtPublic> {
    let object_attributes = TpmaObject::FIXED_TPM
        | TpmaObject::FIXED_PARENT
        | TpmaObject::SENSITIVE_DATA_ORIGIN
        | TpmaObject::ADMIN_WITH_POLICY
        | TpmaObject::RESTRICTED
        | TpmaObject::DECRYPT;
    let (object_type, parameters, unique) = match alg {
        EkAlgorithm::Rsa2048 => (
            TpmAlgId::Rsa,
            TpmuPublicParms::Rsa(TpmsRsaParms {
                symmetric: aes_128_cfb(),
                scheme: TpmtRsaScheme {
                    scheme: TpmAlgId::Null,
                    details: TpmuAsymScheme::Null,
                },
                key_bits: TpmUint16::new(2048),
                exponent: TpmUint32::new(0),
            }),
            TpmuPublicId::Rsa(
                Tpm2bPublicKeyRsa::try_from(&[0u8; 256][..]).map_err(TpmError::Marshal)?,
            ),
        ),
        EkAlgorithm::EccP256 => (
            TpmAlgId::Ecc,
            TpmuPublicParms::Ecc(TpmsEccParms {
                symmetric: aes_128_cfb(),
                scheme: TpmtEccScheme {
                    scheme: TpmAlgId::Null,
                    details: TpmuAsymScheme::Null,
                },
                curve_id: TpmEccCurve::NistP256,
                kdf: TpmtKdfScheme::default(),
            }),
            TpmuPublicId::Ecc(TpmsEccPoint {
                x: ecc_parameter(&[0; 32])?,
                y: ecc_parameter(&[0; 32])?,
            }),
        ),
    };
    Ok(TpmtPublic {
        object_type,
        name_alg: TpmAlgId::Sha256,
        object_attributes,
        auth_policy: digest(&EK_POLICY_SHA256)?,
        parameters,
        unique,
    })
}

/// A restricted signing key template for quotes: fixedTPM, fixedParent,
/// sensitiveDataOrigin, userWithAuth (empty password), restricted, sign.
///
/// # Errors
///
/// Only if `tpm2-protocol` rejects a constant (never for these sizes).
pub fn ak_template(alg: AkAlgorithm) -> Result<TpmtPublic> {
    let object_attributes = TpmaObject::FIXED_TPM
        | TpmaObject::FIXED_PARENT
        | TpmaObject::SENSITIVE_DATA_ORIGIN
        | TpmaObject::USER_WITH_AUTH
        | TpmaObject::RESTRICTED
        | TpmaObject::SIGN_ENCRYPT;
    let (object_type, parameters, unique) = match alg {
        AkAlgorithm::Rsa2048 => (
            TpmAlgId::Rsa,
            TpmuPublicParms::Rsa(TpmsRsaParms {
                symmetric: no_symmetric(),
                scheme: TpmtRsaScheme {
                    scheme: TpmAlgId::Rsassa,
                    details: sha256_scheme(),
                },
                key_bits: TpmUint16::new(2048),
                exponent: TpmUint32::new(0),
            }),
            TpmuPublicId::Rsa(Tpm2bPublicKeyRsa::default()),
        ),
        AkAlgorithm::EccP256 => (
            TpmAlgId::Ecc,
            TpmuPublicParms::Ecc(TpmsEccParms {
                symmetric: no_symmetric(),
                scheme: TpmtEccScheme {
                    scheme: TpmAlgId::Ecdsa,
                    details: sha256_scheme(),
                },
                curve_id: TpmEccCurve::NistP256,
                kdf: TpmtKdfScheme::default(),
            }),
            TpmuPublicId::Ecc(TpmsEccPoint::default()),
        ),
    };
    Ok(TpmtPublic {
        object_type,
        name_alg: TpmAlgId::Sha256,
        object_attributes,
        auth_policy: Tpm2bDigest::default(),
        parameters,
        unique,
    })
}
