//! The Mon-VM part of the measurement log appraised against the policy:
//! every way a node could reach TRUSTED with something the policy does
//! not allow is refused with its own named reason.

use avm_attest::ima;
use avm_attest::monvm::{
    self, Event, FileDigest, MonVmKind, StartupRecord, parse_event, parse_startup,
};
use avm_attest::policy::{ProfileRef, ReferenceValues, ViolationMemory};
use avm_attest::verify::{MissingReference, Reason, check_measurement_log};
use avm_attest::wire::PcrValue;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const PROFILE: [u8; 32] = [0x70; 32];
const BUSYBOX: [u8; 32] = [0xbb; 32];
const INIT: [u8; 32] = [0x11; 32];
const DUMMY_KO: [u8; 32] = [0xd0; 32];
const PATCHES: [u8; 32] = [0x9a; 32];
const DEFAULT_MONITOR: &str = "syscall_idt=5,text=1000,ima=500,cross=500";

/// One record of the log: PCR, digest, name.
#[derive(Clone)]
struct Rec(u32, [u8; 32], String);

fn sha(name: &str) -> [u8; 32] {
    Sha256::digest(name.as_bytes()).into()
}

fn startup(name: &str, digest: [u8; 32]) -> Rec {
    Rec(11, digest, name.into())
}

fn event(name: &str) -> Rec {
    Rec(12, sha(name), name.into())
}

/// A known-good log as today's A-VM writes it (new record forms).
fn good() -> Vec<Rec> {
    vec![
        Rec(8, PROFILE, "avm-config:kernel-profile".into()),
        Rec(
            8,
            sha(DEFAULT_MONITOR),
            format!("avm-config:monitor-policy:{DEFAULT_MONITOR}"),
        ),
        Rec(10, [0; 32], "boot_aggregate".into()),
        Rec(10, INIT, "/sbin/init".into()),
        Rec(10, BUSYBOX, "/bin/busybox".into()),
        Rec(
            10,
            DUMMY_KO,
            "/lib/modules/6.1.0-57-cloud-amd64/kernel/drivers/net/dummy.ko".into(),
        ),
        startup("monvm:kernel:6.1.0-57-cloud-amd64", sha("k")),
        startup("monvm:module:dummy", DUMMY_KO),
        startup("monvm:process:1:init:/sbin/init", INIT),
        startup("monvm:process:42:sh:/bin/busybox", BUSYBOX),
        startup("monvm:sys_call_table", [1; 32]),
        startup("monvm:idt", [2; 32]),
        startup("monvm:text", [3; 32]),
        startup("monvm:boot_patches", PATCHES),
    ]
}

fn bytes(log: &[Rec]) -> Vec<u8> {
    log.iter()
        .flat_map(|Rec(pcr, digest, name)| ima::ng_record(*pcr, digest, name.as_bytes()))
        .collect()
}

/// Quoted PCRs 0-15 for `log` (as if the A-VM had extended it all).
fn quoted(log: &[u8]) -> Vec<PcrValue> {
    let records = ima::parse_list(log, 100_000).expect("parses");
    let pcrs = ima::replay_sha256(&records, &[[0; 32]; 24]);
    (0u8..16)
        .map(|index| PcrValue {
            index,
            digest: pcrs[usize::from(index)],
        })
        .collect()
}

fn policy() -> ReferenceValues {
    let mut p = ReferenceValues::for_image([0; 32]);
    p.monvm_profiles.push(ProfileRef {
        sha256: PROFILE,
        release: "6.1.0-57-cloud-amd64".into(),
    });
    p
}

/// A policy learned from the good log.
fn learned() -> ReferenceValues {
    let log = bytes(&good());
    let check = check_measurement_log(Some(&log), &quoted(&log)).expect("proven");
    let mut p = policy();
    let l = monvm::learn(&mut p, &log, &check);
    assert_eq!(
        (l.files, l.modules, l.boot_patches, l.skipped),
        (4, 1, 1, 0)
    );
    p
}

fn appraise_with(
    log: &[Rec],
    policy: &ReferenceValues,
    excluded: &dyn Fn(&[u8]) -> bool,
) -> (Vec<Reason>, monvm::MonVmAppraisal) {
    let log = bytes(log);
    let check = check_measurement_log(Some(&log), &quoted(&log)).expect("proven");
    let appraisal = monvm::appraise(&log, &check, Some(policy), excluded);
    (appraisal.reasons().collect(), appraisal)
}

fn codes(log: &[Rec], policy: &ReferenceValues) -> Vec<String> {
    appraise_with(log, policy, &|_| false)
        .0
        .iter()
        .map(|r| r.code().to_string())
        .collect()
}

