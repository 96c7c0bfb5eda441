//! The test rootkit (`qemu/rootkit/`, docs/rootkit.md) inside a live
//! Mon-VM of each Debian kernel (KASLR on), loaded with `insmod` from its
//! console as real malware would be:
//! - each attack the A-VM detects today (a `sys_call_table` slot and an IDT
//!   gate pointed into the module, a byte of kernel text, a byte of
//!   rodata), switched on from inside, is a violation event of its area,
//!   and a clean event once switched off; no area stays in violation;
//! - the other attacks take effect and are undone, as the guest itself
//!   shows, and the A-VM reports each in its area and clears it:
//!   `tcp_prot.init` hooked (a socket created runs the module's wrapper;
//!   `pointer_table`), `n_tty_ops.receive_buf2` hooked (what the console
//!   types runs the module's wrapper; `pointer_table`, the structure
//!   behind `tty_ldiscs[0]`), the module gone from `/proc/modules` but still in
//!   `/sys/module` (`hidden_module`), a process gone from the task list
//!   (the scheduler's `sysrq-t` dump, which walks it) while its PID still
//!   answers (`hidden_process`), a user's process made root
//!   (`/proc/PID/status`; `creds`: root without an exec), a thread's own
//!   cred made root and a thread's own namespace hidden (the task list
//!   holds only thread-group leaders: `qemu/testprogs/avm_threads.c`);
//! - a flood of valid IMA entries linked in at once keeps the A-VM behind
//!   the list for longer than its limit: the verdict on unmeasured
//!   processes is reported unjudged (`measurement_evaded`), and clean
//!   again once the A-VM has caught up;
//! - `rmmod` afterwards leaves the Mon-VM running.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use avm_qemu::monvm::console::MonVmConsole;
use avm_qemu::testing::{Attack, Rootkit, avm_events, console_sh, wait_for_avm_serial};

static BOOTS: Mutex<()> = Mutex::new(());

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Several whole text sweeps (one per second).
const SETTLE: Duration = Duration::from_secs(3);
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// IMA entries the flood links in at once: at some 4,000 anchored a
/// second here (a TPM extend each; 60,000 took 15 s on 6.1), the A-VM
/// stays behind for twice its 10 s limit; well within the A-VM's log
/// (200,000 records, 16 MiB: some 130 bytes each).
const IMA_FLOOD: u32 = 90_000;

/// Waits for an event after the first `from` that contains `needle`.
fn wait_event(record: &avm_qemu::NodeRecord, from: usize, needle: &str) -> String {
    wait_event_within(record, from, needle, EVENT_TIMEOUT)
}

/// [`wait_event`] with a timeout of its own.
fn wait_event_within(
    record: &avm_qemu::NodeRecord,
    from: usize,
    needle: &str,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let all = avm_events(record);
        if let Some(hit) = all.iter().skip(from).find(|e| e.contains(needle)) {
            return hit.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no event {needle:?} after #{from}: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// AREA -> its last verdict (`violation` or `clean`).
fn last_verdicts(events: &[String]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for e in events {
        let mut parts = e.split(':').skip(3);
        if let (Some(kind), Some(area)) = (parts.next(), parts.next()) {
            let area = area.split(' ').next().unwrap_or(area);
            out.insert(area.to_string(), kind.to_string());
        }
    }
    out
}

/// How many times the scheduler's task dump (`sysrq-t`, a walk of the
/// task list) names PID.
fn in_task_dump(console: &mut MonVmConsole, pid: u32) -> usize {
    let out = console_sh(
        console,
        &format!(
            "dmesg -c >/dev/null; echo t > /proc/sysrq-trigger; dmesg -c | grep -cE \" pid:{pid}( |$)\"; true"
        ),
    );
    // sysrq prints its own "sysrq: Show State" on the console too.
    out.lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("count: {out}"))
}

/// The namespace `hide_netns` unlinked (its inode number from the
/// rootkit's status) is reported after event `from`; then relinked, clean.
/// Switches `attack` on, waits for the event holding `violation`
/// (`:violation:AREA:...`), runs `meanwhile` (what the guest shows while
/// the attack is on), switches it off and waits for AREA's clean event.
fn attack_seen(
    console: &mut MonVmConsole,
    rootkit: &Rootkit,
    record: &avm_qemu::NodeRecord,
    attack: Attack,
    violation: &str,
    meanwhile: impl FnOnce(&mut MonVmConsole),
) {
    let area = violation
        .strip_prefix(":violation:")
        .and_then(|v| v.split(':').next())
        .expect("a :violation:AREA: text");
    let from = avm_events(record).len();
    rootkit.set(console, attack, true).expect("on");
    wait_event(record, from, violation);
    meanwhile(console);
    rootkit.set(console, attack, false).expect("off");
    wait_event(record, from, &format!(":clean:{area}"));
}

fn hidden_netns_reported(
    console: &mut MonVmConsole,
    rootkit: &Rootkit,
    record: &avm_qemu::NodeRecord,
    from: usize,
    series: &str,
) {
    let status = rootkit.status(console).expect("status");
    let hidden = status
        .get("hide_netns")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| panic!("{series}: no namespace hidden: {status:?}"));
    wait_event(
        record,
        from,
        &format!(":violation:pointer_table:netns:{hidden}@0xffff"),
    );
    rootkit.set(console, Attack::HideNetns, false).expect("off");
    wait_event(record, from, ":clean:pointer_table");
}

