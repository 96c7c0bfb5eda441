//! Evidence directories: quotes made by tpm2_quote on a swtpm are verified,
//! and exported directories are accepted by tpm2_checkquote.

mod common;

use avm_attest::wire::Evidence;
use avm_verifier::appraise::{AppraisalInput, appraise, appraise_quote_only};
use avm_verifier::crypto::OpenSslVerifier;
use avm_verifier::evidence_dir::{self, LoadedEvidence};
use avm_verifier::report::{Report, VerdictKind};
use common::{NONCE, checkquote, quoted_tpm, read};

/// The quote-only check with the directory's own key, as `verify --ak
/// DIR/ak.pem --quote-only` does (the test knows the key is the TPM's AK).
fn appraise_loaded(loaded: &LoadedEvidence, nonce: &[u8]) -> Report {
    let verifier = OpenSslVerifier::new().expect("openssl");
    let ak = loaded
        .claimed_ak
        .as_ref()
        .expect("the directory names its AK");
    let name = ak.name();
    appraise_quote_only(
        &AppraisalInput::from_loaded(loaded, nonce, ak.key(), &name),
        &verifier,
        None,
        Vec::new(),
    )
    .report
}

fn tpm2_quote_directory_is_verified(alg: &str) {
    let (tpm, ak) = quoted_tpm(alg);
    let dir = tpm.path("quote");
    let loaded = evidence_dir::load(&dir).expect("tpm2_quote directory loads");
    assert_eq!(loaded.pcrs.len(), 8);
    assert!(loaded.event_log.is_none());
    assert_eq!(loaded.claimed_ak.as_ref().map(|k| k.key()), Some(&ak.key));
    let nonce = avm_verifier::hex::decode(NONCE).expect("hex");

    let report = appraise_loaded(&loaded, &nonce);
    assert_eq!(
        report.verdict,
        VerdictKind::QuoteValid,
        "{}",
        report.human()
    );
    assert!(!report.trusted() && report.passed());
    assert!(!report.not_checked.is_empty());

    // Appraised as a node, the missing event log is a reason of its own:
    // never a skipped check.
    let full = appraise(
        &AppraisalInput::from_loaded(&loaded, &nonce, &ak.key, &[]),
        Some(&avm_verifier::appraise::PreparedPolicy::owned(
            avm_attest::policy::ReferenceValues::for_image([0; 32]),
        )),
        &OpenSslVerifier::new().expect("openssl"),
        None,
        Vec::new(),
    )
    .report;
    assert!(!full.passed());
    assert!(
        full.codes().contains(&"event-log-missing"),
        "{:?}",
        full.codes()
    );

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
    evidence_dir::export(export.path(), &evidence, None, &ak, &nonce, &report).expect("export");
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
    assert_eq!(
        reloaded.claimed_ak.as_ref().map(|k| k.name()),
        Some(ak.name())
    );
    assert_eq!(reloaded.nonce.as_deref(), Some(&nonce[..]));
    assert!(appraise_loaded(&reloaded, &nonce).passed());
    // An export never lands in a directory that is not empty.
    assert!(evidence_dir::export(export.path(), &evidence, None, &ak, &nonce, &report).is_err());
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
