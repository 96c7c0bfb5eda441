//! `avm-verifier` against a node whose A-VM's monitor policy names a
//! set-uid program (6.1 Mon-VM, KASLR on), through the CLI:
//! - before the verifier's policy names it, `attest` refuses the node's
//!   monitor policy (`monvm-monitor-setuid-not-allowed`, naming the path);
//! - `policy learn` adds it: with the named set-uid program running as
//!   root under a shell of `nobody`, the node stays trusted;
//! - a set-uid program the policy does not name, run the same way, turns
//!   the node untrusted (`monvm-creds-tampered`, naming the process).
//!
//! Both programs are `qemu/testprogs/avm_wait.c`. Needs the A-VM image
//! (`$AVM_IMAGE`, else build/avm.elf) and the Mon-VM kernels (`make deps`).

mod common;

use std::time::Duration;

use avm_attest::monitor_policy::MonitorPolicy;
use avm_qemu::monvm::console::MonVmConsole;
use avm_qemu::monvm::rootfs::ExtraFile;
use avm_qemu::testing::{avm_image, console_sh, under_nobody, wait_comm, wait_for_avm_serial};
use common::{describe, verifier_exit};

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
const ALLOWED: &str = "/usr/bin/avm-setuid-wait";
const OTHER: &str = "/usr/sbin/avm-setuid-other";

#[test]
fn a_named_set_uid_program_is_accepted_only_once_the_policy_names_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let program = avm_qemu::testing::build_test_program(tmp.path(), "avm_wait");
    let policy = MonitorPolicy::parse(
        format!("syscall_idt=5,text=1000,ima=500,cross=500,setuid={ALLOWED}").as_bytes(),
    )
    .expect("a monitor policy");
    let node = avm_qemu::testing::monvm_node_with_rootkit_and(
        &tmp.path().join("node"),
        "6.1",
        256,
        |config| {
            config.monitor_policy = Some(policy);
            let monvm = config.monvm.as_mut().expect("a Mon-VM");
            for guest_path in [ALLOWED, OTHER] {
                monvm.extra_files.push(ExtraFile {
                    host_path: program.clone(),
                    guest_path: guest_path.into(),
                    mode: 0o4755,
                });
            }
        },
    );
    let record = node.record().clone();
    let addr = node.attest_addr().expect("a network").to_string();
    wait_for_avm_serial(&record, "AVM-MONVM-TEXT ");
    wait_for_avm_serial(&record, "AVM-MONVM-IMA ");
    let mut console = MonVmConsole::connect(
        record.monvm_console.as_ref().expect("a console"),
        CONSOLE_TIMEOUT,
    )
    .expect("console");
    // Root owns the programs (chown clears the set-uid bit: the modes
    // follow). Each runs once as root, so the Mon-VM's IMA measures it
    // before the policy is learned; under root's shell it is no rise. So
    // does `su` to the user (the files it reads, `/etc/passwd` with the
    // user added).
    console_sh(
        &mut console,
        &format!(
            "chown 0:0 {ALLOWED} {OTHER} && chmod 4755 {ALLOWED} {OTHER} && \
             for p in {ALLOWED} {OTHER}; do $p & q=$!; sleep 0.2; kill $q; wait $q; done; \
             ({}) && su -s /bin/sh nobody -c true",
            avm_qemu::monvm::ADD_USER_NOBODY
        ),
    );
    std::thread::sleep(Duration::from_secs(2));

    let state = tmp.path().join("verifier");
    let state = state.as_path();
    common::enrol_monvm_node(state, &record, &addr, &avm_image());
    // The verifier's policy names no set-uid program yet.
    let out = common::verifier(state, &["attest", &addr, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let found = common::reasons(&out);
    assert!(
        found
            .iter()
            .any(|(c, d)| c == "monvm-monitor-setuid-not-allowed" && d.contains(ALLOWED)),
        "{found:?}"
    );

    verifier_exit(state, &["policy", "learn", &addr], 0);
    let shown = verifier_exit(state, &["policy", "show"], 0);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(&format!("setuid={ALLOWED}")),
        "{}",
        describe(&shown)
    );
    verifier_exit(state, &["attest", &addr, "--json"], 0);

    // The named program as root under a user: trusted, round after round.
    let (_, allowed) = under_nobody(&mut console, ALLOWED);
    wait_comm(&mut console, allowed, "avm-setuid-wait");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        verifier_exit(state, &["attest", &addr, "--json"], 0);
    }

    // The other one: named.
    let (_, other) = under_nobody(&mut console, OTHER);
    wait_comm(&mut console, other, "avm-setuid-othe");
    let found = common::untrusted_with(
        state,
        &addr,
        "monvm-creds-tampered",
        &format!("process:{other}:avm-setuid-othe"),
    );
    assert!(
        !found
            .iter()
            .any(|(_, d)| d.contains(&format!("process:{allowed}:"))),
        "{found:?}"
    );
}
