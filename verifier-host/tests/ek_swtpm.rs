//! EK certificate validation against swtpm_setup/swtpm-localca certificates.

mod common;

use avm_verifier::ek::{EkTrustAnchors, validate_ek};
use avm_verifier::tpm_public::TpmPublic;
use common::ProvisionedTpm;

#[test]
fn ek_certificate_from_swtpm_localca_is_accepted_and_other_ca_or_key_refused() {
    let node = ProvisionedTpm::new();
    let cert = node.rsa_ek_cert();
    let ek = TpmPublic::parse_tpm2b(&node.rsa_ek_public()).expect("EK public parses");
    let anchors = EkTrustAnchors::from_pem_file(&node.ca_bundle).expect("CA bundle loads");
    validate_ek(&anchors, &ek, &cert).expect("EK certificate chains to the local CA");

    // Only the issuing CA as anchor: still accepted (partial chain).
    let issuer_only = EkTrustAnchors::from_pem_file(&node.issuer_ca).expect("issuer loads");
    validate_ek(&issuer_only, &ek, &cert).expect("issuer alone is a trust anchor");

    // A second, independently manufactured TPM has another CA and EK.
    let other = ProvisionedTpm::new();
    let other_anchors = EkTrustAnchors::from_pem_file(&other.ca_bundle).expect("loads");
    let err = validate_ek(&other_anchors, &ek, &cert).unwrap_err();
    assert_eq!(err.code(), "ek-cert-untrusted", "{err}");

    let other_ek = TpmPublic::parse_tpm2b(&other.rsa_ek_public()).expect("parses");
    let err = validate_ek(&anchors, &other_ek, &cert).unwrap_err();
    assert_eq!(err.code(), "ek-key-mismatch", "{err}");

    // A flipped byte in the signature breaks the chain.
    let mut forged = cert.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let err = validate_ek(&anchors, &ek, &forged).unwrap_err();
    assert_eq!(err.code(), "ek-cert-untrusted", "{err}");
}
