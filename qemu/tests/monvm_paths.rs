//! Executables of the Mon-VM's processes, named from outside
//! (`vmi::linux::exe_path`, the walk the A-VM runs) and checked against
//! the Mon-VM's IMA list by the A-VM, on a live node of each Debian kernel
//! with KASLR on:
//! - the path the walk gives for every user process equals what the
//!   guest's own `readlink /proc/PID/exe` says, across mounts (a program
//!   copied to a tmpfs on `/dev/shm`, itself on the devtmpfs on `/dev`);
//! - a clean node has no `measurement_evaded` event: every process's
//!   executable and every module has an IMA entry;
//! - a program run from tmpfs (`ima_policy=tcb` does not measure tmpfs)
//!   is a `measurement_evaded` violation naming the process, and the area
//!   is clean again once it is killed; a module loaded from the root is
//!   measured (no event).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use avm_qemu::testing::{avm_events, console_sh, wait_for_avm_serial};
use vmi::RamLayout;
use vmi::linux::{exe_path, tasks};
use vmi::profile::KernelProfile;

static BOOTS: Mutex<()> = Mutex::new(());

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Several IMA rounds of the A-VM's watch (one every 500 ms).
const SETTLE: Duration = Duration::from_secs(3);
/// The copy of busybox on tmpfs (busybox runs `busybox*` names as
/// `busybox APPLET ...`).
const EVADE: &str = "/dev/shm/busybox-evade";

/// PID -> executable of every user process, walked in the RAM file as the
/// A-VM walks it; a task whose walk failed maps to its error.
fn walked_exes(record: &avm_qemu::NodeRecord) -> BTreeMap<i32, Result<String, String>> {
    let layout = RamLayout::parse_cmdline(record.monvm_ram_layout.as_deref().expect("layout"))
        .expect("the recorded layout parses");
    let profile = KernelProfile::decode(
        &std::fs::read(record.monvm_profile.as_ref().expect("a profile")).expect("profile"),
    )
    .expect("profile decodes");
    let memory = vmi::file::FileMemory::open(record.monvm_ram.as_ref().expect("RAM"), layout)
        .expect("opening the RAM file");
    let view = vmi::linux::view(&memory, layout.regions(), &profile).expect("kernel located");
    let init_task = view
        .location
        .runtime_of(profile.symbols.init_task)
        .expect("init_task");
    let offsets = &profile.offsets;
    let mut out = BTreeMap::new();
    let walk = tasks(&view.space, init_task, &offsets.task, &offsets.cred, 32_768).expect("tasks");
    for task in walk {
        // A task exiting under the walk may break the list: what was read
        // before stands (the guest's list is compared pid by pid).
        let Ok(task) = task else { break };
        let Some(mm) = task.mm else { continue };
        let exe = exe_path(&view.space, mm, &offsets.path)
            .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
            .map_err(|e| e.to_string());
        out.insert(task.pid, exe);
    }
    out
}