/// Where the Mon-VM holds `qemu/testprogs/avm_threads.c`, built.
const THREADS_GUEST_PATH: &str = "/usr/bin/avm_threads";

/// Starts `sleep` (as `user` through `su`, or as root) in the background
/// and returns its PID once it runs `sleep`.
fn start_sleep(console: &mut MonVmConsole, user: Option<&str>) -> u32 {
    start_program(console, user, "sleep 1000")
}

/// Starts `command` (as `user` through `su`, or as root) in the background
/// and returns its PID once it runs the command's program.
fn start_program(console: &mut MonVmConsole, user: Option<&str>, command: &str) -> u32 {
    let line = match user {
        Some(user) => {
            format!("su -s /bin/sh {user} -c 'exec {command}' >/dev/null 2>&1 & echo $!")
        }
        None => format!("{command} >/dev/null 2>&1 & echo $!"),
    };
    let program = command.split_whitespace().next().unwrap_or_default();
    let comm = program.rsplit('/').next().unwrap_or_default();
    let pid: u32 = console_sh(console, &line).trim().parse().expect("a PID");
    let deadline = Instant::now() + Duration::from_secs(10);
    while console_sh(console, &format!("cat /proc/{pid}/comm; true")).trim() != comm {
        assert!(Instant::now() < deadline, "{pid} never became {comm}");
        std::thread::sleep(Duration::from_millis(100));
    }
    pid
}

