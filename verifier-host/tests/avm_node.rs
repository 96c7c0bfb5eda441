//! `avm-verifier` end to end against real A-VM nodes: the A-VM image
//! booted under QEMU + swtpm by avm-qemu, its attestation server reached
//! over the forwarded loopback port, every check done by the CLI binary.
//!
//! Needs the A-VM image (`$AVM_IMAGE`, else build/avm.elf: `make build`).
//! Three nodes are booted in all (a few seconds each under TCG); each test
//! shares its nodes between several checks.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use avm_attest::eventlog::EventLog;
use avm_attest::wire::{self, FRAME_HEADER_LEN, KeyInfo, MAX_FRAME_LEN, MAX_REQUEST_LEN, Response};
use avm_qemu::Node;
use avm_qemu::testing::{avm_image, network_node_with as boot_node};
use avm_verifier::client::NodeClient;
use common::{checkquote, describe, reason_codes, stdout, verifier_exit};

fn addr_of(node: &Node) -> String {
    node.attest_addr().expect("node has a network").to_string()
}

fn ek_ca_of(node: &Node) -> String {
    let ca = node.record().ek_ca.clone().expect("node has an EK CA");
    ca.to_str().expect("utf-8 path").to_string()
}

/// `verify DIR --json` on a copy of `export` altered by `alter`; returns
/// the reason codes (the verdict must be untrusted).
fn verify_altered(
    state: &Path,
    export: &Path,
    name: &str,
    alter: impl FnOnce(&Path),
) -> Vec<String> {
    let dir = state.join(format!("altered-{name}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for entry in std::fs::read_dir(export).expect("export dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
    }
    alter(&dir);
    let out = verifier_exit(
        state,
        &["verify", dir.to_str().expect("utf-8"), "--json"],
        1,
    );
    reason_codes(&out)
}

fn flip_byte(path: &Path, at_from_end: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    let at = bytes.len() - at_from_end;
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).expect("write");
}

fn alter_log(dir: &Path, change: impl FnOnce(&mut EventLog)) {
    let path = dir.join("eventlog.bin");
    let mut log = EventLog::parse(&std::fs::read(&path).expect("log")).expect("log parses");
    change(&mut log);
    std::fs::write(&path, log.emit()).expect("write log");
}

/// A firmware PCR (1-7) with at least two extended events of different
/// digests, and their indices in the log.
fn pcr_with_two_events(log: &EventLog) -> (u32, usize, usize) {
    for pcr in 1..8 {
        let events: Vec<(usize, [u8; 32])> = log
            .events_for_pcr(pcr)
            .filter(|(_, e)| e.is_extended())
            .filter_map(|(i, e)| e.sha256().map(|d| (i, d)))
            .collect();
        for pair in events.windows(2) {
            if pair[0].1 != pair[1].1 {
                return (pcr, pair[0].0, pair[1].0);
            }
        }
    }
    panic!("no PCR with two different events in the A-VM's log");
}

