//! The Mon-VM side of the verifier without QEMU: a Keylime runtime policy
//! from the peer baseline's generator (or, where the baseline is not beside
//! the project, the same files made here) imported and applied to its IMA
//! list, and the incremental measurement-log fetch against a host node
//! (swtpm + tpm2-tools behind the wire protocol) whose PCRs 8-15 the test
//! extends as an A-VM would: kept across verifier runs, fetched whole
//! again when the node contradicts the stored log or its log shrinks.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use avm_attest::policy::ReferenceValues;
use avm_attest::wire::PcrValue;
use avm_verifier::appraise::check_and_appraise_log;
use avm_verifier::store::Store;
use common::host_node::HostNode;
use common::{describe, reason_codes, verifier, verifier_exit};

const GENERATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/peers/ima-baseline/gen_ima_log.py"
);

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}): {}", describe(out)))
}

/// gen_ima_log.py N DIR [args]: a synthetic IMA list and its Keylime policy.
/// The peer baseline lives beside the project (`../shared`); where it is
/// not (a clone elsewhere), the same files are made here, in the same
/// formats ([`generate_here`]).
fn generate(n: usize, dir: &Path, args: &[&str]) {
    if !Path::new(GENERATOR).is_file() {
        let tamper = args
            .windows(2)
            .find(|w| w[0] == "--tamper")
            .and_then(|w| w[1].parse().ok());
        return generate_here(n, dir, tamper);
    }
    let out = Command::new("python3")
        .arg(GENERATOR)
        .arg(n.to_string())
        .arg(dir)
        .args(args)
        .output()
        .expect("python3 runs (it is installed with the peer baseline)");
    assert!(out.status.success(), "{}", describe(&out));
}

/// What gen_ima_log.py writes, for N files (plus `boot_aggregate`): the
/// binary list (`ima-ng`, PCR 10, `sha256:` digests), `pcrs-sha256` (its
/// PCR 10), the Keylime runtime policy allowing every entry (format
/// version 1, as `keylime-policy` writes it) and `meta.json`; with
/// `tamper`, that entry measured another file than the policy allows
/// (`--tamper-mode measured`).
fn generate_here(n: usize, dir: &Path, tamper: Option<usize>) {
    let sha256 = |text: String| openssl::sha::sha256(text.as_bytes());
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut list = Vec::new();
    let mut digests = serde_json::Map::new();
    let mut tampered = None;
    for i in 0..=n {
        let path = if i == 0 {
            "boot_aggregate".to_string()
        } else {
            format!("/usr/lib/x86_64-linux-gnu/libgen{i}.so.{}", i % 7)
        };
        let digest = sha256(format!("file-content:{path}"));
        digests.insert(
            path.clone(),
            serde_json::json!([avm_attest::hex::encode(&digest)]),
        );
        let measured = if tamper == Some(i) {
            tampered = Some(path.clone());
            sha256(format!("other-content:{path}"))
        } else {
            digest
        };
        list.extend(avm_attest::ima::ng_record(10, &measured, path.as_bytes()));
    }
    let records = avm_attest::ima::parse_list(&list, n + 1).expect("parses");
    let pcrs = avm_attest::ima::replay_sha256(&records, &[[0; 32]; 24]);
    let policy = serde_json::json!({
        "meta": {"version": 1, "generator": 3},
        "release": 0,
        "digests": digests,
        "excludes": [],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    });
    let meta = serde_json::json!({"tamper": {"path": tampered}});
    std::fs::write(dir.join("binary_runtime_measurements"), &list).expect("write");
    std::fs::write(
        dir.join("pcrs-sha256"),
        format!("PCR-10: {}\n", avm_attest::hex::encode(&pcrs[10])),
    )
    .expect("write");
    std::fs::write(dir.join("runtime_policy.json"), policy.to_string()).expect("write");
    std::fs::write(dir.join("meta.json"), meta.to_string()).expect("write");
}

/// The reason codes of the verifier's appraisal of a generated list.
fn appraise_generated(dir: &Path, policy: &ReferenceValues) -> Vec<String> {
    let log = std::fs::read(dir.join("binary_runtime_measurements")).expect("list");
    let pcrs = std::fs::read_to_string(dir.join("pcrs-sha256")).expect("pcrs");
    let pcr10 = pcrs
        .lines()
        .find_map(|l| l.strip_prefix("PCR-10: "))
        .and_then(|h| avm_attest::hex::decode_array::<32>(h.trim()).ok())
        .expect("PCR-10");
    let quoted = [PcrValue {
        index: 10,
        digest: pcr10,
    }];
    let (check, appraisal) = check_and_appraise_log(Some(&log), &quoted, Some(policy));
    let check = check.expect("the list replays to its PCR 10");
    assert_eq!(check.after_quote, 0);
    appraisal
        .expect("appraised")
        .reasons()
        .map(|r| format!("{}:{}", r.code(), r))
        .collect()
}