fn finding(reasons: &[Reason]) -> &monvm::MonVmFinding {
    match reasons {
        [Reason::MonVm(f)] => f,
        other => panic!("expected one Mon-VM finding, got {other:?}"),
    }
}

#[test]
fn a_known_good_log_is_learned_and_then_passes() {
    let policy = learned();
    let (reasons, appraisal) = appraise_with(&good(), &policy, &|_| false);
    assert_eq!(reasons, []);
    assert!(appraisal.allowlist_applied);
    assert_eq!(appraisal.files_appraised, 4);
    assert_eq!(
        (appraisal.modules_appraised, appraisal.processes_appraised),
        (1, 2)
    );
    assert_eq!(policy.boot_patches_of(&PROFILE), Some(&[PATCHES][..]));
    // Learning again adds nothing; the policy survives TOML.
    let log = bytes(&good());
    let check = check_measurement_log(Some(&log), &quoted(&log)).expect("proven");
    let mut again = policy.clone();
    assert_eq!(
        monvm::learn(&mut again, &log, &check),
        monvm::LearnedMonVm::default()
    );
    let text = toml::to_string(&policy).expect("TOML");
    assert!(text.contains("[monvm_files.digests]"), "{text}");
    assert_eq!(
        toml::from_str::<ReferenceValues>(&text).expect("parse"),
        policy
    );
}

#[test]
fn without_an_allowlist_a_mon_vm_node_is_reference_values_missing() {
    let (reasons, appraisal) = appraise_with(&good(), &policy(), &|_| false);
    assert!(!appraisal.allowlist_applied);
    // Boot patches are still appraised: never learned for this profile.
    assert_eq!(
        reasons.iter().map(Reason::code).collect::<Vec<_>>(),
        ["monvm-boot-patches-unknown", "reference-values-missing"]
    );
    assert!(reasons.contains(&Reason::ReferenceValuesMissing(
        MissingReference::MonVmFiles
    )));
    // An A-VM without a Mon-VM (no profile) needs no allowlist.
    let (reasons, _) = appraise_with(&[], &policy(), &|_| false);
    assert_eq!(reasons, []);
}

#[test]
fn a_learned_profile_does_not_learn_from_an_unknown_profile() {
    let log = bytes(&good());
    let check = check_measurement_log(Some(&log), &quoted(&log)).expect("proven");
    let mut p = ReferenceValues::for_image([0; 32]);
    assert_eq!(
        monvm::learn(&mut p, &log, &check),
        monvm::LearnedMonVm::default()
    );
    assert!(p.monvm_files.is_empty());
}

#[test]
fn an_ima_entry_not_allowed_is_named_with_its_index_and_path() {
    let policy = learned();
    let mut log = good();
    log.push(Rec(10, [0xee; 32], "/tmp/rootkit".into()));
    let (reasons, _) = appraise_with(&log, &policy, &|_| false);
    let f = finding(&reasons);
    assert_eq!(
        (f.kind, f.index, f.detail.as_str()),
        (MonVmKind::FileNotAllowed, 14, "/tmp/rootkit")
    );
    assert_eq!(reasons[0].code(), "monvm-file-not-allowed");
    assert_eq!(reasons[0].pcr(), Some(10));
    // An exclude covers it.
    let (reasons, appraisal) =
        appraise_with(&log, &policy, &|path: &[u8]| path.starts_with(b"/tmp/"));
    assert_eq!(reasons, []);
    assert_eq!(appraisal.files_excluded, 1);
}

#[test]
fn an_allowed_path_with_another_digest_is_refused() {
    let policy = learned();
    let mut log = good();
    log[4].1 = [0xcc; 32];
    log[9].1 = [0xcc; 32];
    let (reasons, _) = appraise_with(&log, &policy, &|_| false);
    let kinds: Vec<_> = reasons
        .iter()
        .map(|r| match r {
            Reason::MonVm(f) => (f.kind, f.index),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (MonVmKind::FileDigestUnknown, 4),
            (MonVmKind::ProcessNotAllowed, 9)
        ]
    );
    assert!(reasons[0].to_string().contains("/bin/busybox (sha256:cccc"));
    assert!(reasons[1].to_string().contains("pid 42 sh:/bin/busybox"));
}

