//! TPM2_MakeCredential computed on the host (TPM 2.0 Part 1, §24
//! "Credential Protection"; KDFa/KDFe from Part 1 §11.4.10).
//!
//! The verifier encrypts a random secret so that only the TPM holding the
//! EK's private key, and only for an object whose name is the AK's name, can
//! recover it with TPM2_ActivateCredential. Getting the secret back proves
//! the AK lives in the same TPM as the (certified) EK.
//!
//! Both EK templates (ECC P-256 and RSA-2048, TCG EK profile) use nameAlg
//! SHA-256 and AES-128-CFB as their symmetric algorithm, which is all this
//! module supports.

use openssl::bn::{BigNum, BigNumContext};
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey};
use openssl::encrypt::Encrypter;
use openssl::hash::{MessageDigest, hash};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::Signer;
use openssl::symm::{Cipher, encrypt};

use crate::tpm_public::PublicKey;

/// Size of the SHA-256 digest, the EK nameAlg: the seed and HMAC key size.
const DIGEST_LEN: usize = 32;
/// AES-128 key size of the EK's symmetric definition.
const SYM_KEY_BITS: u32 = 128;
/// Largest credential: a TPM2B_DIGEST for the EK's nameAlg.
pub const MAX_CREDENTIAL_LEN: usize = DIGEST_LEN;

/// The two halves of MakeCredential's output, as the wire protocol and
/// TPM2_ActivateCredential take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeCredential {
    /// TPM2B_ID_OBJECT contents: TPM2B(outerHMAC) || encIdentity.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents: a marshaled TPMS_ECC_POINT
    /// (ephemeral key) for an ECC EK, the RSA-OAEP ciphertext for an RSA EK.
    pub encrypted_secret: Vec<u8>,
}

/// Why a credential could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("credential must be 1..={MAX_CREDENTIAL_LEN} bytes, got {0}")]
    BadCredentialLength(usize),
    #[error("EK public key unusable: {0}")]
    BadEk(openssl::error::ErrorStack),
    #[error("crypto failure: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

/// Computes MakeCredential of `credential` for the object named `ak_name`,
/// protected to the EK `ek`.
pub fn make_credential(
    ek: &PublicKey,
    ak_name: &[u8],
    credential: &[u8],
) -> Result<MadeCredential, CredentialError> {
    if credential.is_empty() || credential.len() > MAX_CREDENTIAL_LEN {
        return Err(CredentialError::BadCredentialLength(credential.len()));
    }
    let (seed, encrypted_secret) = match ek {
        PublicKey::EccP256 { x, y } => ecc_seed(x, y)?,
        PublicKey::Rsa { modulus, exponent } => rsa_seed(modulus, *exponent)?,
    };
    let sym_key = kdfa(&seed, b"STORAGE", ak_name, &[], SYM_KEY_BITS)?;
    let mut plain = Vec::with_capacity(2 + credential.len());
    // Length checked above: fits in u16.
    plain.extend_from_slice(&(credential.len() as u16).to_be_bytes());
    plain.extend_from_slice(credential);
    let enc_identity = encrypt(Cipher::aes_128_cfb128(), &sym_key, Some(&[0u8; 16]), &plain)?;
    let hmac_key = kdfa(&seed, b"INTEGRITY", &[], &[], (DIGEST_LEN * 8) as u32)?;
    let outer_hmac = hmac_sha256(&hmac_key, &[&enc_identity, ak_name])?;
    let mut credential_blob = Vec::with_capacity(2 + DIGEST_LEN + enc_identity.len());
    credential_blob.extend_from_slice(&(DIGEST_LEN as u16).to_be_bytes());
    credential_blob.extend_from_slice(&outer_hmac);
    credential_blob.extend_from_slice(&enc_identity);
    Ok(MadeCredential {
        credential_blob,
        encrypted_secret,
    })
}

