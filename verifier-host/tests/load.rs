//! Load is queued, not refused: 64 `avm-verifier attest` processes started
//! at once against one booted A-VM all get a trusted verdict. Before, the
//! A-VM's pool refused what it could not hold (16 sockets) and the
//! verifier gave up on the first reset; now the pool holds 128 and the
//! client retries refused and dropped connections within its deadline.

mod common;

use std::process::{Command, Stdio};

use avm_qemu::testing::{avm_image, network_node_with as boot_node};
use common::verifier;

const VERIFIERS: usize = 64;

#[test]
fn sixty_four_verifiers_attesting_one_node_at_once_all_get_verdicts() {
    let image = avm_image();
    let tmp = tempfile::tempdir().expect("temp dir");
    let node = boot_node(&tmp.path().join("node"), &image);
    let addr = node.attest_addr().expect("network").to_string();
    let ca = node.record().ek_ca.clone().expect("EK CA");
    let state = tmp.path().join("verifier");
    let run = |args: &[&str]| {
        let out = verifier(&state, args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "policy",
        "init",
        "--avm-image",
        image.to_str().expect("utf-8"),
    ]);
    run(&["enroll", &addr, "--ek-ca", ca.to_str().expect("utf-8")]);
    run(&["policy", "learn", &addr]);

    let children: Vec<_> = (0..VERIFIERS)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_avm-verifier"))
                .arg("--state")
                .arg(&state)
                .args(["--timeout", "60", "attest", &addr])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn avm-verifier")
        })
        .collect();
    let mut failures = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        if out.status.code() != Some(0) {
            failures.push(format!(
                "exit {:?}: {}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {VERIFIERS} attestations failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every verdict is in the history.
    let store = avm_verifier::store::Store::open(&state).expect("state");
    assert_eq!(
        store
            .last_verdict(&addr)
            .expect("history")
            .map(|v| v.verdict),
        Some("trusted".to_string())
    );
}