/// One node, from before enrolment to a trusted verdict, then everything
/// the verifier must refuse in its exported evidence.
#[test]
fn a_booted_node_is_enrolled_attested_and_its_evidence_checked() {
    let image = avm_image();
    let tmp = tempfile::tempdir().expect("temp dir");
    let node = boot_node(&tmp.path().join("node"), &image);
    let addr = addr_of(&node);
    let state = tmp.path().join("verifier");
    let state = state.as_path();

    // Not enrolled yet: refused as an unknown node.
    let out = verifier_exit(state, &["attest", &addr, "--json"], 1);
    assert_eq!(reason_codes(&out), ["unknown-node"]);

    verifier_exit(state, &["enroll", &addr, "--ek-ca", &ek_ca_of(&node)], 0);

    // Learning needs PCR 0 to match an allowed image: a policy that
    // allows none teaches nothing.
    let mut store = avm_verifier::store::Store::open(state).expect("state");
    store
        .set_policy("version = 1\navm_image_sha256 = []\n")
        .expect("policy");
    drop(store);
    let out = verifier_exit(state, &["policy", "learn", &addr], 2);
    assert!(describe(&out).contains("PCR 0"), "{}", describe(&out));

    let image_arg = image.to_str().expect("utf-8");
    verifier_exit(state, &["policy", "init", "--avm-image", image_arg], 0);
    let out = verifier_exit(state, &["policy", "learn", &addr], 0);
    assert!(stdout(&out).contains("learned"), "{}", describe(&out));

    // Trusted, and the exported quote satisfies tpm2_checkquote.
    let export = tmp.path().join("export");
    let export_arg = export.to_str().expect("utf-8");
    let out = verifier_exit(
        state,
        &["attest", &addr, "--export", export_arg, "--json"],
        0,
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["verdict"], "trusted", "{report}");
    assert_eq!(
        report["avm_image_sha256"],
        node.record().image_sha256.as_str()
    );
    let nonce = std::fs::read_to_string(export.join("nonce.hex")).expect("nonce.hex");
    let check = checkquote(&export, nonce.trim());
    assert!(
        check.status.success(),
        "tpm2_checkquote: {}",
        describe(&check)
    );

    // The human verdict and the node list.
    let out = verifier_exit(state, &["attest", &addr], 0);
    assert!(stdout(&out).contains("TRUSTED"), "{}", describe(&out));
    let out = verifier_exit(state, &["nodes"], 0);
    assert!(stdout(&out).contains(&addr) && stdout(&out).contains("trusted"));

    // Offline, the export verifies as it is (its AK is the enrolled one) ...
    let out = verifier_exit(state, &["verify", export_arg, "--json"], 0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["ak_binding"]["node"], addr.as_str(), "{report}");

    // ... but re-signed by a software key written as the AK, with the real
    // log and an allowed image, it is refused: the key is not enrolled.
    let codes = verify_altered(state, &export, "software-ak", |d| {
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
            .expect("P-256");
        let key = openssl::ec::EcKey::generate(&group).expect("key");
        let msg = std::fs::read(d.join("quote.msg")).expect("quote.msg");
        let sig = openssl::ecdsa::EcdsaSig::sign(&openssl::sha::sha256(&msg), &key).expect("sign");
        let mut tpmt = vec![0x00, 0x18, 0x00, 0x0b];
        for part in [sig.r().to_vec(), sig.s().to_vec()] {
            tpmt.extend_from_slice(&u16::try_from(part.len()).expect("len").to_be_bytes());
            tpmt.extend_from_slice(&part);
        }
        std::fs::write(d.join("quote.sig"), tpmt).expect("write");
        std::fs::remove_file(d.join("ak.pub")).expect("rm ak.pub");
        std::fs::write(d.join("ak.pem"), key.public_key_to_pem().expect("pem")).expect("pem");
    });
    assert_eq!(codes, ["ak-not-enrolled"]);

    // ... and every alteration is refused with its own reason.
    let mut other_nonce = nonce.trim().to_string();
    other_nonce.replace_range(
        0..2,
        if &other_nonce[0..2] == "00" {
            "01"
        } else {
            "00"
        },
    );
    let out = verifier_exit(
        state,
        &["verify", export_arg, "--nonce", &other_nonce, "--json"],
        1,
    );
    assert_eq!(reason_codes(&out), ["nonce-mismatch"]);

    let codes = verify_altered(state, &export, "attest", |d| {
        // The last byte of TPMS_ATTEST is in the PCR digest.
        flip_byte(&d.join("quote.msg"), 1);
    });
    assert!(
        codes.contains(&"signature-invalid".to_string()),
        "{codes:?}"
    );
    let codes = verify_altered(state, &export, "signature", |d| {
        flip_byte(&d.join("quote.sig"), 1);
    });
    assert_eq!(codes, ["signature-invalid"]);
    let codes = verify_altered(state, &export, "pcrs", |d| {
        // The file ends with the PCR values; alter PCR 7's.
        let mut pcrs = avm_verifier::pcrs_file::parse_serialized(
            &std::fs::read(d.join("quote.pcrs")).expect("pcrs"),
        )
        .expect("PCR file");
        let last = pcrs.last_mut().expect("a PCR");
        last.digest[0] ^= 1;
        std::fs::write(
            d.join("quote.pcrs"),
            avm_verifier::pcrs_file::emit_serialized(&pcrs),
        )
        .expect("write");
    });
    assert_eq!(codes, ["pcr-digest-mismatch"]);

    let log = EventLog::parse(&std::fs::read(export.join("eventlog.bin")).expect("log"))
        .expect("the A-VM's log parses");
    let (pcr, first, second) = pcr_with_two_events(&log);
    let replay = ["event-log-replay-mismatch"];
    let codes = verify_altered(state, &export, "log-removed", |d| {
        alter_log(d, |log| {
            log.events.remove(first);
        });
    });
    assert_eq!(codes, replay, "PCR {pcr}");
    let codes = verify_altered(state, &export, "log-changed", |d| {
        alter_log(d, |log| {
            let digest = log.events[first]
                .digests
                .iter_mut()
                .find(|d| d.algorithm == avm_attest::tpm::alg::SHA256)
                .expect("SHA-256 digest");
            digest.digest[0] ^= 1;
        });
    });
    assert_eq!(codes, replay, "PCR {pcr}");
    let codes = verify_altered(state, &export, "log-reordered", |d| {
        alter_log(d, |log| log.events.swap(first, second));
    });
    assert_eq!(codes, replay, "PCR {pcr}");
}

