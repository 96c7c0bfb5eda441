//! Acceptance: an idle A-VM uses under 5% of one host core (QEMU's CPU time
//! over 10 s after the boot report), also with its network up and after
//! serving a client (the kernel's timer runs fast only while the network
//! is busy).

mod common;

use std::time::{Duration, Instant};

use avm_qemu::Node;
use avm_qemu::process::cpu_time;

const IDLE_WINDOW: Duration = Duration::from_secs(10);
const MAX_IDLE_SHARE: f64 = 0.05;

/// QEMU's share of one core over [`IDLE_WINDOW`], checked against the limit.
fn assert_idle(node: &mut Node, what: &str) {
    let pid = node.qemu_pid();
    let cpu_before = cpu_time(pid).expect("QEMU CPU time");
    let wall_before = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let cpu_used = cpu_time(pid).expect("QEMU CPU time") - cpu_before;
    let wall = wall_before.elapsed();
    // Still running: an exited QEMU would use no CPU and pass vacuously.
    assert!(node.exit().is_none() && avm_qemu::process::is_running(pid));
    let share = cpu_used.as_secs_f64() / wall.as_secs_f64();
    println!(
        "idle QEMU ({what}): {cpu_used:?} CPU over {wall:?} = {:.2}% of a core",
        share * 100.0
    );
    assert!(
        share < MAX_IDLE_SHARE,
        "idle A-VM ({what}) used {:.1}% of a core (limit {:.0}%)",
        share * 100.0,
        MAX_IDLE_SHARE * 100.0
    );
}

#[test]
fn idle_a_vm_uses_under_five_percent_of_a_core() {
    let dir = tempfile::tempdir().unwrap();
    let config = avm_qemu::testing::tcg_config(dir.path());
    let mut node = Node::launch(&config).unwrap();
    node.wait_for_report(Duration::from_secs(120))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_idle(&mut node, "no network");
}

#[test]
fn idle_networked_a_vm_uses_under_five_percent_of_a_core() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = avm_qemu::testing::network_node(dir.path());
    let nonce = common::random_bytes(32);
    common::client::hello_and_challenge(
        node.attest_addr().unwrap(),
        &nonce,
        avm_attest::pcr::PcrMask::FIRMWARE,
    )
    .unwrap();
    assert_idle(&mut node, "network up, after a challenge");
}
