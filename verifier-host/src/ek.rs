//! Endorsement key certificate checks: the EK certificate must chain to a CA
//! the verifier trusts (`--ek-ca`), and the EK the node announces must be the
//! key in that certificate.
//!
//! TCG EK certificates carry TPM-specific extensions (a critical
//! subjectAltName with a directoryName of TPM manufacturer/model/version
//! attributes, the EK certificate EKU 2.23.133.8.1, Subject Directory
//! Attributes). OpenSSL handles all of them; no purpose is imposed, since
//! the EK EKU is not one OpenSSL knows.

use std::path::Path;

use openssl::bn::{BigNum, BigNumContext};
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509StoreContext};

use crate::tpm_public::{PublicKey, TpmPublic};

/// Why an EK was not accepted. `code()` is the stable reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EkError {
    #[error("cannot read EK CA file {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("the node has no EK certificate in TPM NV")]
    CertificateMissing,
    #[error("EK certificate is not valid DER X.509: {0}")]
    CertificateMalformed(String),
    #[error("EK certificate does not chain to the trusted EK CA: {0}")]
    Untrusted(String),
    #[error("EK public key does not match the EK certificate: {0}")]
    KeyMismatch(&'static str),
}

impl EkError {
    /// Stable machine-readable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            EkError::CaFile { .. } => "ek-ca-unreadable",
            EkError::CertificateMissing => "ek-cert-missing",
            EkError::CertificateMalformed(_) => "ek-cert-malformed",
            EkError::Untrusted(_) => "ek-cert-untrusted",
            EkError::KeyMismatch(_) => "ek-key-mismatch",
        }
    }
}

/// Largest EK CA file read (a bundle of a few hundred certificates).
const MAX_CA_FILE_LEN: u64 = 1 << 20;

/// The trust anchors for EK certificates: every certificate in a PEM file
/// (for swtpm-localca: its issuing CA and root CA). Each one is trusted on
/// its own (partial chains are allowed), so a file holding only the issuing
/// CA works as well.
#[derive(Debug)]
pub struct EkTrustAnchors {
    certs: Vec<X509>,
}

impl EkTrustAnchors {
    pub fn from_pem_file(path: &Path) -> Result<Self, EkError> {
        let ca_error = |detail: String| EkError::CaFile {
            path: path.display().to_string(),
            detail,
        };
        let pem = crate::files::read_operator_file(path, MAX_CA_FILE_LEN)
            .map_err(|e| ca_error(e.to_string()))?;
        Self::from_pem(&pem).map_err(ca_error)
    }

    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let certs = X509::stack_from_pem(pem).map_err(|e| e.to_string())?;
        if certs.is_empty() {
            return Err("no PEM certificate in file".into());
        }
        Ok(Self { certs })
    }

    /// Verifies that `cert_der` is signed (possibly through the other
    /// certificates of the file) by one of the anchors, and is in its
    /// validity period.
    pub fn verify(&self, cert_der: &[u8]) -> Result<X509, EkError> {
        if cert_der.is_empty() {
            return Err(EkError::CertificateMissing);
        }
        let cert =
            X509::from_der(cert_der).map_err(|e| EkError::CertificateMalformed(e.to_string()))?;
        let untrusted = |e: openssl::error::ErrorStack| EkError::Untrusted(e.to_string());
        let mut store = X509StoreBuilder::new().map_err(untrusted)?;
        for anchor in &self.certs {
            store.add_cert(anchor.clone()).map_err(untrusted)?;
        }
        store
            .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
            .map_err(untrusted)?;
        let store = store.build();
        let chain = Stack::new().map_err(untrusted)?;
        let mut ctx = X509StoreContext::new().map_err(untrusted)?;
        let (ok, error) = ctx
            .init(&store, &cert, &chain, |c| {
                let ok = c.verify_cert()?;
                Ok((ok, c.error()))
            })
            .map_err(untrusted)?;
        if !ok {
            return Err(EkError::Untrusted(error.error_string().to_string()));
        }
        Ok(cert)
    }
}

/// Checks that the TPM's EK public area holds the certificate's key.
pub fn ek_matches_certificate(ek: &TpmPublic, cert: &X509) -> Result<(), EkError> {
    let mismatch = EkError::KeyMismatch;
    let key = cert
        .public_key()
        .map_err(|_| mismatch("certificate key unreadable"))?;
    match &ek.key {
        PublicKey::EccP256 { x, y } => {
            let ec = key
                .ec_key()
                .map_err(|_| mismatch("certificate key is not ECC"))?;
            if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
                return Err(mismatch("certificate key is not on P-256"));
            }
            let (mut cx, mut cy) = (
                BigNum::new().map_err(|_| mismatch("bignum"))?,
                BigNum::new().map_err(|_| mismatch("bignum"))?,
            );
            let mut ctx = BigNumContext::new().map_err(|_| mismatch("bignum"))?;
            ec.public_key()
                .affine_coordinates(ec.group(), &mut cx, &mut cy, &mut ctx)
                .map_err(|_| mismatch("certificate point unreadable"))?;
            let same = cx.to_vec_padded(32).ok().as_deref() == Some(&x[..])
                && cy.to_vec_padded(32).ok().as_deref() == Some(&y[..]);
            if !same {
                return Err(mismatch("ECC points differ"));
            }
        }
        PublicKey::Rsa { modulus, exponent } => {
            let rsa = key
                .rsa()
                .map_err(|_| mismatch("certificate key is not RSA"))?;
            // Compare as numbers so leading zero bytes do not matter.
            let n = BigNum::from_slice(modulus).map_err(|_| mismatch("bignum"))?;
            let e = BigNum::from_u32(*exponent).map_err(|_| mismatch("bignum"))?;
            if rsa.n() != &*n || rsa.e() != &*e {
                return Err(mismatch("RSA keys differ"));
            }
        }
    }
    Ok(())
}

/// The full EK check done at enrolment: chain, then key equality.
pub fn validate_ek(
    anchors: &EkTrustAnchors,
    ek: &TpmPublic,
    cert_der: &[u8],
) -> Result<X509, EkError> {
    let cert = anchors.verify(cert_der)?;
    ek_matches_certificate(ek, &cert)?;
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_certificates_have_their_own_reasons() {
        let anchors = EkTrustAnchors { certs: Vec::new() };
        assert_eq!(anchors.verify(&[]).unwrap_err().code(), "ek-cert-missing");
        assert_eq!(
            anchors.verify(&[0x30, 0x03, 1, 2]).unwrap_err().code(),
            "ek-cert-malformed"
        );
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        assert!(EkTrustAnchors::from_pem(b"not a certificate").is_err());
    }
}
