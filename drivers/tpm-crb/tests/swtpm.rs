//! The command layer against a real TPM (swtpm over its unix socket): every
//! output is checked independently on the host (SHA-256 PCR arithmetic,
//! ECDSA/RSA signature verification, EK certificate key comparison).

mod common;

use common::Swtpm;
use p256::ecdsa::signature::Verifier as _;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts as _;
use sha2::{Digest, Sha256};
use tpm_crb::tpm2_protocol::TpmUnmarshal;
use tpm_crb::tpm2_protocol::data::{
    TpmAlgId, TpmRcBase, TpmSt, TpmsAttest, TpmtSignature, TpmuAttest, TpmuSignature,
};
use tpm_crb::{
    AkAlgorithm, Credential, EK_POLICY_SHA256, EkAlgorithm, LoadedKey, PcrSelection, PublicKey,
    Quote, StartupOutcome, SwtpmSocket, Tpm, TpmError,
};
use x509_cert::der::Decode;

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[test]
fn startup_reports_already_started_and_properties_identify_swtpm() {
    let swtpm = Swtpm::start();
    let mut tpm = swtpm.connect();
    assert_eq!(tpm.startup_clear().unwrap(), StartupOutcome::Started);
    assert_eq!(tpm.startup_clear().unwrap(), StartupOutcome::AlreadyStarted);

    let properties = tpm.properties().unwrap();
    // swtpm (libtpms) reports IBM as manufacturer.
    assert_eq!(&properties.manufacturer, b"IBM\0");
    assert_ne!(properties.firmware_version_1, 0);

    let (mut a, mut b) = ([0u8; 100], [0u8; 100]);
    tpm.get_random(&mut a).unwrap();
    tpm.get_random(&mut b).unwrap();
    assert_ne!(a, b);
    assert_ne!(a, [0u8; 100]);
}

#[test]
fn pcr_extend_yields_sha256_of_old_value_and_digest() {
    let swtpm = Swtpm::start();
    let mut tpm = swtpm.started();
    let pcrs = PcrSelection::new(&[16, 23]).unwrap();
    let before = tpm.pcr_read(pcrs).unwrap();

    let digest = sha256(&[b"measured configuration"]);
    tpm.pcr_extend(16, &digest).unwrap();
    let after = tpm.pcr_read(pcrs).unwrap();

    let old = before.get(16).unwrap();
    assert_eq!(after.get(16).unwrap(), &sha256(&[old, &digest]));
    assert_eq!(after.get(23), before.get(23), "other PCRs are untouched");
    assert!(tpm.pcr_extend(24, &digest).is_err());
}

#[test]
fn reading_all_24_pcrs_takes_several_commands_and_agrees_with_single_reads() {
    let swtpm = Swtpm::start();
    let mut tpm = swtpm.started();
    // PCRs 17-22 are extendable only from localities 2-4 (DRTM); avoid them.
    for pcr in [3u8, 9, 14, 23] {
        tpm.pcr_extend(pcr, &[pcr; 32]).unwrap();
    }
    let all_indices: Vec<u8> = (0..24).collect();
    let all = tpm
        .pcr_read(PcrSelection::new(&all_indices).unwrap())
        .unwrap();
    assert_eq!(all.values.len(), 24);
    for pcr in 0..24u8 {
        let single = tpm.pcr_read(PcrSelection::new(&[pcr]).unwrap()).unwrap();
        assert_eq!(all.get(pcr), single.get(pcr), "PCR {pcr}");
    }
    assert_ne!(all.get(9), all.get(10));
}

fn rsa_modulus(key: &LoadedKey) -> Vec<u8> {
    match key.public.public_key().expect("public key") {
        PublicKey::Rsa { modulus } => modulus.to_vec(),
        other => panic!("expected an RSA key, got {other:?}"),
    }
}

fn ecc_point(key: &LoadedKey) -> (Vec<u8>, Vec<u8>) {
    match key.public.public_key().expect("public key") {
        PublicKey::Ecc { x, y } => (x.to_vec(), y.to_vec()),
        other => panic!("expected an ECC key, got {other:?}"),
    }
}

/// The subject public key (its bit string's bytes) of the EK certificate
/// in NV.
fn ek_cert_public_key(tpm: &mut Tpm<SwtpmSocket>, alg: EkAlgorithm) -> Vec<u8> {
    let mut cert = vec![0u8; 4096];
    let len = tpm
        .nv_read_ek_cert(alg, &mut cert)
        .expect("EK certificate in NV");
    let cert = x509_cert::Certificate::from_der(&cert[..len]).expect("EK certificate parses");
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec()
}

