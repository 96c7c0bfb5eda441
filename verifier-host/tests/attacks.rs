//! The verifier's host side attacked the way issue 6's review did: forged
//! keys in evidence directories, relays, key swaps, dripping and lying
//! nodes, FIFOs, links planted in export targets. Every attack here made
//! the previous verifier say TRUSTED, hang, or write where it should not;
//! each test checks the rejection and its reason code. The nodes are host
//! nodes (swtpm + tpm2-tools behind the wire protocol, `common::host_node`);
//! what needs a real A-VM (an event log, learning) is in avm_node.rs.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avm_attest::wire::{self, ErrorCode, Response};
use avm_verifier::store::Store;
use common::host_node::HostNode;
use common::{describe, read, reason_codes, stdout, verifier, verifier_exit};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;

/// Runs the verifier, killing it if it takes longer than `limit` (so a
/// regression to hanging fails the test instead of stalling the suite).
fn verifier_bounded(state: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_avm-verifier"))
        .arg("--state")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run avm-verifier");
    while child.try_wait().expect("wait").is_none() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    (out, started.elapsed())
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Enrols `node` in `state` and exports one attestation into `dir`.
fn enrol_and_export(node: &HostNode, state: &Path, dir: &Path) {
    verifier_exit(
        state,
        &["enroll", &node.addr, "--ek-ca", s(&node.tpm.ca_bundle)],
        0,
    );
    // No event log and no policy on a host node: untrusted, but exported.
    verifier_exit(
        state,
        &["attest", &node.addr, "--json", "--export", s(dir)],
        1,
    );
}

/// A copy of an evidence directory, to alter.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// TPMT_SIGNATURE (ECDSA, SHA-256) of an OpenSSL signature.
fn tpmt_signature(sig: &EcdsaSig) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0x0018u16.to_be_bytes());
    out.extend_from_slice(&0x000bu16.to_be_bytes());
    for part in [sig.r().to_vec(), sig.s().to_vec()] {
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(&part);
    }
    out
}