/// The thread of `leader` (an `avm_threads`) other than itself, once it
/// has its own cred: its `/proc/TID/status` then shows the ids of the
/// cred it committed (the same ids; only the cred is new).
fn second_thread(console: &mut MonVmConsole, leader: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tids = console_sh(console, &format!("ls /proc/{leader}/task; true"));
        if let Some(tid) = tids
            .split_whitespace()
            .filter_map(|t| t.parse::<u32>().ok())
            .find(|&t| t != leader)
        {
            // Settled once the thread waits (state S), past its prctl and
            // unshare.
            let state = console_sh(
                console,
                &format!("grep '^State:' /proc/{leader}/task/{tid}/status; true"),
            );
            if state.contains("S (sleeping)") {
                return tid;
            }
        }
        assert!(Instant::now() < deadline, "{leader} has no second thread");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ids(console: &mut MonVmConsole, pid: u32) -> String {
    console_sh(
        console,
        &format!("grep -E '^(Uid|Gid):' /proc/{pid}/status"),
    )
}

fn attack_from_inside(series: &str) {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let threads = avm_qemu::testing::build_test_program(dir.path(), "avm_threads");
    let node = avm_qemu::testing::monvm_node_with_rootkit_and(dir.path(), series, 256, |config| {
        let monvm = config.monvm.as_mut().expect("a Mon-VM");
        monvm.extra_files.push(avm_qemu::monvm::rootfs::ExtraFile {
            host_path: threads,
            guest_path: THREADS_GUEST_PATH.into(),
            mode: 0o755,
        });
    });
    let record = node.record().clone();
    wait_for_avm_serial(&record, "AVM-MONVM-TEXT ");
    let mut console = MonVmConsole::connect(
        record.monvm_console.as_ref().expect("a console"),
        CONSOLE_TIMEOUT,
    )
    .expect("console");

    let rootkit = Rootkit::load(&mut console).expect("insmod of the rootkit");
    assert!(console_sh(&mut console, "cat /proc/modules").contains("avm_rootkit "));
    let status = rootkit.status(&mut console).expect("status");
    for target in ["sys_call_table", "idt_gate", "text_byte", "rodata_byte"] {
        assert!(
            status.get(target).is_some_and(|v| v != "0x0"),
            "{series}: {target} not found: {status:?}"
        );
    }

    // What the A-VM detects: a violation of the area, then clean again.
    for (attack, area) in [
        (Attack::SyscallTable, "sys_call_table"),
        (Attack::Idt, "idt"),
        (Attack::Text, "text"),
        (Attack::Rodata, "rodata"),
    ] {
        let from = avm_events(&record).len();
        rootkit.set(&mut console, attack, true).expect("on");
        wait_event(&record, from, &format!(":violation:{area}:"));
        // The guest keeps working with the attack on.
        console_sh(&mut console, "echo $$ >/dev/null; ls / >/dev/null");
        rootkit.set(&mut console, attack, false).expect("off");
        wait_event(&record, from, &format!(":clean:{area}"));
    }
    std::thread::sleep(SETTLE);
    let all = avm_events(&record);
    let verdicts = last_verdicts(&all);
    assert!(
        verdicts.values().all(|v| v == "clean"),
        "{series}: an area stays in violation: {verdicts:?}\n{all:#?}"
    );
    for area in ["sys_call_table", "idt", "text", "rodata"] {
        assert!(verdicts.contains_key(area), "{series}: {area}: {all:#?}");
    }

    // tcp_prot.init: a socket created runs the module's wrapper. The A-VM
    // sees the hooked pointer (tcp_prot's fields may only keep their
    // start-up values or point into the kernel image).
    hook_runs_and_is_reported(
        &mut console,
        &rootkit,
        &record,
        series,
        HookedPointer {
            attack: Attack::FopsTable,
            pointer: "tcp_prot_init",
            calls: "tcp_init_hook_calls",
            trigger: "nc 127.0.0.1 1 </dev/null >/dev/null 2>&1; true",
            violation: ":violation:pointer_table:tcp_prot[",
        },
    );
    // A keylogger: the terminal line discipline's receive_buf2 (word 15
    // of n_tty_ops on both kernels) wrapped; the table entry pointing at
    // n_tty_ops stays as it was. What the console types then goes through
    // the module.
    hook_runs_and_is_reported(
        &mut console,
        &rootkit,
        &record,
        series,
        HookedPointer {
            attack: Attack::Keylog,
            pointer: "n_tty_receive_buf2",
            calls: "tty_bytes_seen",
            trigger: "echo typed",
            violation: ":violation:pointer_table:tty_ldiscs[0]->[15]:",
        },
    );

    // A netfilter hook (IPv4 PRE_ROUTING), registered through the kernel's
    // API: loopback packets run it. While the module is listed its hook is
    // in that module's text (the module is the verifier's to judge); once
    // the module hides, the hook runs code no listed module has. The same
    // hook in a network namespace of its own (a container's), and among
    // the ingress hooks of the loopback device.
    let from = avm_events(&record).len();
    rootkit
        .set(&mut console, Attack::NetfilterHook, true)
        .expect("on");
    rootkit
        .set(&mut console, Attack::NetfilterHookNetns, true)
        .expect("on");
    rootkit
        .set(&mut console, Attack::NetfilterHookIngress, true)
        .expect("on");
    console_sh(
        &mut console,
        "ip link set lo up; ping -c 2 -W 1 127.0.0.1 >/dev/null 2>&1; true",
    );
    let status = rootkit.status(&mut console).expect("status");
    assert!(
        status
            .get("nf_packets_seen")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0),
        "{series}: the netfilter hook did not run: {status:?}"
    );
    let netns = status
        .get("nf_hook_netns")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| panic!("{series}: no namespace hooked: {status:?}"));
    std::thread::sleep(SETTLE);
    let listed: Vec<String> = avm_events(&record)[from..]
        .iter()
        .filter(|e| e.contains("pointer_table"))
        .cloned()
        .collect();
    assert_eq!(
        listed,
        Vec::<String>::new(),
        "{series}: a listed module's hook"
    );

    // The module hides from the module list, not from sysfs.
    let modules = console_sh(&mut console, "cut -d' ' -f1 /proc/modules");
    let from = avm_events(&record).len();
    rootkit
        .set(&mut console, Attack::HideModule, true)
        .expect("on");
    assert!(!console_sh(&mut console, "cat /proc/modules").contains("avm_rootkit"));
    console_sh(&mut console, "test -d /sys/module/avm_rootkit");
    // The A-VM's cross-view: in sysfs, not on the module list. And the
    // netfilter hook now runs code no listed module has.
    wait_event(
        &record,
        from,
        ":violation:hidden_module:module:avm_rootkit@",
    );
    wait_event(
        &record,
        from,
        ":violation:pointer_table:nf_hooks_ipv4[0][0]:0xffffffffc",
    );
    wait_event(
        &record,
        from,
        &format!(":violation:pointer_table:nf_hooks_ipv4@netns:{netns}[0][0]:0xffffffffc"),
    );
    wait_event(
        &record,
        from,
        ":violation:pointer_table:nf_hooks_ingress[lo][0]:0xffffffffc",
    );
    rootkit
        .set(&mut console, Attack::HideModule, false)
        .expect("off");
    wait_event(&record, from, ":clean:hidden_module");
    wait_event(&record, from, ":clean:pointer_table");
    rootkit
        .set(&mut console, Attack::NetfilterHook, false)
        .expect("off");
    rootkit
        .set(&mut console, Attack::NetfilterHookNetns, false)
        .expect("off");
    rootkit
        .set(&mut console, Attack::NetfilterHookIngress, false)
        .expect("off");
    assert_eq!(
        console_sh(&mut console, "cut -d' ' -f1 /proc/modules"),
        modules,
        "{series}: the module list is not as before"
    );

    // A network namespace unlinked from the kernel's list of them, a
    // process left in it: its hooks would not be walked. The namespaces
    // the tasks are in are the cross-view.
    let from = avm_events(&record).len();
    rootkit
        .set(&mut console, Attack::HideNetns, true)
        .expect("on");
    hidden_netns_reported(&mut console, &rootkit, &record, from, series);
    console_sh(
        &mut console,
        &format!(
            "pkill -f 'sleep {}'; true",
            avm_qemu::testing::HIDDEN_NETNS_SLEEP
        ),
    );

    // The same with no process left in it (the module's reference keeps
    // it): no task names it, its loopback does, on the device model's
    // `net` class list, which holds every namespace's devices.
    let from = avm_events(&record).len();
    console_sh(
        &mut console,
        "unshare -n sh -c 'echo hide_netns 1 > /proc/avm_rootkit'",
    );
    hidden_netns_reported(&mut console, &rootkit, &record, from, series);

    // A thread in a namespace of its own, that namespace unlinked: the
    // task list holds only the thread's leader, which stays in the first
    // namespace; the walk of each group's threads finds it.
    let leader = start_program(&mut console, None, THREADS_GUEST_PATH);
    let tid = second_thread(&mut console, leader);
    let from = avm_events(&record).len();
    console_sh(
        &mut console,
        &format!("nsenter -t {tid} -n sh -c 'echo hide_netns 1 > /proc/avm_rootkit'"),
    );
    hidden_netns_reported(&mut console, &rootkit, &record, from, series);
    // The same thread unlinked from its group's thread list (which hides
    // its cred and namespace from the walk): the kernel's count of the
    // group's threads still has it.
    attack_seen(
        &mut console,
        &rootkit,
        &record,
        Attack::HideTid(tid),
        &format!(
            ":violation:hidden_process:process:{leader}:avm_threads:thread list and count differ"
        ),
        |_| {},
    );
    // Unlinked and taken off the count as well: the thread lists agree
    // with the count, but the PID table still holds the thread (or it has
    // no PID to run under).
    attack_seen(
        &mut console,
        &rootkit,
        &record,
        Attack::HideTidCount(tid),
        &format!(":violation:hidden_process:process:{tid}:avm_threads:only in the PID table"),
        |_| {},
    );
    console_sh(&mut console, &format!("kill {leader}"));

    // A process gone from the task list; its PID still answers.
    let pid = start_sleep(&mut console, None);
    assert_eq!(in_task_dump(&mut console, pid), 1, "{series}: before");
    let from = avm_events(&record).len();
    rootkit
        .set(&mut console, Attack::HidePid(pid), true)
        .expect("on");
    assert_eq!(in_task_dump(&mut console, pid), 0, "{series}: still listed");
    // The A-VM's cross-view: in the process tree, not on the task list.
    wait_event(
        &record,
        from,
        &format!(":violation:hidden_process:process:{pid}:sleep"),
    );
    console_sh(
        &mut console,
        &format!("kill -0 {pid} && test -d /proc/{pid}"),
    );
    rootkit
        .set(&mut console, Attack::HidePid(pid), false)
        .expect("off");
    assert_eq!(in_task_dump(&mut console, pid), 1, "{series}: not back");
    wait_event(&record, from, ":clean:hidden_process");
    console_sh(&mut console, &format!("kill {pid}"));

    // A busy process taken off every list the A-VM walks (the task list,
    // its parent's children, the PID table, where `kill` finds it): it is
    // met on a CPU.
    let busy = start_program(&mut console, None, "sh -c 'while :; do :; done'");
    attack_seen(
        &mut console,
        &rootkit,
        &record,
        Attack::VanishPid(busy),
        &format!(":violation:hidden_process:process:{busy}:sh:running on a CPU, on no list"),
        |console| {
            assert_eq!(in_task_dump(console, busy), 0, "{series}: still listed");
            console_sh(console, &format!("! kill -0 {busy} 2>/dev/null"));
        },
    );
    console_sh(&mut console, &format!("kill {busy}"));
    // A sleeping one taken off the same lists is on no CPU either: its
    // cgroup still lists it.
    let pid = start_sleep(&mut console, None);
    attack_seen(
        &mut console,
        &rootkit,
        &record,
        Attack::VanishPid(pid),
        &format!(":violation:hidden_process:process:{pid}:sleep:only in a cgroup"),
        |console| assert_eq!(in_task_dump(console, pid), 0, "{series}: still listed"),
    );
    console_sh(&mut console, &format!("kill {pid}"));
    // Off its cgroup's list too, on no list the kernel keeps of its
    // tasks: its kernel stack is left, the scheduler's word at its bottom.
    let pid = start_sleep(&mut console, None);
    attack_seen(
        &mut console,
        &rootkit,
        &record,
        Attack::VanishCgPid(pid),
        &format!(":violation:hidden_process:process:{pid}:sleep:kernel stack 0xffff"),
        |console| assert_eq!(in_task_dump(console, pid), 0, "{series}: still listed"),
    );
    console_sh(&mut console, &format!("kill {pid}"));
    // And its stack's area off the kernel's busy list: the stack is left
    // in the page tables alone, where the task needs it to run again.
    let pid = start_sleep(&mut console, None);
    let from = avm_events(&record).len();
    rootkit
        .set(&mut console, Attack::VanishVaPid(pid), true)
        .expect("on");
    let event = wait_event(
        &record,
        from,
        &format!(":violation:hidden_process:process:{pid}:sleep:kernel stack 0xffff"),
    );
    assert!(
        event.contains(", of no task or busy area"),
        "{series}: the page tables' view did not find it: {event}"
    );
    assert_eq!(in_task_dump(&mut console, pid), 0, "{series}: still listed");
    rootkit
        .set(&mut console, Attack::VanishVaPid(pid), false)
        .expect("off");
    wait_event(&record, from, ":clean:hidden_process");
    console_sh(&mut console, &format!("kill {pid}"));

    // A user's process made root, then the user again.
    console_sh(&mut console, avm_qemu::monvm::ADD_USER_NOBODY);
    let pid = start_sleep(&mut console, Some("nobody"));
    let user_ids = ids(&mut console, pid);
    assert!(user_ids.contains("65534"), "{series}: {user_ids}");
    // Give the A-VM a round to see the user's euid first.
    std::thread::sleep(Duration::from_secs(1));
    let from = avm_events(&record).len();
    rootkit
        .set(&mut console, Attack::RootPid(pid), true)
        .expect("on");
    // Root without an exec: a rootkit's doing.
    wait_event(
        &record,
        from,
        &format!(":violation:creds:process:{pid}:sleep:euid 0 without exec (was 65534)"),
    );
    // Its ids written in place: the cred is still charged to nobody.
    wait_event(
        &record,
        from,
        &format!(":violation:creds:process:{pid}:sleep:uid 0 in a cred of uid 65534's account"),
    );
    let root_ids = ids(&mut console, pid);
    assert_eq!(
        root_ids.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "0", "0", "0", "0", "Gid:", "0", "0", "0", "0"],
        "{series}"
    );
    rootkit
        .set(&mut console, Attack::RootPid(pid), false)
        .expect("off");
    assert_eq!(ids(&mut console, pid), user_ids, "{series}: not restored");
    wait_event(&record, from, ":clean:creds");
    console_sh(&mut console, &format!("kill {pid}"));

    // A user's process under root (the console's shell) given euid 0
    // alone, at once after its exec: no parent to rise from, no cred
    // tracked as a user's yet, its account still its real uid; only a
    // set-uid program makes euid 0 under a user's uid.
    let pid = start_sleep(&mut console, Some("nobody"));
    attack_seen(
        &mut console,
        &rootkit,
        &record,
        Attack::EuidPid(pid),
        &format!(":violation:creds:process:{pid}:sleep:euid 0 under uid 65534"),
        |console| {
            let raised = ids(console, pid);
            assert_eq!(
                raised.split_whitespace().take(5).collect::<Vec<_>>(),
                ["Uid:", "65534", "0", "65534", "0"],
                "{series}"
            );
        },
    );
    console_sh(&mut console, &format!("kill {pid}"));

    // A user's process under root given a whole new root cred at once
    // after its exec (ids 0, charged to root's account, not init_cred):
    // no parent rose, no uid or account tells, no round need have seen it
    // as a user; its executable was opened by the user's exec.
    let pid = start_sleep(&mut console, Some("nobody"));
    attack_seen(
        &mut console,
        &rootkit,
        &record,
        Attack::AdoptPid(pid),
        &format!(":violation:creds:process:{pid}:sleep:euid 0 after an exec by euid 65534"),
        |console| {
            let adopted = ids(console, pid);
            assert_eq!(
                adopted.split_whitespace().collect::<Vec<_>>(),
                ["Uid:", "0", "0", "0", "0", "Gid:", "0", "0", "0", "0"],
                "{series}"
            );
        },
    );
    assert!(
        ids(&mut console, pid).contains("65534"),
        "{series}: not restored"
    );
    console_sh(&mut console, &format!("kill {pid}"));

    // The same, and its executable's file made to look opened by root
    // (`f_cred`): the exec no longer tells. The kernel still counts the
    // process as nobody's (the cred was swapped, not committed): root has
    // one task more than the kernel counts for it.
    let pid = start_sleep(&mut console, Some("nobody"));
    let from = avm_events(&record).len();
    attack_seen(
        &mut console,
        &rootkit,
        &record,
        Attack::AdoptExePid(pid),
        ":violation:creds:account:uid 0: ",
        |console| {
            let adopted = ids(console, pid);
            assert_eq!(
                adopted.split_whitespace().take(3).collect::<Vec<_>>(),
                ["Uid:", "0", "0"],
                "{series}"
            );
        },
    );
    let exec = format!("process:{pid}:sleep:euid 0 after an exec");
    assert!(
        !avm_events(&record)[from..]
            .iter()
            .any(|e| e.contains(&exec)),
        "{series}: the executable's f_cred was not rewritten"
    );
    console_sh(&mut console, &format!("kill {pid}"));

    // A user's thread made root (its own cred): its leader, the one the
    // task list holds, stays the user's.
    let leader = start_program(&mut console, Some("nobody"), THREADS_GUEST_PATH);
    let tid = second_thread(&mut console, leader);
    std::thread::sleep(Duration::from_secs(1));
    attack_seen(
        &mut console,
        &rootkit,
        &record,
        Attack::RootPid(tid),
        &format!(
            ":violation:creds:process:{tid}:avm_threads:uid 0 in a cred of uid 65534's account"
        ),
        |console| {
            assert!(
                ids(console, leader).contains("65534"),
                "{series}: the leader's ids changed too: the thread shares its cred"
            );
        },
    );
    console_sh(&mut console, &format!("kill {leader}"));

    // A user's child made root, its real_parent pointed at init first:
    // the process tree still holds it under its user parent.
    let (parent, child) = avm_qemu::testing::under_nobody(&mut console, "sleep 1000");
    avm_qemu::testing::wait_comm(&mut console, child, "sleep");
    std::thread::sleep(Duration::from_secs(1));
    let from = avm_events(&record).len();
    rootkit
        .set(&mut console, Attack::ReparentPid(child), true)
        .expect("on");
    rootkit
        .set(&mut console, Attack::RootPid(child), true)
        .expect("on");
    wait_event(
        &record,
        from,
        &format!(":violation:creds:process:{child}:sleep:euid 0 under pid {parent} euid 65534"),
    );
    rootkit
        .set(&mut console, Attack::RootPid(child), false)
        .expect("off");
    rootkit
        .set(&mut console, Attack::ReparentPid(child), false)
        .expect("off");
    wait_event(&record, from, ":clean:creds");
    // Taken off its parent's children list, left on the task list.
    let from = avm_events(&record).len();
    rootkit
        .set(&mut console, Attack::UntreePid(child), true)
        .expect("on");
    wait_event(
        &record,
        from,
        &format!(":violation:hidden_process:process:{child}:sleep:off the process tree"),
    );
    rootkit
        .set(&mut console, Attack::UntreePid(child), false)
        .expect("off");
    wait_event(&record, from, ":clean:hidden_process");
    console_sh(&mut console, &format!("kill {child} {parent}"));

    // A flood of valid IMA entries (each a copy of the newest): the A-VM
    // anchors every one (a TPM extend each, 256 a round) and judges
    // unmeasured processes on the whole list only. Left behind for
    // longer than its limit (10 s), it reports the verdict unjudged
    // rather than letting the last one stand, and judges again once
    // caught up. The flood is several times what it anchors in 10 s.
    let from = avm_events(&record).len();
    let flooded = Instant::now();
    rootkit
        .set(&mut console, Attack::ImaFlood(IMA_FLOOD), true)
        .expect("flood");
    assert_eq!(
        rootkit.status(&mut console).expect("status")["ima_flooded"],
        IMA_FLOOD.to_string(),
        "{series}"
    );
    wait_event_within(
        &record,
        from,
        ":violation:measurement_evaded:unjudged:ima-list-behind",
        Duration::from_secs(90),
    );
    let reported = flooded.elapsed();
    assert!(
        reported >= Duration::from_secs(10),
        "{series}: reported behind after {reported:?}, before the limit"
    );
    wait_event_within(
        &record,
        from,
        ":clean:measurement_evaded",
        Duration::from_secs(180),
    );
    eprintln!(
        "{series}: {IMA_FLOOD} IMA entries flooded: reported unjudged after {reported:?}, caught up after {:?}",
        flooded.elapsed()
    );

    // Out again; the Mon-VM runs on.
    console_sh(&mut console, "rmmod avm_rootkit");
    assert!(!console_sh(&mut console, "cat /proc/modules").contains("avm_rootkit"));
    assert_eq!(console_sh(&mut console, "echo alive").trim(), "alive");
}

