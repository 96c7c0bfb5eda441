//! The A-VM side of binding the AK to the EK: a credential made on the
//! host (tpm2-tools' `tpm2_makecredential` in offline mode, from the EK
//! public key and the AK name the A-VM announced) is recovered by the
//! A-VM's TPM through ActivateCredential over the network; credentials for
//! another key or tampered blobs are refused, and the session goes on.
//! (The verifier's own MakeCredential and the full enrolment are tested
//! in avm-verifier.)

mod common;

use std::path::Path;
use std::process::Command;

use avm_attest::wire::{ErrorCode, HelloInfo, Request, Response};
use avm_qemu::hex;
use common::client::Client;

/// Header of tpm2-tools' credential file: magic, then format version 1.
const CREDENTIAL_MAGIC: u32 = 0xBADC_C0DE;
const CREDENTIAL_VERSION: u32 = 1;

/// A credential as `tpm2_makecredential -o` writes it: magic, version,
/// TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET (all big-endian).
struct CredentialFile {
    blob: Vec<u8>,
    secret: Vec<u8>,
}

fn parse_credential_file(bytes: &[u8]) -> CredentialFile {
    let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!(u32_at(0), CREDENTIAL_MAGIC, "not a tpm2-tools credential");
    assert_eq!(u32_at(4), CREDENTIAL_VERSION);
    let mut at = 8;
    let mut tpm2b = || {
        let len = usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
        let data = bytes[at + 2..at + 2 + len].to_vec();
        at += 2 + len;
        data
    };
    let blob = tpm2b();
    let secret = tpm2b();
    assert_eq!(at, bytes.len(), "trailing bytes in the credential file");
    CredentialFile { blob, secret }
}

/// `tpm2_makecredential -T none`: wraps `secret` for the object `name`,
/// encrypted to the EK whose TPMT_PUBLIC is `ek_public`.
fn make_credential(dir: &Path, ek_public: &[u8], name: &[u8], secret: &[u8]) -> CredentialFile {
    let ek_pub = dir.join("ek.pub");
    let secret_file = dir.join("secret.bin");
    let credential = dir.join("credential.out");
    // tpm2-tools' .pub files are TPM2B_PUBLIC: a size, then TPMT_PUBLIC.
    let size = u16::try_from(ek_public.len())
        .expect("TPMT_PUBLIC fits a TPM2B")
        .to_be_bytes();
    std::fs::write(&ek_pub, [&size[..], ek_public].concat()).expect("writing ek.pub");
    std::fs::write(&secret_file, secret).expect("writing the secret");
    let _ = std::fs::remove_file(&credential);
    let output = Command::new("tpm2_makecredential")
        .args(["-T", "none", "-u"])
        .arg(&ek_pub)
        .arg("-s")
        .arg(&secret_file)
        .args(["-n", &hex::encode(name), "-o"])
        .arg(&credential)
        .output()
        .expect("running tpm2_makecredential (tpm2-tools)");
    assert!(
        output.status.success(),
        "tpm2_makecredential failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_credential_file(&std::fs::read(&credential).expect("reading the credential"))
}

fn activate(client: &mut Client, credential: &CredentialFile) -> Response {
    client
        .request(&Request::ActivateCredential {
            credential_blob: credential.blob.clone(),
            encrypted_secret: credential.secret.clone(),
        })
        .expect("ActivateCredential round trip")
}

fn expect_refused(response: Response, what: &str) {
    match response {
        Response::Error { code, detail } => {
            println!("{what}: {code:?} {detail}");
            assert!(
                matches!(code, ErrorCode::BadRequest | ErrorCode::Tpm),
                "{what}: unexpected code {code:?}"
            );
        }
        other => panic!("{what} was not refused: {other:?}"),
    }
}

#[test]
fn activate_credential_recovers_the_secret_only_for_the_ak() {
    let dir = tempfile::tempdir().unwrap();
    let node = avm_qemu::testing::network_node(dir.path());
    let work = tempfile::tempdir().unwrap();
    let mut client = Client::connect(node.attest_addr().unwrap()).unwrap();
    let HelloInfo { ek, ak, .. } = client.hello().unwrap();

    let secret = common::random_bytes(32);
    let credential = make_credential(work.path(), &ek.public, &ak.name, &secret);
    match activate(&mut client, &credential) {
        Response::CredentialActivated { secret: recovered } => assert_eq!(recovered, secret),
        other => panic!("ActivateCredential answered with {other:?}"),
    }

    // Made for another key (the EK's own name): the TPM refuses it.
    let for_other_key = make_credential(work.path(), &ek.public, &ek.name, &secret);
    expect_refused(
        activate(&mut client, &for_other_key),
        "credential for another key",
    );

    // Tampered blob (integrity HMAC check) and tampered seed.
    let mut tampered = make_credential(work.path(), &ek.public, &ak.name, &secret);
    let last = tampered.blob.len() - 1;
    tampered.blob[last] ^= 1;
    expect_refused(activate(&mut client, &tampered), "tampered credential blob");
    let mut tampered = make_credential(work.path(), &ek.public, &ak.name, &secret);
    tampered.secret[10] ^= 0x80;
    expect_refused(
        activate(&mut client, &tampered),
        "tampered encrypted secret",
    );

    // Refusals free their policy sessions (a TPM has only a few): many
    // in a row, then a good credential still works on the same connection.
    for _ in 0..8 {
        expect_refused(activate(&mut client, &for_other_key), "repeated refusal");
    }
    let secret2 = common::random_bytes(16);
    let credential2 = make_credential(work.path(), &ek.public, &ak.name, &secret2);
    match activate(&mut client, &credential2) {
        Response::CredentialActivated { secret: recovered } => assert_eq!(recovered, secret2),
        other => panic!("ActivateCredential after refusals answered with {other:?}"),
    }

    // Quotes still work afterwards.
    let nonce = common::random_bytes(32);
    let evidence = client
        .challenge(&nonce, avm_attest::pcr::PcrMask::FIRMWARE)
        .unwrap();
    assert_eq!(
        avm_attest::tpm::Attest::parse(&evidence.attest)
            .unwrap()
            .extra_data,
        &nonce[..]
    );
}