/// Finding 1: a quote re-signed by a software key written as ak.pem, or by
/// a non-restricted TPM key written as ak.pub (even with attributes 0),
/// passed as trusted. A key is now trusted only if it is enrolled, or if
/// the caller names it, and then the report says so.
#[test]
fn keys_in_an_evidence_directory_are_never_trusted_for_being_there() {
    let node = HostNode::start(false);
    let tmp = tempfile::tempdir().expect("temp dir");
    let state = tmp.path().join("state");
    let export = tmp.path().join("export");
    enrol_and_export(&node, &state, &export);

    // The genuine export: the AK is found among enrolled nodes; only the
    // missing event log and policy stand between it and trusted.
    let out = verifier_exit(&state, &["verify", s(&export), "--json"], 1);
    assert_eq!(
        reason_codes(&out),
        ["event-log-missing", "reference-values-missing"],
        "{}",
        describe(&out)
    );
    assert_eq!(common::report(&out)["ak_binding"]["kind"], "enrolled");
    assert_eq!(
        common::report(&out)["ak_binding"]["node"],
        node.addr.as_str()
    );

    // A software P-256 key re-signs the quote; its PEM replaces the AK.
    let soft = tmp.path().join("soft");
    copy_dir(&export, &soft);
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
    let key = EcKey::generate(&group).expect("key");
    let digest = openssl::sha::sha256(&read(&soft.join("quote.msg")));
    let sig = EcdsaSig::sign(&digest, &key).expect("sign");
    std::fs::write(soft.join("quote.sig"), tpmt_signature(&sig)).expect("write");
    std::fs::remove_file(soft.join("ak.pub")).expect("rm");
    std::fs::write(soft.join("ak.pem"), key.public_key_to_pem().expect("pem")).expect("write");
    for quote_only in [false, true] {
        let mut args = vec!["verify", s(&soft), "--json"];
        if quote_only {
            args.push("--quote-only");
        }
        let out = verifier_exit(&state, &args, 1);
        assert!(
            reason_codes(&out).contains(&"ak-not-enrolled".to_string()),
            "{}",
            describe(&out)
        );
        assert_eq!(common::report(&out)["ak_binding"]["kind"], "not-enrolled");
        assert_ne!(common::report(&out)["verdict"], "trusted");
    }
    // Without any state, nothing is enrolled: still refused.
    let out = verifier_exit(
        &tmp.path().join("no-state"),
        &["verify", s(&soft), "--json"],
        1,
    );
    assert!(reason_codes(&out).contains(&"ak-not-enrolled".to_string()));
    // Named by the caller, the quote itself checks out, and the report
    // says whose word that is.
    let soft_pem = soft.join("ak.pem");
    let out = verifier_exit(
        &state,
        &[
            "verify",
            s(&soft),
            "--json",
            "--quote-only",
            "--ak",
            s(&soft_pem),
        ],
        0,
    );
    assert_eq!(common::report(&out)["verdict"], "quote-valid");
    assert_eq!(
        common::report(&out)["ak_binding"]["kind"],
        "asserted-by-caller"
    );
    let out = verifier_exit(
        &state,
        &["verify", s(&soft), "--quote-only", "--ak", s(&soft_pem)],
        0,
    );
    assert!(
        stdout(&out).contains("NOT bound to an EK"),
        "{}",
        describe(&out)
    );

    // A non-restricted signing key in the node's own TPM signs the quote
    // (a TPM key can sign any bytes unless it is restricted).
    let t = &node.tpm.tpm;
    t.tpm2_ok(
        "tpm2_createprimary",
        &["-C", "o", "-g", "sha256", "-G", "ecc", "-c", "prim.ctx"],
    );
    t.tpm2_ok(
        "tpm2_create",
        &[
            "-C",
            "prim.ctx",
            "-G",
            "ecc",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
            "-u",
            "unrestricted.pub",
            "-r",
            "unrestricted.priv",
        ],
    );
    t.tpm2_ok(
        "tpm2_load",
        &[
            "-C",
            "prim.ctx",
            "-u",
            "unrestricted.pub",
            "-r",
            "unrestricted.priv",
            "-c",
            "unrestricted.ctx",
        ],
    );
    let tpm_signed = tmp.path().join("tpm-signed");
    copy_dir(&export, &tpm_signed);
    t.tpm2_ok(
        "tpm2_sign",
        &[
            "-c",
            "unrestricted.ctx",
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-o",
            s(&tpm_signed.join("quote.sig")),
            s(&tpm_signed.join("quote.msg")),
        ],
    );
    let unrestricted = read(&t.path("unrestricted.pub"));
    // TPM2B size, type, nameAlg, then the attributes: also try 0.
    let mut zero_attributes = unrestricted.clone();
    zero_attributes[6..10].copy_from_slice(&[0; 4]);
    for public in [unrestricted, zero_attributes] {
        std::fs::write(tpm_signed.join("ak.pub"), &public).expect("write");
        let out = verifier_exit(&state, &["verify", s(&tpm_signed), "--json"], 1);
        assert!(
            reason_codes(&out).contains(&"ak-not-enrolled".to_string()),
            "{}",
            describe(&out)
        );
        // Even named by the caller, its attributes give it away.
        let named = tmp.path().join("named.pub");
        std::fs::write(&named, &public).expect("write");
        let out = verifier_exit(
            &state,
            &[
                "verify",
                s(&tpm_signed),
                "--json",
                "--quote-only",
                "--ak",
                s(&named),
            ],
            1,
        );
        assert_eq!(reason_codes(&out), ["ak-attributes"], "{}", describe(&out));
    }
}

