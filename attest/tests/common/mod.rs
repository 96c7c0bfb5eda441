//! Shared by the integration tests: the real fixtures of tests/data and a
//! the verifier's OpenSSL SignatureVerifier.
#![allow(dead_code)]

use avm_attest::eventlog::EventLog;
use avm_attest::policy::ReferenceValues;

pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    avm_attest::hex::decode_array(text).ok()
}
use avm_attest::wire::{Evidence, PcrValue};

/// Signature checks on OpenSSL, exactly as avm-verifier does them on the host.
pub fn verifier() -> avm_verifier::crypto::OpenSslVerifier {
    avm_verifier::crypto::OpenSslVerifier::new().expect("OpenSSL verifier")
}

pub fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn text(name: &str) -> String {
    String::from_utf8(data(name)).expect("utf-8 fixture")
}

pub fn nonce() -> Vec<u8> {
    let hex = text("nonce.hex");
    let hex = hex.trim();
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex nonce"))
        .collect()
}

pub fn image_sha256() -> [u8; 32] {
    parse_hex32(text("seabios-image.sha256").trim()).expect("image digest")
}

/// PCRs 0-7 as "index hex" lines.
pub fn pcrs(name: &str) -> Vec<PcrValue> {
    text(name)
        .lines()
        .map(|line| {
            let mut parts = line.split_whitespace();
            let index = parts.next().expect("index").parse().expect("index");
            let digest = parse_hex32(parts.next().expect("digest")).expect("digest");
            PcrValue { index, digest }
        })
        .collect()
}

/// Evidence as the A-VM would send it for the `kind` (ecc/rsa) quote.
pub fn evidence(kind: &str) -> Evidence {
    Evidence {
        attest: data(&format!("quote-{kind}.msg")),
        signature: data(&format!("quote-{kind}.sig")),
        pcrs: pcrs("pcrs.txt"),
        event_log: data("seabios-eventlog.bin"),
    }
}

/// The policy a verifier has after `policy init --avm-image` and
/// `policy learn` on the known-good boot.
pub fn good_policy() -> ReferenceValues {
    let mut policy = ReferenceValues::for_image(image_sha256());
    let log = EventLog::parse(&data("seabios-eventlog.bin")).expect("fixture log");
    assert!(policy.learn_from(&log) > 0);
    policy
}
