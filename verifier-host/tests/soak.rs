//! `make soak`: no false alarm over ten minutes of ordinary Mon-VM
//! activity under `avm-verifier monitor`. A 6.1 node (`AVM_SOAK_KERNEL`
//! picks another series) is enrolled and its policy learned; then, until
//! `AVM_SOAK_SECONDS` (600) have passed, the Mon-VM keeps starting and
//! ending programs, loading and removing an allowed module, enabling and
//! disabling a tracepoint and switching the function tracer on and off,
//! while the monitor re-attests every 10 s and on every pushed event.
//! Every verdict must be trusted and the A-VM must record no event.
//!
//! Ignored in `make test` (it takes ten minutes); needs the A-VM image
//! (`$AVM_IMAGE`, else build/avm.elf) and the Mon-VM kernels (`make deps`).

mod common;

use std::time::{Duration, Instant};

use avm_qemu::monvm::console::MonVmConsole;
use avm_qemu::testing::{avm_image, avm_serial_lines, wait_for_avm_lines, wait_for_avm_serial};
use common::monitor::Monitor;
use common::verifier_exit;

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
const TRACING: &str = "/sys/kernel/tracing";

fn run(console: &mut MonVmConsole, command: &str) -> String {
    console
        .run_ok(command)
        .unwrap_or_else(|e| panic!("{command}: {e:?}"))
}

/// The environment variable `name` parsed, else `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The node at `addr` enrolled in a verifier state at `state`, its policy
/// learned from its own boot, and `monitor` watching it (re-attesting
/// every 10 s and on every pushed event), its first verdict trusted.
fn monitored(
    state: &std::path::Path,
    record: &avm_qemu::NodeRecord,
    addr: &str,
    image: &std::path::Path,
) -> Monitor {
    common::enrol_monvm_node(state, record, addr, image);
    verifier_exit(state, &["policy", "learn", addr], 0);
    let mut monitor = Monitor::start(state, &["monitor", "--json", "--interval", "10", addr]);
    monitor.wait("a first trusted verdict", Duration::from_secs(120), |l| {
        l["type"] == "verdict" && l["verdict"] == "trusted"
    });
    monitor
}

/// Where the soak's Mon-VM holds `qemu/testprogs/avm_threads.c`.
const THREADS: &str = "/usr/bin/avm_threads";

/// What the Mon-VM does in round `round`: every kind of legitimate
/// change the monitor must not mistake for an attack (network namespaces
/// come and go too: a container's, one living across rounds; so do
/// processes of two threads, whose second thread has its own cred and
/// namespace, one living across rounds).
fn activity(round: usize, module: &str) -> String {
    let programs = format!(
        "ls -l / > /dev/null && cat /proc/version > /dev/null && \
         sh -c 'i=0; while [ $i -lt 200 ]; do i=$((i+1)); done' && \
         (sleep 2 &) && ps > /dev/null && \
         unshare -n sh -c 'ip link set lo up; ping -c 1 -W 1 127.0.0.1' > /dev/null && \
         (unshare -n sleep 3 &) && \
         ({THREADS} & a=$!; {THREADS} & b=$!; sleep 1; kill $a; (sleep 3; kill $b) &)"
    );
    match round % 4 {
        0 => format!("{programs} && insmod {module} && sleep 1 && rmmod dummy"),
        1 => format!("{programs} && echo 1 > {TRACING}/events/sched/sched_switch/enable"),
        2 => format!("{programs} && echo 0 > {TRACING}/events/sched/sched_switch/enable"),
        _ => format!(
            "{programs} && echo function > {TRACING}/current_tracer && sleep 3 && \
             echo nop > {TRACING}/current_tracer"
        ),
    }
}

