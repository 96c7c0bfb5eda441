//! `enroll` and `attest` end to end over TCP against a real TPM behind a
//! host node (`common::host_node`).

mod common;

use common::host_node::HostNode;
use common::{ProvisionedTpm, checkquote, stdout, verifier};

#[test]
fn enroll_then_attest_over_tcp_with_a_real_tpm() {
    let node = HostNode::start(false);
    let state = tempfile::tempdir().expect("temp dir");
    let ca = node.tpm.ca_bundle.to_str().expect("utf-8").to_string();

    let out = verifier(state.path(), &["enroll", &node.addr, "--ek-ca", &ca]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );

    let export = state.path().join("export");
    let out = verifier(
        state.path(),
        &[
            "attest",
            &node.addr,
            "--json",
            "--export",
            export.to_str().expect("utf-8"),
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // The quote verifies (signature, nonce, PCR digest); only what this
    // host node cannot give is missing: an event log and a policy.
    let codes: Vec<&str> = report["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert_eq!(
        codes,
        ["event-log-missing", "reference-values-missing"],
        "{report}"
    );
    assert_eq!(out.status.code(), Some(1));

    // The exported quote is accepted by tpm2_checkquote.
    let nonce = std::fs::read_to_string(export.join("nonce.hex")).expect("nonce");
    let check = checkquote(&export, nonce.trim());
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let out = verifier(state.path(), &["nodes"]);
    assert!(stdout(&out).contains(&node.addr));
    assert!(stdout(&out).contains("untrusted"));

    // Another verifier trusting another CA refuses the EK certificate.
    let other = ProvisionedTpm::new();
    let other_state = tempfile::tempdir().expect("temp dir");
    let out = verifier(
        other_state.path(),
        &[
            "enroll",
            &node.addr,
            "--ek-ca",
            other.ca_bundle.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("ek-cert-untrusted"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_ak_that_fails_activation_is_not_enrolled() {
    let node = HostNode::start(true);
    let state = tempfile::tempdir().expect("temp dir");
    let ca = node.tpm.ca_bundle.to_str().expect("utf-8").to_string();
    let out = verifier(state.path(), &["enroll", &node.addr, "--ek-ca", &ca]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("ak-not-activated"),
        "{}",
        stdout(&out)
    );
    let out = verifier(state.path(), &["attest", &node.addr, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("unknown-node"));
}