/// A byte-level TCP relay to a target the test may change: a node's
/// traffic passed on from another address.
struct Relay {
    addr: String,
    target: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Relay {
    fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let target = Arc::new(Mutex::new(target.parse().expect("target")));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, st) = (Arc::clone(&target), Arc::clone(&stop));
        let server = std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let to = *t.lock().expect("target");
                let Ok(node) = TcpStream::connect(to) else {
                    continue;
                };
                let (c2, n2) = (
                    client.try_clone().expect("clone"),
                    node.try_clone().expect("clone"),
                );
                std::thread::spawn(move || pump(client, node));
                std::thread::spawn(move || pump(n2, c2));
            }
        });
        Self {
            addr,
            target,
            stop,
            server: Some(server),
        }
    }

    fn retarget(&self, target: &str) {
        *self.target.lock().expect("target") = target.parse().expect("target");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// Finding 3: one TPM could be enrolled under any number of addresses (a
/// relay at B was trusted while forwarding to A), and re-enrolment
/// silently replaced keys. A node is now its EK.
#[test]
fn a_node_is_its_ek_relays_and_key_swaps_are_refused_unless_asked() {
    let node = HostNode::start(false);
    let other = HostNode::start(false);
    let tmp = tempfile::tempdir().expect("temp dir");
    let state = tmp.path().join("state");
    let ca = s(&node.tpm.ca_bundle).to_string();
    verifier_exit(&state, &["enroll", &node.addr, "--ek-ca", &ca], 0);

    // A relay in front of the enrolled node: the same EK, refused.
    let relay = Relay::start(&node.addr);
    let out = verifier_exit(&state, &["enroll", &relay.addr, "--ek-ca", &ca], 1);
    assert!(
        stdout(&out).contains("ek-already-enrolled") && stdout(&out).contains(&node.addr),
        "{}",
        describe(&out)
    );
    let out = verifier_exit(&state, &["attest", &relay.addr, "--json"], 1);
    assert_eq!(reason_codes(&out), ["unknown-node"]);

    // Asked to move, it moves (one node, one address) and it is recorded.
    let out = verifier_exit(
        &state,
        &["enroll", &relay.addr, "--ek-ca", &ca, "--move"],
        0,
    );
    assert!(stdout(&out).contains("moved"), "{}", describe(&out));
    let out = verifier_exit(&state, &["attest", &node.addr, "--json"], 1);
    assert_eq!(reason_codes(&out), ["unknown-node"]);

    // Another TPM now answers at the enrolled address: refused, the
    // enrolled keys stay.
    relay.retarget(&other.addr);
    let other_ca = s(&other.tpm.ca_bundle).to_string();
    let out = verifier_exit(&state, &["enroll", &relay.addr, "--ek-ca", &other_ca], 1);
    assert!(stdout(&out).contains("keys-changed"), "{}", describe(&out));
    let before = Store::open(&state)
        .expect("state")
        .node(&relay.addr)
        .expect("node")
        .expect("enrolled");
    verifier_exit(
        &state,
        &[
            "enroll",
            &relay.addr,
            "--ek-ca",
            &other_ca,
            "--replace-keys",
        ],
        0,
    );
    let store = Store::open(&state).expect("state");
    let after = store.node(&relay.addr).expect("node").expect("enrolled");
    assert_ne!(after.ek_public, before.ek_public);
    let kinds: Vec<String> = store
        .key_changes()
        .expect("history")
        .into_iter()
        .map(|c| c.kind)
        .collect();
    assert_eq!(kinds, ["moved", "keys-replaced"]);
    assert_eq!(store.nodes().expect("nodes").len(), 1);
    let out = verifier_exit(&state, &["nodes", "--key-history"], 0);
    assert!(
        stdout(&out).contains("moved") && stdout(&out).contains("keys-replaced"),
        "{}",
        describe(&out)
    );
}

/// A fake node: accepts connections and runs `behave` on each (after
/// reading the first request frame).
fn fake_node(behave: impl Fn(&mut TcpStream) + Send + Sync + 'static) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::clone(&stop);
    let behave = Arc::new(behave);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if st.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut stream) = stream else { continue };
            let behave = Arc::clone(&behave);
            std::thread::spawn(move || {
                let mut header = [0u8; 4];
                if stream.read_exact(&mut header).is_err() {
                    return;
                }
                let Ok(len) = wire::body_len(header, wire::MAX_REQUEST_LEN) else {
                    return;
                };
                let mut body = vec![0u8; len];
                if stream.read_exact(&mut body).is_ok() {
                    behave(&mut stream);
                }
            });
        }
    });
    (addr, stop)
}