#[test]
fn a_keylime_runtime_policy_is_imported_and_appraises_its_list() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (good, measured) = (tmp.path().join("good"), tmp.path().join("measured"));
    generate(300, &good, &[]);
    generate(
        300,
        &measured,
        &["--tamper", "150", "--tamper-mode", "measured"],
    );
    let state = tmp.path().join("state");
    let state = state.as_path();
    let policy_file = good.join("runtime_policy.json");

    // No policy to import into yet: a usage error.
    let out = verifier_exit(state, &["policy", "import-keylime", s(&policy_file)], 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("policy init"));
    verifier_exit(
        state,
        &["policy", "init", "--avm-image-sha256", &"ab".repeat(32)],
        0,
    );
    let out = verifier_exit(state, &["policy", "import-keylime", s(&policy_file)], 0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("301 SHA-256 digests of 301 paths"), "{text}");
    // Importing again adds nothing.
    let out = verifier_exit(state, &["policy", "import-keylime", s(&policy_file)], 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(0 new)"));

    let shown = verifier_exit(state, &["policy", "show"], 0);
    let policy: ReferenceValues = toml::from_str(&String::from_utf8_lossy(&shown.stdout))
        .unwrap_or_else(|e| panic!("policy TOML: {e}"));
    assert_eq!(policy.monvm_files.len(), 301);
    assert_eq!(
        policy.avm_image_sha256,
        [[0xab; 32]],
        "the rest of the policy is kept"
    );

    // The imported allowlist passes the good list and names the entry of
    // the list that measured another file (Keylime's verdicts).
    assert_eq!(appraise_generated(&good, &policy), Vec::<String>::new());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(measured.join("meta.json")).expect("meta"))
            .expect("meta JSON");
    let path = meta["tamper"]["path"].as_str().expect("tampered path");
    let codes = appraise_generated(&measured, &policy);
    assert_eq!(codes.len(), 1, "{codes:?}");
    assert!(
        codes[0].starts_with("monvm-file-digest-unknown:") && codes[0].contains("#150"),
        "{codes:?}"
    );
    assert!(codes[0].contains(path), "{codes:?}");

    // Malformed policies are refused whole, with a reason; the stored
    // policy is unchanged.
    let bad = tmp.path().join("bad.json");
    let full = std::fs::read(&policy_file).expect("policy");
    for (content, needle) in [
        (
            full[..full.len() / 2].to_vec(),
            "not a Keylime runtime policy",
        ),
        (
            br#"{"meta": {"version": 2}, "digests": {}}"#.to_vec(),
            "version",
        ),
        (
            br#"{"meta": {"version": 1}, "digests": {"/a": ["not hex"]}}"#.to_vec(),
            "not hex",
        ),
        (
            br#"{"meta": {"version": 1}, "excludes": ["(?<=x)"]}"#.to_vec(),
            "regular expression",
        ),
    ] {
        std::fs::write(&bad, content).expect("write");
        let out = verifier(state, &["policy", "import-keylime", s(&bad)]);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let again = verifier_exit(state, &["policy", "show"], 0);
    assert_eq!(again.stdout, shown.stdout);

    // --replace replaces the allowlist (here with an empty one).
    std::fs::write(&bad, br#"{"meta": {"version": 1}, "excludes": ["/tmp/"]}"#).expect("write");
    verifier_exit(
        state,
        &["policy", "import-keylime", s(&bad), "--replace"],
        0,
    );
    let shown = verifier_exit(state, &["policy", "show"], 0);
    let policy: ReferenceValues =
        toml::from_str(&String::from_utf8_lossy(&shown.stdout)).expect("TOML");
    assert_eq!(policy.monvm_files.len(), 0);
    assert_eq!(policy.monvm_files.excludes, ["/tmp/"]);
}

/// Attests `node`; the measurement-log part of its JSON report.
fn attest_log(state: &Path, node: &HostNode) -> (serde_json::Value, Vec<String>) {
    // A host node has no firmware event log: never trusted, but its
    // measurement log is checked against the quote all the same.
    let out = verifier_exit(state, &["attest", &node.addr, "--json"], 1);
    let codes = reason_codes(&out);
    (json(&out)["measurement_log"].clone(), codes)
}

fn requests(node: &HostNode) -> Vec<u32> {
    std::mem::take(&mut *node.log.requests.lock().expect("lock"))
}

#[test]
fn the_measurement_log_is_fetched_incrementally_and_whole_again_when_contradicted() {
    let node = HostNode::start(false);
    node.measure(8, &[7; 32], "avm-config:kernel-profile");
    node.measure(10, &[1; 32], "/sbin/init");
    node.measure(10, &[2; 32], "/bin/busybox");
    let tmp = tempfile::tempdir().expect("temp dir");
    let state = tmp.path();
    verifier_exit(
        state,
        &["enroll", &node.addr, "--ek-ca", s(&node.tpm.ca_bundle)],
        0,
    );

    // First attestation: the whole log, proven and kept.
    let (log, codes) = attest_log(state, &node);
    assert_eq!(log["fetched_from"], 0, "{log}");
    assert_eq!(log["proven_records"], 3, "{log}");
    assert!(log.get("refetched").is_none(), "{log}");
    assert!(
        !codes.iter().any(|c| c.starts_with("measurement-log")),
        "{codes:?}"
    );
    // (The host node sends at most three records per chunk.)
    assert_eq!(requests(&node), [0]);
    let stored = Store::open(state)
        .expect("state")
        .measurement_log(&node.addr)
        .expect("read")
        .expect("kept");
    assert_eq!(stored.records, 3);

    // The node measures more; a new verifier process asks only for what
    // follows the stored records (a restart loses nothing).
    node.measure(10, &[3; 32], "/usr/bin/avm-hello");
    node.measure(11, &[4; 32], "monvm:kernel:6.1.0-test");
    let (log, _) = attest_log(state, &node);
    assert_eq!(log["fetched_from"], 3, "{log}");
    assert_eq!(log["proven_records"], 5, "{log}");
    assert_eq!(log["monvm_ima_entries"], 3, "{log}");
    assert_eq!(requests(&node), [3]);

    // Nothing new: one request, from 5.
    let (log, _) = attest_log(state, &node);
    assert_eq!(
        (log["fetched_from"].as_u64(), log["proven_records"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(requests(&node), [5]);

    // A stored prefix the node contradicts (here: the verifier's copy
    // altered, same count and boot) is never trusted: the whole log is
    // fetched again and appraised from scratch.
    let mut store = Store::open(state).expect("state");
    let mut stale = store
        .measurement_log(&node.addr)
        .expect("read")
        .expect("kept");
    let mut other = Vec::new();
    for i in 0..5u8 {
        other.extend(avm_attest::ima::ng_record(10, &[0xe0 + i; 32], b"/forged"));
    }
    stale.log = other;
    store.set_measurement_log(&stale).expect("write");
    drop(store);
    let (log, codes) = attest_log(state, &node);
    assert_eq!(log["fetched_from"], 0, "{log}");
    assert_eq!(log["proven_records"], 5, "{log}");
    assert!(
        log["refetched"]
            .as_str()
            .is_some_and(|r| r.contains("do not replay")),
        "{log}"
    );
    assert!(
        !codes.iter().any(|c| c.starts_with("measurement-log")),
        "{codes:?}"
    );
    assert_eq!(requests(&node), [5, 0, 3]);
    let kept = Store::open(state)
        .expect("state")
        .measurement_log(&node.addr)
        .expect("read")
        .expect("kept");
    assert_ne!(kept.log, stale.log, "the forged prefix was replaced");

    // A log that shrinks (the node forgot records its PCRs still hold) is
    // fetched whole again; it no longer replays to the quote, and nothing
    // of it is kept.
    node.log.dropped.store(2, Ordering::SeqCst);
    let out = verifier_exit(state, &["attest", &node.addr, "--json"], 1);
    let codes = reason_codes(&out);
    assert!(
        codes.contains(&"measurement-log-replay-mismatch".to_string()),
        "{codes:?}"
    );
    assert_eq!(requests(&node), [5, 0]);
    assert_eq!(
        Store::open(state)
            .expect("state")
            .measurement_log(&node.addr)
            .expect("read"),
        None
    );
    // With nothing kept, the next attestation asks from 0.
    node.log.dropped.store(0, Ordering::SeqCst);
    let (log, _) = attest_log(state, &node);
    assert_eq!(
        (log["fetched_from"].as_u64(), log["proven_records"].as_u64()),
        (Some(0), Some(5))
    );
}
