//! Times `verify_evidence` on the real ECDSA fixture, with OpenSSL checking
//! the signature and with the signature check stubbed out (the core's own
//! cost: parsing, replay, policy). Run in release:
//! `cargo run --release -p avm-attest --example verify_speed`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use avm_attest::tpm::Public;
use avm_attest::verify::{EvidenceInput, SignatureVerifier, verify_evidence};
use common::*;

struct AcceptAll;

impl SignatureVerifier for AcceptAll {
    fn verify_ecdsa_p256_sha256(&self, _: &[u8], _: &[u8], _: &[u8], _: &[u8], _: &[u8]) -> bool {
        true
    }
    fn verify_rsassa_pkcs1v15_sha256(&self, _: &[u8], _: u32, _: &[u8], _: &[u8]) -> bool {
        true
    }
}

fn time(label: &str, rounds: u32, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    for _ in 0..rounds {
        assert!(f());
    }
    let per = start.elapsed() / rounds;
    println!(
        "{label}: {per:?} per verification, {:.0}/s",
        1.0 / per.as_secs_f64()
    );
}

fn main() {
    let log_bytes = data("seabios-eventlog.bin");
    time("event log parse (64 KiB area)", 2000, || {
        avm_attest::eventlog::EventLog::parse(&log_bytes).is_ok()
    });
    let log = avm_attest::eventlog::EventLog::parse(&log_bytes).expect("log");
    let used = &log_bytes[..log.used_len()];
    time("event log parse (used part only)", 2000, || {
        avm_attest::eventlog::EventLog::parse(used).is_ok()
    });
    time("event log replay", 2000, || {
        log.replay_sha256(&avm_attest::eventlog::initial_pcrs([0; 32]))
            .is_ok()
    });
    let policy = good_policy();
    let nonce = nonce();
    for kind in ["ecc", "rsa"] {
        let evidence = evidence(kind);
        let ak_bytes = data(&format!("ak-{kind}.pub"));
        let ak = Public::parse_tpm2b(&ak_bytes).expect("AK");
        let input = EvidenceInput::new(&evidence, &nonce, ak.verifying_key().expect("key"));
        time(&format!("{kind} core only"), 2000, || {
            verify_evidence(&input, Some(&policy), &AcceptAll).trusted
        });
        time(&format!("{kind} with OpenSSL"), 2000, || {
            verify_evidence(&input, Some(&policy), &OpensslVerifier).trusted
        });
    }
}