#[test]
fn rootkit_attacks_from_inside_a_6_1_mon_vm() {
    attack_from_inside("6.1");
}

#[test]
fn rootkit_attacks_from_inside_a_6_12_mon_vm() {
    attack_from_inside("6.12");
}

/// A function pointer the rootkit hooks with a wrapper that counts its
/// calls: the attack, the status line saying whose function the pointer
/// holds (`module` or `kernel`), the status line counting the wrapper's
/// calls, a console command that makes the kernel call it, and the
/// A-VM's finding.
struct HookedPointer {
    attack: Attack,
    pointer: &'static str,
    calls: &'static str,
    trigger: &'static str,
    violation: &'static str,
}

/// Switches `hook` on: the pointer is the module's, the A-VM reports it,
/// and the trigger runs the wrapper; then off: the pointer is the
/// kernel's again, the A-VM reports `pointer_table` clean, and the
/// trigger no longer runs the wrapper.
fn hook_runs_and_is_reported(
    console: &mut MonVmConsole,
    rootkit: &Rootkit,
    record: &avm_qemu::NodeRecord,
    series: &str,
    hook: HookedPointer,
) {
    let status = |console: &mut MonVmConsole, key: &str| -> String {
        rootkit.status(console).expect("status")[key].clone()
    };
    let calls = |console: &mut MonVmConsole| -> u64 {
        status(console, hook.calls).parse().expect("a count")
    };
    let from = avm_events(record).len();
    rootkit.set(console, hook.attack, true).expect("on");
    assert_eq!(status(console, hook.pointer), "module");
    wait_event(record, from, hook.violation);
    let before = calls(console);
    console_sh(console, hook.trigger);
    assert!(calls(console) > before, "{series}: the hook never ran");
    rootkit.set(console, hook.attack, false).expect("off");
    assert_eq!(status(console, hook.pointer), "kernel");
    wait_event(record, from, ":clean:pointer_table");
    let after = calls(console);
    console_sh(console, hook.trigger);
    assert_eq!(calls(console), after, "{series}: still hooked");
}