#[test]
#[ignore = "ten minutes: run by `make soak`"]
fn a_mon_vm_node_raises_no_alarm_through_ten_minutes_of_activity() {
    let seconds: u64 = env_or("AVM_SOAK_SECONDS", 600);
    let series = env_or("AVM_SOAK_KERNEL", String::from("6.1"));
    let image = avm_image();
    let tmp = tempfile::tempdir().expect("temp dir");
    let threads = avm_qemu::testing::build_test_program(tmp.path(), "avm_threads");
    let node = avm_qemu::testing::monvm_node_and(&tmp.path().join("node"), &series, 256, |c| {
        let monvm = c.monvm.as_mut().expect("a Mon-VM");
        monvm.extra_files.push(avm_qemu::monvm::rootfs::ExtraFile {
            host_path: threads,
            guest_path: THREADS.into(),
            mode: 0o755,
        });
    });
    let record = node.record().clone();
    let addr = node.attest_addr().expect("a network").to_string();
    wait_for_avm_serial(&record, "AVM-MONVM-IMA ");
    let mut console = MonVmConsole::connect(
        record.monvm_console.as_ref().expect("a console"),
        CONSOLE_TIMEOUT,
    )
    .expect("console");
    let module = record
        .monvm_module("dummy")
        .expect("dummy.ko in the Mon-VM's root")
        .to_string();
    // Every program and module the soak uses runs once before learning,
    // so the allowlist knows their files.
    run(&mut console, &format!("mount -t tracefs none {TRACING}"));
    for round in 0..4 {
        run(&mut console, &activity(round, &module));
    }
    std::thread::sleep(Duration::from_secs(2));
    let state = tmp.path().join("verifier");
    let state = state.as_path();
    let mut monitor = monitored(state, &record, &addr, &image);
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        run(&mut console, &activity(rounds, &module));
        rounds += 1;
        for line in monitor.drain() {
            assert!(
                line["type"] != "event" && line["type"] != "attest-failed",
                "round {rounds}: a false alarm: {line}"
            );
            if line["type"] == "verdict" {
                assert_eq!(line["verdict"], "trusted", "round {rounds}: {line}");
            }
        }
    }
    // One more attestation after the last round, then stop: the monitor
    // printed only state changes, so no line but the first verdict.
    verifier_exit(state, &["attest", &addr], 0);
    monitor.interrupt();
    let untrusted: Vec<_> = monitor
        .seen
        .iter()
        .filter(|l| l["type"] == "verdict" && l["verdict"] != "trusted")
        .collect();
    assert!(untrusted.is_empty(), "{untrusted:#?}");
    let serial = std::fs::read_to_string(&record.avm_serial).expect("serial log");
    let events: Vec<_> = serial
        .lines()
        .filter(|l| l.contains("AVM-MONVM-EVENT"))
        .collect();
    assert!(events.is_empty(), "false alarms: {events:#?}");
    eprintln!(
        "soak: {series}, {} s, {rounds} rounds of activity, trusted throughout, no event",
        started.elapsed().as_secs()
    );
    assert!(rounds >= 4, "{rounds} rounds");
}

/// Waits (up to five minutes: a Mon-VM boot under TCG on a loaded host)
/// until the A-VM's serial log holds `count` lines starting with `prefix`.
fn wait_lines(record: &avm_qemu::NodeRecord, prefix: &str, count: usize) {
    wait_for_avm_lines(record, prefix, count, Duration::from_secs(300));
}

