//! `avm-verifier monitor` against real A-VM nodes (QEMU + swtpm): a
//! violation the A-VM pushes turns the node untrusted and runs the
//! revocation once; a restarted monitor resumes from its history; a node
//! whose A-VM stops turns untrusted after the timeout.
//!
//! Needs the A-VM image (`$AVM_IMAGE`, else build/avm.elf).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avm_qemu::Node;
use avm_qemu::testing::{avm_image, network_node_with};
use common::monitor::Monitor;
use common::verifier_exit;
use serde_json::Value;

fn addr_of(node: &Node) -> String {
    node.attest_addr().expect("node has a network").to_string()
}

fn ek_ca_of(node: &Node) -> String {
    let ca = node.record().ek_ca.clone().expect("node has an EK CA");
    ca.to_str().expect("utf-8 path").to_string()
}

fn kind(line: &Value, kind: &str) -> bool {
    line["type"] == kind
}

/// A webhook receiver on a free loopback port: the bodies it got.
fn webhook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/revoke",
        listener.local_addr().expect("addr").port()
    );
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let got = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then Content-Length bytes of body.
            let body = loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some(body.to_string());
                    }
                }
            };
            if let Some(body) = body {
                got.lock().expect("lock").push(body);
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (url, bodies)
}

/// A revocation command that appends a line to `file`.
fn revocation_command(file: &Path) -> String {
    format!(
        "echo \"$AVM_NODE_ADDR $AVM_NODE_VERDICT $AVM_NODE_REASONS\" >> '{}'",
        file.display()
    )
}

fn lines_of(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A Mon-VM node: trusted under monitoring; a sys_call_table slot
/// rewritten through the Mon-VM's RAM is pushed, the node turns untrusted
/// with the right reason and the revocation (command and webhook) runs
/// once; a restarted monitor resumes with the whole history and does not
/// revoke again.
#[test]
fn a_pushed_violation_revokes_once_and_a_restarted_monitor_resumes() {
    let image = avm_image();
    let tmp = tempfile::tempdir().expect("temp dir");
    let node = avm_qemu::testing::monvm_node(&tmp.path().join("node"), "6.1", 256);
    let addr = addr_of(&node);
    let record = node.record().clone();
    avm_qemu::testing::wait_for_avm_serial(&record, "AVM-MONVM-IMA ");
    let state = tmp.path().join("verifier");
    let state = state.as_path();
    common::enrol_monvm_node(state, &record, &addr, &image);
    verifier_exit(state, &["policy", "learn", &addr], 0);

    let revoked = tmp.path().join("revoked.log");
    let command = revocation_command(&revoked);
    let (webhook, posts) = webhook_receiver();
    let args = [
        "--timeout",
        "20",
        "monitor",
        &addr,
        "--json",
        "--interval",
        "5",
        "--on-untrusted",
        &command,
        "--webhook",
        &webhook,
        "--duration",
        "300",
    ];
    let mut monitor = Monitor::start(state, &args);
    let resumed = monitor.wait("resumed", Duration::from_secs(10), |l| kind(l, "resumed"));
    assert_eq!(resumed["verdict"], "unknown");
    monitor.wait("subscription", Duration::from_secs(30), |l| {
        kind(l, "push") && l["state"] == "subscribed"
    });
    monitor.wait("trusted verdict", Duration::from_secs(60), |l| {
        kind(l, "verdict") && l["verdict"] == "trusted"
    });
    // Attestation keeps working while the node is monitored and checked.
    for _ in 0..2 {
        verifier_exit(state, &["attest", &addr], 0);
    }

    // Redirect getpid's slot (39): pushed within the A-VM's check period.
    let patched_at = Instant::now();
    let patch = avm_qemu::testing::MonVmPatch::redirect_getpid_slot(&record);
    let event = monitor.wait("violation event", Duration::from_secs(20), |l| {
        kind(l, "event")
            && l["name"]
                .as_str()
                .is_some_and(|n| n.contains(":violation:sys_call_table:"))
    });
    eprintln!(
        "event at the monitor {:?} after the write",
        patched_at.elapsed()
    );
    assert_eq!(event["pcr"], 12);
    let verdict = monitor.wait("untrusted verdict", Duration::from_secs(30), |l| {
        kind(l, "verdict") && l["verdict"] == "untrusted"
    });
    eprintln!("untrusted {:?} after the write", patched_at.elapsed());
    assert_eq!(verdict["previous"], "trusted");
    assert_eq!(
        verdict["reasons"][0], "monvm-syscall-table-modified",
        "{verdict}"
    );
    assert!(verdict["latency_ms"].as_f64().is_some(), "{verdict}");
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let done = monitor.wait("revocation", Duration::from_secs(30), |l| {
            kind(l, "revocation")
        });
        outcomes.push((
            done["action"].as_str().unwrap_or_default().to_string(),
            done["outcome"].as_str().unwrap_or_default().to_string(),
        ));
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("command".to_string(), "exit 0".to_string()),
            ("webhook".to_string(), "http 200".to_string())
        ]
    );
    // Restoring the slot is an event too; the node stays untrusted and
    // nothing is revoked again.
    patch.restore();
    monitor.wait("clean event", Duration::from_secs(20), |l| {
        kind(l, "event")
            && l["name"]
                .as_str()
                .is_some_and(|n| n.contains(":clean:sys_call_table"))
    });
    std::thread::sleep(Duration::from_secs(3));
    monitor.interrupt();
    let (rest, _) = monitor.finish();
    let all: Vec<&Value> = monitor.seen.iter().chain(rest.iter()).collect();
    assert_eq!(all.iter().filter(|l| kind(l, "revocation")).count(), 2);
    let lines = lines_of(&revoked);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("{addr} untrusted monvm-syscall-table-modified")),
        "{lines:?}"
    );
    let bodies = posts.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let body: Value = serde_json::from_str(&bodies[0]).expect("webhook JSON");
    assert_eq!(body["addr"], addr.as_str());
    assert_eq!(body["reasons"][0], "monvm-syscall-table-modified");
    let events_before = all.iter().filter(|l| kind(l, "event")).count() as u64;

    // Restarted: the history is there, the node is still untrusted, and
    // nothing is revoked again.
    let mut args = args.to_vec();
    let last = args.len() - 1;
    args[last] = "10";
    let mut again = Monitor::start(state, &args);
    let resumed = again.wait("resumed", Duration::from_secs(10), |l| kind(l, "resumed"));
    assert_eq!(resumed["verdict"], "untrusted", "{resumed}");
    assert_eq!(resumed["revoked"], true, "{resumed}");
    assert_eq!(resumed["revocations"], 2, "{resumed}");
    assert!(
        resumed["events"].as_u64() >= Some(events_before),
        "{resumed}"
    );
    let (rest, code) = again.finish();
    assert_eq!(code, Some(1), "untrusted at the end");
    assert!(rest.iter().all(|l| !kind(l, "revocation")), "{rest:#?}");
    assert_eq!(lines_of(&revoked).len(), 1);
    assert_eq!(posts.lock().expect("lock").len(), 1);
    let store = avm_verifier::store::Store::open(state).expect("state");
    let events = store.monitor_events(&addr).expect("events");
    assert!(events.len() as u64 >= events_before);
    assert!(
        events
            .iter()
            .any(|e| e.name.contains(":violation:sys_call_table:") && e.latency_ms.is_some()),
        "{events:?}"
    );
}

