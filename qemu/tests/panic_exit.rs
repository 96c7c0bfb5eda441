//! A kernel panic is reported as the A-VM's error with exit status 35, not
//! as a timeout.

mod common;

use std::time::Duration;

use avm_qemu::qemu::GuestExit;
use avm_qemu::{Node, NodeError};

#[test]
fn kernel_panic_is_reported_with_status_35() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = avm_qemu::testing::tcg_config(dir.path());
    // The kernel's test hook for its failure path.
    config.extra_cmdline = vec!["crash=panic".into()];
    let mut node = Node::launch(&config).unwrap();
    match node.wait_for_report(Duration::from_secs(60)) {
        Err(NodeError::Guest { error, exit, .. }) => {
            assert_eq!(error.kind, "panic");
            assert_eq!(exit, Some(GuestExit::Panic));
        }
        Err(other) => panic!("expected the A-VM's panic error, got: {other}"),
        Ok(_) => panic!("crash=panic booted normally"),
    }
}