/// `make soak`, part two: a Mon-VM rebooted from its console
/// `AVM_SOAK_REBOOTS` (20) times in a row on one node under `monitor`.
/// Each boot lands on a new KASLR slide and physical slot (now and then
/// the slot of an earlier boot, whose image the new kernel overwrites);
/// the old images pile up in RAM. The A-VM must notice every reboot,
/// measure every new kernel, and never take a reboot for a decoy (a
/// kernel left behind counting on, the new one stalled) or anything else:
/// the only events are the reboots and the new kernels measured
/// (`remeasured`), the only untrusted verdicts those of a Mon-VM booting
/// (`monvm-startup-missing`), and each new kernel, once measured, is
/// trusted.
#[test]
#[ignore = "minutes of Mon-VM reboots: run by `make soak`"]
fn a_mon_vm_rebooted_again_and_again_raises_no_alarm() {
    let reboots: usize = env_or("AVM_SOAK_REBOOTS", 20);
    let series = env_or("AVM_SOAK_KERNEL", String::from("6.1"));
    let image = avm_image();
    let tmp = tempfile::tempdir().expect("temp dir");
    let node = avm_qemu::testing::monvm_node_and(&tmp.path().join("node"), &series, 256, |_| {});
    let record = node.record().clone();
    let addr = node.attest_addr().expect("a network").to_string();
    wait_for_avm_serial(&record, "AVM-MONVM-IMA ");
    let state = tmp.path().join("verifier");
    let state = state.as_path();
    let mut monitor = monitored(state, &record, &addr, &image);
    // Every line the monitor prints: the only events are reboots and the
    // new kernels measured, and while the Mon-VM boots its new kernel is
    // not measured yet, which is untrusted for that reason alone (fail
    // closed).
    let judge = |line: &serde_json::Value, after: usize| {
        if line["type"] == "event" {
            assert!(
                line["name"]
                    .as_str()
                    .is_some_and(|n| n.contains(":reboot:") || n.contains(":remeasured:")),
                "after reboot {after}: an event that is no reboot: {line}"
            );
        }
        assert!(
            line["type"] != "attest-failed",
            "after reboot {after}: {line}"
        );
        if line["type"] == "verdict" && line["verdict"] != "trusted" {
            assert_eq!(
                line["reasons"],
                serde_json::json!(["monvm-startup-missing"]),
                "after reboot {after}: {line}"
            );
        }
    };
    let mut verdict = String::from("trusted");
    let mut remeasured = 0;
    // Until the monitor has seen the event of boot `n` measured and says
    // trusted.
    let mut trusted_after = |monitor: &mut Monitor, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            for line in monitor.drain() {
                judge(&line, n);
                if line["name"]
                    .as_str()
                    .is_some_and(|n| n.contains(":remeasured:"))
                {
                    remeasured += 1;
                }
                if line["type"] == "verdict" {
                    verdict = line["verdict"].as_str().unwrap_or_default().to_string();
                }
            }
            if remeasured >= n && verdict == "trusted" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "reboot {n}: {remeasured} boots measured again, verdict {verdict}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let started = Instant::now();
    let mut places = std::collections::BTreeSet::new();
    for n in 1..=reboots {
        let mut console = MonVmConsole::connect(
            record.monvm_console.as_ref().expect("a console"),
            CONSOLE_TIMEOUT,
        )
        .expect("console");
        // Up long enough for the A-VM to learn its tick rate (a kernel
        // left behind is then held to that clock, which a real reboot's
        // never matches: it stopped).
        std::thread::sleep(Duration::from_micros(
            vmi::linux::liveness::RATE_SPAN_US + 1_000_000,
        ));
        let _ = console.run_timeout("reboot -f", Duration::from_secs(2));
        drop(console);
        wait_lines(&record, "AVM-MONVM-REBOOT", n);
        wait_lines(&record, "AVM-MONVM-STARTUP", n + 1);
        wait_lines(&record, "AVM-MONVM-IMA ", n + 1);
        let placed = avm_serial_lines(&record, "AVM-MONVM ");
        if let Some(line) = placed.last() {
            places.insert(
                line.split(' ')
                    .find(|w| w.starts_with("phys_text="))
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        trusted_after(&mut monitor, n);
    }
    // The last kernel left behind is watched for 30 s after its reboot.
    std::thread::sleep(Duration::from_micros(
        vmi::linux::liveness::LEFT_BEHIND_WINDOW_US + 2_000_000,
    ));
    verifier_exit(state, &["attest", &addr], 0);
    trusted_after(&mut monitor, reboots);
    monitor.interrupt();
    let serial = std::fs::read_to_string(&record.avm_serial).expect("serial log");
    let alarms: Vec<_> = serial
        .lines()
        .filter(|l| {
            l.contains("AVM-MONVM-EVENT") && !l.contains(":reboot:") && !l.contains(":remeasured:")
        })
        .collect();
    assert!(alarms.is_empty(), "false alarms: {alarms:#?}");
    assert_eq!(
        avm_serial_lines(&record, "AVM-MONVM-REBOOT").len(),
        reboots,
        "every reboot noticed once"
    );
    eprintln!(
        "soak: {series}, {reboots} reboots in {} s, {} physical slots, trusted after each, no event but the reboots and the new boots measured",
        started.elapsed().as_secs(),
        places.len()
    );
}
