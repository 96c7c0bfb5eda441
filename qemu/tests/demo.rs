//! `avm-demo --rounds 1 --json` on a 6.1 and a 6.12 Mon-VM (issue 8):
//! every attack class, injected from inside through the test rootkit and
//! from outside through the Mon-VM's RAM file, reaches
//! `avm-verifier monitor` as a pushed event carrying its log index, and
//! turns the monitor's verdict untrusted with the class's reason code; a
//! fresh attestation names that very record under the reason and proves
//! the log up to it; after each restore the A-VM reports every area clean
//! again and the monitor says trusted again (the demo's policy counts a
//! violation until its area is clean: `monvm_violations = current`).
//!
//! The monitor's verdict line does not say which log its quote proved (no
//! proven record count, no record per reason): the record check is made
//! with a fresh `attest --json` instead (`attest_names_record`), and
//! `verdict_covers_event` is asserted only once the verifier reports it.
//!
//! Needs the A-VM image (`$AVM_IMAGE`, else build/avm.elf), the Mon-VM
//! kernels and the rootkit (`make deps`) and the avm-verifier binary
//! (`$AVM_VERIFIER`, else next to avm-demo, else built here).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use avm_qemu::demo::AttackKind;
use serde_json::Value;

static BOOTS: Mutex<()> = Mutex::new(());

fn verifier_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("AVM_VERIFIER") {
        return PathBuf::from(path);
    }
    let demo = PathBuf::from(env!("CARGO_BIN_EXE_avm-demo"));
    let beside = demo.with_file_name("avm-verifier");
    if !beside.is_file() {
        // Same profile and target directory as this test's binaries.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "avm-verifier", "--bin", "avm-verifier"]);
        if demo.parent().and_then(|p| p.file_name()) == Some("release".as_ref()) {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building avm-verifier failed");
    }
    assert!(beside.is_file(), "{} missing", beside.display());
    beside
}

fn demo(series: &str) {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let verifier = verifier_bin();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_avm-demo"))
        .args(["--rounds", "1", "--json", "--monvm-kernel", series])
        .arg("--image")
        .arg(avm_qemu::testing::avm_image())
        .arg("--verifier")
        .arg(&verifier)
        .output()
        .expect("running avm-demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    eprintln!("{series}: avm-demo took {:?}", started.elapsed());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{series}: not a JSON report ({e}), exit {:?}:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
        )
    });
    eprintln!("{series}: {:#}", report["summary"]);
    assert_eq!(report["trusted_before"], true, "{series}: {report:#}");
    let injections = report["injections"].as_array().expect("injections");
    for attack in AttackKind::ALL {
        let of: Vec<&Value> = injections
            .iter()
            .filter(|i| i["attack"] == attack.name())
            .collect();
        assert_eq!(of.len(), 1, "{series}: {} injected once", attack.name());
        let i = of[0];
        let what = format!("{series} {}: {i:#}", attack.name());
        assert!(i["error"].is_null(), "{what}");
        // The monitor received the pushed event of the attack's area...
        let name = i["event_name"].as_str().unwrap_or_else(|| panic!("{what}"));
        assert!(
            name.starts_with("monvm:event:")
                && name.contains(&format!(":violation:{}", attack.area())),
            "{what}"
        );
        // ...carrying the index of its record in the measurement log...
        assert!(i["event_index"].as_u64().is_some(), "{what}");
        // ...then the untrusted verdict with the class's reason code.
        assert!(i["verdict_ms"].as_f64().is_some(), "{what}");
        assert_eq!(i["detected"], true, "{what}");
        // A quote-proven log holds that record, named under the reason.
        assert_eq!(i["attest_names_record"], true, "{what}");
        if let Some(covered) = i["verdict_covers_event"].as_bool() {
            assert!(covered, "{what}");
        }
        // Restored: the A-VM reports every area clean again, and the
        // monitor trusts the node again.
        assert_eq!(i["clean"], true, "{what}");
        assert_eq!(i["trusted_again"], true, "{what}");
    }
    let summary = report["summary"].as_array().expect("summary");
    for attack in AttackKind::ALL {
        let s = summary
            .iter()
            .find(|s| s["attack"] == attack.name())
            .unwrap_or_else(|| panic!("{series}: {} not in the summary", attack.name()));
        assert_eq!(s["reason"], attack.reason(), "{series}: {s}");
        assert_eq!(s["detected"], 1, "{series}: {s}");
    }
    assert_eq!(report["all_detected"], true, "{series}");
    assert_eq!(out.status.code(), Some(0), "{series}: {stderr}");
}

#[test]
fn every_attack_class_is_detected_by_monitor_on_a_6_1_mon_vm() {
    demo("6.1");
}

#[test]
fn every_attack_class_is_detected_by_monitor_on_a_6_12_mon_vm() {
    demo("6.12");
}
