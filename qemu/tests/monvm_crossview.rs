//! The A-VM's cross-views on a live Mon-VM of each Debian kernel: a clean
//! node raises nothing; then, written into the Mon-VM's RAM file as a
//! rootkit inside would write them, each is reported in its own area and
//! cleared when undone:
//! - a process unlinked from the task list (still in its parent's
//!   children): `hidden_process`;
//! - a module unlinked from the module list (still in sysfs):
//!   `hidden_module`;
//! - a process given the kernel's own credentials (`cred` and `real_cred`
//!   pointed at `init_cred`): `creds`;
//! - an unused `net_families` slot pointed into the heap, and a NULL
//!   field of `n_tty_ops` (the tty line discipline `tty_ldiscs[0]` points
//!   at, in writable data) set: `pointer_table`;
//! - an unused kernel slot of a process's top-level page table filled (a
//!   not-present entry): `page_tables`;
//! - a back link of the task list broken (one the kernel does not follow
//!   while the process lives), so that no walk of the list completes: the
//!   areas that need the list report `unwalkable:...` after a few rounds
//!   instead of keeping their last verdict.
//!
//! Why the writes are harmless: the hidden process is a `sleep` nobody
//! waits for and the module is `dummy`, both relinked before anything
//! touches them; the credentials are restored before the process exits
//! (its exit would drop a reference to `init_cred`); the `net_families`
//! slot is for a family number nobody asks for (socket(2) with it never
//! runs), and `n_tty_ops.compat_ioctl` is called only by 32-bit programs; the page-table entry is not present, in a slot of the kernel
//! half no address the kernel uses falls in.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use avm_qemu::monvm::console::MonVmConsole;
use avm_qemu::testing::{MonVmPatch, avm_events, wait_for_avm_serial};
use vmi::paging::VirtualMemory;

static BOOTS: Mutex<()> = Mutex::new(());

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The live kernel, read from the RAM file as the A-VM reads it.
struct Live {
    memory: vmi::file::FileMemory,
    layout: vmi::RamLayout,
    profile: vmi::profile::KernelProfile,
}

impl Live {
    fn open(record: &avm_qemu::NodeRecord) -> Self {
        let layout =
            vmi::RamLayout::parse_cmdline(record.monvm_ram_layout.as_deref().expect("layout"))
                .expect("layout parses");
        let memory =
            vmi::file::FileMemory::open(record.monvm_ram.as_ref().expect("a RAM file"), layout)
                .expect("RAM file");
        let profile = vmi::profile::KernelProfile::decode(
            &std::fs::read(record.monvm_profile.as_ref().expect("profile")).expect("profile"),
        )
        .expect("profile decodes");
        Live {
            memory,
            layout,
            profile,
        }
    }

    fn view(&self) -> vmi::linux::KernelView<'_, vmi::file::FileMemory> {
        vmi::linux::view(&self.memory, self.layout.regions(), &self.profile).expect("kernel")
    }

    fn u64_at(&self, va: u64) -> u64 {
        let va = vmi::GuestVirtAddr::new(va).expect("canonical");
        self.view().space.read_virt_u64(va).expect("readable")
    }

    /// The first task whose comm is `comm`.
    fn task(&self, comm: &str) -> vmi::linux::Task {
        let view = self.view();
        let init = view
            .location
            .runtime_of(self.profile.symbols.init_task)
            .expect("init_task");
        vmi::linux::tasks(
            &view.space,
            init,
            &self.profile.offsets.task,
            &self.profile.offsets.cred,
            4096,
        )
        .expect("task list")
        .filter_map(Result::ok)
        .find(|t| t.comm.as_bytes() == comm.as_bytes())
        .unwrap_or_else(|| panic!("no task {comm}"))
    }

    /// The loaded module named `name`.
    fn module(&self, name: &str) -> vmi::linux::Module {
        let view = self.view();
        let head = view
            .location
            .runtime_of(self.profile.symbols.modules)
            .expect("modules");
        vmi::linux::modules(&view.space, head, &self.profile.offsets.module, 4096)
            .filter_map(Result::ok)
            .find(|m| m.name.as_bytes() == name.as_bytes())
            .unwrap_or_else(|| panic!("no module {name}"))
    }

    fn runtime(&self, link: u64) -> u64 {
        self.view()
            .location
            .runtime_of(link)
            .expect("a kernel-image address")
            .value()
    }
}

