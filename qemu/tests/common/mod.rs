//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod client;

use std::net::TcpListener;
use std::process::{Command, Output};

/// Runs the `avm-qemu` binary of this build.
pub fn avm_qemu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_avm-qemu"))
        .args(args)
        .output()
        .expect("running avm-qemu")
}

/// `avm-qemu status --state STATE --json`, which must succeed.
pub fn status_json(state: &str) -> serde_json::Value {
    let output = avm_qemu(&["status", "--state", state, "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("status prints one JSON object")
}

/// Two consecutive free loopback TCP ports (swtpm's TCTI wants the control
/// port right after the server port). Probed by binding; retried because
/// another process may take the second port between probes.
pub fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = first.local_addr().expect("bound address").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no pair of free loopback ports found");
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a loopback port")
        .port()
}

/// Signature checks on OpenSSL, exactly as avm-verifier does them on the host.
pub fn verifier() -> avm_verifier::crypto::OpenSslVerifier {
    avm_verifier::crypto::OpenSslVerifier::new().expect("OpenSSL verifier")
}

/// Random bytes from OpenSSL.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    openssl::rand::rand_bytes(&mut bytes).expect("random bytes");
    bytes
}
