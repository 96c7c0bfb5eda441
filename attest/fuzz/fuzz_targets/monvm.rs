//! The Mon-VM appraisal of a measurement log (`avm_attest::monvm`): the
//! input is a log in IMA binary form, quoted as if the A-VM had extended
//! all of it (so every record is proven); it is appraised against an
//! empty-allowlist policy and against what `learn` takes from it, and its
//! record names go through the start-up and event parsers; then again
//! with `monvm_violations = "current"`.
#![no_main]

use avm_attest::ima;
use avm_attest::monvm;
use avm_attest::policy::{ProfileRef, ReferenceValues, ViolationMemory};
use avm_attest::verify::check_measurement_log;
use avm_attest::wire::PcrValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(records) = ima::parse_list(data, 4096) else {
        return;
    };
    for r in &records {
        if let Ok(f) = r.ng_fields() {
            let digest = <[u8; 32]>::try_from(f.digest).unwrap_or([0; 32]);
            let _ = monvm::parse_startup(f.name, &digest);
            let _ = monvm::parse_event(f.name);
        }
    }
    let pcrs = ima::replay_sha256(&records, &[[0; 32]; 24]);
    let quoted: Vec<PcrValue> = (8u8..16)
        .map(|index| PcrValue {
            index,
            digest: pcrs[usize::from(index)],
        })
        .collect();
    let Ok(check) = check_measurement_log(Some(data), &quoted) else {
        return;
    };
    let mut policy = ReferenceValues::default();
    if let Some(profile) = check.config_digest {
        policy.monvm_profiles.push(ProfileRef {
            sha256: profile,
            release: String::new(),
        });
    }
    let before = monvm::appraise(data, &check, Some(&policy), &|p| p.starts_with(b"/tmp/"));
    assert!(before.findings.len() <= monvm::MAX_LISTED_FINDINGS);
    let _ = before.reasons().count();
    monvm::learn(&mut policy, data, &check);
    let after = monvm::appraise(data, &check, Some(&policy), &|_| false);
    for finding in &after.findings {
        assert!(finding.detail.len() <= monvm::MAX_DETAIL_LEN + 3);
    }
    // A `current` policy never lists more than a sticky one: it only
    // closes findings (a clean area, a Mon-VM reboot).
    policy.monvm_violations = ViolationMemory::Current;
    let current = monvm::appraise(data, &check, Some(&policy), &|_| false);
    assert!(current.findings.len() + current.omitted <= after.findings.len() + after.omitted);
    let _ = monvm::monitor_policy_record(&records);
});