/// An EK CA file (self-signed P-256) so `enroll` gets to the network.
fn some_ca(dir: &Path) -> PathBuf {
    use openssl::pkey::PKey;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "test EK CA").expect("CN");
    let name = name.build();
    let mut cert = X509Builder::new().expect("builder");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(&name).expect("issuer");
    cert.set_pubkey(&key).expect("key");
    let not_before = openssl::asn1::Asn1Time::days_from_now(0).expect("time");
    let not_after = openssl::asn1::Asn1Time::days_from_now(1).expect("time");
    cert.set_not_before(&not_before).expect("nb");
    cert.set_not_after(&not_after).expect("na");
    cert.sign(&key, openssl::hash::MessageDigest::sha256())
        .expect("sign");
    let path = dir.join("ca.pem");
    std::fs::write(&path, cert.build().to_pem().expect("pem")).expect("write");
    path
}

/// Finding 4: `--timeout` bounded each read, so a node announcing a large
/// frame and sending a byte a second kept enroll waiting for days. Now it
/// is one deadline for the whole exchange.
#[test]
fn a_dripping_node_is_cut_off_at_the_deadline() {
    let (addr, stop) = fake_node(|stream| {
        let _ = stream.write_all(&200_000u32.to_be_bytes());
        for _ in 0..120 {
            std::thread::sleep(Duration::from_millis(250));
            if stream.write_all(&[0]).is_err() {
                return;
            }
        }
    });
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = some_ca(tmp.path());
    let (out, took) = verifier_bounded(
        &tmp.path().join("state"),
        &["--timeout", "2", "enroll", &addr, "--ek-ca", s(&ca)],
        Duration::from_secs(25),
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deadline"),
        "{}",
        describe(&out)
    );
    stop.store(true, Ordering::SeqCst);
}

/// Finding 8: a node's error text reached the terminal raw.
#[test]
fn a_node_cannot_paint_the_operators_terminal() {
    let (addr, stop) = fake_node(|stream| {
        let lie = Response::Error {
            code: ErrorCode::Tpm,
            detail:
                "\x1b[2J\x1b[1;1H127.0.0.1:4000: enrolled\n  credential activation: passed\x1b[8m"
                    .into(),
        };
        let _ = stream.write_all(&wire::encode_frame(&lie).expect("frame"));
    });
    let tmp = tempfile::tempdir().expect("temp dir");
    let ca = some_ca(tmp.path());
    let out = verifier(
        &tmp.path().join("state"),
        &["enroll", &addr, "--ek-ca", s(&ca)],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !stream.iter().any(|&b| b == 0x1b || b == b'\r'),
            "{}",
            describe(&out)
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("\\u{1b}[2J"), "{stderr}");
    stop.store(true, Ordering::SeqCst);
}