/// What the proxy does with the connections it relays.
#[derive(Clone)]
enum ProxyMode {
    /// Relays to this node unchanged.
    Forward(SocketAddr),
    /// Relays to this node, but its Hello announces another AK.
    AnnounceAk(SocketAddr, KeyInfo),
    /// Relays to this node, holding each Evidence back for a while.
    DelayEvidence(SocketAddr, Duration),
}

/// A man in the middle on a loopback port, relaying the wire protocol
/// frame by frame to a node the test chooses (and may change).
struct Proxy {
    addr: String,
    mode: Arc<Mutex<ProxyMode>>,
    stop: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
}

fn read_frame(stream: &mut TcpStream, limit: usize) -> Option<Vec<u8>> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    stream.read_exact(&mut header).ok()?;
    let len = wire::body_len(header, limit).ok()?;
    let mut frame = header.to_vec();
    frame.resize(FRAME_HEADER_LEN + len, 0);
    stream.read_exact(&mut frame[FRAME_HEADER_LEN..]).ok()?;
    Some(frame)
}

fn relay(mut client: TcpStream, mode: ProxyMode) {
    let (target, announced_ak, delay) = match mode {
        ProxyMode::Forward(target) => (target, None, None),
        ProxyMode::AnnounceAk(target, ak) => (target, Some(ak), None),
        ProxyMode::DelayEvidence(target, delay) => (target, None, Some(delay)),
    };
    let Ok(mut node) = TcpStream::connect(target) else {
        return;
    };
    // Requests and responses strictly alternate.
    while let Some(request) = read_frame(&mut client, MAX_REQUEST_LEN) {
        let Some(mut response) = node
            .write_all(&request)
            .ok()
            .and_then(|()| read_frame(&mut node, MAX_FRAME_LEN))
        else {
            return;
        };
        if let Some(ak) = &announced_ak
            && let Ok(Response::Hello(mut hello)) =
                wire::decode_body::<Response>(&response[FRAME_HEADER_LEN..])
        {
            hello.ak = ak.clone();
            response = wire::encode_frame(&Response::Hello(hello)).expect("encode Hello");
        }
        if let Some(delay) = delay
            && let Ok(Response::Evidence(_)) =
                wire::decode_body::<Response>(&response[FRAME_HEADER_LEN..])
        {
            std::thread::sleep(delay);
        }
        if client.write_all(&response).is_err() {
            return;
        }
    }
}