/// Writes `value` at the kernel virtual address `va`.
fn write_u64(record: &avm_qemu::NodeRecord, va: u64, value: u64) -> MonVmPatch {
    MonVmPatch::at(
        record,
        |_, _, _| vmi::GuestVirtAddr::new(va).expect("canonical"),
        |_, _| value.to_le_bytes().to_vec(),
        8,
    )
}

/// Unlinks the list node at `node` (`prev->next = next`, `next->prev =
/// prev`); dropping the patches links it back.
fn write_u32(record: &avm_qemu::NodeRecord, va: u64, value: u32) -> MonVmPatch {
    MonVmPatch::at(
        record,
        |_, _, _| vmi::GuestVirtAddr::new(va).expect("canonical"),
        |_, _| value.to_le_bytes().to_vec(),
        4,
    )
}

fn unlink(record: &avm_qemu::NodeRecord, live: &Live, node: u64) -> [MonVmPatch; 2] {
    let next = live.u64_at(node);
    let prev = live.u64_at(node + 8);
    [
        write_u64(record, prev, next),
        write_u64(record, next + 8, prev),
    ]
}

/// The A-VM's events once there are at least `count` (60 s at most).
fn wait_for_events(record: &avm_qemu::NodeRecord, count: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events = avm_events(record);
        if events.len() >= count {
            return events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} events, not {count}: {events:#?}",
            events.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check(series: &str) {
    let _boot = BOOTS.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let node = avm_qemu::testing::monvm_node(dir.path(), series, 256);
    let record = node.record().clone();
    wait_for_avm_serial(&record, "AVM-MONVM-TEXT ");
    let mut console = MonVmConsole::connect(
        record.monvm_console.as_ref().expect("a console"),
        CONSOLE_TIMEOUT,
    )
    .expect("console");
    let dummy = record.monvm_module("dummy").expect("dummy.ko").to_string();
    console
        .run_ok(&format!("insmod {dummy} && (sleep 600 &)"))
        .expect("module in, sleeper started");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        avm_events(&record),
        Vec::<String>::new(),
        "{series}: clean node"
    );
    let live = Live::open(&record);
    let offsets = live.profile.offsets.clone();

    // The PID table (the third view of the tasks) holds exactly the tasks
    // of the task list and the thread lists, but for `init_task` (PID 0,
    // the idle task, which has no entry). A busy shell runs meanwhile, for
    // the run queues (the fourth view) to show it.
    let busy: u32 = console
        .run_ok("(while :; do :; done) >/dev/null 2>&1 & echo $!")
        .expect("a busy shell")
        .trim()
        .parse()
        .expect("its PID");
    std::thread::sleep(Duration::from_secs(1));
    let view = live.view();
    let cross = live
        .profile
        .cross_view
        .as_ref()
        .expect("cross-view reference");
    let init = view
        .location
        .runtime_of(live.profile.symbols.init_task)
        .expect("init_task");
    let leaders: Vec<vmi::linux::Task> =
        vmi::linux::tasks(&view.space, init, &offsets.task, &offsets.cred, 4096)
            .expect("task list")
            .collect::<Result<_, _>>()
            .expect("tasks read");
    let (groups, walked) =
        vmi::linux::crossview::threads(&view.space, &leaders, cross, &offsets.task, &offsets.cred);
    assert_eq!(walked, Ok(()), "{series}: thread lists");
    let mut listed: Vec<u64> = leaders
        .iter()
        .chain(&groups.threads)
        .filter(|t| t.pid != 0)
        .map(|t| t.address.value())
        .collect();
    listed.sort_unstable();
    let head = vmi::GuestVirtAddr::new(live.runtime(cross.init_pid_ns) + cross.pid_ns_xa_head)
        .expect("canonical");
    let (in_table, walked) = vmi::linux::crossview::pid_table_tasks(&view.space, head, cross);
    assert_eq!(walked, Ok(()), "{series}: PID table");
    let mut in_table: Vec<u64> = in_table.iter().map(|t| t.value()).collect();
    in_table.sort_unstable();
    assert!(listed.len() > 20, "{series}: {} tasks", listed.len());
    assert_eq!(in_table, listed, "{series}: PID table against the lists");
    // The cgroups' task lists hold the same tasks.
    let table = vmi::GuestVirtAddr::new(live.runtime(cross.css_set_table)).expect("canonical");
    let (in_cgroups, walked) = vmi::linux::crossview::cgroup_tasks(&view.space, table, cross);
    assert_eq!(walked, Ok(()), "{series}: cgroups");
    let mut in_cgroups: Vec<u64> = in_cgroups.iter().map(|t| t.value()).collect();
    in_cgroups.sort_unstable();
    assert_eq!(in_cgroups, listed, "{series}: cgroups against the lists");
    // Each CPU's current task (but its idle one) is a listed task; the
    // busy shell is among them.
    let running = vmi::linux::crossview::running_tasks(
        &view.space,
        vmi::GuestVirtAddr::new(live.runtime(cross.per_cpu_offset)).expect("canonical"),
        vmi::GuestVirtAddr::new(live.runtime(cross.nr_cpu_ids)).expect("canonical"),
        cross,
    )
    .expect("run queues")
    .running;
    assert!(
        running
            .iter()
            .all(|t| listed.binary_search(&t.value()).is_ok()),
        "{series}: {running:x?}"
    );
    assert!(
        leaders
            .iter()
            .any(|t| t.pid == busy as i32 && running.contains(&t.address)),
        "{series}: the busy shell {busy} on no CPU: {running:x?}"
    );
    // Every live kernel stack is a listed task's, a CPU's idle task's or
    // in a CPU's cache; each listed task (but init_task, not among them)
    // has one among the busy areas (a task that exited meanwhile none).
    let per_cpu = (
        vmi::GuestVirtAddr::new(live.runtime(cross.per_cpu_offset)).expect("canonical"),
        vmi::GuestVirtAddr::new(live.runtime(cross.nr_cpu_ids)).expect("canonical"),
    );
    let (areas, walked) = vmi::linux::crossview::busy_vmap_areas(
        &view.space,
        |link| vmi::GuestVirtAddr::new(live.runtime(link)).ok(),
        cross,
    );
    assert_eq!(walked, Ok(()), "{series}: vmalloc areas");
    let stacks = vmi::linux::crossview::task_stacks(&view.space, &listed, cross);
    let mut known = stacks.clone();
    let starts: std::collections::BTreeSet<u64> = areas.iter().map(|a| a.start).collect();
    assert!(
        stacks.len() > 20 && stacks.iter().all(|s| starts.contains(s)),
        "{series}: {} tasks' stacks, not all among the areas",
        stacks.len()
    );
    known.extend(
        vmi::linux::crossview::cpu_stacks(&view.space, per_cpu.0, per_cpu.1, cross)
            .expect("CPUs' stacks"),
    );
    known.sort_unstable();
    let orphans = vmi::linux::crossview::orphan_stacks(&view.space, &areas, &known);
    assert!(
        orphans.is_empty(),
        "{series}: stacks of no task: {orphans:x?}"
    );
    // The page tables map the same stacks, whatever the busy lists say:
    // the listed tasks' (two spared for a task ending under the walk),
    // none of no task.
    let mapped =
        vmi::linux::crossview::mapped_stacks(&view.space, &known).expect("the page tables walk");
    let unknown: Vec<&u64> = mapped
        .iter()
        .filter(|s| known.binary_search(s).is_err())
        .collect();
    assert!(
        unknown.is_empty(),
        "{series}: stacks the page tables map of no task: {unknown:x?}"
    );
    let unmapped = stacks.iter().filter(|s| !mapped.contains(s)).count();
    assert!(
        unmapped <= 2,
        "{series}: {unmapped} of {} listed stacks not found in the page tables",
        stacks.len()
    );
    // A stack names its task: the word on it that points back at it is
    // the task's own address (what names a hidden task's stack).
    let named = listed
        .iter()
        .filter(|&&t| {
            vmi::linux::crossview::task_stacks(&view.space, &[t], cross)
                .first()
                .and_then(|&s| vmi::linux::crossview::stack_owner(&view.space, s, cross))
                .is_some_and(|owner| owner.value() == t)
        })
        .count();
    // (All of them when measured, on both kernels; two spared for a task
    // forked or ending under the walk.)
    assert!(
        named + 2 >= listed.len(),
        "{series}: {named} of {} tasks named by their stacks",
        listed.len()
    );
    console
        .run_ok(&format!("kill {busy}"))
        .expect("busy shell ended");

    // A hidden process.
    let sleeper = live.task("sleep");
    let patches = unlink(&record, &live, sleeper.address.value() + offsets.task.tasks);
    wait_for_avm_serial(
        &record,
        &format!(":violation:hidden_process:process:{}:sleep", sleeper.pid),
    );
    drop(patches);
    wait_for_avm_serial(&record, ":clean:hidden_process");

    // A hidden module.
    let module = live.module("dummy");
    let patches = unlink(&record, &live, module.address.value() + offsets.module.list);
    wait_for_avm_serial(&record, ":violation:hidden_module:module:dummy@");
    drop(patches);
    wait_for_avm_serial(&record, ":clean:hidden_module");

    // The kernel's own credentials for a user process.
    let cross = live
        .profile
        .cross_view
        .clone()
        .expect("cross-view reference");
    let init_cred = live.runtime(cross.init_cred);
    let creds = [
        write_u64(
            &record,
            sleeper.address.value() + offsets.task.cred,
            init_cred,
        ),
        write_u64(
            &record,
            sleeper.address.value() + offsets.task.real_cred,
            init_cred,
        ),
    ];
    wait_for_avm_serial(
        &record,
        &format!(":violation:creds:process:{}:sleep:init_cred", sleeper.pid),
    );
    drop(creds);
    wait_for_avm_serial(&record, ":clean:creds");

    // A broken back link: the sleeper's `tasks.prev` pointed at itself.
    // The kernel follows it only to unlink the sleeper when it exits.
    let own = sleeper.address.value() + offsets.task.tasks;
    let broken = write_u64(&record, own + 8, own);
    for area in [
        "measurement_evaded:unwalkable:task-or-module-list",
        "hidden_module:unwalkable:module-list-or-kset",
        "hidden_process:unwalkable:task-list-or-process-tree",
        "creds:unwalkable:task-list-or-thread-lists",
        "page_tables:unwalkable:task-list-or-init_top_pgt",
    ] {
        wait_for_avm_serial(&record, &format!(":violation:{area}"));
    }
    drop(broken);
    // (Each area was clean once before: count the events to see the new
    // ones.)
    let events = wait_for_events(&record, 16);
    let mut cleaned: Vec<&str> = events[11..]
        .iter()
        .filter_map(|e| e.split(":clean:").nth(1)?.split(' ').next())
        .collect();
    cleaned.sort_unstable();
    assert_eq!(
        cleaned,
        [
            "creds",
            "hidden_module",
            "hidden_process",
            "measurement_evaded",
            "page_tables"
        ],
        "{series}: {events:#?}"
    );

    // A hook in net_families, in a slot no family uses.
    let table = cross
        .pointer_tables
        .iter()
        .find(|t| t.name == "net_families")
        .expect("net_families");
    let base = live.runtime(table.address);
    let slot = (0..u64::from(table.entries))
        .rev()
        .find(|&i| live.u64_at(base + 8 * i) == 0)
        .expect("an unused family");
    let hook = write_u64(&record, base + 8 * slot, 0xffff_8880_0000_1000);
    wait_for_avm_serial(
        &record,
        &format!(":violation:pointer_table:net_families[{slot}]:0xffff888000001000"),
    );
    drop(hook);
    wait_for_avm_serial(&record, ":clean:pointer_table");
    // A pointer into the kernel image mapping past `_end`: nothing of the
    // kernel's own is there (a page a rootkit mapped, say).
    let before = avm_events(&record).len();
    let past_end = live.runtime(live.profile.symbols.end) + 0x20_0000;
    let hook = write_u64(&record, base + 8 * slot, past_end);
    wait_for_avm_serial(
        &record,
        &format!(":violation:pointer_table:net_families[{slot}]:{past_end:#x}"),
    );
    drop(hook);
    let events = wait_for_events(&record, before + 2);
    assert!(
        events[before + 1].contains(":clean:pointer_table"),
        "{series}: {events:#?}"
    );
    // A pointer into the image's own writable data (a structure forged in
    // .bss, just below `_end`): a hook too; into read-only data (where
    // the kernel's own const structures are), none.
    let before = avm_events(&record).len();
    let forged = live.runtime(live.profile.symbols.end) - 0x1000;
    let hook = write_u64(&record, base + 8 * slot, forged);
    wait_for_avm_serial(
        &record,
        &format!(":violation:pointer_table:net_families[{slot}]:{forged:#x}"),
    );
    let rodata = live.runtime(live.profile.symbols.start_rodata) + 0x40;
    drop(hook);
    let hook = write_u64(&record, base + 8 * slot, rodata);
    let events = wait_for_events(&record, before + 2);
    assert!(
        events[before + 1].contains(":clean:pointer_table"),
        "{series}: {events:#?}"
    );
    drop(hook);

    // The structures the tables point at from start-up in the image's
    // writable data (not `const`, so not swept) are checked field by
    // field: `tty_ldiscs[N_TTY]`'s, `n_tty_ops`, on both kernels (the null
    // line discipline too, and 6.12's TCP and UDP protocols).
    // Its NULL words are `num`'s padding (N_TTY is 0), `compat_ioctl`
    // (8), `hangup` (11), `dcd_change` (14) and `owner` (17) on both
    // kernels; `compat_ioctl` is called only by 32-bit programs, which
    // this Mon-VM has none of.
    let ranges =
        vmi::linux::crossview::ImageRanges::of(&live.view().location, &live.profile.symbols);
    let mut writable = Vec::new();
    for table in cross.pointer_tables.iter().filter(|t| !t.structure) {
        let at = live.runtime(table.address);
        let entries: Vec<u64> = (0..u64::from(table.entries))
            .map(|i| live.u64_at(at + 8 * i))
            .collect();
        let found = vmi::linux::crossview::writable_pointees(&entries, &ranges);
        eprintln!("{series}: {} in writable data: {found:x?}", table.name);
        writable.extend(found.into_iter().map(|(_, v)| v));
    }
    let ldiscs = cross
        .pointer_tables
        .iter()
        .find(|t| t.name == "tty_ldiscs")
        .expect("tty_ldiscs");
    let ops_at = live.u64_at(live.runtime(ldiscs.address));
    assert!(
        writable.contains(&ops_at),
        "{series}: n_tty_ops at {ops_at:#x}"
    );
    let empty: Vec<u64> = (0..u64::from(ldiscs.pointee_entries))
        .filter(|&i| live.u64_at(ops_at + 8 * i) == 0)
        .collect();
    assert_eq!(empty, [1, 8, 11, 14, 17], "{series}: n_tty_ops layout");
    let before = avm_events(&record).len();
    let hook = write_u64(&record, ops_at + 8 * 8, 0xffff_8880_0000_1000);
    wait_for_avm_serial(
        &record,
        ":violation:pointer_table:tty_ldiscs[0]->[8]:0xffff888000001000",
    );
    drop(hook);
    let events = wait_for_events(&record, before + 2);
    assert!(
        events[before + 1].contains(":clean:pointer_table"),
        "{series}: {events:#?}"
    );

    // The function-pointer words (from BTF) hold functions of the running
    // kernel's text, which the A-VM requires of them from its first read
    // on: in `tcp_prot`, `udp_prot` and `n_tty_ops` every one is NULL or
    // in the text, and most are set.
    let text = live.runtime(live.profile.symbols.text)..live.runtime(live.profile.symbols.etext);
    let mut structures: Vec<(&str, u64, &[u32])> = cross
        .pointer_tables
        .iter()
        .filter(|t| t.structure)
        .map(|t| (t.name.as_str(), live.runtime(t.address), &t.functions[..]))
        .collect();
    structures.push(("n_tty_ops", ops_at, &ldiscs.functions[..]));
    for (name, at, functions) in structures {
        let values: Vec<u64> = functions
            .iter()
            .map(|&w| live.u64_at(at + 8 * u64::from(w)))
            .collect();
        assert!(
            values.iter().all(|v| *v == 0 || text.contains(v)),
            "{series}: {name}: {values:x?}"
        );
        let set = values.iter().filter(|v| **v != 0).count();
        assert!(set * 2 > values.len(), "{series}: {name}: {values:x?}");
    }

    // The sleeper's top-level table with a kernel slot of its own: one
    // from the direct map's slot up (the ones every table shares) that is
    // empty in the kernel's table, given a not-present entry.
    let page_offset_base = live.u64_at(live.runtime(live.profile.symbols.page_offset_base));
    let first = (page_offset_base >> 39) & 0x1ff;
    let init_top_pgt = live.runtime(live.profile.symbols.init_top_pgt);
    let mm = sleeper.mm.expect("a user process").value();
    let pgd = live.u64_at(mm + cross.mm_pgd);
    let slot = (first..512)
        .rev()
        .find(|&i| i != 272 && live.u64_at(init_top_pgt + 8 * i) == 0)
        .expect("an unused kernel slot");
    assert_eq!(
        live.u64_at(pgd + 8 * slot),
        0,
        "{series}: shared slot {slot}"
    );
    let own_slot = write_u64(&record, pgd + 8 * slot, 0x2);
    wait_for_avm_serial(
        &record,
        &format!(
            ":violation:page_tables:process:{}:sleep:pgd[{slot}]:0x2",
            sleeper.pid
        ),
    );
    drop(own_slot);
    let events = wait_for_events(&record, 26);
    assert!(
        events[25].contains(":clean:page_tables"),
        "{series}: {events:#?}"
    );

    // The sleeper made to pass for a kernel thread (PF_KTHREAD), then
    // left without an address space: kthreadd is not its parent, and a
    // user task has one until it exits.
    let kthread = write_u32(
        &record,
        sleeper.address.value() + offsets.task.flags,
        sleeper.flags | vmi::linux::tasks::PF_KTHREAD,
    );
    wait_for_avm_serial(
        &record,
        &format!(
            ":violation:hidden_process:process:{}:sleep:kernel thread not started by kthreadd",
            sleeper.pid
        ),
    );
    drop(kthread);
    let events = wait_for_events(&record, 28);
    assert!(
        events[27].contains(":clean:hidden_process"),
        "{series}: {events:#?}"
    );
    let no_mm = write_u64(&record, sleeper.address.value() + offsets.task.mm, 0);
    wait_for_avm_serial(
        &record,
        &format!(
            ":violation:hidden_process:process:{}:sleep:user task without an address space",
            sleeper.pid
        ),
    );
    drop(no_mm);
    let events = wait_for_events(&record, 30);
    assert!(
        events[29].contains(":clean:hidden_process"),
        "{series}: {events:#?}"
    );

    // A network namespace of its own (a container's): on the kernel's
    // list of them with the inode number `/proc/PID/ns/net` shows, after
    // `init_net`; the A-VM reads its netfilter hook points too (the test
    // rootkit hooks one), and a new namespace is no finding.
    let netns = console
        .run_ok(
            "(unshare -n sh -c 'readlink /proc/self/ns/net > /tmp/netns; exec sleep 601' &); \
             sleep 1; cat /tmp/netns",
        )
        .expect("a network namespace");
    let inum: u32 = netns
        .trim()
        .strip_prefix("net:[")
        .and_then(|n| n.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{series}: {netns:?}"));
    let view = live.view();
    let head = view
        .location
        .runtime_of(cross.net_namespace_list)
        .expect("net_namespace_list");
    let (namespaces, walked) = vmi::linux::crossview::net_namespaces(&view.space, head, &cross);
    assert_eq!(walked, Ok(()), "{series}: {namespaces:x?}");
    assert_eq!(
        namespaces.first().map(|n| n.0),
        Some(live.runtime(cross.init_net)),
        "{series}: init_net first"
    );
    let own = namespaces[1..]
        .iter()
        .find(|n| n.1 == inum)
        .unwrap_or_else(|| panic!("{series}: net:[{inum}] in {namespaces:x?}"));
    // Their devices, whose ingress and egress hooks the A-VM reads: the
    // new namespace has its own loopback device, and nothing hooked.
    let devices = |net: u64| {
        let net = vmi::GuestVirtAddr::new(net).expect("canonical");
        let (devices, walked) = vmi::linux::crossview::net_devices(&view.space, net, &cross, 64);
        assert_eq!(walked, Ok(()), "{series}");
        devices
            .iter()
            .map(|(dev, name)| {
                let hooks = [cross.netdev_nf_hooks_ingress, cross.netdev_nf_hooks_egress]
                    .map(|o| live.u64_at(dev.value() + o));
                (String::from_utf8_lossy(name.as_bytes()).into_owned(), hooks)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        devices(own.0),
        [("lo".to_string(), [0, 0])],
        "{series}: net:[{inum}]"
    );
    let init_devices = devices(namespaces[0].0);
    assert!(
        init_devices.iter().any(|(name, _)| name == "lo"),
        "{series}: {init_devices:?}"
    );

    console
        .run_ok("killall sleep; rmmod dummy")
        .expect("cleaned up");
    assert_eq!(
        avm_events(&record).len(),
        30,
        "{series}: {:#?}",
        avm_events(&record)
    );
}

#[test]
fn cross_views_on_a_live_6_1_mon_vm() {
    check("6.1");
}

#[test]
fn cross_views_on_a_live_6_12_mon_vm() {
    check("6.12");
}
