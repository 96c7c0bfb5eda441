//! The whole verification core on arbitrary evidence: split the input into
//! attest, signature, PCR values and log, and check it never panics and
//! never trusts evidence whose signature check fails.
#![no_main]

use avm_attest::policy::ReferenceValues;
use avm_attest::tpm::VerifyingKey;
use avm_attest::verify::{EvidenceInput, SignatureVerifier, verify_evidence};
use avm_attest::wire::PcrValue;
use libfuzzer_sys::fuzz_target;

/// Rejects every signature: nothing may then be trusted.
struct RejectAll;

impl SignatureVerifier for RejectAll {
    fn verify_ecdsa_p256_sha256(&self, _: &[u8], _: &[u8], _: &[u8], _: &[u8], _: &[u8]) -> bool {
        false
    }
    fn verify_rsassa_pkcs1v15_sha256(&self, _: &[u8], _: u32, _: &[u8], _: &[u8]) -> bool {
        false
    }
}

/// Accepts every signature, to reach the checks behind it.
struct AcceptAll;

impl SignatureVerifier for AcceptAll {
    fn verify_ecdsa_p256_sha256(&self, _: &[u8], _: &[u8], _: &[u8], _: &[u8], _: &[u8]) -> bool {
        true
    }
    fn verify_rsassa_pkcs1v15_sha256(&self, _: &[u8], _: u32, _: &[u8], _: &[u8]) -> bool {
        true
    }
}

fn split(data: &[u8]) -> Option<(&[u8], &[u8], &[u8], &[u8])> {
    let (&a, rest) = data.split_first()?;
    let (&s, rest) = rest.split_first()?;
    let (&p, rest) = rest.split_first()?;
    let a = usize::from(a).min(rest.len());
    let (attest, rest) = rest.split_at(a);
    let s = usize::from(s).min(rest.len());
    let (signature, rest) = rest.split_at(s);
    let p = (usize::from(p % 9) * 33).min(rest.len());
    let (pcrs, log) = rest.split_at(p);
    Some((attest, signature, pcrs, log))
}

fuzz_target!(|data: &[u8]| {
    let Some((attest, signature, pcr_bytes, event_log)) = split(data) else {
        return;
    };
    let pcrs: Vec<PcrValue> = pcr_bytes
        .chunks_exact(33)
        .map(|c| {
            let mut digest = [0; 32];
            digest.copy_from_slice(&c[1..]);
            PcrValue { index: c[0], digest }
        })
        .collect();
    let policy = ReferenceValues::for_image([0; 32]);
    let input = EvidenceInput {
        attest,
        signature,
        pcrs: &pcrs,
        event_log,
        nonce: b"nonce",
        ak: VerifyingKey::EccP256 { x: &[1; 32], y: &[2; 32] },
        required_pcrs: avm_attest::pcr::PcrMask::FIRMWARE,
    };
    let verdict = verify_evidence(&input, Some(&policy), &RejectAll);
    assert!(!verdict.trusted);
    assert_eq!(verdict.trusted, verdict.reasons.is_empty());
    let verdict = verify_evidence(&input, Some(&policy), &AcceptAll);
    assert_eq!(verdict.trusted, verdict.reasons.is_empty());
});
