//! Acceptance: the A-VM serves attestation over the network. A node comes
//! up under QEMU + swtpm with its attestation port forwarded; a client
//! speaking the wire protocol gets the TPM's identity (Hello) and a quote
//! (Challenge -> Evidence) that verifies against the boot report, the EK
//! certificate the launcher provisioned and the image that was measured.

mod common;

use std::time::Instant;

use avm_attest::eventlog::{EventLog, hcrtm_pcr0_start, initial_pcrs};
use avm_attest::pcr::PcrMask;
use avm_attest::policy::ReferenceValues;
use avm_attest::tpm::{Attest, Public, PublicKey, VerifyingKey, pcr_digest};
use avm_attest::verify::{EvidenceInput, verify_evidence};
use avm_attest::wire::{KeyAlgorithm, PROTOCOL_VERSION, Request, Response};
use avm_qemu::hex;
use avm_qemu::measure::sha256_file;
use common::client::Client;

/// ECC NIST P-256 (TPM_ECC_NIST_P256).
const TPM_ECC_NIST_P256: u16 = 0x0003;

/// The uncompressed point (04 || x || y) of an ECC P-256 TPMT_PUBLIC.
fn ecc_point(public: &Public<'_>) -> Vec<u8> {
    match public.key {
        PublicKey::Ecc { curve, x, y, .. } => {
            assert_eq!(curve, TPM_ECC_NIST_P256, "not a P-256 key");
            [&[0x04][..], x, y].concat()
        }
        PublicKey::Rsa { .. } => panic!("expected an ECC key"),
    }
}

