//! The `avm-verifier` binary: exit codes, JSON output, offline verify on a
//! tpm2_quote directory, policy commands, and refusal of unknown nodes.

mod common;

use std::process::{Command, Output};

use common::{NONCE, quoted_tpm, verifier};

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn verify_checks_a_tpm2_quote_directory_with_a_named_key_and_rejects_another_nonce() {
    let state = tempfile::tempdir().expect("temp dir");
    let (tpm, _ak) = quoted_tpm("ecc");
    let dir = tpm.path("quote");
    let ak = dir.join("ak.pem");
    let (dir, ak) = (
        dir.to_str().expect("utf-8 path"),
        ak.to_str().expect("utf-8 path"),
    );

    // The quote alone, with a key the caller names: quote-valid.
    let quote_only = ["verify", dir, "--ak", ak, "--quote-only"];
    let out = verifier(
        state.path(),
        &[&quote_only[..], &["--nonce", NONCE, "--json"]].concat(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report = json(&out);
    assert_eq!(report["verdict"], "quote-valid");
    assert_eq!(report["ak_binding"]["kind"], "asserted-by-caller");
    assert_eq!(report["pcrs"].as_array().map(Vec::len), Some(8));

    let out = verifier(
        state.path(),
        &[&quote_only[..], &["--nonce", "00ff", "--json"]].concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["reasons"][0]["code"], "nonce-mismatch");

    // Appraised as a node, the missing event log fails it (fail closed),
    // and the directory's own key is not enrolled anywhere.
    let out = verifier(state.path(), &["verify", dir, "--nonce", NONCE, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let codes: Vec<String> = json(&out)["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(|r| r["code"].as_str().map(String::from))
        .collect();
    assert!(codes.contains(&"ak-not-enrolled".to_string()), "{codes:?}");
    assert!(
        codes.contains(&"event-log-missing".to_string()),
        "{codes:?}"
    );

    // No nonce anywhere: a usage error, not a verdict.
    let out = verifier(state.path(), &["verify", dir, "--ak", ak]);
    assert_eq!(out.status.code(), Some(2));

    // The directory's own nonce: the quote checks, but the report says
    // that nothing shows it is fresh (a copy of an old export is the same).
    let copy = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(dir).expect("dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
    }
    std::fs::write(copy.path().join("nonce.hex"), NONCE).expect("nonce.hex");
    let copy_arg = copy.path().to_str().expect("utf-8 path");
    let out = verifier(
        state.path(),
        &["verify", copy_arg, "--ak", ak, "--quote-only", "--json"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["freshness_unproven"], true);
    let out = verifier(
        state.path(),
        &["verify", copy_arg, "--ak", ak, "--quote-only"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("freshness not proven"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = verifier(
        state.path(),
        &[
            "verify",
            copy_arg,
            "--ak",
            ak,
            "--quote-only",
            "--nonce",
            NONCE,
            "--json",
        ],
    );
    assert_eq!(json(&out)["freshness_unproven"], serde_json::Value::Null);
}

#[test]
fn attest_refuses_an_unknown_node_without_contacting_it() {
    let state = tempfile::tempdir().expect("temp dir");
    // Nothing listens there; an unknown node is refused before connecting.
    let out = verifier(state.path(), &["attest", "127.0.0.1:9", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    assert_eq!(report["verdict"], "untrusted");
    assert_eq!(report["reasons"][0]["code"], "unknown-node");
}

#[test]
fn policy_init_show_and_nodes() {
    let state = tempfile::tempdir().expect("temp dir");
    let image = state.path().join("avm.elf");
    std::fs::write(&image, b"an A-VM image").expect("write");
    let out = verifier(
        state.path(),
        &[
            "policy",
            "init",
            "--avm-image",
            image.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let out = verifier(state.path(), &["policy", "show"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let expected = avm_verifier::hex::encode(&openssl::sha::sha256(b"an A-VM image"));
    assert!(text.contains(&expected), "{text}");
    let parsed: avm_attest::policy::ReferenceValues = toml::from_str(&text).expect("TOML");
    assert_eq!(parsed.avm_image_sha256.len(), 1);
    assert_eq!(
        parsed.monvm_violations,
        avm_attest::policy::ViolationMemory::Sticky
    );
    let image_arg = image.to_str().expect("utf-8");
    let args = ["policy", "init", "--avm-image", image_arg];
    let current = [&args[..], &["--monvm-violations", "current"]].concat();
    assert_eq!(verifier(state.path(), &current).status.code(), Some(0));
    let out = verifier(state.path(), &["policy", "show"]);
    let parsed: avm_attest::policy::ReferenceValues =
        toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("TOML");
    assert_eq!(
        parsed.monvm_violations,
        avm_attest::policy::ViolationMemory::Current
    );
    let bad = [&args[..], &["--monvm-violations", "lenient"]].concat();
    assert_eq!(verifier(state.path(), &bad).status.code(), Some(2));

    let out = verifier(state.path(), &["policy", "init"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no image given is a usage error"
    );

    let out = verifier(state.path(), &["nodes", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out), serde_json::json!([]));
}

#[test]
fn enroll_against_nothing_is_a_network_error() {
    let state = tempfile::tempdir().expect("temp dir");
    let ca = state.path().join("ca.pem");
    let out = verifier(
        state.path(),
        &[
            "enroll",
            "127.0.0.1:9",
            "--ek-ca",
            ca.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "missing CA file");
    let out = Command::new(env!("CARGO_BIN_EXE_avm-verifier"))
        .arg("--help")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes"));
}
