//! `avm-verifier` against nodes with a real Debian Mon-VM (6.1 and 6.12,
//! KASLR on), every check through the CLI:
//! - a node comes up, is enrolled and its policy learned from its own
//!   boot; `attest` says trusted and reports the kernel release and the
//!   counts of modules, processes and IMA entries;
//! - 6.1: twenty attestations over more than two minutes stay trusted
//!   while the Mon-VM runs allowed programs, loads and removes an allowed
//!   module and enables and disables a tracepoint (jump labels and static
//!   calls rewritten by the kernel itself);
//! - then each attack is named: an executable the policy does not allow, a
//!   module it does not allow (insmod), an anchored IMA entry rewritten in
//!   the Mon-VM's memory, a byte of kernel text patched. A verdict once
//!   untrusted stays so (what ran cannot be undone), so each attack adds
//!   its reason to those before.
//!
//! Needs the A-VM image (`$AVM_IMAGE`, else build/avm.elf) and the Mon-VM
//! kernels (`make deps`).

mod common;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use avm_qemu::monvm::console::MonVmConsole;
use avm_qemu::testing::{MonVmPatch, avm_image, wait_for_avm_serial};
use common::{describe, verifier_exit};

static BOOTS: Mutex<()> = Mutex::new(());

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
const TRACEPOINT: &str = "/sys/kernel/tracing/events/sched/sched_switch/enable";

fn run(console: &mut MonVmConsole, command: &str) -> String {
    console
        .run_ok(command)
        .unwrap_or_else(|e| panic!("{command}: {e:?}"))
}