impl MadeCredential {
    /// tpm2-tools' credential file (`tpm2_makecredential -o`, read by
    /// `tpm2_activatecredential -i`): magic 0xBADCC0DE, version 1, then
    /// TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET.
    pub fn to_tpm2_tools_file(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xBADC_C0DEu32.to_be_bytes());
        out.extend_from_slice(&1u32.to_be_bytes());
        for part in [&self.credential_blob, &self.encrypted_secret] {
            // Both parts are far below 64 KiB (bounded by the key sizes).
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

/// ECC EK: one-pass ECDH with an ephemeral key (Part 1 §C.6.4).
/// seed = KDFe(SHA-256, Z.x, "IDENTITY", ephemeral.x, ek.x, 256).
fn ecc_seed(x: &[u8; 32], y: &[u8; 32]) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let (bx, by) = (BigNum::from_slice(x)?, BigNum::from_slice(y)?);
    let ek_point = EcKey::from_public_key_affine_coordinates(&group, &bx, &by)
        .and_then(|key| key.check_key().map(|()| key))
        .map_err(CredentialError::BadEk)?;
    let ek_pkey = PKey::from_ec_key(ek_point)?;
    let ephemeral = EcKey::generate(&group)?;
    let mut ctx = BigNumContext::new()?;
    let mut ex = BigNum::new()?;
    let mut ey = BigNum::new()?;
    ephemeral
        .public_key()
        .affine_coordinates(&group, &mut ex, &mut ey, &mut ctx)?;
    let ex = ex.to_vec_padded(32)?;
    let ey = ey.to_vec_padded(32)?;
    let ephemeral = PKey::from_ec_key(ephemeral)?;
    let mut deriver = Deriver::new(&ephemeral)?;
    deriver.set_peer(&ek_pkey)?;
    // OpenSSL's ECDH output is the shared point's x coordinate, padded to
    // the field size: exactly Z of the TPM's KDFe.
    let z = deriver.derive_to_vec()?;
    let seed = kdfe(&z, b"IDENTITY", &ex, x, (DIGEST_LEN * 8) as u32)?;
    let mut point = Vec::with_capacity(4 + 64);
    for coordinate in [&ex, &ey] {
        point.extend_from_slice(&32u16.to_be_bytes());
        point.extend_from_slice(coordinate);
    }
    Ok((seed, point))
}

/// RSA EK: a random seed encrypted with RSA-OAEP(SHA-256, label
/// "IDENTITY\0") (Part 1 §B.10.3).
fn rsa_seed(modulus: &[u8], exponent: u32) -> Result<(Vec<u8>, Vec<u8>), CredentialError> {
    let rsa =
        Rsa::from_public_components(BigNum::from_slice(modulus)?, BigNum::from_u32(exponent)?)
            .map_err(CredentialError::BadEk)?;
    let pkey = PKey::from_rsa(rsa)?;
    let mut seed = vec![0u8; DIGEST_LEN];
    openssl::rand::rand_bytes(&mut seed)?;
    let mut encrypter = Encrypter::new(&pkey)?;
    encrypter.set_rsa_padding(Padding::PKCS1_OAEP)?;
    encrypter.set_rsa_oaep_md(MessageDigest::sha256())?;
    encrypter.set_rsa_mgf1_md(MessageDigest::sha256())?;
    encrypter.set_rsa_oaep_label(b"IDENTITY\0")?;
    let mut out = vec![0u8; encrypter.encrypt_len(&seed)?];
    let len = encrypter.encrypt(&seed, &mut out)?;
    out.truncate(len);
    Ok((seed, out))
}

/// KDFa with SHA-256 in counter mode (SP 800-108):
/// HMAC(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32).
pub fn kdfa(
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    counter_kdf(bits, |counter| {
        hmac_sha256(
            key,
            &[
                &counter.to_be_bytes(),
                label,
                &[0],
                context_u,
                context_v,
                &bits.to_be_bytes(),
            ],
        )
    })
}

/// KDFe with SHA-256 (SP 800-56A concatenation KDF):
/// H([i]32 || Z || label || 0x00 || partyUInfo || partyVInfo).
pub fn kdfe(
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    counter_kdf(bits, |counter| {
        let input = [&counter.to_be_bytes()[..], z, label, &[0], party_u, party_v].concat();
        Ok(hash(MessageDigest::sha256(), &input)?.to_vec())
    })
}

/// The counter-mode loop both KDFs share: blocks for counter 1, 2, ...
/// concatenated and cut to `bits` (rounded up to whole bytes).
fn counter_kdf(
    bits: u32,
    mut block: impl FnMut(u32) -> Result<Vec<u8>, openssl::error::ErrorStack>,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + DIGEST_LEN);
    let mut counter: u32 = 1;
    while out.len() < bytes {
        out.extend_from_slice(&block(counter)?);
        counter += 1;
    }
    out.truncate(bytes);
    Ok(out)
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let key = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    for part in parts {
        signer.update(part)?;
    }
    signer.sign_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_output_length_and_determinism() {
        let a = kdfa(b"seed", b"STORAGE", b"name", &[], 128).unwrap();
        assert_eq!(a.len(), 16);
        assert_eq!(a, kdfa(b"seed", b"STORAGE", b"name", &[], 128).unwrap());
        // The requested size is part of the input, so a longer output is not
        // an extension of a shorter one.
        let b = kdfa(b"seed", b"STORAGE", b"name", &[], 256).unwrap();
        assert_ne!(&b[..16], &a[..]);
    }

    #[test]
    fn rejects_bad_credential_lengths() {
        let ek = PublicKey::EccP256 {
            x: [1; 32],
            y: [2; 32],
        };
        assert!(matches!(
            make_credential(&ek, b"\x00\x0bname", &[]),
            Err(CredentialError::BadCredentialLength(0))
        ));
        assert!(matches!(
            make_credential(&ek, b"\x00\x0bname", &[0; 33]),
            Err(CredentialError::BadCredentialLength(33))
        ));
    }

    #[test]
    fn rejects_ecc_point_off_the_curve() {
        let ek = PublicKey::EccP256 {
            x: [1; 32],
            y: [2; 32],
        };
        assert!(matches!(
            make_credential(&ek, b"\x00\x0bname", &[7; 32]),
            Err(CredentialError::BadEk(_))
        ));
    }
}
