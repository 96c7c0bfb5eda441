//! A key file from an evidence directory or `verify --ak`: PEM
//! SubjectPublicKeyInfo, TPM2B_PUBLIC or TPMT_PUBLIC, all from outside.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = avm_verifier::evidence_dir::AkFile::parse(data) {
        let _ = key.name();
        let _ = key.key().verifying_key();
    }
    // What the verifier prints of a node's text is escaped, whatever it is.
    let text = String::from_utf8_lossy(data);
    let escaped = avm_verifier::sanitize::escape_control(&text);
    assert!(!escaped.chars().any(char::is_control));
});