fn check_node(series: &str, quiet_rounds: usize) {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let tmp = tempfile::tempdir().expect("temp dir");
    let node = avm_qemu::testing::monvm_node(&tmp.path().join("node"), series, 256);
    let record = node.record().clone();
    let addr = node.attest_addr().expect("a network").to_string();
    wait_for_avm_serial(&record, "AVM-MONVM-TEXT ");
    wait_for_avm_serial(&record, "AVM-MONVM-IMA ");
    let mut console = MonVmConsole::connect(
        record.monvm_console.as_ref().expect("a console"),
        CONSOLE_TIMEOUT,
    )
    .expect("console");
    let module_path = |name: &str| {
        record
            .monvm_module(name)
            .unwrap_or_else(|| panic!("{name}.ko in the Mon-VM's root"))
            .to_string()
    };
    let allowed_module = module_path("dummy");
    // What the node will legitimately do runs once before the policy is
    // learned, so its files are in the allowlist.
    run(
        &mut console,
        &format!(
            "mount -t tracefs none /sys/kernel/tracing && insmod {allowed_module} && rmmod dummy"
        ),
    );
    std::thread::sleep(Duration::from_secs(2));

    let state = tmp.path().join("verifier");
    let state = state.as_path();
    let image = avm_image();
    common::enrol_monvm_node(state, &record, &addr, &image);
    verifier_exit(state, &["policy", "learn", &addr], 0);
    let out = verifier_exit(state, &["attest", &addr, "--json"], 0);
    let log = common::report(&out)["measurement_log"].clone();
    assert_eq!(
        log["monvm_kernel"].as_str(),
        record.monvm_kernel_release.as_deref(),
        "{log}"
    );
    assert!(log["monvm_processes"].as_u64() >= Some(1), "{log}");
    assert!(log["monvm_modules"].as_u64().is_some(), "{log}");
    assert!(log["monvm_ima_entries"].as_u64() >= Some(3), "{log}");

    // Quiet rounds: allowed activity, every attestation trusted.
    let started = Instant::now();
    for round in 0..quiet_rounds {
        let round_started = Instant::now();
        let on = round % 2 == 0;
        run(
            &mut console,
            &format!(
                "ls / > /dev/null && cat /proc/version > /dev/null && sleep 1 && \
                 insmod {allowed_module} && rmmod dummy && echo {} > {TRACEPOINT}",
                u8::from(on)
            ),
        );
        let out = common::verifier(state, &["attest", &addr, "--json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{series}: attestation {round} untrusted: {}",
            describe(&out)
        );
        // At least six seconds a round: twenty rounds span two minutes.
        if let Some(rest) = Duration::from_secs(6).checked_sub(round_started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    if quiet_rounds >= 20 {
        assert!(started.elapsed() >= Duration::from_secs(120));
    }
    let serial = std::fs::read_to_string(&record.avm_serial).expect("serial log");
    assert!(
        !serial.contains("AVM-MONVM-EVENT"),
        "{series}: a false alarm:\n{serial}"
    );

    // An executable the policy does not allow (busybox runs a copy only
    // under a name that starts with "busybox").
    run(
        &mut console,
        "cp /bin/busybox /root/busybox-unlisted && /root/busybox-unlisted true",
    );
    common::untrusted_with(
        state,
        &addr,
        "monvm-file-not-allowed",
        "/root/busybox-unlisted",
    );

    // A module the policy does not allow.
    let unexpected = module_path("tcp_vegas");
    run(&mut console, &format!("insmod {unexpected}"));
    common::untrusted_with(state, &addr, "monvm-file-not-allowed", "tcp_vegas.ko");

    // An anchored IMA entry rewritten in the Mon-VM's memory.
    let rewritten = MonVmPatch::ima_template_hash(&record, 1);
    common::untrusted_with(state, &addr, "monvm-ima-rewritten", "entry 1 rewritten");
    rewritten.restore();

    // A byte of kernel text (in kexec_load's handler, never called here).
    let profile_bytes =
        std::fs::read(record.monvm_profile.as_ref().expect("a profile")).expect("profile");
    let decoded = vmi::profile::KernelProfile::decode(&profile_bytes).expect("profile decodes");
    let byte =
        avm_qemu::testing::unused_text_offset(&decoded, 16).expect("a byte outside every site");
    let chunk = decoded.symbols.text + byte / 4096 * 4096;
    let patched = MonVmPatch::kernel(
        &record,
        |p| p.symbols.text + byte,
        |b, _| vec![b[0] ^ 0xff],
        1,
    );
    let all = common::untrusted_with(
        state,
        &addr,
        "monvm-text-modified",
        &format!("chunk:{chunk:#x}"),
    );
    patched.restore();
    // Every attack is still named.
    for code in [
        "monvm-file-not-allowed",
        "monvm-ima-rewritten",
        "monvm-text-modified",
    ] {
        assert!(all.iter().any(|(c, _)| c == code), "{code}: {all:?}");
    }
}

#[test]
fn a_6_1_mon_vm_node_stays_trusted_for_twenty_attestations_and_each_attack_is_named() {
    check_node("6.1", 20);
}

#[test]
fn a_6_12_mon_vm_node_is_trusted_and_each_attack_is_named() {
    check_node("6.12", 3);
}

/// An A-VM whose measurement log fills up (here bounded to a few records
/// by `log-max-records`) ends it with `avm:log-full`, and the verifier
/// refuses the node (`measurement-log-full`) instead of trusting a log
/// that stopped recording.
#[test]
fn a_node_whose_measurement_log_fills_up_is_untrusted() {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut config = avm_qemu::testing::tcg_config(&tmp.path().join("node"));
    config.monvm = Some(avm_qemu::testing::monvm_config("6.1", 256));
    config.extra_cmdline.push("log-max-records=10".into());
    let node = avm_qemu::Node::up_on_free_port(&config, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("node did not come up: {e}"));
    let record = node.record().clone();
    wait_for_avm_serial(&record, "AVM-LOG-FULL records=10");
    let addr = node.attest_addr().expect("a network").to_string();
    let state = tmp.path().join("verifier");
    let state = state.as_path();
    let image = avm_image();
    common::enrol_monvm_node(state, &record, &addr, &image);
    let out = verifier_exit(state, &["attest", &addr, "--json"], 1);
    let codes: Vec<String> = common::reasons(&out).into_iter().map(|(c, _)| c).collect();
    assert!(
        codes.iter().any(|c| c == "measurement-log-full"),
        "{}",
        describe(&out)
    );
}