/// Finding 7: a FIFO in an evidence directory blocked `verify` forever;
/// links are not followed either.
#[test]
fn fifos_and_links_in_an_evidence_directory_are_refused_at_once() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("evidence");
    std::fs::create_dir(&dir).expect("mkdir");
    let status = Command::new("mkfifo")
        .arg(dir.join("quote.msg"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let (out, took) = verifier_bounded(
        &tmp.path().join("state"),
        &["verify", s(&dir), "--nonce", "00"],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FIFO"),
        "{}",
        describe(&out)
    );

    std::fs::remove_file(dir.join("quote.msg")).expect("rm");
    std::fs::write(tmp.path().join("elsewhere"), b"not evidence").expect("write");
    std::os::unix::fs::symlink(tmp.path().join("elsewhere"), dir.join("quote.msg"))
        .expect("symlink");
    let out = verifier(
        &tmp.path().join("state"),
        &["verify", s(&dir), "--nonce", "00"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symbolic link"),
        "{}",
        describe(&out)
    );
}

/// Finding 5: `attest --export` wrote through links it found in the
/// directory. Exports now go to a new or empty real directory only.
#[test]
fn exports_never_write_through_planted_links() {
    let node = HostNode::start(false);
    let tmp = tempfile::tempdir().expect("temp dir");
    let state = tmp.path().join("state");
    verifier_exit(
        &state,
        &["enroll", &node.addr, "--ek-ca", s(&node.tpm.ca_bundle)],
        0,
    );
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").expect("write");

    // A prepared directory with links where the export's files go.
    let prepared = tmp.path().join("prepared");
    std::fs::create_dir(&prepared).expect("mkdir");
    for name in ["quote.msg", "eventlog.bin", "evidence.json"] {
        std::os::unix::fs::symlink(&victim, prepared.join(name)).expect("symlink");
    }
    let out = verifier_exit(&state, &["attest", &node.addr, "--export", s(&prepared)], 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        describe(&out)
    );
    // The export directory itself a link to another directory.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let linked = tmp.path().join("linked");
    std::os::unix::fs::symlink(&elsewhere, &linked).expect("symlink");
    verifier_exit(&state, &["attest", &node.addr, "--export", s(&linked)], 2);
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    assert_eq!(std::fs::read_dir(&elsewhere).expect("dir").count(), 0);

    // A new directory works.
    let fresh = tmp.path().join("fresh");
    verifier_exit(&state, &["attest", &node.addr, "--export", s(&fresh)], 1);
    assert!(fresh.join("quote.msg").is_file());
}

/// Review finding (2026-12-01): the verifier asked for PCRs 0-15 but did
/// not require them in the answer. A node, or a relay rewriting the
/// challenge's mask, that quoted only the firmware PCRs 0-7 left every
/// record of the measurement log (PCRs 8-15) unproven and unchecked: an
/// empty log, hiding a violation event, then replayed "to" nothing. Now
/// each log PCR missing from the quote is a reason, online and offline.
#[test]
fn a_quote_narrowed_to_the_firmware_pcrs_proves_no_log() {
    let node = HostNode::start(false);
    let event = "monvm:event:1:violation:syscall_table:getpid";
    node.measure(12, &[0x12; 32], event);
    let tmp = tempfile::tempdir().expect("temp dir");
    let state = tmp.path().join("state");
    verifier_exit(
        &state,
        &["enroll", &node.addr, "--ek-ca", s(&node.tpm.ca_bundle)],
        0,
    );
    // One reason per PCR missing from the quote.
    let not_quoted = |out: &Output| {
        reason_codes(out)
            .iter()
            .filter(|c| *c == "pcr-not-quoted")
            .count()
    };

    // Quoted as asked: the log is proven, its event record with it.
    let out = verifier_exit(&state, &["attest", &node.addr, "--json"], 1);
    assert_eq!(not_quoted(&out), 0, "{}", describe(&out));
    assert_eq!(common::report(&out)["measurement_log"]["proven_records"], 1);

    // Narrowed to PCRs 0-7, the event withheld: every log PCR is missing.
    node.log.quoted_instead.store(0xff, Ordering::SeqCst);
    node.log.dropped.store(1, Ordering::SeqCst);
    let export = tmp.path().join("export");
    let out = verifier_exit(
        &state,
        &["attest", &node.addr, "--json", "--export", s(&export)],
        1,
    );
    assert_eq!(not_quoted(&out), 8, "{}", describe(&out));

    // The same evidence offline.
    let out = verifier_exit(&state, &["verify", s(&export), "--json"], 1);
    assert_eq!(not_quoted(&out), 8, "{}", describe(&out));
}
