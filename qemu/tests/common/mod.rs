//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod client;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use avm_qemu::qemu::Accel;
use avm_qemu::{Node, NodeConfig};

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

/// The A-VM kernel image: `$AVM_IMAGE`, else `build/avm.elf` in the
/// workspace. Missing image is a test failure, not a skip.
pub fn avm_image() -> PathBuf {
    let path = std::env::var_os("AVM_IMAGE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/avm.elf"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "A-VM image {} not found: run `make build` first (or set AVM_IMAGE)",
        path.display()
    );
    path
}

/// A node with its attestation server up on a free loopback port (TCG,
/// fresh TPM in `dir`); killed when the returned `Node` is dropped.
pub fn network_node(dir: &Path) -> Node {
    let mut config = NodeConfig::new(dir, avm_image());
    config.accel = Some(Accel::Tcg);
    config.attest_port = Some(free_port());
    Node::up(&config, Duration::from_secs(120)).unwrap_or_else(|err| panic!("{err}"))
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