fn check_paths(series: &str) {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    // Dropping the node (also when an assertion fails) stops both VMs and
    // swtpm and removes the RAM file.
    let node = avm_qemu::testing::monvm_node(dir.path(), series, 256);
    let record = node.record().clone();

    // A clean node: every process's executable measured, no evasion.
    wait_for_avm_serial(&record, "AVM-MONVM-TEXT ");
    std::thread::sleep(SETTLE);
    let evaded = |record: &avm_qemu::NodeRecord| {
        avm_events(record)
            .into_iter()
            .filter(|e| e.contains("measurement_evaded"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        evaded(&record),
        Vec::<String>::new(),
        "{series}: evasion reported on a clean node"
    );

    let mut console = node.monvm_console(CONSOLE_TIMEOUT).expect("console");
    // The rootfs has no /dev/shm (devtmpfs has no such folder): a tmpfs
    // there, on the devtmpfs, on the ext4 root.
    console_sh(
        &mut console,
        "grep -q ' /dev/shm tmpfs ' /proc/mounts || { mkdir -p /dev/shm && mount -t tmpfs shm /dev/shm; }",
    );
    let mounts = console_sh(&mut console, "cat /proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("shm /dev/shm tmpfs ") || l.contains(" /dev/shm tmpfs ")),
        "{series}: no tmpfs on /dev/shm:\n{mounts}"
    );
    // One measured process (sleep is busybox), one run from tmpfs.
    let sleeper: i32 = console_sh(&mut console, "sleep 300 & echo $!")
        .trim()
        .parse()
        .expect("a pid");
    let evader: i32 = console_sh(
        &mut console,
        &format!("cp /bin/busybox {EVADE} && {EVADE} sleep 300 & echo $!"),
    )
    .trim()
    .parse()
    .expect("a pid");

    // The guest's own view, then the walk: every process in both has the
    // same executable.
    let listed = console_sh(
        &mut console,
        "for d in /proc/[0-9]*; do e=$(readlink $d/exe) && echo \"${d#/proc/} $e\"; done 2>/dev/null; true",
    );
    let guest: BTreeMap<i32, String> = listed
        .lines()
        .filter_map(|l| {
            let (pid, exe) = l.split_once(' ')?;
            Some((pid.parse().ok()?, exe.to_string()))
        })
        .collect();
    let walked = walked_exes(&record);
    let mut compared = 0;
    for (pid, exe) in &guest {
        let Some(walked) = walked.get(pid) else {
            continue;
        };
        assert_eq!(
            walked.as_deref(),
            Ok(exe.as_str()),
            "{series}: pid {pid}: the walk says {walked:?}, readlink says {exe}"
        );
        compared += 1;
    }
    for (pid, exe) in [
        (1, "/bin/busybox"),
        (sleeper, "/bin/busybox"),
        (evader, EVADE),
    ] {
        assert_eq!(
            guest.get(&pid).map(String::as_str),
            Some(exe),
            "{series}: {listed}"
        );
        assert_eq!(
            walked.get(&pid).map(|w| w.as_deref()),
            Some(Ok(exe)),
            "{series}: {walked:#?}"
        );
    }
    eprintln!(
        "{series}: {compared} processes compared, {} walked, {} listed",
        walked.len(),
        guest.len()
    );
    assert!(compared >= 4, "{series}: {walked:#?}\n{listed}");

    // The program on tmpfs has no IMA entry: a violation naming it, clean
    // once it is gone.
    wait_for_avm_serial(
        &record,
        &format!(":violation:measurement_evaded:process:{evader}:busybox-evade:{EVADE} "),
    );
    console_sh(&mut console, &format!("kill {evader}; wait {evader}; true"));
    wait_for_avm_serial(&record, ":clean:measurement_evaded ");

    // A module loaded from the root: measured (by its file name), no
    // evasion. (A module copied to tmpfs would not show one either: `cp`
    // reading the module as root had IMA measure the original.)
    let module = record
        .monvm_module("dummy")
        .expect("the dummy module is in the Mon-VM's root")
        .to_string();
    console_sh(&mut console, &format!("insmod {module}"));
    std::thread::sleep(SETTLE);
    console_sh(&mut console, "rmmod dummy");
    let all = evaded(&record);
    assert_eq!(all.len(), 2, "{series}: {all:#?}");
    // Nothing else was reported: the measured sleeper never was.
    let others: Vec<String> = avm_events(&record)
        .into_iter()
        .filter(|e| !e.contains("measurement_evaded"))
        .collect();
    assert_eq!(others, Vec::<String>::new(), "{series}");
}

#[test]
fn exe_paths_and_evasion_on_a_live_6_1_mon_vm() {
    check_paths("6.1");
}

#[test]
fn exe_paths_and_evasion_on_a_live_6_12_mon_vm() {
    check_paths("6.12");
}