#[test]
fn a_module_not_allowed_or_unmeasured_is_refused() {
    let policy = learned();
    let mut log = good();
    log.push(startup("monvm:module:evil", [0x66; 32]));
    assert_eq!(codes(&log, &policy), ["monvm-module-not-allowed"]);
    let mut log = good();
    log.push(startup("monvm:module:hidden", [0; 32]));
    assert_eq!(codes(&log, &policy), ["monvm-module-unmeasured"]);
    // The allowed name from another file.
    let mut log = good();
    log[7].1 = [0x67; 32];
    assert_eq!(codes(&log, &policy), ["monvm-module-digest-unknown"]);
    // An older A-VM's record (digest = SHA-256 of its name) names no file:
    // a policy that wants the file digest refuses it.
    let mut log = good();
    log[7].1 = sha("monvm:module:dummy");
    assert_eq!(codes(&log, &policy), ["monvm-module-digest-unknown"]);
}

#[test]
fn a_module_listed_only_by_its_file_is_allowed() {
    let mut policy = learned();
    policy.monvm_modules.clear();
    assert_eq!(codes(&good(), &policy), Vec::<String>::new());
    let mut other = good();
    // The module record (6 is the kernel's).
    other[7] = startup("monvm:module:tcp_bic", DUMMY_KO);
    assert_eq!(codes(&other, &policy), ["monvm-module-not-allowed"]);
}

#[test]
fn a_process_whose_executable_has_no_ima_entry_is_refused() {
    let policy = learned();
    let mut log = good();
    log.push(startup("monvm:process:77:x:/dev/shm/x", [0; 32]));
    let (reasons, _) = appraise_with(&log, &policy, &|_| false);
    let f = finding(&reasons);
    assert_eq!(f.kind, MonVmKind::ProcessUnmeasured);
    assert_eq!(f.detail, "pid 77 x:/dev/shm/x");
    // The A-VM's own event for it is named too.
    let mut log = good();
    log.push(event(
        "monvm:event:1:violation:measurement_evaded:pid 77 /dev/shm/x",
    ));
    assert_eq!(codes(&log, &policy), ["monvm-measurement-evaded"]);
}

