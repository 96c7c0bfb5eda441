//! The command line that scripts rely on: `up` leaves a node running and
//! prints its attestation address (a free port unless `--attest-port`
//! chooses one, none with `--no-network`), `status --json` describes it,
//! `down` stops everything.

mod common;

use std::path::Path;
use std::process::Output;

use avm_qemu::process::is_running;
use common::{avm_qemu, status_json};

/// Runs `avm-qemu up` on the test image under TCG with `extra` arguments
/// and insists that it succeeded. These nodes have no Mon-VM (tests/monvm.rs
/// covers `up` with one).
fn up_ok(state: &str, extra: &[&str]) -> Output {
    let image = avm_qemu::testing::avm_image();
    let mut args = vec![
        "up",
        "--state",
        state,
        "--image",
        image.to_str().expect("UTF-8 image path"),
        "--accel",
        "tcg",
        "--no-monvm",
    ];
    args.extend_from_slice(extra);
    let up = avm_qemu(&args);
    assert!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    up
}

/// The process group id of `pid` (field 5 of /proc/PID/stat).
fn process_group_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process exists");
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 1..];
    after_name
        .split_whitespace()
        .nth(2)
        .and_then(|field| field.parse().ok())
        .expect("stat has a process group")
}

/// Runs `down` when dropped, so a failing assertion does not leave the
/// detached QEMU and swtpm running.
struct DownOnDrop<'a>(&'a str);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = avm_qemu(&["down", "--state", self.0]);
    }
}

#[test]
fn up_status_down() {
    let image = avm_qemu::testing::avm_image();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let _cleanup = DownOnDrop(state);
    // No --attest-port: `up` picks a free loopback port itself.
    let up = up_ok(state, &[]);
    let address = String::from_utf8(up.stdout).unwrap();
    let address = address.trim();
    let port: u16 = address
        .strip_prefix("127.0.0.1:")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("up printed {address:?}, not 127.0.0.1:PORT"));

    let status = status_json(state);
    assert_eq!(status["running"], true);
    assert_eq!(status["attest_addr"], address);
    assert_eq!(status["attest_port"], port);
    assert_eq!(status["guest_ip"], "10.0.2.15");
    assert_eq!(status["guest_attest_port"], 7140);
    // The printed address reaches the A-VM's attestation server.
    let mut client = common::client::Client::connect(address.parse().unwrap()).unwrap();
    let hello = client.hello().unwrap();
    assert_eq!(
        status["ek_name_ecc_p256"],
        avm_qemu::hex::encode(&hello.ek.name)
    );
    let serial = status["avm_serial"].as_str().unwrap();
    let serial_log = std::fs::read_to_string(serial).unwrap();
    assert!(serial_log.contains("AVM-REPORT-END"), "{serial_log}");
    let ek_ca = std::fs::read_to_string(status["ek_ca"].as_str().unwrap()).unwrap();
    assert_eq!(ek_ca.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    for cert in status["ek_certs"].as_array().unwrap() {
        assert!(Path::new(cert.as_str().unwrap()).is_file());
    }
    let qemu_pid = status["qemu_pid"].as_u64().unwrap() as u32;
    let swtpm_pid = status["swtpm_pid"].as_u64().unwrap() as u32;
    // `up` returned, its children live on, each in a process group of its
    // own so a Ctrl-C in the shell that ran `up` leaves them alone.
    assert!(is_running(qemu_pid) && is_running(swtpm_pid));
    assert_eq!(process_group_of(qemu_pid), qemu_pid);
    assert_eq!(process_group_of(swtpm_pid), swtpm_pid);

    // A second `up` in the same dir refuses instead of clobbering it.
    let again = avm_qemu(&["up", "--state", state, "--image", image.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let down = avm_qemu(&["down", "--state", state]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!is_running(qemu_pid), "QEMU still running after down");
    assert!(!is_running(swtpm_pid), "swtpm still running after down");
    assert_eq!(status_json(state)["running"], false);
}

#[test]
fn up_without_network() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let _cleanup = DownOnDrop(state);
    let up = up_ok(state, &["--no-network"]);
    assert!(up.stdout.is_empty());
    assert!(String::from_utf8_lossy(&up.stderr).contains("no attestation address"));
    let status = status_json(state);
    assert_eq!(status["running"], true);
    assert!(status["attest_addr"].is_null());
    assert!(status["guest_ip"].is_null());
    // The A-VM says why it has no network (just after its boot report,
    // which is all `up` waits for here), and keeps running.
    let serial_path = status["avm_serial"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let serial = std::fs::read_to_string(&serial_path).unwrap();
        if serial
            .lines()
            .any(|line| line.trim_end() == "AVM-NET-DOWN reason=no-nic")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{serial}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status_json(state)["running"], true);
}

#[test]
fn clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let missing = dir.path().join("missing.elf");
    let up = avm_qemu(&["up", "--state", state, "--image", missing.to_str().unwrap()]);
    assert!(!up.status.success());
    assert!(String::from_utf8_lossy(&up.stderr).contains("make build"));

    let status = avm_qemu(&["status", "--state", state, "--json"]);
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("no node"));

    let both = avm_qemu(&[
        "up",
        "--state",
        state,
        "--attest-port",
        "4000",
        "--no-network",
    ]);
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
}
