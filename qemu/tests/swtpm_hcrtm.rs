//! The H-CRTM measurement through swtpm's control channel, checked against
//! a real swtpm read back by tpm2-tools (an independent TPM client).

mod common;

use std::process::Command;

use avm_qemu::measure::{hcrtm_pcr0_start, sha256};
use avm_qemu::swtpm::{CtrlEndpoint, ServerEndpoint, Swtpm, SwtpmConfig};

fn tcp_swtpm(dir: &std::path::Path, port: u16) -> SwtpmConfig {
    SwtpmConfig {
        tpm_state_dir: dir.to_path_buf(),
        ctrl: CtrlEndpoint::Tcp(port + 1),
        server: Some(ServerEndpoint::Tcp(port)),
        startup_clear: false,
        terminate_with_client: false,
        log_file: Some(dir.join("swtpm.log")),
        pid_file: None,
        process_group: Default::default(),
    }
}

fn tpm2_tool(tool: &str, port: u16, args: &[&str]) -> std::process::Output {
    let output = Command::new(tool)
        .arg("-T")
        .arg(format!("swtpm:host=127.0.0.1,port={port}"))
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{tool} (tpm2-tools) cannot run: {err}; run `make deps`"));
    assert!(
        output.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn hcrtm_measurement_lands_in_pcr0() {
    let dir = tempfile::tempdir().unwrap();
    // Larger than one HASH_DATA chunk and not a multiple of it.
    let image: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let port = common::free_port_pair();
    let config = tcp_swtpm(dir.path(), port);

    Swtpm::spawn(&config)
        .unwrap()
        .measure_hcrtm_and_exit(&image)
        .unwrap();
    assert!(dir.path().join("tpm2-00.volatilestate").exists());

    // A second swtpm on the same state restores the volatile state on INIT,
    // as QEMU's will.
    let swtpm = Swtpm::spawn(&config).unwrap();
    swtpm.ctrl_channel().unwrap().init().unwrap();
    tpm2_tool("tpm2_startup", port, &["-c"]);
    let pcr_file = dir.path().join("pcr0.bin");
    tpm2_tool(
        "tpm2_pcrread",
        port,
        &["sha256:0", "-o", pcr_file.to_str().unwrap()],
    );
    let pcr0 = std::fs::read(&pcr_file).unwrap();
    assert_eq!(pcr0, hcrtm_pcr0_start(&sha256(&image)).to_vec());
    drop(swtpm);
}

#[test]
fn swtpm_guard_kills_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let config = SwtpmConfig::unix(dir.path(), dir.path().join("ctrl.sock"));
    let swtpm = Swtpm::spawn(&config).unwrap();
    let pid = swtpm.pid();
    assert!(avm_qemu::process::is_running(pid));
    drop(swtpm);
    assert!(!avm_qemu::process::is_running(pid));
}
