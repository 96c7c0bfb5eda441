//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::TcpListener;
use std::path::PathBuf;

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