#[test]
fn rsa_ek_matches_the_certificate_written_by_swtpm_setup() {
    let swtpm = Swtpm::start_provisioned();
    let mut tpm = swtpm.started();
    let ek = tpm.create_ek(EkAlgorithm::Rsa2048).unwrap();
    let parsed = ek.public.parse().unwrap();
    assert_eq!(parsed.auth_policy.as_ref(), &EK_POLICY_SHA256);
    assert_eq!(ek.name, ek.public.name().unwrap());
    assert_eq!(ek.public.to_tpm2b()[2..], *ek.public.as_bytes());

    let cert_key =
        rsa::RsaPublicKey::from_pkcs1_der(&ek_cert_public_key(&mut tpm, EkAlgorithm::Rsa2048))
            .unwrap();
    assert_eq!(cert_key.n().to_bytes_be(), rsa_modulus(&ek));
    assert_eq!(cert_key.e(), &rsa::BigUint::from(65537u32));

    // The EK that swtpm_setup made persistent is the same key.
    let (persistent, name) = tpm.read_public(0x8101_0001).unwrap();
    assert_eq!(persistent, ek.public);
    assert_eq!(name, ek.name);
    tpm.flush_context(ek.handle).unwrap();
    assert!(
        tpm.read_public(ek.handle).is_err(),
        "flushed handle is gone"
    );
}

#[test]
fn ecc_ek_is_deterministic_and_matches_the_launchers_certificate() {
    // swtpm_setup 0.7.1 certifies an ECC P-384 EK (0x01c00016); the
    // launcher certifies the TCG-default P-256 EK and stores it at
    // 0x01c0000a, where the driver reads it.
    let swtpm = Swtpm::start_provisioned();
    let mut tpm = swtpm.started();
    let first = tpm.create_ek(EkAlgorithm::EccP256).unwrap();
    let second = tpm.create_ek(EkAlgorithm::EccP256).unwrap();
    assert_ne!(first.handle, second.handle);
    assert_eq!(first.public, second.public);
    let (x, y) = ecc_point(&first);
    let sec1 = [&[4u8][..], &x, &y].concat();
    assert!(
        p256::PublicKey::from_sec1_bytes(&sec1).is_ok(),
        "point is on P-256"
    );

    assert_eq!(ek_cert_public_key(&mut tpm, EkAlgorithm::EccP256), sec1);

    let mut small = [0u8; 16];
    assert!(matches!(
        tpm.nv_read_ek_cert(EkAlgorithm::Rsa2048, &mut small),
        Err(TpmError::BufferTooSmall { available: 16, .. })
    ));
}

#[test]
fn a_missing_ek_certificate_is_a_tpm_handle_error() {
    let swtpm = Swtpm::start();
    let mut tpm = swtpm.started();
    let mut cert = vec![0u8; 4096];
    for alg in [EkAlgorithm::EccP256, EkAlgorithm::Rsa2048] {
        match tpm.nv_read_ek_cert(alg, &mut cert) {
            Err(TpmError::Tpm(rc)) => assert_eq!(rc.base(), Some(TpmRcBase::Handle)),
            other => panic!("expected TPM_RC_HANDLE, got {other:?}"),
        }
    }
}

/// Checks a quote the way a verifier does, returning the parsed attestation.
fn check_quote(quote: &Quote, ak: &LoadedKey, nonce: &[u8], pcr_values: &[[u8; 32]]) -> TpmsAttest {
    let (attest, rest) = TpmsAttest::unmarshal(&quote.attest).expect("TPMS_ATTEST parses");
    assert!(rest.is_empty());
    assert_eq!(attest.attest_type, TpmSt::AttestQuote);
    assert_eq!(attest.extra_data.as_ref(), nonce);
    assert_eq!(attest.qualified_signer.len(), 34);
    let TpmuAttest::Quote(info) = &attest.attested else {
        panic!("not a quote")
    };
    let concatenated: Vec<u8> = pcr_values.concat();
    assert_eq!(
        info.pcr_digest.as_ref(),
        &sha256(&[&concatenated]),
        "PCR digest"
    );

    let (signature, rest) =
        TpmtSignature::unmarshal(&quote.signature).expect("TPMT_SIGNATURE parses");
    assert!(rest.is_empty());
    match (
        signature.signature,
        ak.public.public_key().expect("AK public key"),
    ) {
        (TpmuSignature::Ecdsa(sig), PublicKey::Ecc { x, y }) => {
            assert_eq!(sig.hash, TpmAlgId::Sha256);
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&[&[4u8][..], x, y].concat())
                .expect("AK point is on P-256");
            let pad = |v: &[u8]| {
                let mut out = [0u8; 32];
                out[32 - v.len()..].copy_from_slice(v);
                out
            };
            let sig =
                p256::ecdsa::Signature::from_scalars(pad(&sig.signature_r), pad(&sig.signature_s))
                    .expect("ECDSA scalars in range");
            key.verify(&quote.attest, &sig)
                .expect("ECDSA signature over SHA256(attest)");
            let mut tampered = quote.attest.to_vec();
            tampered[10] ^= 1;
            assert!(key.verify(&tampered, &sig).is_err());
        }
        (TpmuSignature::Rsassa(sig), PublicKey::Rsa { modulus }) => {
            assert_eq!(sig.hash, TpmAlgId::Sha256);
            let key = rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(modulus), 65537u32.into())
                .expect("valid RSA key");
            let key = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
            let sig =
                rsa::pkcs1v15::Signature::try_from(sig.sig.as_ref()).expect("RSA signature bytes");
            key.verify(&quote.attest, &sig)
                .expect("RSASSA signature over SHA256(attest)");
            let mut tampered = quote.attest.to_vec();
            tampered[10] ^= 1;
            assert!(key.verify(&tampered, &sig).is_err());
        }
        (sig, key) => panic!("signature {sig:?} does not fit key {key:?}"),
    }
    attest
}

