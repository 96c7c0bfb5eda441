//! Evidence directories: quotes made by tpm2_quote on a swtpm are verified,
//! and exported directories are accepted by tpm2_checkquote.

mod common;

use avm_attest::wire::Evidence;
use avm_verifier::appraise::{AppraisalInput, appraise};
use avm_verifier::crypto::OpenSslVerifier;
use avm_verifier::evidence_dir::{self, LoadedEvidence};
use avm_verifier::report::Report;
use common::{NONCE, checkquote, quoted_tpm, read};

fn appraise_loaded(loaded: &LoadedEvidence, nonce: &[u8]) -> Report {
    let verifier = OpenSslVerifier::new().expect("openssl");
    appraise(
        &AppraisalInput {
            attest: &loaded.attest,
            signature: &loaded.signature,
            pcrs: &loaded.pcrs,
            event_log: loaded.event_log.as_deref(),
            nonce,
            ak: &loaded.ak,
            ak_name: &loaded.ak_name,
        },
        None,
        &verifier,
        None,
        Vec::new(),
    )
}

fn tpm2_quote_directory_is_verified(alg: &str) {
    let (tpm, ak) = quoted_tpm(alg);
    let dir = tpm.path("quote");
    let loaded = evidence_dir::load(&dir).expect("tpm2_quote directory loads");
    assert_eq!(loaded.pcrs.len(), 8);
    assert!(loaded.event_log.is_none());
    assert_eq!(loaded.ak, ak.key);
    let nonce = avm_verifier::hex::decode(NONCE).expect("hex");

    let report = appraise_loaded(&loaded, &nonce);
    assert!(report.trusted(), "{}", report.human());
    assert!(!report.not_applicable.is_empty());

    let report = appraise_loaded(&loaded, b"another nonce");
    assert_eq!(report.codes(), ["nonce-mismatch"]);

    let mut flipped = loaded.clone();
    let last = flipped.attest.len() - 1;
    flipped.attest[last] ^= 1;
    assert!(report_codes(&flipped, &nonce).contains(&"signature-invalid".to_string()));

    let mut flipped = loaded.clone();
    let last = flipped.signature.len() - 1;
    flipped.signature[last] ^= 1;
    assert_eq!(report_codes(&flipped, &nonce), ["signature-invalid"]);

    let mut changed = loaded.clone();
    changed.pcrs[3].digest[0] ^= 1;
    assert_eq!(report_codes(&changed, &nonce), ["pcr-digest-mismatch"]);

    // Export it again in our format: tpm2_checkquote must accept it, and
    // reject it with another nonce.
    let export = tempfile::tempdir().expect("temp dir");
    let evidence = Evidence {
        attest: loaded.attest.clone(),
        signature: loaded.signature.clone(),
        pcrs: loaded.pcrs.clone(),
        event_log: Vec::new(),
    };
    evidence_dir::export(export.path(), &evidence, &ak, &nonce, &report).expect("export");
    assert_eq!(
        read(&export.path().join("quote.pcrs")),
        read(&dir.join("quote.pcrs")),
        "our PCR file is byte-identical to tpm2_quote's"
    );
    assert!(
        checkquote(export.path(), NONCE).status.success(),
        "tpm2_checkquote accepts the export"
    );
    assert!(
        !checkquote(export.path(), "00112233").status.success(),
        "and checks the nonce"
    );

    // Reading our own export gives the AK name too.
    let reloaded = evidence_dir::load(export.path()).expect("export loads");
    assert_eq!(reloaded.ak_name, ak.name());
    assert_eq!(reloaded.nonce.as_deref(), Some(&nonce[..]));
    assert!(appraise_loaded(&reloaded, &nonce).trusted());
}

fn report_codes(loaded: &LoadedEvidence, nonce: &[u8]) -> Vec<String> {
    appraise_loaded(loaded, nonce)
        .reasons
        .into_iter()
        .map(|r| r.code)
        .collect()
}

#[test]
fn ecc_tpm2_quote_directory_is_verified_and_export_checks() {
    tpm2_quote_directory_is_verified("ecc");
}

#[test]
fn rsa_tpm2_quote_directory_is_verified_and_export_checks() {
    tpm2_quote_directory_is_verified("rsa");
}