/// A node whose A-VM is killed: untrusted (node-unresponsive) once its
/// last verdict is older than --interval plus --timeout, and the
/// revocation runs once.
#[test]
fn a_node_whose_a_vm_stops_turns_untrusted_after_the_timeout() {
    let image = avm_image();
    let tmp = tempfile::tempdir().expect("temp dir");
    let node = network_node_with(&tmp.path().join("node"), &image);
    let addr = addr_of(&node);
    let state = tmp.path().join("verifier");
    let state = state.as_path();
    verifier_exit(
        state,
        &["policy", "init", "--avm-image", path_arg(&image)],
        0,
    );
    verifier_exit(state, &["enroll", &addr, "--ek-ca", &ek_ca_of(&node)], 0);
    verifier_exit(state, &["policy", "learn", &addr], 0);
    let revoked = tmp.path().join("revoked.log");
    let command = revocation_command(&revoked);
    let mut monitor = Monitor::start(
        state,
        &[
            "--timeout",
            "4",
            "monitor",
            &addr,
            "--json",
            "--interval",
            "1",
            "--keepalive-ms",
            "500",
            "--on-untrusted",
            &command,
            "--duration",
            "60",
        ],
    );
    monitor.wait("subscription", Duration::from_secs(30), |l| {
        kind(l, "push") && l["state"] == "subscribed"
    });
    monitor.wait("trusted verdict", Duration::from_secs(30), |l| {
        kind(l, "verdict") && l["verdict"] == "trusted"
    });
    // Trusted for longer than the deadline: its quotes keep it so
    // (keep-alives do not count).
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        monitor
            .seen
            .iter()
            .all(|l| !(kind(l, "verdict") && l["verdict"] == "untrusted"))
    );
    let killed_at = Instant::now();
    let status = Command::new("kill")
        .args(["-KILL", &node.qemu_pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let verdict = monitor.wait("untrusted verdict", Duration::from_secs(20), |l| {
        kind(l, "verdict") && l["verdict"] == "untrusted"
    });
    let after = killed_at.elapsed();
    assert_eq!(verdict["reasons"], serde_json::json!(["node-unresponsive"]));
    // The last quote came at most about a second before the kill: not
    // before the deadline (1 + 4 s after it), and not much after it.
    assert!(after >= Duration::from_secs(3), "{after:?}");
    assert!(after < Duration::from_secs(10), "{after:?}");
    monitor.wait("revocation", Duration::from_secs(10), |l| {
        kind(l, "revocation") && l["outcome"] == "exit 0"
    });
    // It stays down: still one revocation.
    std::thread::sleep(Duration::from_secs(5));
    monitor.interrupt();
    let (rest, _) = monitor.finish();
    assert!(rest.iter().all(|l| !kind(l, "revocation")));
    let lines = lines_of(&revoked);
    assert_eq!(lines, [format!("{addr} untrusted node-unresponsive")]);
    drop(node);
}
