//! Shared by the integration tests: the real fixtures of tests/data and a
//! SignatureVerifier on OpenSSL (what avm-verifier uses on the host).
#![allow(dead_code)]

use avm_attest::eventlog::EventLog;
use avm_attest::policy::{ReferenceValues, parse_hex32};
use avm_attest::verify::SignatureVerifier;
use avm_attest::wire::{Evidence, PcrValue};
use openssl::bn::BigNum;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::sign::Verifier;

pub struct OpensslVerifier;

impl SignatureVerifier for OpensslVerifier {
    fn verify_ecdsa_p256_sha256(
        &self,
        x: &[u8],
        y: &[u8],
        message: &[u8],
        r: &[u8],
        s: &[u8],
    ) -> bool {
        let check = || -> Result<bool, openssl::error::ErrorStack> {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            // From the uncompressed encoding: decoding checks the point is
            // on the curve, and unlike `from_public_key_affine_coordinates`
            // it skips EC_KEY_check_key's scalar multiplication (P-256 has
            // cofactor 1, so an on-curve point is in the group): half the
            // cost of a verification saved.
            let mut ctx = BigNumContext::new()?;
            let encoded = [&[0x04][..], x, y].concat();
            let point = EcPoint::from_bytes(&group, &encoded, &mut ctx)?;
            let key = EcKey::from_public_key(&group, &point)?;
            let sig =
                EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?;
            let digest = openssl::sha::sha256(message);
            sig.verify(&digest, &key)
        };
        check().unwrap_or(false)
    }

    fn verify_rsassa_pkcs1v15_sha256(
        &self,
        modulus: &[u8],
        exponent: u32,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let check = || -> Result<bool, openssl::error::ErrorStack> {
            let rsa = Rsa::from_public_components(
                BigNum::from_slice(modulus)?,
                BigNum::from_u32(exponent)?,
            )?;
            let key = PKey::from_rsa(rsa)?;
            let mut verifier = Verifier::new(MessageDigest::sha256(), &key)?;
            verifier.update(message)?;
            verifier.verify(signature)
        };
        check().unwrap_or(false)
    }
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