#[test]
fn a_comm_holding_a_path_cannot_move_the_executable_under_an_exclude() {
    let policy = learned();
    // comm "x:/tmp/" makes one reading of the record exe "/tmp/:/evil".
    let mut log = good();
    log.push(startup("monvm:process:9:x:/tmp/:/evil", [0x55; 32]));
    let excluded = |path: &[u8]| path.starts_with(b"/tmp/");
    let (reasons, _) = appraise_with(&log, &policy, &excluded);
    assert_eq!(finding(&reasons).kind, MonVmKind::ProcessNotAllowed);
    match parse_startup(b"monvm:process:9:x:/tmp/:/evil", &[0x55; 32]) {
        Ok(StartupRecord::Process { readings, .. }) => assert_eq!(readings.len(), 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn old_process_records_name_no_executable_and_are_counted() {
    let policy = learned();
    let mut log = good();
    log.push(startup("monvm:process:5:sh", sha("monvm:process:5:sh")));
    let (reasons, appraisal) = appraise_with(&log, &policy, &|_| false);
    assert_eq!(reasons, []);
    assert_eq!(appraisal.processes_without_path, 1);
    // A new-form digest without a path is malformed (fail closed).
    let mut log = good();
    log.push(startup("monvm:process:5:sh", [0x44; 32]));
    assert_eq!(codes(&log, &policy), ["monvm-record-malformed"]);
}

#[test]
fn boot_patches_must_be_learned_for_the_profile_and_present() {
    let policy = learned();
    let mut log = good();
    log[13].1 = [0x9b; 32];
    let (reasons, _) = appraise_with(&log, &policy, &|_| false);
    let f = finding(&reasons);
    assert_eq!((f.kind, f.index), (MonVmKind::BootPatchesUnknown, 13));
    // Learned for this profile, but not measured: fail closed.
    let mut log = good();
    log.pop();
    assert_eq!(codes(&log, &policy), ["monvm-boot-patches-missing"]);
    // A log that predates the record, with nothing learned: as before.
    let mut old_policy = policy.clone();
    old_policy.monvm_boot_patches.clear();
    assert_eq!(codes(&log, &old_policy), Vec::<String>::new());
    // Learned for another profile only: unknown for this one.
    let mut other = policy.clone();
    other.monvm_boot_patches[0].profile_sha256 = [0x71; 32];
    assert_eq!(codes(&good(), &other), ["monvm-boot-patches-unknown"]);
}

#[test]
fn violation_events_are_named_by_area_and_stay() {
    let policy = learned();
    for (area, code) in [
        ("sys_call_table", "monvm-syscall-table-modified"),
        ("idt", "monvm-idt-modified"),
        ("ima", "monvm-ima-rewritten"),
        ("text", "monvm-text-modified"),
        ("patch_site", "monvm-patch-site-invalid"),
        ("rodata", "monvm-rodata-modified"),
        ("ro_after_init", "monvm-ro-after-init-modified"),
        ("measurement_evaded", "monvm-measurement-evaded"),
        ("future_area", "monvm-violation"),
    ] {
        let mut log = good();
        log.push(event(&format!("monvm:event:1:violation:{area}:slot 39")));
        log.push(event(&format!("monvm:event:2:clean:{area}")));
        let (reasons, _) = appraise_with(&log, &policy, &|_| false);
        let f = finding(&reasons);
        assert_eq!(f.kind.code(), code);
        assert_eq!(f.index, 14);
        assert_eq!(f.detail, format!("{area}:slot 39"));
        assert_eq!(reasons[0].pcr(), Some(12));
    }
    // Anything else in PCR 12 is malformed: never silently clean.
    let mut log = good();
    log.push(event("monvm:event:x:clean:idt"));
    assert_eq!(codes(&log, &policy), ["monvm-event-malformed"]);
}

/// A `current` policy: a violation counts until its area is recorded
/// clean or the Mon-VM reboots; malformed records always count. A
/// `sticky` policy (the default) counts every violation ever recorded.
#[test]
fn current_violations_end_with_a_clean_area_or_a_reboot_sticky_ones_never() {
    let sticky = learned();
    let mut current = learned();
    current.monvm_violations = ViolationMemory::Current;
    // Violation, then clean: sticky names it, current does not.
    let mut log = good();
    log.push(event("monvm:event:1:violation:idt:gate 3"));
    log.push(event("monvm:event:2:clean:idt"));
    assert_eq!(codes(&log, &sticky), ["monvm-idt-modified"]);
    assert_eq!(codes(&log, &current), Vec::<String>::new());
    // A clean of another area, or one before the violation, ends nothing.
    let mut log = good();
    log.push(event("monvm:event:1:clean:idt"));
    log.push(event("monvm:event:2:violation:idt:gate 3"));
    log.push(event("monvm:event:3:clean:text"));
    assert_eq!(codes(&log, &current), ["monvm-idt-modified"]);
    // Violated again after a clean: counts again.
    log.push(event("monvm:event:4:clean:idt"));
    log.push(event("monvm:event:5:violation:idt:gate 4"));
    assert_eq!(codes(&log, &current), ["monvm-idt-modified"]);

    // A reboot ends the old boot's violations, files, modules and
    // processes; the new boot is appraised afresh, once the A-VM measured
    // it (until then nothing speaks for it: `monvm-startup-missing`).
    let kernel = || startup("monvm:kernel:6.1.0-57-cloud-amd64", sha("k"));
    let mut log = good();
    log.push(event("monvm:event:1:violation:text:0xffffffff81000000"));
    log.push(Rec(10, [0xee; 32], "/tmp/evil".into()));
    log.push(startup("monvm:module:rootkit", [0xee; 32]));
    log.push(event("monvm:event:2:reboot:slide 0x1000000 -> 0x3000000"));
    let old_boot = codes(&log, &sticky);
    assert_eq!(
        old_boot,
        [
            "monvm-text-modified",
            "monvm-file-not-allowed",
            "monvm-module-not-allowed",
            "monvm-startup-missing"
        ]
    );
    let (reasons, appraisal) = appraise_with(&log, &current, &|_| false);
    assert_eq!(
        reasons.iter().map(Reason::code).collect::<Vec<_>>(),
        ["monvm-startup-missing"]
    );
    assert_eq!(appraisal.modules_appraised, 2, "counted, not listed");
    log.push(kernel());
    let (reasons, _) = appraise_with(&log, &current, &|_| false);
    assert_eq!(reasons, []);
    // What the new boot shows counts, as does a malformed record of the old.
    let mut after = log.clone();
    after.push(startup("monvm:module:rootkit", [0xee; 32]));
    assert_eq!(codes(&after, &current), ["monvm-module-not-allowed"]);
    let mut log = good();
    log.push(event("monvm:event:x:violation:idt"));
    log.push(startup("monvm:process:x:sh:/bin/sh", [1; 32]));
    log.push(event("monvm:event:2:reboot"));
    log.push(kernel());
    assert_eq!(
        codes(&log, &current),
        ["monvm-event-malformed", "monvm-record-malformed"]
    );
    // A reboot is never a finding on its own, also under sticky; the new
    // boot not measured (yet) is.
    let mut log = good();
    log.push(event("monvm:event:1:reboot:slide"));
    assert_eq!(codes(&log, &sticky), ["monvm-startup-missing"]);
    // The remeasured event is news, not evidence: without the kernel's
    // start-up record the new boot is still not measured.
    let mut early = log.clone();
    early.push(event(
        "monvm:event:2:remeasured:slide 0x3000000, phys 0x5e00000",
    ));
    assert_eq!(codes(&early, &sticky), ["monvm-startup-missing"]);
    assert_eq!(codes(&early, &current), ["monvm-startup-missing"]);
    log.push(kernel());
    assert_eq!(codes(&log, &sticky), Vec::<String>::new());
    log.push(event(
        "monvm:event:2:remeasured:slide 0x3000000, phys 0x5e00000",
    ));
    assert_eq!(codes(&log, &sticky), Vec::<String>::new());
    assert_eq!(codes(&log, &current), Vec::<String>::new());
}

/// Only the proven part of the log closes anything: a clean event after
/// the quote does not end a violation before it.
#[test]
fn an_unproven_clean_event_ends_nothing() {
    let mut policy = learned();
    policy.monvm_violations = ViolationMemory::Current;
    let mut at_quote = good();
    at_quote.push(event("monvm:event:1:violation:idt:gate 3"));
    let quoted_log = bytes(&at_quote);
    let mut later = at_quote.clone();
    later.push(event("monvm:event:2:clean:idt"));
    later.push(event("monvm:event:3:reboot"));
    let later = bytes(&later);
    let check = check_measurement_log(Some(&later), &quoted(&quoted_log)).expect("prefix");
    let appraisal = monvm::appraise(&later, &check, Some(&policy), &|_| false);
    let codes: Vec<_> = appraisal.reasons().map(|r| r.code().to_string()).collect();
    assert_eq!(codes, ["monvm-idt-modified"]);
}

fn monitor_record(text: &str) -> Rec {
    Rec(8, sha(text), format!("avm-config:monitor-policy:{text}"))
}

/// The monitor policy the A-VM measured (PCR 8) must be there, be what
/// its digest says, and be no slower than the policy allows (the A-VM's
/// defaults unless `policy learn` widened them).
#[test]
fn the_measured_monitor_policy_is_required_bound_to_its_digest_and_no_slower_than_allowed() {
    let policy = learned();
    let with = |record: Option<Rec>| {
        let mut log = good();
        match record {
            Some(r) => log[1] = r,
            None => {
                log.remove(1);
            }
        }
        log
    };
    // Missing: fail closed.
    assert_eq!(
        codes(&with(None), &policy),
        ["monvm-monitor-policy-missing"]
    );
    // Faster than the defaults: fine. Slower: named per period.
    let fast = with(Some(monitor_record(
        "syscall_idt=1,text=500,ima=100,cross=100",
    )));
    assert_eq!(codes(&fast, &policy), Vec::<String>::new());
    let slow = with(Some(monitor_record(
        "syscall_idt=5,text=60000,ima=500,cross=2000",
    )));
    let (reasons, _) = appraise_with(&slow, &policy, &|_| false);
    let details: Vec<_> = reasons
        .iter()
        .map(|r| match r {
            Reason::MonVm(f) => (f.kind.code(), f.index, f.detail.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        details,
        [
            (
                "monvm-monitor-too-slow",
                1,
                "text=60000 ms, at most 1000 ms allowed".into()
            ),
            (
                "monvm-monitor-too-slow",
                1,
                "cross=2000 ms, at most 500 ms allowed".into()
            ),
        ]
    );
    assert_eq!(reasons[0].pcr(), Some(8));
    // A forged name (the PCR holds the digest of another text), a text
    // that is not canonical, an invalid file, a second record: invalid.
    let mut forged = monitor_record("syscall_idt=5,text=1000,ima=500,cross=500");
    forged.1 = sha("syscall_idt=5,text=60000,ima=500,cross=500");
    let reordered = "text=1000,syscall_idt=5,ima=500,cross=500";
    let invalid = Rec(8, [0x42; 32], "avm-config:monitor-policy-invalid".into());
    let garbage = monitor_record("syscall_idt=0,text=1000,ima=500,cross=500");
    for record in [forged, monitor_record(reordered), invalid, garbage] {
        assert_eq!(
            codes(&with(Some(record.clone())), &policy),
            ["monvm-monitor-policy-invalid"],
            "{}",
            record.2
        );
    }
    let mut twice = good();
    twice.insert(2, monitor_record(DEFAULT_MONITOR));
    assert_eq!(codes(&twice, &policy), ["monvm-monitor-policy-invalid"]);
    // Measured before the profile: the profile is still the configuration.
    let mut first = good();
    first.swap(0, 1);
    assert_eq!(codes(&first, &policy), Vec::<String>::new());
    // Learning a known-good node that checks more slowly widens the limit,
    // period by period, and never narrows it.
    let mut widened = policy.clone();
    let log = bytes(&slow);
    let check = check_measurement_log(Some(&log), &quoted(&log)).expect("proven");
    assert!(monvm::learn(&mut widened, &log, &check).monitor_policy);
    assert_eq!(
        widened
            .monvm_monitor_max
            .as_ref()
            .map(|m| m.to_string())
            .as_deref(),
        Some("syscall_idt=5,text=60000,ima=500,cross=2000")
    );
    assert_eq!(codes(&slow, &widened), Vec::<String>::new());
    let log = bytes(&fast);
    let check = check_measurement_log(Some(&log), &quoted(&log)).expect("proven");
    let mut again = widened.clone();
    assert!(!monvm::learn(&mut again, &log, &check).monitor_policy);
    assert_eq!(again, widened);
    // Set-uid programs: only those the policy names, each one named when
    // not; learning adds them.
    let setuid = with(Some(monitor_record(
        "syscall_idt=5,text=1000,ima=500,cross=500,setuid=/usr/bin/passwd:/usr/bin/sudo",
    )));
    let (reasons, _) = appraise_with(&setuid, &policy, &|_| false);
    let details: Vec<_> = reasons
        .iter()
        .map(|r| match r {
            Reason::MonVm(f) => (f.kind.code(), f.detail.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        details,
        [
            ("monvm-monitor-setuid-not-allowed", "/usr/bin/passwd".into()),
            ("monvm-monitor-setuid-not-allowed", "/usr/bin/sudo".into()),
        ]
    );
    assert_eq!(reasons[0].pcr(), Some(8));
    let mut sudo_only = policy.clone();
    sudo_only.monvm_monitor_max = Some(
        avm_attest::monitor_policy::MonitorPolicy::parse(
            b"syscall_idt=5,text=1000,ima=500,cross=500,setuid=/usr/bin/sudo",
        )
        .expect("a policy"),
    );
    assert_eq!(
        codes(&setuid, &sudo_only),
        ["monvm-monitor-setuid-not-allowed"]
    );
    let log = bytes(&setuid);
    let check = check_measurement_log(Some(&log), &quoted(&log)).expect("proven");
    assert!(monvm::learn(&mut sudo_only, &log, &check).monitor_policy);
    assert_eq!(
        sudo_only
            .monvm_monitor_max
            .as_ref()
            .map(|m| m.to_string())
            .as_deref(),
        Some("syscall_idt=5,text=1000,ima=500,cross=500,setuid=/usr/bin/passwd:/usr/bin/sudo")
    );
    assert_eq!(codes(&setuid, &sudo_only), Vec::<String>::new());
    // The stored policy reads back (TOML) with its programs.
    let text = toml::to_string(&sudo_only).expect("toml");
    let back: avm_attest::policy::ReferenceValues = toml::from_str(&text).expect("read back");
    assert_eq!(back, sudo_only);
    // A node without a Mon-VM needs none.
    let no_monvm = vec![Rec(10, [0; 32], "boot_aggregate".into())];
    let log = bytes(&no_monvm);
    let check = check_measurement_log(Some(&log), &quoted(&log)).expect("proven");
    assert_eq!(
        monvm::appraise(&log, &check, Some(&policy), &|_| false).findings,
        []
    );
}

#[test]
fn findings_are_listed_up_to_a_bound_and_counted_beyond() {
    let policy = learned();
    let mut log = good();
    for i in 0..150 {
        log.push(Rec(10, [0xee; 32], format!("/tmp/f{i}")));
    }
    let (reasons, appraisal) = appraise_with(&log, &policy, &|_| false);
    assert_eq!(reasons.len(), monvm::MAX_LISTED_FINDINGS);
    assert_eq!(appraisal.omitted, 50);
}

#[test]
fn details_are_bounded_and_lossy() {
    let long = format!("/{}", "a".repeat(1000));
    let mut log = good();
    log.push(Rec(10, [0xee; 32], long));
    let (reasons, _) = appraise_with(&log, &learned(), &|_| false);
    assert!(finding(&reasons).detail.len() <= monvm::MAX_DETAIL_LEN + 3);
    assert_eq!(monvm::detail_text(b"a\xffb"), "a\u{fffd}b");
}

#[test]
fn only_the_proven_prefix_is_appraised() {
    let policy = learned();
    let at_quote = bytes(&good());
    let mut later = good();
    later.push(Rec(10, [0xee; 32], "/tmp/after-the-quote".into()));
    let later = bytes(&later);
    let check = check_measurement_log(Some(&later), &quoted(&at_quote)).expect("prefix");
    assert_eq!(check.after_quote, 1);
    let appraisal = monvm::appraise(&later, &check, Some(&policy), &|_| false);
    assert_eq!(appraisal.findings, []);
}

#[test]
fn record_names_parse() {
    assert_eq!(
        parse_startup(b"monvm:module:dummy", &[0; 32]),
        Ok(StartupRecord::Module {
            name: b"dummy",
            file: FileDigest::Unmeasured
        })
    );
    assert!(parse_startup(b"monvm:module:", &[1; 32]).is_err());
    assert!(parse_startup(b"monvm:process:abc:sh:/bin/sh", &[1; 32]).is_err());
    assert!(parse_startup(b"monvm:process:99999999999:sh:/bin/sh", &[1; 32]).is_err());
    assert!(parse_startup(b"monvm:kernel:", &[1; 32]).is_err());
    assert_eq!(
        parse_startup(b"monvm:something-new", &[1; 32]),
        Ok(StartupRecord::Other)
    );
    assert_eq!(
        parse_event(b"monvm:event:3:violation:idt:gate 0x80"),
        Some(Event::Violation {
            number: 3,
            area: b"idt",
            detail: b"gate 0x80"
        })
    );
    assert_eq!(
        parse_event(b"monvm:event:4:clean:idt"),
        Some(Event::Clean {
            number: 4,
            area: b"idt"
        })
    );
    assert_eq!(parse_event(b"monvm:event:4:clean:"), None);
    assert_eq!(parse_event(b"monvm:event::clean:idt"), None);
    assert_eq!(parse_event(b"monvm:event:4:dirty:idt"), None);
    assert_eq!(
        parse_event(b"monvm:event:9:reboot:slide 0x2000000"),
        Some(Event::Reboot {
            number: 9,
            detail: b"slide 0x2000000"
        })
    );
    assert_eq!(
        parse_event(b"monvm:event:9:reboot"),
        Some(Event::Reboot {
            number: 9,
            detail: b""
        })
    );
    assert_eq!(parse_event(b"monvm:event:9:rebooted"), None);
    assert_eq!(
        parse_event(b"monvm:event:10:remeasured:slide 0x3000000, phys 0x5e00000"),
        Some(Event::Remeasured {
            number: 10,
            detail: b"slide 0x3000000, phys 0x5e00000"
        })
    );
    assert_eq!(parse_event(b"monvm:event:10:remeasured"), None);
}

proptest! {
    /// The A-VM's escaping of an executable path and the verifier's
    /// unescaping are inverse: any path bytes come back unchanged, and the
    /// escaped form holds no control character (a record name stays one
    /// printable line).
    #[test]
    fn escaped_paths_come_back_unchanged(path in proptest::collection::vec(any::<u8>(), 0..64)) {
        let escaped = avm_attest::monvm::EscapedPath(&path).to_string();
        prop_assert!(!escaped.chars().any(char::is_control));
        prop_assert_eq!(avm_attest::monvm::unescape_path(escaped.as_bytes()), Some(path));
    }

    #[test]
    fn arbitrary_names_never_panic(name in proptest::collection::vec(any::<u8>(), 0..80), digest in any::<[u8; 32]>()) {
        let _ = parse_startup(&name, &digest);
        let _ = parse_event(&name);
        let mut prefixed = b"monvm:process:".to_vec();
        prefixed.extend_from_slice(&name);
        let _ = parse_startup(&prefixed, &digest);
        let mut prefixed = b"monvm:event:".to_vec();
        prefixed.extend_from_slice(&name);
        let _ = parse_event(&prefixed);
    }

    /// Any record appended to a known-good log, with any name in any Mon-VM
    /// PCR, either is allowed by the learned policy or is named: the
    /// appraisal never passes something the policy did not learn.
    #[test]
    fn an_added_record_is_allowed_or_named(pcr in 10u32..13, name in "[a-z:/_0-9]{0,40}", digest in any::<[u8; 32]>()) {
        let policy = learned();
        let mut log = good();
        log.push(Rec(pcr, digest, name.clone()));
        let (reasons, _) = appraise_with(&log, &policy, &|_| false);
        let allowed = match pcr {
            10 => policy.monvm_files.digests_of(name.as_bytes()).is_some_and(|d| d.contains(&digest)),
            11 => !name.starts_with("monvm:module:") && !name.starts_with("monvm:process:")
                && name != "monvm:boot_patches",
            _ => parse_event(name.as_bytes())
                .is_some_and(|e| matches!(e, Event::Clean { .. } | Event::Reboot { .. } | Event::Remeasured { .. })),
        };
        if !allowed {
            prop_assert!(!reasons.is_empty(), "{pcr} {name}");
        }
    }
}

/// `log` as bytes, record `at` written with another template name or as a
/// violation (all-zero template hash), its template data unchanged.
fn tampered(log: &[Rec], at: usize, name: &str, violation: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, Rec(pcr, digest, path)) in log.iter().enumerate() {
        let data = ima::ng_template_data("sha256", digest, path.as_bytes(), None);
        let record = ima::ImaRecord {
            pcr: *pcr,
            template_hash: if i == at && violation {
                [0; 20]
            } else {
                ima::template_sha1(&data)
            },
            template_name: if i == at { name } else { "ima-ng" },
            template_data: &data,
        };
        record.emit(&mut out);
    }
    out
}

/// Review finding (2026-12-01): the quote covers a record's template data,
/// not its template name. The A-VM's own records (PCR 8: its profile,
/// 11: start-up, 12: events) renamed to a template that does not parse
/// were passed over: the profile check, the start-up records or a
/// violation event vanished while the log still replayed. They are a
/// malformed log now, as is one of them turned into a violation record.
#[test]
fn the_avm_own_records_cannot_be_renamed_away() {
    let mut log = good();
    log.push(event("monvm:event:1:violation:syscall_table:getpid"));
    let genuine = bytes(&log);
    let pcrs = quoted(&genuine);
    assert!(check_measurement_log(Some(&genuine), &pcrs).is_ok());
    let last = log.len() - 1;
    for (at, pcr) in [(0, 8), (1, 8), (6, 11), (last, 12)] {
        assert_eq!(log[at].0, pcr);
        for name in ["ima-nG", "ima-sig", "ima"] {
            let renamed = tampered(&log, at, name, false);
            assert_eq!(
                check_measurement_log(Some(&renamed), &pcrs),
                Err(Reason::MeasurementLogMalformed),
                "record {at} (PCR {pcr}) renamed {name}"
            );
        }
    }
    // A violation record of the A-VM's would replay only where the A-VM
    // had extended 0xff..: never; still refused on its own.
    let violation = tampered(&log, last, "ima-ng", true);
    let requoted = quoted(&violation);
    assert_eq!(
        check_measurement_log(Some(&violation), &requoted),
        Err(Reason::MeasurementLogMalformed)
    );
}

/// Review finding (2026-12-01): an IMA violation record (a file IMA could
/// not measure) has an all-zero template hash and extends 0xff..; nothing
/// proves its path or digest. Rewritten to an allowed path and digest, or
/// to an excluded path, it passed. Every violation record is refused.
#[test]
fn an_ima_violation_record_is_never_allowed_by_its_unproven_data() {
    let policy = learned();
    let mut log = good();
    log.push(Rec(10, BUSYBOX, "/bin/busybox".into()));
    let at = log.len() - 1;
    let forged = tampered(&log, at, "ima-ng", true);
    let check = check_measurement_log(Some(&forged), &quoted(&forged)).expect("proven");
    for excluded in [false, true] {
        let appraisal = monvm::appraise(&forged, &check, Some(&policy), &|_| excluded);
        let reasons: Vec<Reason> = appraisal.reasons().collect();
        let f = finding(&reasons);
        assert_eq!(
            (f.kind, f.index),
            (MonVmKind::FileUnappraisable, at),
            "excluded {excluded}"
        );
    }
}

/// Review finding (2026-12-01): a policy that allows Mon-VM profiles
/// expects the A-VM to introspect a Mon-VM; an A-VM started without one
/// measures no profile, and that passed as "no Mon-VM to check".
#[test]
fn a_policy_expecting_a_monvm_refuses_an_avm_without_one() {
    let no_monvm: Vec<Rec> = vec![Rec(
        8,
        sha(DEFAULT_MONITOR),
        format!("avm-config:monitor-policy:{DEFAULT_MONITOR}"),
    )];
    let log = bytes(&no_monvm);
    let check = check_measurement_log(Some(&log), &quoted(&log)).expect("proven");
    assert_eq!(check.config_digest, None);
    assert_eq!(
        check.appraise_config(Some(&policy())),
        Some(Reason::MonVmProfileMissing)
    );
    assert_eq!(
        check.appraise_config(Some(&ReferenceValues::for_image([0; 32]))),
        None
    );
    // With its Mon-VM, the same policy is satisfied.
    let log = bytes(&good());
    let check = check_measurement_log(Some(&log), &quoted(&log)).expect("proven");
    assert_eq!(check.appraise_config(Some(&policy())), None);
}