impl Proxy {
    fn start(mode: ProxyMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let mode = Arc::new(Mutex::new(mode));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (Arc::clone(&mode), Arc::clone(&stop));
        let server = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let mode = m.lock().expect("mode").clone();
                std::thread::spawn(move || relay(stream, mode));
            }
        });
        Self {
            addr,
            mode,
            stop,
            server: Some(server),
        }
    }

    fn set_mode(&self, mode: ProxyMode) {
        *self.mode.lock().expect("mode") = mode;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(&self.addr);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

fn hello_of(node: &Node) -> wire::HelloInfo {
    NodeClient::connect(&addr_of(node), Duration::from_secs(10))
        .and_then(|mut c| c.hello())
        .expect("Hello from the node")
}

/// Rejections that need a second live node: another A-VM build, an EK
/// certificate from another CA, an AK that never passed credential
/// activation (at enrolment and after it).
#[test]
fn the_verifier_refuses_other_images_other_cas_and_unactivated_aks() {
    let image = avm_image();
    let tmp = tempfile::tempdir().expect("temp dir");
    // Another build of the A-VM: the same kernel with bytes appended to
    // the file (it still boots; its digest, hence PCR 0, differs).
    let other_image = tmp.path().join("other-avm.elf");
    let mut bytes = std::fs::read(&image).expect("image");
    bytes.extend_from_slice(b"another A-VM build");
    std::fs::write(&other_image, bytes).expect("write other image");
    let node = boot_node(&tmp.path().join("node"), &image);
    let other = boot_node(&tmp.path().join("other"), &other_image);
    let (addr, other_addr) = (addr_of(&node), addr_of(&other));
    let state = tmp.path().join("verifier");
    let state = state.as_path();

    // An EK certificate from another CA: each node has a CA of its own.
    let out = verifier_exit(state, &["enroll", &addr, "--ek-ca", &ek_ca_of(&other)], 1);
    assert!(
        stdout(&out).contains("ek-cert-untrusted"),
        "{}",
        describe(&out)
    );

    // Reference values from the first node's image and boot.
    let image_arg = image.to_str().expect("utf-8");
    verifier_exit(state, &["policy", "init", "--avm-image", image_arg], 0);
    verifier_exit(state, &["enroll", &addr, "--ek-ca", &ek_ca_of(&node)], 0);
    verifier_exit(state, &["policy", "learn", &addr], 0);
    verifier_exit(state, &["attest", &addr], 0);

    // The other build, genuinely enrolled, is refused for its image.
    verifier_exit(
        state,
        &["enroll", &other_addr, "--ek-ca", &ek_ca_of(&other)],
        0,
    );
    let other_export = tmp.path().join("other-export");
    let out = verifier_exit(
        state,
        &[
            "attest",
            &other_addr,
            "--json",
            "--export",
            other_export.to_str().expect("utf-8"),
        ],
        1,
    );
    assert_eq!(reason_codes(&out), ["avm-image-unknown"]);
    // Its genuine quote without the log that convicts it: the missing
    // log is a reason of its own, never a skipped check.
    std::fs::remove_file(other_export.join("eventlog.bin")).expect("rm log");
    let out = verifier_exit(
        state,
        &["verify", other_export.to_str().expect("utf-8"), "--json"],
        1,
    );
    assert_eq!(reason_codes(&out), ["event-log-missing"]);
    // Nor can it teach the policy its PCR 0.
    verifier_exit(state, &["policy", "learn", &other_addr], 2);

    // A node announcing an AK its TPM does not hold (the other node's):
    // credential activation fails and it is not enrolled.
    let proxy = Proxy::start(ProxyMode::AnnounceAk(
        node.attest_addr().expect("addr"),
        hello_of(&other).ak,
    ));
    let out = verifier_exit(
        state,
        &["enroll", &proxy.addr, "--ek-ca", &ek_ca_of(&node)],
        1,
    );
    assert!(
        stdout(&out).contains("ak-not-activated"),
        "{}",
        describe(&out)
    );
    let out = verifier_exit(state, &["attest", &proxy.addr, "--json"], 1);
    assert_eq!(reason_codes(&out), ["unknown-node"]);

    // Enrolled honestly (moved from its own address: one TPM is one
    // node), then another TPM answers at that address: its AK never
    // passed activation here, whatever its quote says.
    proxy.set_mode(ProxyMode::Forward(node.attest_addr().expect("addr")));
    verifier_exit(
        state,
        &["enroll", &proxy.addr, "--ek-ca", &ek_ca_of(&node), "--move"],
        0,
    );
    verifier_exit(state, &["attest", &proxy.addr], 0);
    proxy.set_mode(ProxyMode::Forward(other.attest_addr().expect("addr")));
    let out = verifier_exit(state, &["attest", &proxy.addr, "--json"], 1);
    let codes = reason_codes(&out);
    assert!(codes.contains(&"ak-not-activated".to_string()), "{codes:?}");
    assert!(
        codes.contains(&"signature-invalid".to_string()),
        "{codes:?}"
    );

    let out = verifier_exit(state, &["nodes"], 0);
    assert!(
        stdout(&out).contains("avm-image-unknown"),
        "{}",
        describe(&out)
    );
}

/// Finding 6: `policy learn` read the policy, waited on the node, then
/// wrote the whole policy back, undoing a change made meanwhile. Now the
/// write is a compare-and-swap: the same evidence is appraised again
/// against the changed policy and learned into it.
#[test]
fn policy_learn_never_undoes_a_concurrent_policy_change() {
    let image = avm_image();
    let tmp = tempfile::tempdir().expect("temp dir");
    let node = boot_node(&tmp.path().join("node"), &image);
    let proxy = Proxy::start(ProxyMode::DelayEvidence(
        node.attest_addr().expect("addr"),
        Duration::from_secs(3),
    ));
    let state = tmp.path().join("verifier");
    let state = state.as_path();
    let image_arg = image.to_str().expect("utf-8");
    verifier_exit(state, &["policy", "init", "--avm-image", image_arg], 0);
    verifier_exit(
        state,
        &["enroll", &proxy.addr, "--ek-ca", &ek_ca_of(&node)],
        0,
    );

    // Learning waits on the (slow) node; meanwhile the operator allows a
    // second image.
    let learn = std::process::Command::new(env!("CARGO_BIN_EXE_avm-verifier"))
        .arg("--state")
        .arg(state)
        .args(["policy", "learn", &proxy.addr])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run learn");
    std::thread::sleep(Duration::from_millis(1500));
    let second = "ab".repeat(32);
    verifier_exit(
        state,
        &[
            "policy",
            "init",
            "--avm-image",
            image_arg,
            "--avm-image-sha256",
            &second,
        ],
        0,
    );
    let out = learn.wait_with_output().expect("learn");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // Both changes are in the policy: the second image and what was learned.
    let store = avm_verifier::store::Store::open(state).expect("state");
    let policy: avm_attest::policy::ReferenceValues =
        toml::from_str(&store.policy().expect("policy").expect("a policy")).expect("TOML");
    assert_eq!(policy.avm_image_sha256.len(), 2, "{policy:?}");
    assert!(!policy.firmware_events.is_empty());
    assert_eq!(policy.firmware_sequences.len(), 1);
    drop(store);
    proxy.set_mode(ProxyMode::Forward(node.attest_addr().expect("addr")));
    verifier_exit(state, &["attest", &proxy.addr], 0);
}

/// A node with a Debian Mon-VM: the A-VM measured the kernel profile into
/// PCR 8 and anchored the Mon-VM's IMA entries into PCR 10; the verifier
/// fetches its measurement log, proves it against the quote, reports it,
/// and refuses an export whose log was cut or withheld. evmctl replays
/// the exported log against the quoted PCRs.
#[test]
fn the_measurement_log_of_a_mon_vm_node_is_proven_by_the_quote() {
    let image = avm_image();
    let tmp = tempfile::tempdir().expect("temp dir");
    let node = avm_qemu::testing::monvm_node(&tmp.path().join("node"), "6.1", 256);
    let addr = addr_of(&node);
    let record = node.record().clone();
    // Wait until the A-VM has anchored the Mon-VM's IMA list.
    avm_qemu::testing::wait_for_avm_serial(&record, "AVM-MONVM-IMA ");
    let state = tmp.path().join("verifier");
    let state = state.as_path();
    let image_arg = image.to_str().expect("utf-8");
    verifier_exit(state, &["policy", "init", "--avm-image", image_arg], 0);
    verifier_exit(state, &["enroll", &addr, "--ek-ca", &ek_ca_of(&node)], 0);
    verifier_exit(state, &["policy", "learn", &addr], 0);
    // The A-VM's configuration must be allowed too: a policy that allows
    // no Mon-VM kernel profile refuses the node (fail closed).
    // (Nothing of the Mon-VM was learned, so there is no allowlist either.)
    let out = verifier_exit(state, &["attest", &addr, "--json"], 1);
    let codes = reason_codes(&out);
    assert!(
        codes.contains(&"monvm-profile-unknown".to_string())
            && codes.contains(&"reference-values-missing".to_string()),
        "{codes:?}"
    );
    let profile = record.monvm_profile.clone().expect("a profile");
    let profile_arg = profile.to_str().expect("utf-8");
    verifier_exit(
        state,
        &[
            "policy",
            "init",
            "--avm-image",
            image_arg,
            "--monvm-profile",
            profile_arg,
        ],
        0,
    );
    verifier_exit(state, &["policy", "learn", &addr], 0);
    let export = tmp.path().join("export");
    let export_arg = export.to_str().expect("utf-8");
    let out = verifier_exit(
        state,
        &["attest", &addr, "--json", "--export", export_arg],
        0,
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let log = &report["measurement_log"];
    assert_eq!(
        log["config_sha256"].as_str(),
        record.monvm_profile_sha256.as_deref(),
        "{report}"
    );
    assert_eq!(
        log["monvm_kernel"].as_str(),
        record.monvm_kernel_release.as_deref(),
        "{report}"
    );
    assert!(log["monvm_processes"].as_u64() >= Some(1), "{report}");
    assert_eq!(log["monvm_modules"].as_u64(), Some(0), "{report}");
    let anchored = log["monvm_ima_entries"].as_u64().expect("a count");
    assert!(anchored > 0, "{report}");
    // PCR 8: the profile and the monitor policy; PCR 10: the anchored IMA
    // entries; PCR 11: the
    // kernel, modules and processes at start-up, the start-up state of the
    // system-call table and the IDT, and (A-VMs that measure them) the
    // text, rodata, ro_after_init and boot-patch digests.
    let startup = 1
        + log["monvm_modules"].as_u64().unwrap_or(0)
        + log["monvm_processes"].as_u64().unwrap_or(0)
        + 2;
    let pcr11 = log["records_per_pcr"][3].as_u64().expect("PCR 11 count");
    assert!(
        (startup..=startup + 4).contains(&pcr11),
        "{startup} {report}"
    );
    assert_eq!(log["records_per_pcr"][0].as_u64(), Some(2), "{report}");
    assert_eq!(
        log["proven_records"].as_u64(),
        Some(2 + anchored + pcr11),
        "{report}"
    );
    let out = verifier_exit(state, &["attest", &addr], 0);
    assert!(
        stdout(&out).contains("Mon-VM IMA entries anchored"),
        "{}",
        describe(&out)
    );
    // The learned allowlist was applied, and a further attestation asks
    // only for the records after those the last quote proved.
    let appraisal = &log["appraisal"];
    assert_eq!(appraisal["allowlist_applied"], true, "{report}");
    assert_eq!(
        appraisal["files_appraised"].as_u64(),
        Some(anchored),
        "{report}"
    );
    let out = verifier_exit(state, &["attest", &addr, "--json"], 0);
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let fetched_from = again["measurement_log"]["fetched_from"].as_u64();
    assert!(fetched_from.is_some_and(|f| f > 0), "{again}");
    assert!(
        again["measurement_log"].get("refetched").is_none(),
        "{again}"
    );

    // evmctl replays the exported log to the quoted PCRs 8 and 10.
    let pcrs = avm_verifier::pcrs_file::parse_serialized(
        &std::fs::read(export.join("quote.pcrs")).expect("quote.pcrs"),
    )
    .expect("PCR file");
    let mut text = String::new();
    for index in 0u8..24 {
        let digest = pcrs
            .iter()
            .find(|p| p.index == index)
            .map_or([0; 32], |p| p.digest);
        text.push_str(&format!(
            "PCR-{index:02}: {}\n",
            avm_verifier::hex::encode(&digest)
        ));
    }
    std::fs::write(tmp.path().join("pcrs-sha256"), text).expect("write");
    let evmctl = std::process::Command::new("evmctl")
        .args(["ima_measurement", "--ignore-violations", "--pcrs"])
        .arg(format!(
            "sha256,{}",
            tmp.path().join("pcrs-sha256").display()
        ))
        .arg(export.join("measurements.bin"))
        .output()
        .expect("evmctl is installed (make deps)");
    assert!(
        evmctl.status.success(),
        "evmctl refused the A-VM's log: {}",
        describe(&evmctl)
    );

    // Offline: the export verifies; a cut or withheld log does not.
    verifier_exit(state, &["verify", export_arg], 0);
    let codes = verify_altered(state, &export, "log-cut", |d| {
        let bytes = std::fs::read(d.join("measurements.bin")).expect("log");
        let records = avm_attest::ima::parse_list(&bytes, 100_000).expect("parses");
        let mut cut = Vec::new();
        for (i, r) in records.iter().enumerate() {
            if i != 1 {
                r.emit(&mut cut);
            }
        }
        std::fs::write(d.join("measurements.bin"), cut).expect("write");
    });
    assert_eq!(codes, ["measurement-log-replay-mismatch"]);
    let codes = verify_altered(state, &export, "log-withheld", |d| {
        std::fs::remove_file(d.join("measurements.bin")).expect("rm");
    });
    assert_eq!(codes, ["measurement-log-missing"]);

    // A rootkit redirects getpid's system-call slot (39): the A-VM records
    // the violation as an event (PCR 12) within its check period, and the
    // node is untrusted, also after the slot is restored.
    let wait_for = |needle: &str| avm_qemu::testing::wait_for_avm_serial(&record, needle);
    let patched_at = std::time::Instant::now();
    let patch = avm_qemu::testing::MonVmPatch::redirect_getpid_slot(&record);
    wait_for("AVM-MONVM-EVENT monvm:event:1:violation:sys_call_table:");
    eprintln!(
        "syscall-slot violation seen after {:?}",
        patched_at.elapsed()
    );
    // The slot is named; the table lives in read-only data, so an A-VM
    // that also checks .rodata may name that too, nothing else.
    let named = |out: &std::process::Output| {
        let codes = reason_codes(out);
        assert!(
            codes.first().map(String::as_str) == Some("monvm-syscall-table-modified")
                && codes[1..].iter().all(|c| c == "monvm-rodata-modified"),
            "{}",
            describe(out)
        );
    };
    let out = verifier_exit(state, &["attest", &addr, "--json"], 1);
    named(&out);
    drop(patch);
    wait_for(":clean:sys_call_table");
    let out = verifier_exit(state, &["attest", &addr, "--json"], 1);
    named(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let events = report["measurement_log"]["events"]
        .as_array()
        .expect("events");
    assert!(events.len() >= 2, "{report}");
    assert!(
        events[0].as_str().is_some_and(|e| e.contains("slot 39")),
        "{report}"
    );
}
