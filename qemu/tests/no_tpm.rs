//! Acceptance: booting with no TPM attached prints a clear error and exits
//! non-zero within a second of boot instead of hanging.

mod common;

use std::time::Duration;

use avm_qemu::qemu::GuestExit;
use avm_qemu::{Node, NodeError};

/// "Within a second of boot", measured from the kernel's first serial
/// output to QEMU's exit, plus slack for TCG on a shared 2-core host and
/// for the 2 ms polling on both ends.
const MAX_BOOT_TO_EXIT: Duration = Duration::from_millis(1500);

#[test]
fn no_tpm_reports_error_and_exits_37_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = avm_qemu::testing::tcg_config(dir.path());
    config.with_tpm = false;
    let mut node = Node::launch(&config).unwrap();
    assert!(node.swtpm_pid().is_none());

    let err = node
        .wait_for_report(Duration::from_secs(60))
        .expect_err("booted without a TPM but reported success");
    match &err {
        NodeError::Guest { error, exit, .. } => {
            assert_eq!(error.kind, "no-tpm");
            assert!(!error.message.is_empty());
            assert_eq!(*exit, Some(GuestExit::NoTpm));
        }
        other => panic!("expected the A-VM's no-tpm error, got: {other}"),
    }
    // The user-facing message names the problem and the exit status.
    let message = err.to_string();
    assert!(
        message.contains("no-tpm") && message.contains("status 37"),
        "{message}"
    );

    let (exit, exited_at) = node.exit().expect("QEMU exit was observed");
    assert_eq!(exit, GuestExit::NoTpm);
    // The kernel prints its first line (SeaBIOS prints nothing here: the
    // serial log is the kernel's console) then must give up promptly.
    let first_output = node
        .serial()
        .first_output_at()
        .expect("kernel printed something");
    let boot_to_exit = exited_at.duration_since(first_output);
    println!("first serial output to QEMU exit: {boot_to_exit:?}");
    assert!(
        boot_to_exit <= MAX_BOOT_TO_EXIT,
        "took {boot_to_exit:?} from first output to exit"
    );
}
