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

/// OpenSSL with the P-256 key built once: building an `EcKey` from affine
/// coordinates checks the point (a scalar multiplication), which costs about
/// as much as the verification itself.
struct CachedKeyVerifier {
    key: std::cell::RefCell<Option<(Vec<u8>, openssl::ec::EcKey<openssl::pkey::Public>)>>,
}

impl SignatureVerifier for CachedKeyVerifier {
    fn verify_ecdsa_p256_sha256(
        &self,
        x: &[u8],
        y: &[u8],
        message: &[u8],
        r: &[u8],
        s: &[u8],
    ) -> bool {
        use openssl::bn::BigNum;
        let id = [x, y].concat();
        let mut cache = self.key.borrow_mut();
        if cache.as_ref().is_none_or(|(cached, _)| *cached != id) {
            let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                .expect("group");
            let (bx, by) = (
                BigNum::from_slice(x).expect("x"),
                BigNum::from_slice(y).expect("y"),
            );
            let key = openssl::ec::EcKey::from_public_key_affine_coordinates(&group, &bx, &by)
                .expect("key");
            *cache = Some((id, key));
        }
        let Some((_, key)) = cache.as_ref() else {
            return false;
        };
        let sig = openssl::ecdsa::EcdsaSig::from_private_components(
            BigNum::from_slice(r).expect("r"),
            BigNum::from_slice(s).expect("s"),
        )
        .expect("sig");
        sig.verify(&openssl::sha::sha256(message), key)
            .unwrap_or(false)
    }
    fn verify_rsassa_pkcs1v15_sha256(&self, n: &[u8], e: u32, message: &[u8], sig: &[u8]) -> bool {
        OpensslVerifier.verify_rsassa_pkcs1v15_sha256(n, e, message, sig)
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
        let cached = CachedKeyVerifier {
            key: std::cell::RefCell::new(None),
        };
        time(&format!("{kind} with OpenSSL, key cached"), 2000, || {
            verify_evidence(&input, Some(&policy), &cached).trusted
        });
    }
}
