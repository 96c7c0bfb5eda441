//! TPM manufacturing: EK certificates (RSA-2048, P-384 from swtpm_setup,
//! P-256 added by us) chain to the node's CA bundle and sit in TPM NV.

use std::path::Path;
use std::process::Command;

use avm_qemu::layout::StateLayout;
use avm_qemu::provision::{EK_CERT_NV_ECC_P256, provision_tpm};
use avm_qemu::swtpm::{CtrlEndpoint, ServerEndpoint, Swtpm, SwtpmConfig};

/// `openssl verify` of a DER certificate against the root with the issuing
/// CA as intermediate (the verifier's view of `ek-ca.pem`).
fn openssl_verifies(cert_der: &Path, root: &Path, issuer: &Path, work: &Path) -> bool {
    let pem = work.join("cert.pem");
    let converted = Command::new("openssl")
        .args(["x509", "-inform", "der", "-in"])
        .arg(cert_der)
        .arg("-out")
        .arg(&pem)
        .status()
        .expect("openssl runs");
    assert!(converted.success());
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(issuer)
        .arg(&pem)
        .output()
        .expect("openssl runs")
        .status
        .success()
}

#[test]
fn ek_certificates_chain_to_node_ca_and_are_in_nv() {
    let dir = tempfile::tempdir().unwrap();
    let layout = StateLayout::new(dir.path()).unwrap();
    let ek = provision_tpm(&layout).unwrap();

    // The CA lives in the node's state dir.
    assert!(ek.root_ca_pem.starts_with(dir.path()));
    let bundle = std::fs::read_to_string(&ek.ca_bundle_pem).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);

    let names: Vec<String> = ek
        .ek_certs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in ["ek-rsa2048.crt", "ek-secp256r1.crt", "ek-secp384r1.crt"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    for cert in &ek.ek_certs {
        assert!(
            openssl_verifies(cert, &ek.root_ca_pem, &ek.issuer_ca_pem, dir.path()),
            "{} does not chain to the node CA",
            cert.display()
        );
    }
    // A certificate from another node's CA does not verify here.
    let other = tempfile::tempdir().unwrap();
    let other_ek = provision_tpm(&StateLayout::new(other.path()).unwrap()).unwrap();
    assert!(!openssl_verifies(
        &other_ek.ek_cert_ecc_p256,
        &ek.root_ca_pem,
        &ek.issuer_ca_pem,
        dir.path()
    ));

    // The P-256 certificate is readable from its standard NV index.
    let socket = dir.path().join("s.sock");
    let mut config = SwtpmConfig::unix(layout.tpm_state(), dir.path().join("s.sock.ctrl"));
    config.server = Some(ServerEndpoint::Unix(socket.clone()));
    config.startup_clear = true;
    assert!(matches!(config.ctrl, CtrlEndpoint::Unix(_)));
    let swtpm = Swtpm::spawn(&config).unwrap();
    let nv_copy = dir.path().join("nv.der");
    let read = Command::new("tpm2_nvread")
        .arg("-T")
        .arg(format!("swtpm:path={}", socket.display()))
        .arg(format!("{EK_CERT_NV_ECC_P256:#x}"))
        .args(["-C", "o", "-o"])
        .arg(&nv_copy)
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(
        std::fs::read(&nv_copy).unwrap(),
        std::fs::read(&ek.ek_cert_ecc_p256).unwrap()
    );
    assert_eq!(ek.ek_name_ecc_p256.len(), 34);
    drop(swtpm);
}