fn quote_round(tpm: &mut Tpm<SwtpmSocket>, alg: AkAlgorithm) -> (LoadedKey, Quote, Vec<u8>) {
    let ak = tpm.create_ak(alg).expect("TPM command succeeds");
    assert_eq!(ak.name, ak.public.name().expect("TPM command succeeds"));
    tpm.pcr_extend(16, &sha256(&[b"A-VM profile"]))
        .expect("TPM command succeeds");
    let selection = PcrSelection::new(&[0, 16, 23]).expect("TPM command succeeds");
    let values = tpm.pcr_read(selection).expect("TPM command succeeds");
    let nonce = sha256(&[b"verifier nonce"]).to_vec();
    let quote = tpm
        .quote(ak.handle, &nonce, selection)
        .expect("TPM command succeeds");
    check_quote(&quote, &ak, &nonce, &values.values);
    (ak, quote, nonce)
}

#[test]
fn ecc_quote_verifies_on_the_host_and_with_tpm2_checkquote() {
    let swtpm = Swtpm::start();
    let mut tpm = swtpm.started();
    let (ak, quote, nonce) = quote_round(&mut tpm, AkAlgorithm::EccP256);

    // The raw outputs are tpm2-tools' quote.msg / quote.sig / ak.pub files.
    let dir = swtpm.dir();
    std::fs::write(dir.join("quote.msg"), &quote.attest).unwrap();
    std::fs::write(dir.join("quote.sig"), &quote.signature).unwrap();
    std::fs::write(dir.join("ak.pub"), ak.public.to_tpm2b()).unwrap();
    let nonce_hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let status = std::process::Command::new("tpm2_checkquote")
        .arg("--public")
        .arg(dir.join("ak.pub"))
        .arg("--message")
        .arg(dir.join("quote.msg"))
        .arg("--signature")
        .arg(dir.join("quote.sig"))
        .arg("--qualification")
        .arg(&nonce_hex)
        .status()
        .expect("run tpm2_checkquote");
    assert!(status.success(), "tpm2_checkquote rejected our quote files");
}

#[test]
fn rsa_quote_verifies_on_the_host() {
    let swtpm = Swtpm::start();
    let mut tpm = swtpm.started();
    quote_round(&mut tpm, AkAlgorithm::Rsa2048);
}

fn credential_round(ek_alg: EkAlgorithm) {
    let swtpm = Swtpm::start();
    let mut tpm = swtpm.started();
    let ek = tpm.create_ek(ek_alg).expect("TPM command succeeds");
    let ak = tpm
        .create_ak(AkAlgorithm::EccP256)
        .expect("TPM command succeeds");
    let secret = sha256(&[b"challenge secret"]);

    // Wrong AK name: the TPM refuses to release the secret.
    let mut wrong_name = ak.name.clone();
    wrong_name[5] ^= 0xff;
    let wrong: Credential = tpm
        .make_credential(ek.handle, &secret, &wrong_name)
        .expect("TPM command succeeds");
    for _ in 0..4 {
        // Repeated failures must not leak policy sessions.
        assert!(matches!(
            tpm.activate_credential(ak.handle, ek.handle, &wrong),
            Err(TpmError::Tpm(_))
        ));
    }

    let credential = tpm
        .make_credential(ek.handle, &secret, &ak.name)
        .expect("TPM command succeeds");
    let recovered = tpm
        .activate_credential(ak.handle, ek.handle, &credential)
        .expect("TPM command succeeds");
    assert_eq!(recovered.as_slice(), &secret);

    // A credential bound to the AK cannot be activated by another key.
    let other = tpm
        .create_ak(AkAlgorithm::Rsa2048)
        .expect("TPM command succeeds");
    assert!(
        tpm.activate_credential(other.handle, ek.handle, &credential)
            .is_err()
    );
}

#[test]
fn credential_activation_with_rsa_ek_recovers_the_secret() {
    credential_round(EkAlgorithm::Rsa2048);
}

#[test]
fn credential_activation_with_ecc_ek_recovers_the_secret() {
    credential_round(EkAlgorithm::EccP256);
}
