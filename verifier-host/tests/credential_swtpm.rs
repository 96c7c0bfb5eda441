//! MakeCredential computed by the verifier, activated by a real TPM (swtpm)
//! through tpm2-tools' `tpm2_activatecredential`.

mod common;

use avm_verifier::credential::make_credential;
use avm_verifier::tpm_public::TpmPublic;
use common::{Swtpm, read};

/// Creates an EK of `ek_alg` and an ECC AK under it; returns (EK, AK).
fn ek_and_ak(tpm: &Swtpm, ek_alg: &str) -> (TpmPublic, TpmPublic) {
    tpm.tpm2_ok(
        "tpm2_createek",
        &["-G", ek_alg, "-c", "ek.ctx", "-u", "ek.tss"],
    );
    tpm.tpm2_ok(
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
            "ak.tss", "-f", "tss", "-n", "ak.name",
        ],
    );
    let ek = TpmPublic::parse_tpm2b(&read(&tpm.path("ek.tss"))).expect("EK public parses");
    let ak = TpmPublic::parse_tpm2b(&read(&tpm.path("ak.tss"))).expect("AK public parses");
    assert_eq!(
        ak.name(),
        read(&tpm.path("ak.name")),
        "name matches the TPM's"
    );
    (ek, ak)
}

/// Runs tpm2_activatecredential on `file` (policy session for the EK);
/// returns the recovered secret, or None if the TPM refused.
fn activate(tpm: &Swtpm, file: &[u8]) -> Option<Vec<u8>> {
    std::fs::write(tpm.path("cred.in"), file).expect("write credential");
    let _ = std::fs::remove_file(tpm.path("secret.out"));
    // One shell so the policy session survives between the tools.
    let script = "set -e
        tpm2_startauthsession --policy-session -S session.ctx
        tpm2_policysecret -S session.ctx -c e
        tpm2_activatecredential -c ak.ctx -C ek.ctx -i cred.in -o secret.out -P session:session.ctx";
    let out = tpm.tpm2("sh", &["-c", script]);
    out.status.success().then(|| read(&tpm.path("secret.out")))
}

fn round_trip(ek_alg: &str) {
    let tpm = Swtpm::start();
    let (ek, ak) = ek_and_ak(&tpm, ek_alg);
    let secret: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(7) ^ 0x5a).collect();
    let made = make_credential(&ek.key, &ak.name(), &secret).expect("make credential");
    let recovered = activate(&tpm, &made.to_tpm2_tools_file());
    assert_eq!(recovered, Some(secret));
}

#[test]
fn ecc_ek_credential_is_activated_by_swtpm() {
    round_trip("ecc");
}

#[test]
fn rsa_ek_credential_is_activated_by_swtpm() {
    round_trip("rsa");
}

#[test]
fn credential_for_another_name_is_refused() {
    let tpm = Swtpm::start();
    let (ek, ak) = ek_and_ak(&tpm, "ecc");
    let mut wrong_name = ak.name();
    wrong_name[5] ^= 1;
    let made = make_credential(&ek.key, &wrong_name, &[9; 16]).expect("make credential");
    assert_eq!(activate(&tpm, &made.to_tpm2_tools_file()), None);
}

#[test]
fn tampered_blob_is_refused() {
    let tpm = Swtpm::start();
    let (ek, ak) = ek_and_ak(&tpm, "rsa");
    let mut made = make_credential(&ek.key, &ak.name(), &[9; 16]).expect("make credential");
    let last = made.credential_blob.len() - 1;
    made.credential_blob[last] ^= 0x80;
    assert_eq!(activate(&tpm, &made.to_tpm2_tools_file()), None);
}