/// The public key of a DER certificate as an uncompressed P-256 point.
fn certificate_point(der: &[u8]) -> Vec<u8> {
    use openssl::bn::BigNumContext;
    use openssl::ec::PointConversionForm;
    let cert = openssl::x509::X509::from_der(der).expect("EK certificate is DER X.509");
    let key = cert
        .public_key()
        .and_then(|key| key.ec_key())
        .expect("EC public key");
    let mut ctx = BigNumContext::new().expect("OpenSSL context");
    key.public_key()
        .to_bytes(key.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
        .expect("encoding the point")
}

#[test]
fn hello_and_challenge_verify_against_the_measured_launch() {
    let dir = tempfile::tempdir().unwrap();
    let node = avm_qemu::testing::network_node(dir.path());
    let addr = node.attest_addr().expect("node has an attestation address");
    let report = node.report().expect("boot report").clone();
    let record = node.record().clone();
    assert_eq!(record.attest_addr, Some(addr.to_string()));
    assert_eq!(record.guest_attest_port, Some(7140));
    assert!(record.guest_ip.is_some());

    let mut client = Client::connect(addr).unwrap();
    let hello_sent = Instant::now();
    let hello = client.hello().unwrap();
    println!("Hello round trip: {:?}", hello_sent.elapsed());

    // Identity: the keys parse, their names are the ones in the boot
    // report, and the EK is the one the launcher certified.
    assert_eq!(hello.version, PROTOCOL_VERSION);
    assert_eq!(hello.ek.algorithm, KeyAlgorithm::EccP256);
    assert_eq!(hello.ak.algorithm, KeyAlgorithm::EccP256);
    let ek = Public::parse(&hello.ek.public).expect("EK TPMT_PUBLIC parses");
    let ak = Public::parse(&hello.ak.public).expect("AK TPMT_PUBLIC parses");
    assert_eq!(ek.name().unwrap().to_vec(), hello.ek.name);
    assert_eq!(ak.name().unwrap().to_vec(), hello.ak.name);
    assert_eq!(hello.ek.name, report.ek_name);
    assert_eq!(hello.ak.name, report.ak_name);
    assert_eq!(
        Some(hex::encode(&hello.ek.name)),
        record.ek_name_ecc_p256,
        "the A-VM's EK is not the provisioned P-256 EK"
    );
    assert!(!hello.ek_certificate.is_empty(), "no EK certificate");
    let provisioned = std::fs::read(record.ek_cert_ecc_p256.as_ref().unwrap()).unwrap();
    assert_eq!(hello.ek_certificate, provisioned);
    assert_eq!(certificate_point(&hello.ek_certificate), ecc_point(&ek));
    let ak_key = ak.verifying_key().expect("AK is a P-256 signing key");
    assert!(matches!(ak_key, VerifyingKey::EccP256 { .. }));

    // Evidence for a fresh nonce over PCRs 0-7.
    let nonce = common::random_bytes(32);
    let challenged = Instant::now();
    let evidence = client
        .challenge(&nonce, avm_attest::pcr::PcrMask::FIRMWARE)
        .unwrap();
    println!(
        "Challenge -> Evidence round trip: {:?}",
        challenged.elapsed()
    );

    let attest = Attest::parse(&evidence.attest).expect("TPMS_ATTEST parses");
    assert!(attest.is_quote());
    assert_eq!(attest.extra_data, &nonce[..]);
    let quote = attest.quote.as_ref().unwrap();
    assert_eq!(quote.pcr_select.sha256_mask(), Some(PcrMask::FIRMWARE));
    let indices: Vec<u8> = evidence.pcrs.iter().map(|p| p.index).collect();
    assert_eq!(indices, (0..8).collect::<Vec<u8>>());
    assert_eq!(
        quote.pcr_digest,
        &pcr_digest(evidence.pcrs.iter().map(|p| &p.digest))[..]
    );
    for pcr in &evidence.pcrs {
        assert_eq!(
            pcr.digest,
            report.pcrs_sha256[usize::from(pcr.index)],
            "PCR {} differs from the boot report",
            pcr.index
        );
    }

    // The event log is the used part only, and replays from the H-CRTM
    // start of the image file to the quoted PCRs 0-7.
    assert_eq!(evidence.event_log, report.eventlog);
    let log = EventLog::parse(&evidence.event_log).expect("event log parses");
    assert_eq!(log.used_len(), evidence.event_log.len());
    assert_eq!(log.len(), report.eventlog_entries as usize);
    let image_digest = sha256_file(&avm_qemu::testing::avm_image()).unwrap();
    let replayed = log
        .replay_sha256(&initial_pcrs(hcrtm_pcr0_start(&image_digest)))
        .unwrap();
    for pcr in &evidence.pcrs {
        assert_eq!(replayed[usize::from(pcr.index)], pcr.digest);
    }

    // The full verification core with OpenSSL signatures: trusted with
    // the right nonce and reference values...
    let mut policy = ReferenceValues::for_image(image_digest);
    assert!(policy.learn_from(&log) > 0);
    let input = EvidenceInput::new(&evidence, &nonce, ak_key);
    let verdict = verify_evidence(&input, Some(&policy), &common::verifier());
    assert!(verdict.trusted, "{:?}", verdict.reasons);
    assert!(verdict.quote.as_ref().unwrap().signature_valid);
    assert_eq!(verdict.avm_image, Some(image_digest));
    // ...and not for another nonce or another image.
    let other_nonce = common::random_bytes(32);
    let input = EvidenceInput::new(&evidence, &other_nonce, ak_key);
    let verdict = verify_evidence(&input, Some(&policy), &common::verifier());
    assert_eq!(
        verdict.reasons.iter().map(|r| r.code()).collect::<Vec<_>>(),
        ["nonce-mismatch"]
    );
    let other_image = ReferenceValues {
        avm_image_sha256: vec![avm_qemu::measure::sha256(b"another image")],
        ..policy.clone()
    };
    let input = EvidenceInput::new(&evidence, &nonce, ak_key);
    let verdict = verify_evidence(&input, Some(&other_image), &common::verifier());
    assert!(!verdict.trusted);

    // A second challenge on the same connection: another nonce, PCRs
    // beyond the firmware ones, the same values for 0-7.
    let nonce2 = common::random_bytes(20);
    let evidence2 = client
        .challenge(&nonce2, PcrMask::from_bits(0x1ff | 1 << 23))
        .unwrap();
    let attest2 = Attest::parse(&evidence2.attest).unwrap();
    assert_eq!(attest2.extra_data, &nonce2[..]);
    let indices: Vec<u8> = evidence2.pcrs.iter().map(|p| p.index).collect();
    assert_eq!(indices, [0, 1, 2, 3, 4, 5, 6, 7, 8, 23]);
    assert_eq!(evidence2.pcrs[..8], evidence.pcrs[..]);
    assert_eq!(
        attest2.quote.as_ref().unwrap().pcr_digest,
        &pcr_digest(evidence2.pcrs.iter().map(|p| &p.digest))[..]
    );
    let mut input = EvidenceInput::new(&evidence2, &nonce2, ak_key);
    input.required_pcrs = PcrMask::from_bits(0x1ff);
    let verdict = verify_evidence(&input, Some(&policy), &common::verifier());
    assert!(verdict.trusted, "{:?}", verdict.reasons);

    // Requests the server must refuse without dropping the session.
    for bad in [
        Request::Challenge {
            nonce: vec![1; 65],
            pcr_mask: PcrMask::FIRMWARE,
        },
        Request::Challenge {
            nonce: vec![1; 8],
            pcr_mask: PcrMask::EMPTY,
        },
        Request::Challenge {
            nonce: vec![1; 8],
            pcr_mask: PcrMask::from_bits(1 << 24),
        },
    ] {
        match client.request(&bad).unwrap() {
            Response::Error { .. } => {}
            other => panic!("{bad:?} answered with {other:?}"),
        }
    }
    let evidence3 = client.challenge(&nonce, PcrMask::from_bits(0x1)).unwrap();
    assert_eq!(
        Attest::parse(&evidence3.attest).unwrap().extra_data,
        &nonce[..]
    );
}

#[test]
fn challenge_before_hello_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = avm_qemu::testing::network_node(dir.path());
    let addr = node.attest_addr().unwrap();
    let mut client = Client::connect(addr).unwrap();
    match client
        .request(&Request::Challenge {
            nonce: vec![7; 16],
            pcr_mask: PcrMask::FIRMWARE,
        })
        .unwrap()
    {
        Response::Error { code, .. } => {
            assert_eq!(code, avm_attest::wire::ErrorCode::NoHello)
        }
        other => panic!("Challenge before Hello answered with {other:?}"),
    }
    match client
        .request(&Request::Hello {
            version: PROTOCOL_VERSION + 1,
        })
        .unwrap()
    {
        Response::Error { code, .. } => {
            assert_eq!(code, avm_attest::wire::ErrorCode::UnsupportedVersion)
        }
        other => panic!("Hello of another version answered with {other:?}"),
    }
}
