//! The credentials check's set-uid allowance (docs/monitoring.md) inside a
//! live Mon-VM of each Debian kernel (KASLR on). The A-VM's monitor policy
//! names `/usr/bin/avm-setuid-wait` (set-uid root) and
//! `/usr/bin/avm-plain-wait` (not set-uid) as set-uid programs; the root
//! also holds `/usr/sbin/avm-setuid-other` (set-uid root, not named). All
//! three are `qemu/testprogs/avm_wait.c`. Under a shell of `nobody`:
//! - the named set-uid program runs as root and is not reported;
//! - the other set-uid program is reported (`euid 0 under pid N euid
//!   65534`): the shell really is a user's;
//! - a process the test rootkit makes root that then execs the named
//!   program that is not set-uid is reported after its exec too: its path
//!   is allowed, but no exec or credential change of the kernel's own
//!   marked its address space (the dumpable mode), so it is a rootkit's
//!   doing.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use avm_attest::monitor_policy::MonitorPolicy;
use avm_qemu::monvm::console::MonVmConsole;
use avm_qemu::monvm::rootfs::ExtraFile;
use avm_qemu::testing::{
    Attack, Rootkit, avm_events, console_sh, under_nobody, wait_comm, wait_for_avm_serial,
};

static BOOTS: Mutex<()> = Mutex::new(());

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Several cross-view rounds (one per 500 ms).
const ROUNDS: Duration = Duration::from_secs(2);

const ALLOWED: &str = "/usr/bin/avm-setuid-wait";
const PLAIN: &str = "/usr/bin/avm-plain-wait";
const OTHER: &str = "/usr/sbin/avm-setuid-other";

/// Waits for an event after the first `from` that contains every needle.
fn wait_event(record: &avm_qemu::NodeRecord, from: usize, needles: &[&str]) -> String {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let all = avm_events(record);
        if let Some(hit) = all
            .iter()
            .skip(from)
            .find(|e| needles.iter().all(|n| e.contains(n)))
        {
            return hit.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no event with {needles:?} after #{from}: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `real effective saved fs` uids of PID.
fn uids(console: &mut MonVmConsole, pid: u32) -> Vec<String> {
    console_sh(console, &format!("grep ^Uid: /proc/{pid}/status"))
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

fn setuid_allowance(series: &str) {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let program = avm_qemu::testing::build_test_program(dir.path(), "avm_wait");
    let policy = MonitorPolicy::parse(
        format!("syscall_idt=5,text=1000,ima=500,cross=500,setuid={ALLOWED}:{PLAIN}").as_bytes(),
    )
    .expect("a monitor policy");
    let node = avm_qemu::testing::monvm_node_with_rootkit_and(dir.path(), series, 256, |config| {
        config.monitor_policy = Some(policy);
        let monvm = config.monvm.as_mut().expect("a Mon-VM");
        for (guest_path, mode) in [(ALLOWED, 0o4755), (PLAIN, 0o755), (OTHER, 0o4755)] {
            monvm.extra_files.push(ExtraFile {
                host_path: program.clone(),
                guest_path: guest_path.into(),
                mode,
            });
        }
    });
    let record = node.record().clone();
    wait_for_avm_serial(&record, "AVM-MONVM-TEXT ");
    let mut console = MonVmConsole::connect(
        record.monvm_console.as_ref().expect("a console"),
        CONSOLE_TIMEOUT,
    )
    .expect("console");
    // Root owns the programs whoever built the image (chown clears the
    // set-uid bit: the modes follow); a FIFO for the test.
    console_sh(
        &mut console,
        &format!(
            "chown 0:0 {ALLOWED} {PLAIN} {OTHER} && chmod 4755 {ALLOWED} {OTHER} && \
             mkfifo -m 666 /tmp/avm-go"
        ),
    );

    // The named set-uid program, and the other one, each under a user.
    let from = avm_events(&record).len();
    let (allowed_shell, allowed) = under_nobody(&mut console, ALLOWED);
    wait_comm(&mut console, allowed, "avm-setuid-wait");
    assert_eq!(
        uids(&mut console, allowed),
        ["65534", "0", "0", "0"],
        "{series}"
    );
    let (other_shell, other) = under_nobody(&mut console, OTHER);
    wait_comm(&mut console, other, "avm-setuid-othe");
    assert_eq!(
        uids(&mut console, other),
        ["65534", "0", "0", "0"],
        "{series}"
    );
    wait_event(
        &record,
        from,
        &[
            ":violation:creds:",
            &format!("process:{other}:avm-setuid-othe:euid 0 under pid {other_shell} euid 65534"),
        ],
    );
    std::thread::sleep(ROUNDS);
    let all = avm_events(&record);
    assert!(
        all.iter()
            .skip(from)
            .all(|e| !e.contains(&format!("process:{allowed}:"))),
        "{series}: the named set-uid program was reported: {all:#?}"
    );
    console_sh(
        &mut console,
        &format!(
            "kill {allowed} {other}; sleep 0.5; kill {allowed_shell} {other_shell} 2>/dev/null; true"
        ),
    );
    wait_event(&record, from, &[":clean:creds"]);

    // Root from a rootkit, then an exec of the named program that is not
    // set-uid: the path alone does not let it off.
    let rootkit = Rootkit::load(&mut console).expect("insmod of the rootkit");
    let (shell, pid) = under_nobody(
        &mut console,
        &format!("(read x </tmp/avm-go; exec {PLAIN})"),
    );
    assert_eq!(uids(&mut console, pid), ["65534"; 4], "{series}");
    let from = avm_events(&record).len();
    rootkit
        .set(&mut console, Attack::RootPid(pid), true)
        .expect("on");
    wait_event(
        &record,
        from,
        &[":violation:creds:", &format!("process:{pid}:sh:")],
    );
    let from = avm_events(&record).len();
    console_sh(&mut console, "echo go > /tmp/avm-go");
    wait_comm(&mut console, pid, "avm-plain-wait");
    assert_eq!(uids(&mut console, pid), ["0"; 4], "{series}");
    wait_event(
        &record,
        from,
        &[
            ":violation:creds:",
            &format!("process:{pid}:avm-plain-wait:euid 0 under pid {shell} euid 65534"),
        ],
    );
    console_sh(
        &mut console,
        &format!("kill {pid}; sleep 0.5; kill {shell} 2>/dev/null; true"),
    );
    rootkit
        .set(&mut console, Attack::RootPid(pid), false)
        .expect("off");
    wait_event(&record, from, &[":clean:creds"]);
    console_sh(&mut console, "rmmod avm_rootkit");
    assert_eq!(console_sh(&mut console, "echo alive").trim(), "alive");
}

#[test]
fn a_named_set_uid_program_is_let_off_a_rootkit_is_not_6_1() {
    setuid_allowance("6.1");
}

#[test]
fn a_named_set_uid_program_is_let_off_a_rootkit_is_not_6_12() {
    setuid_allowance("6.12");
}
