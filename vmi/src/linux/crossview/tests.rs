//! The cross-views on crafted memory: a module hidden from the module list
//! and a task hidden from the task list are found; loops and garbage end in
//! errors; credential and pointer-table findings.

use alloc::vec::Vec;

use super::*;
use crate::craft::PageTableBuilder;
use crate::linux::tasks::{Creds, PF_KTHREAD};
use crate::memory::SliceMemory;
use crate::paging::{AddressSpace, PagingMode};

const DIRECT: u64 = 0xffff_8880_0000_0000;
const RAM: u64 = 0x4_0000;

const R: CrossViewReference = CrossViewReference {
    module_kset: 0,
    kset_list: 0x10,
    kobject_entry: 0x8,
    module_kobject_kobj: 0x0,
    module_kobject_mod: 0x40,
    task_children: 0x100,
    task_sibling: 0x110,
    init_cred: 0,
    pointer_tables: Vec::new(),
    nf_entries_hooks: 8,
    nf_entry_size: 16,
    mm_pgd: 0x48,
    mm_flags: 0x50,
    file_f_inode: 0x20,
    inode_i_mode: 0x0,
    inode_i_uid: 0x4,
    cred_user: 0x30,
    user_struct_uid: 0x4,
    file_f_cred: 0x28,
    net_class: 0,
    class_subsys: 0,
    class_kset: 0,
    subsys_private_kobj: 0,
    subsys_private_class: 0,
    subsys_private_devices: 0,
    device_private_knode_class: 0,
    device_private_device: 0,
    netdev_dev: 0,
    netdev_nd_net: 0,
    cred_ucounts: 0,
    ucounts_ns: 0,
    ucounts_uid: 0,
    ucounts_rlimit: 0,
    user_ns_ucounts: 0,
    pgd_user_copy: true,
    // Network namespaces: set by the tests that read them.
    net_namespace_list: 0,
    init_net: 0,
    net_list: 0,
    net_inum: 0,
    net_dev_base_head: 0,
    netdev_dev_list: 0,
    netdev_name: 0,
    netdev_nf_hooks_ingress: 0,
    netdev_nf_hooks_egress: 0,
    task_nsproxy: 0,
    nsproxy_net_ns: 0,
    task_signal: 0,
    signal_thread_head: 0,
    task_thread_node: 0,
    signal_nr_threads: 0,
    init_pid_ns: 0,
    pid_ns_xa_head: 0,
    xa_node_shift: 0,
    xa_node_slots: 0,
    pid_tasks: 0,
    task_pid_links: 0,
    runqueues: 0,
    per_cpu_offset: 0,
    nr_cpu_ids: 0,
    rq_curr: 0,
    rq_idle: 0,
    css_set_table: 0,
    css_set_hlist: 0,
    css_set_tasks: 0,
    css_set_mg_tasks: 0,
    css_set_dying_tasks: 0,
    task_cg_list: 0,
    vmap_area_list: 0,
    vmap_nodes: 0,
    nr_vmap_nodes: 0,
    vmap_node_size: 0,
    vmap_node_busy_head: 0,
    vmap_area_list_node: 0,
    vmap_area_va_start: 0,
    vmap_area_va_end: 0,
    task_stack: 0,
    cached_stacks: 0,
    vm_struct_addr: 0,
};

fn va(phys: u64) -> GuestVirtAddr {
    GuestVirtAddr::new(DIRECT + phys).expect("canonical")
}

fn builder() -> PageTableBuilder {
    let mut b = PageTableBuilder::new(RAM, PagingMode::FourLevel);
    b.map_range(DIRECT, 0, RAM);
    b
}

fn with_space<T>(
    b: &PageTableBuilder,
    f: impl FnOnce(&AddressSpace<'_, SliceMemory<'_>>) -> T,
) -> T {
    let image = b.finish();
    let mem = SliceMemory::flat(&image);
    let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
    f(&space)
}

/// A circular list through `nodes` (physical addresses of list_heads),
/// head first.
fn link(b: &mut PageTableBuilder, nodes: &[u64]) {
    let n = nodes.len();
    for i in 0..n {
        b.write_u64(nodes[i], DIRECT + nodes[(i + 1) % n]);
        b.write_u64(nodes[i] + 8, DIRECT + nodes[(i + n - 1) % n]);
    }
}

/// `module_kset` at 0x100 pointing at a kset at 0x200, with module kobjects
/// at 0x1000.. (their `mod` pointers: `mods`, 0 for a built-in one).
fn kset(b: &mut PageTableBuilder, mods: &[u64]) {
    b.write_u64(0x100, DIRECT + 0x200);
    let mut nodes = alloc::vec![0x200 + R.kset_list];
    for (i, &m) in mods.iter().enumerate() {
        let kobj = 0x1000 + 0x100 * i as u64;
        nodes.push(kobj + R.kobject_entry);
        b.write_u64(
            kobj + R.module_kobject_mod,
            if m == 0 { 0 } else { DIRECT + m },
        );
    }
    link(b, &nodes);
}

#[test]
fn a_module_in_sysfs_but_not_on_the_list_is_hidden() {
    let mut b = builder();
    kset(&mut b, &[0x3000, 0, 0x3400]);
    let found = with_space(&b, |s| kset_modules(s, va(0x100), &R)).expect("walks");
    assert_eq!(found, [va(0x3000), va(0x3400)]);
    assert_eq!(hidden_modules(&found, &[va(0x3000)]), [va(0x3400)]);
    assert_eq!(hidden_modules(&found, &[va(0x3400), va(0x3000)]), []);
}

/// A loadable module's kobject lies in its own `struct module` (module
/// area) and names it: one whose `mod` was rewritten (NULL, as a built-in
/// module's, or another, listed module) to hide it is counted by its
/// kobject, which no listed module is.
#[test]
fn a_module_kobject_that_names_another_module_is_hidden() {
    const MOD: u64 = 0xffff_ffff_c000_0000;
    for (named, hidden) in [(MOD + 0x3000, false), (0, true), (MOD + 0x5000, true)] {
        let mut b = builder();
        b.map_range(MOD, 0, RAM);
        b.write_u64(0x100, DIRECT + 0x200);
        let head = 0x200 + R.kset_list;
        // The module at 0x3000, its kobject at 0x3080.
        let (mk, node) = (0x3080, 0x3080 + R.kobject_entry);
        b.write_u64(head, MOD + node);
        b.write_u64(head + 8, MOD + node);
        b.write_u64(node, DIRECT + head);
        b.write_u64(node + 8, DIRECT + head);
        b.write_u64(mk + R.module_kobject_mod, named);
        let found = with_space(&b, |s| kset_modules(s, va(0x100), &R)).expect("walks");
        let listed = [
            GuestVirtAddr::new(MOD + 0x3000).unwrap(),
            GuestVirtAddr::new(MOD + 0x5000).unwrap(),
        ];
        assert_eq!(
            hidden_modules(&found, &listed).len(),
            usize::from(hidden),
            "mod {named:#x}: {found:?}"
        );
    }
}

/// `module_kset` is set long before user space runs (the cross-views start
/// only then): NULL there is a rootkit emptying the second view, so it is
/// an error (the view is unwalkable), never an empty sysfs that hides
/// nothing.
#[test]
fn a_null_module_kset_is_an_error_not_an_empty_sysfs() {
    let mut b = builder();
    kset(&mut b, &[0x3000]);
    b.write_u64(0x100, 0);
    let found = with_space(&b, |s| kset_modules(s, va(0x100), &R));
    assert!(found.is_err(), "{found:?}");
}

#[test]
fn a_looping_or_broken_kset_is_an_error() {
    let mut b = builder();
    kset(&mut b, &[0x3000, 0x3400]);
    // The last kobject points back at the first, not the head: a lasso.
    b.write_u64(0x1100 + R.kobject_entry, DIRECT + 0x1000 + R.kobject_entry);
    assert_eq!(
        with_space(&b, |s| kset_modules(s, va(0x100), &R)),
        Err(CrossViewError::List)
    );
    let mut b = builder();
    kset(&mut b, &[0x3000]);
    b.write_u64(0x1000 + R.kobject_entry, 0xdead_0000_0000_0000);
    assert_eq!(
        with_space(&b, |s| kset_modules(s, va(0x100), &R)),
        Err(CrossViewError::List)
    );
}

/// init_task at 0x4000, tasks at 0x5000 + 0x400 * i with `parent` indices
/// (None: child of init_task).
fn tree(b: &mut PageTableBuilder, parents: &[Option<usize>]) -> Vec<u64> {
    let task = |i: usize| 0x5000 + 0x400 * i as u64;
    let tasks: Vec<u64> = (0..parents.len()).map(task).collect();
    let mut children_of = |parent: u64, kids: Vec<u64>| {
        let mut nodes = alloc::vec![parent + R.task_children];
        nodes.extend(kids.iter().map(|k| k + R.task_sibling));
        link(b, &nodes);
    };
    children_of(
        0x4000,
        (0..parents.len())
            .filter(|&i| parents[i].is_none())
            .map(task)
            .collect(),
    );
    for p in 0..parents.len() {
        children_of(
            task(p),
            (0..parents.len())
                .filter(|&i| parents[i] == Some(p))
                .map(task)
                .collect(),
        );
    }
    tasks
}

fn listed(addresses: &[u64]) -> Vec<Task> {
    addresses
        .iter()
        .map(|&a| Task {
            address: va(a),
            pid: 1,
            tgid: 1,
            comm: crate::linux::structs::heapless_str::FixedStr::new([0; 16]),
            parent: None,
            parent_pid: None,
            creds: None,
            real_cred: None,
            mm: None,
            flags: 0,
        })
        .collect()
}

#[test]
fn a_task_in_the_process_tree_but_not_on_the_task_list_is_hidden() {
    let mut b = builder();
    let tasks = tree(&mut b, &[None, None, Some(0), Some(2)]);
    let found = with_space(&b, |s| process_tree(s, va(0x4000), &R)).expect("walks");
    assert_eq!(found.len(), 4);
    // Each task with the task whose children list holds it.
    let parents = [va(0x4000), va(0x4000), va(tasks[0]), va(tasks[2])];
    for (t, parent) in tasks.iter().zip(parents) {
        assert!(found.contains(&TreeTask {
            task: va(*t),
            parent
        }));
    }
    assert_eq!(hidden_tasks(&found, &listed(&tasks)), []);
    assert_eq!(hidden_tasks(&found, &listed(&tasks[..3])), [va(tasks[3])]);
}

#[test]
fn a_listed_task_taken_out_of_the_process_tree_is_off_the_tree() {
    let mut b = builder();
    let tasks = tree(&mut b, &[None, None, Some(0), Some(2)]);
    // init_task is listed too, and is the tree's root, not off it.
    let with_init = [&[0x4000], tasks.as_slice()].concat();
    let found = with_space(&b, |s| process_tree(s, va(0x4000), &R)).expect("walks");
    assert_eq!(
        tasks_off_the_tree(&found, &listed(&with_init), va(0x4000)),
        []
    );
    // Task 3 unlinked from task 2's children: still listed.
    link(&mut b, &[tasks[2] + R.task_children]);
    let found = with_space(&b, |s| process_tree(s, va(0x4000), &R)).expect("walks");
    assert_eq!(
        tasks_off_the_tree(&found, &listed(&with_init), va(0x4000)),
        [va(tasks[3])]
    );
    assert_eq!(hidden_tasks(&found, &listed(&with_init)), []);
}

#[test]
fn a_process_tree_with_a_cycle_ends() {
    let mut b = builder();
    let tasks = tree(&mut b, &[None, Some(0)]);
    // Task 1's children list leads into init_task's list (a lasso that
    // never returns to task 1's head): the walk ends with an error.
    b.write_u64(
        tasks[1] + R.task_children,
        DIRECT + tasks[0] + R.task_sibling,
    );
    assert_eq!(
        with_space(&b, |s| process_tree(s, va(0x4000), &R)),
        Err(CrossViewError::List)
    );
}

/// A ring of children heads, each one's task's own children head being the
/// next in the ring (`task_children` is 0x10 below `task_sibling`): every
/// task found walks the whole ring again. The walks together follow at
/// most as many links as a tree of `MAX_TASKS` has, not K squared.
#[test]
fn a_ring_of_children_heads_costs_no_more_than_a_tree_of_its_size() {
    use crate::memory::CountingMemory;
    const K: u64 = 512;
    let mut b = builder();
    // Node j at 0x4000 + R.task_children - 0x10 * j: node 0 is
    // init_task's children head; the task of node j has node j + 1 as its
    // children head; node K is an empty list.
    let node = |j: u64| 0x4000 + R.task_children - 0x10 * j;
    for j in 0..K {
        b.write_u64(node(j), DIRECT + node((j + 1) % K));
        b.write_u64(node(j) + 8, DIRECT + node((j + K - 1) % K));
    }
    b.write_u64(node(K), DIRECT + node(K));
    b.write_u64(node(K) + 8, DIRECT + node(K));
    let image = b.finish();
    let mem = CountingMemory::new(SliceMemory::flat(&image));
    let space = AddressSpace::new(&mem, b.root(), PagingMode::FourLevel);
    // K walks of K links each: more links than any tree of MAX_TASKS.
    assert_eq!(
        process_tree(&space, va(0x4000), &R),
        Err(CrossViewError::TooMany)
    );
    // At most MAX_TASKS links and as many walks, each read through 4-level
    // tables (5 reads); K * K links would be 1.3 million reads.
    assert!(K * K >= 8 * MAX_TASKS as u64);
    assert!(
        mem.reads() <= 2 * 5 * MAX_TASKS,
        "{} reads for {K} list heads",
        mem.reads()
    );
}

fn task(pid: i32, at: u64, parent: Option<u64>, euid: u32, cred: u64, user: bool) -> Task {
    Task {
        address: va(at),
        pid,
        tgid: pid,
        comm: crate::linux::structs::heapless_str::FixedStr::new([0; 16]),
        parent: parent.map(va),
        parent_pid: parent.map(|p| p as i32),
        creds: Some(Creds {
            address: va(cred),
            uid: euid,
            gid: euid,
            euid,
            egid: euid,
        }),
        real_cred: Some(va(cred)),
        mm: user.then(|| va(0x9000)),
        flags: if user { 0 } else { PF_KTHREAD },
    }
}

#[test]
fn credential_findings() {
    let init_cred = DIRECT + 0x7000;
    let tasks = [
        task(1, 0x100, None, 0, 0x200, true),
        task(100, 0x300, Some(0x100), 1000, 0x400, true),
        // Root under a user shell: a privilege rise.
        task(101, 0x500, Some(0x300), 0, 0x600, true),
        // A user process with the kernel's own credentials.
        task(102, 0x700, Some(0x100), 0, 0x7000, true),
        // A kernel thread with init_cred is normal.
        task(2, 0x900, None, 0, 0x7000, false),
    ];
    assert_eq!(
        cred_findings(&tasks, &[], init_cred, |_| false, |_| None, |_| None),
        [
            CredFinding::RootUnderUser {
                pid: 101,
                parent_pid: 0x300,
                parent_euid: 1000
            },
            CredFinding::InitCred { pid: 102 },
        ]
    );
    // A set-uid program the policy allows is let off the rise, by its
    // task (not its pid: a second task with the same pid is still
    // reported), never off `init_cred`.
    let twin = task(101, 0xb00, Some(0x300), 0, 0xc00, true);
    let with_twin = [tasks.as_slice(), &[twin]].concat();
    let allowed = |t: &Task| t.address.value() == DIRECT + 0x500 || t.pid == 102;
    assert_eq!(
        cred_findings(&with_twin, &[], init_cred, allowed, |_| None, |_| None),
        [
            CredFinding::InitCred { pid: 102 },
            CredFinding::RootUnderUser {
                pid: 101,
                parent_pid: 0x300,
                parent_euid: 1000
            },
        ]
    );
}

#[test]
fn euid_0_under_a_user_uid_is_a_set_uid_program_or_a_finding_whatever_the_parent() {
    let init_cred = DIRECT + 0x7000;
    // uid 1000, euid 0: what the exec of a set-uid root program makes,
    // and what a rootkit writing euid alone makes.
    let mut raised = task(101, 0x500, Some(0x100), 0, 0x600, true);
    if let Some(c) = raised.creds.as_mut() {
        c.uid = 1000;
    }
    let tasks = [
        task(1, 0x100, None, 0, 0x200, true),
        task(100, 0x300, Some(0x100), 1000, 0x400, true),
        raised,
    ];
    // Under root (init): no rise from the parent, the uid tells.
    assert_eq!(
        cred_findings(&tasks, &[], init_cred, |_| false, |_| None, |_| None),
        [CredFinding::RootUnderUserUid {
            pid: 101,
            uid: 1000
        }]
    );
    // A set-uid program the policy allows.
    assert_eq!(
        cred_findings(&tasks, &[], init_cred, |t| t.pid == 101, |_| None, |_| None),
        []
    );
    // Under its user's shell: the rise, reported once.
    let mut under_user = tasks;
    under_user[2].parent = Some(va(0x300));
    under_user[2].parent_pid = Some(100);
    assert_eq!(
        cred_findings(&under_user, &[], init_cred, |_| false, |_| None, |_| None),
        [CredFinding::RootUnderUser {
            pid: 101,
            parent_pid: 100,
            parent_euid: 1000
        }]
    );
}

/// A process under root with a whole new root cred (ids 0, charged to
/// root's account) but an executable its user opened: no parent rose, no
/// uid tells, the account agrees; only a set-uid exec makes that root.
#[test]
fn root_after_an_exec_by_a_user_is_a_set_uid_program_or_a_finding() {
    let init_cred = DIRECT + 0x7000;
    let tasks = [
        task(1, 0x100, None, 0, 0x200, true),
        task(100, 0x300, Some(0x100), 1000, 0x400, true),
        task(101, 0x500, Some(0x100), 0, 0x600, true),
        task(102, 0x700, Some(0x100), 0, 0x200, false),
    ];
    // Opened by (uid, euid) for pid 101 (and the kernel thread), root for
    // the others.
    let opened_by = |ids: Option<(u32, u32)>| {
        move |t: &Task| {
            if matches!(t.pid, 101 | 102) {
                ids
            } else {
                Some((0, 0))
            }
        }
    };
    let findings = |tasks: &[Task], ids, setuid: bool| {
        cred_findings(tasks, &[], init_cred, |_| setuid, |_| None, opened_by(ids))
    };
    assert_eq!(
        findings(&tasks, Some((65534, 65534)), false),
        [CredFinding::RootAfterUserExec {
            pid: 101,
            euid: 65534
        }]
    );
    // A set-uid program the policy allows; an exec by a task that held a
    // root id to go back to; nothing read.
    assert_eq!(findings(&tasks, Some((65534, 65534)), true), []);
    for ids in [Some((0, 65534)), Some((65534, 0)), Some((0, 0)), None] {
        assert_eq!(findings(&tasks, ids, false), [], "{ids:?}");
    }
    // Not root now: nothing to say.
    let mut user = tasks;
    user[2] = task(101, 0x500, Some(0x100), 65534, 0x600, true);
    assert_eq!(findings(&user, Some((65534, 65534)), false), []);
    // Under its user's shell, or with a user's real uid: those findings,
    // not this one too.
    let mut under_user = tasks;
    under_user[2].parent = Some(va(0x300));
    under_user[2].parent_pid = Some(100);
    assert_eq!(
        findings(&under_user, Some((1000, 1000)), false),
        [CredFinding::RootUnderUser {
            pid: 101,
            parent_pid: 100,
            parent_euid: 1000
        }]
    );
    let mut user_uid = tasks;
    if let Some(c) = user_uid[2].creds.as_mut() {
        c.uid = 1000;
    }
    assert_eq!(
        findings(&user_uid, Some((1000, 1000)), false),
        [CredFinding::RootUnderUserUid {
            pid: 101,
            uid: 1000
        }]
    );
}

/// The finding texts after `process:PID:COMM:` (the verifier and the
/// tests match them).
#[test]
fn credential_finding_texts() {
    use alloc::string::ToString;
    let cases = [
        (CredFinding::InitCred { pid: 5 }, "init_cred"),
        (
            CredFinding::RootUnderUser {
                pid: 5,
                parent_pid: 4,
                parent_euid: 1000,
            },
            "euid 0 under pid 4 euid 1000",
        ),
        (
            CredFinding::RootWithoutExec { pid: 5, was: 65534 },
            "euid 0 without exec (was 65534)",
        ),
        (
            CredFinding::NotItsAccount {
                pid: 5,
                uid: 0,
                account: 65534,
            },
            "uid 0 in a cred of uid 65534's account",
        ),
        (
            CredFinding::RootUnderUserUid { pid: 5, uid: 1000 },
            "euid 0 under uid 1000",
        ),
        (
            CredFinding::RootAfterUserExec {
                pid: 5,
                euid: 65534,
            },
            "euid 0 after an exec by euid 65534",
        ),
    ];
    for (finding, text) in cases {
        assert_eq!(finding.to_string(), text);
        assert_eq!(finding.pid(), 5);
    }
}

/// Kernel threads are kthreadd's children, user tasks have an address
/// space unless they are exiting: a task linked in or marked to pass for a
/// kernel thread, or a user process whose `mm` was cleared, poses.
#[test]
fn tasks_posing_as_kernel_threads_or_without_memory() {
    use crate::linux::tasks::PF_EXITING;
    let swapper_child = |pid, at| task(pid, at, Some(0x10), 0, 0x7000, false);
    let init = Task {
        mm: None,
        flags: 0,
        ..swapper_child(1, 0x100)
    };
    let kthreadd = swapper_child(2, 0x200);
    let kworker = task(3, 0x300, Some(0x200), 0, 0x7000, false);
    let shell = task(100, 0x400, Some(0x100), 0, 0x800, true);
    let zombie = Task {
        mm: None,
        flags: PF_EXITING,
        ..task(101, 0x500, Some(0x400), 0, 0x800, true)
    };
    let clean = [init, kthreadd, kworker, shell, zombie];
    // init before its exec (no mm, no PF_KTHREAD) and both PID 0 children
    // are the kernel's own; a zombie has no mm.
    assert_eq!(posing_tasks(&clean), []);
    // A kernel thread under the shell, one under init, a user process
    // whose mm was cleared.
    let forged = Task {
        flags: PF_KTHREAD,
        mm: None,
        ..task(102, 0x600, Some(0x400), 0, 0x800, true)
    };
    let under_init = task(103, 0x700, Some(0x100), 0, 0x7000, false);
    let cleared = Task {
        mm: None,
        ..task(104, 0x900, Some(0x400), 0, 0x800, true)
    };
    let all = [&clean[..], &[forged, under_init, cleared]].concat();
    assert_eq!(
        posing_tasks(&all),
        [
            (va(0x600), TaskPose::KernelThreadOutsideKthreadd),
            (va(0x700), TaskPose::KernelThreadOutsideKthreadd),
            (va(0x900), TaskPose::UserTaskWithoutMemory),
        ]
    );
    // Without kthreadd on the list, no kernel thread can show its parent.
    assert_eq!(
        posing_tasks(&[kworker]),
        [(va(0x300), TaskPose::KernelThreadOutsideKthreadd)]
    );
}

/// A cred whose ids a rootkit wrote in place (uid 0) still names the
/// account of the user it was made for (`cred->user`): reported whatever
/// the parent and however young the process; a kernel-made cred (ids and
/// account changed together) is not.
#[test]
fn a_cred_written_in_place_is_not_its_accounts() {
    let init_cred = DIRECT + 0x7000;
    // The account uid of each task's cred, by cred address.
    let accounts = |t: &Task| match t.creds?.address.value() - DIRECT {
        0x200 | 0x400 => Some(0),
        0x600 => Some(65534),
        _ => None,
    };
    let tasks = [
        // init, and a root shell under it: accounts agree.
        task(1, 0x100, None, 0, 0x200, true),
        task(100, 0x300, Some(0x100), 0, 0x400, true),
        // A nobody process made root in place, under the root shell.
        task(101, 0x500, Some(0x300), 0, 0x600, true),
        // A cred that does not read: no finding from it.
        task(102, 0x700, Some(0x300), 0, 0x800, true),
    ];
    assert_eq!(
        cred_findings(&tasks, &[], init_cred, |_| false, accounts, |_| None),
        [CredFinding::NotItsAccount {
            pid: 101,
            uid: 0,
            account: 65534
        }]
    );
    // Nothing without the accounts (the rule the rootkit test beats).
    assert_eq!(
        cred_findings(&tasks, &[], init_cred, |_| false, |_| None, |_| None),
        []
    );
}

/// `account_uid` reads `cred->user->uid`; a NULL or unreadable account is
/// no answer.
#[test]
fn account_uid_follows_the_cred_to_its_user() {
    let mut b = builder();
    // cred at 0x2000 -> user_struct at 0x3000, uid 65534.
    b.write_u64(0x2000 + R.cred_user, DIRECT + 0x3000);
    b.write(0x3000 + R.user_struct_uid, &65534u32.to_le_bytes());
    // cred at 0x2400: NULL user; cred at 0x2800: user outside RAM.
    b.write_u64(0x2800 + R.cred_user, DIRECT + 0x10_0000);
    let with_cred = |cred: u64| task(7, 0x100, None, 0, cred, true);
    with_space(&b, |space| {
        assert_eq!(account_uid(space, &with_cred(0x2000), &R), Some(65534));
        assert_eq!(account_uid(space, &with_cred(0x2400), &R), None);
        assert_eq!(account_uid(space, &with_cred(0x2800), &R), None);
        let no_cred = Task {
            creds: None,
            ..with_cred(0x2000)
        };
        assert_eq!(account_uid(space, &no_cred, &R), None);
    });
}

/// A rootkit that makes a user's process root and points its
/// `real_parent` at a root task (init), NULL, or an address off the task
/// list, leaving it on its user parent's `children`: the tree's parent
/// still shows the rise. A consistent tree adds nothing, and a rise found
/// by the real parent is reported once.
#[test]
fn a_rewritten_real_parent_does_not_hide_a_root_task_under_a_user() {
    let init_cred = DIRECT + 0x7000;
    let node = |t: u64, parent: u64| TreeTask {
        task: va(t),
        parent: va(parent),
    };
    let tasks_with = |real_parent: Option<u64>| {
        [
            task(1, 0x100, None, 0, 0x200, true),
            task(100, 0x300, Some(0x100), 1000, 0x400, true),
            task(101, 0x500, real_parent, 0, 0x600, true),
        ]
    };
    let tree = [node(0x100, 0x4000), node(0x300, 0x100), node(0x500, 0x300)];
    let rise = CredFinding::RootUnderUser {
        pid: 101,
        parent_pid: 100,
        parent_euid: 1000,
    };
    for real_parent in [Some(0x100), None, Some(0x9_0000)] {
        let tasks = tasks_with(real_parent);
        // Without the tree, the rewrite hides it.
        assert_eq!(
            cred_findings(&tasks, &[], init_cred, |_| false, |_| None, |_| None),
            []
        );
        assert_eq!(
            cred_findings(&tasks, &tree, init_cred, |_| false, |_| None, |_| None),
            [rise],
            "real_parent {real_parent:x?}"
        );
        // A set-uid program the policy allows is let off here too.
        assert_eq!(
            cred_findings(&tasks, &tree, init_cred, |_| true, |_| None, |_| None),
            []
        );
    }
    // Real parent and tree agree: reported once, from the real parent.
    let tasks = tasks_with(Some(0x300));
    assert_eq!(
        cred_findings(&tasks, &tree, init_cred, |_| false, |_| None, |_| None),
        [CredFinding::RootUnderUser {
            pid: 101,
            parent_pid: 0x300,
            parent_euid: 1000
        }]
    );
    // Moved to init's children as well: consistent, nothing from here
    // (the tracker sees a rise without exec; off-tree sees an unlink).
    let tasks = tasks_with(Some(0x100));
    let moved = [node(0x100, 0x4000), node(0x300, 0x100), node(0x500, 0x100)];
    assert_eq!(
        cred_findings(&tasks, &moved, init_cred, |_| false, |_| None, |_| None),
        []
    );
}

/// A list as long as a walk allows, every task root under one user
/// parent (the parent last): each is reported, and finding their parent
/// does not search the list once per task (32,768² steps took 6 s in a
/// debug build; the bound below is far above the sorted lookup's cost).
#[test]
fn credential_findings_over_a_full_list_take_no_quadratic_time() {
    let n = MAX_TASKS as u64;
    let parent = 0x10 * n;
    let mut tasks: Vec<Task> = (0..n - 1)
        .map(|i| {
            task(
                1000 + i as i32,
                0x10 * i,
                Some(parent),
                0,
                0x4000_0000 + i,
                true,
            )
        })
        .collect();
    tasks.push(task(1, parent, None, 1000, 0x3fff_0000, true));
    let started = std::time::Instant::now();
    let findings = cred_findings(
        &tasks,
        &[],
        DIRECT + 0x7fff_0000,
        |_| false,
        |_| None,
        |_| None,
    );
    let took = started.elapsed();
    assert_eq!(findings.len(), tasks.len() - 1);
    assert!(
        findings.iter().all(|f| matches!(
            f,
            CredFinding::RootUnderUser {
                parent_euid: 1000,
                ..
            }
        )),
        "{:?}",
        &findings[..3]
    );
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
}

/// A kernel image's text, read-only data and writable data (up to the
/// image's end), and a module's text, for the pointer-table rules.
const TEXT: u64 = 0xffff_ffff_a000_0000;
const RODATA: u64 = 0xffff_ffff_a100_0000;
const DATA: u64 = 0xffff_ffff_a200_0000;
const MODULE: u64 = 0xffff_ffff_c000_1000;

fn image_ranges() -> ImageRanges {
    ImageRanges {
        read_only: [TEXT..RODATA - 0x10_0000, RODATA..DATA - 0x10_0000, 0..0],
        whole: TEXT..0xffff_ffff_a300_0000,
    }
}

#[test]
fn pointer_table_hooks() {
    let ranges = image_ranges();
    let baseline = [0, RODATA + 8, DATA + 0x40, MODULE];
    for structure in [false, true] {
        // Unchanged: fine, except an array entry out of the image.
        let unchanged = hooked_entries(&baseline, &baseline, &ranges, structure, &[]);
        if structure {
            assert_eq!(unchanged, []);
        } else {
            assert_eq!(unchanged, [(3, MODULE)]);
        }
        // Changed to NULL, text or read-only data: fine.
        assert_eq!(
            hooked_entries(
                &[TEXT + 0x30, 0, RODATA + 0x80, 0],
                &baseline,
                &ranges,
                structure,
                &[]
            ),
            []
        );
        // Changed to the image's writable data (a structure forged in
        // .data or .bss), module space or the heap: a hook.
        assert_eq!(
            hooked_entries(
                &[DATA + 0x100, MODULE + 0x1000, 0xffff_8880_0000_1000, 0],
                &baseline,
                &ranges,
                structure,
                &[]
            ),
            [
                (0, DATA + 0x100),
                (1, MODULE + 0x1000),
                (2, 0xffff_8880_0000_1000)
            ]
        );
    }
    // Reading a table: bounded.
    let mut b = builder();
    b.write_u64(0x2000, 7);
    b.write_u64(0x2008, 9);
    assert_eq!(
        with_space(&b, |s| read_table(s, va(0x2000), 2)),
        Ok(alloc::vec![7, 9])
    );
    assert_eq!(
        with_space(&b, |s| read_table(
            s,
            va(0x2000),
            MAX_TABLE_ENTRIES as u32 + 1
        )),
        Err(CrossViewError::TooMany)
    );
    assert!(with_space(&b, |s| read_table(s, va(RAM - 8), 4)).is_err());
}

#[test]
fn a_process_that_turns_root_without_an_exec_is_found_until_it_is_not() {
    let mut tracker = CredTracker::default();
    let user = |euid| [task(100, 0x300, Some(0x100), euid, 0x400, true)];
    assert_eq!(tracker.update(&user(65534)), []);
    assert_eq!(
        tracker.update(&user(0)),
        [CredFinding::RootWithoutExec {
            pid: 100,
            was: 65534
        }]
    );
    // Still root next round: still reported.
    assert_eq!(
        tracker.update(&user(0)),
        [CredFinding::RootWithoutExec {
            pid: 100,
            was: 65534
        }]
    );
    // Back to the user: clean.
    assert_eq!(tracker.update(&user(65534)), []);
    // Root from the start, or root after an exec (a new mm): fine.
    let mut tracker = CredTracker::default();
    assert_eq!(tracker.update(&user(0)), []);
    let mut t = user(1000);
    tracker.update(&t);
    t[0].mm = Some(va(0xa000));
    t[0].creds = t[0].creds.map(|mut c| {
        c.euid = 0;
        c
    });
    assert_eq!(tracker.update(&t), []);
}

#[test]
fn a_process_missing_from_a_round_is_still_compared_when_it_is_back() {
    // The attack: unlink a user process for one round (less than the two
    // `hidden_process` needs), make it root, link it back under a root
    // parent (so RootUnderUser stays quiet).
    let init = task(1, 0x100, None, 0, 0x200, true);
    let user = |euid| task(100, 0x300, Some(0x500), euid, 0x400, true);
    let shell = task(50, 0x500, Some(0x100), 1000, 0x600, true);
    let mut tracker = CredTracker::default();
    assert_eq!(tracker.update(&[init, shell, user(1000)]), []);
    assert_eq!(tracker.update(&[init, shell]), []);
    let mut back = user(0);
    back.parent = Some(va(0x100));
    back.parent_pid = Some(1);
    let round = [init, shell, back];
    assert_eq!(
        cred_findings(&round, &[], DIRECT + 0x7000, |_| false, |_| None, |_| None),
        []
    );
    let risen = [CredFinding::RootWithoutExec {
        pid: 100,
        was: 1000,
    }];
    assert_eq!(tracker.update(&round), risen);
    // Missing again, or read without its mm (as if a kernel thread): still
    // reported when it is back, root in the same address space.
    assert_eq!(tracker.update(&[init, shell]), []);
    assert_eq!(tracker.update(&round), risen);
    let mut no_mm = back;
    no_mm.mm = None;
    assert_eq!(tracker.update(&[init, shell, no_mm]), []);
    assert_eq!(tracker.update(&round), risen);

    // Remembered for CRED_FORGET_AFTER rounds, forgotten after.
    for (rounds, found) in [(CRED_FORGET_AFTER, true), (CRED_FORGET_AFTER + 1, false)] {
        let mut tracker = CredTracker::default();
        tracker.update(&[user(1000)]);
        for _ in 0..rounds {
            assert_eq!(tracker.update(&[]), []);
        }
        assert_eq!(tracker.update(&[user(0)]).len(), usize::from(found));
    }
    // Back in another address space (an exec while it was missing, or a
    // new task at the address): fine.
    let mut tracker = CredTracker::default();
    tracker.update(&[user(1000)]);
    tracker.update(&[]);
    let mut exec = user(0);
    exec.mm = Some(va(0xa000));
    assert_eq!(tracker.update(&[exec]), []);
    // A root process is not remembered (it cannot become root); a task
    // that is back as a new one does not bring the old one back.
    let mut tracker = CredTracker::default();
    tracker.update(&[init, shell, user(1000)]);
    tracker.update(&[exec]);
    assert_eq!(tracker.tracked.len(), 2);
    tracker.update(&[]);
    assert_eq!(tracker.tracked.len(), 1);
    assert_eq!(tracker.update(&[user(0)]), []);
    // A user process that exited, and a root daemon's fork that took both
    // its slab slots (task_struct and mm) rounds later: another pid, so
    // not the process that was missing.
    let mut tracker = CredTracker::default();
    tracker.update(&[init, shell, user(1000)]);
    tracker.update(&[init, shell]);
    let mut fork = user(0);
    fork.pid = 101;
    fork.parent = Some(va(0x100));
    fork.parent_pid = Some(1);
    assert_eq!(tracker.update(&[init, shell, fork]), []);
}

#[test]
fn the_credential_tracker_is_bounded() {
    let user = |i: usize, euid| {
        task(
            1000 + i as i32,
            0x1_0000 + 0x1000 * i as u64,
            None,
            euid,
            0x400,
            true,
        )
    };
    let crowd: Vec<Task> = (1..=MAX_CRED_TRACKED).map(|i| user(i, 1000)).collect();
    let mut tracker = CredTracker::default();
    // More tasks than it holds.
    let mut more = crowd.clone();
    more.push(user(0, 1000));
    tracker.update(&more);
    assert_eq!(tracker.tracked.len(), MAX_CRED_TRACKED);
    // A full round of tasks, then one: the crowd missing fills what is
    // left.
    let mut tracker = CredTracker::default();
    tracker.update(&crowd);
    tracker.update(&[user(0, 1000)]);
    assert_eq!(tracker.tracked.len(), MAX_CRED_TRACKED);
    // The crowd ties (one round missing): kept in address order, so its
    // highest task is the one left out.
    let address = |i: usize| va(0x1_0000 + 0x1000 * i as u64).value();
    assert!(tracker.tracked.contains_key(&address(1)));
    assert!(!tracker.tracked.contains_key(&address(MAX_CRED_TRACKED)));
    // Everyone missing: the task seen last is kept over the crowd, missing
    // for longer.
    tracker.update(&[]);
    assert_eq!(tracker.tracked.len(), MAX_CRED_TRACKED);
    assert_eq!(
        tracker.update(&[user(0, 0)]),
        [CredFinding::RootWithoutExec {
            pid: 1000,
            was: 1000
        }]
    );
    // The crowd is forgotten in time.
    for _ in 0..=CRED_FORGET_AFTER {
        tracker.update(&[]);
    }
    assert!(tracker.tracked.is_empty());
}

/// An array's start-up entries into the image's writable data are the
/// structures to check field by field: not NULL, not text or read-only
/// data, not outside the image.
#[test]
fn writable_pointees_are_the_entries_into_writable_image_data() {
    let ranges = ImageRanges {
        read_only: [0x1000..0x2000, 0x3000..0x4000, 0x4000..0x4800],
        whole: 0x1000..0x6000,
    };
    let baseline = [
        0,
        0x1800,
        0x3008,
        0x4100,
        0x5000,
        0x5ff8,
        0x6000,
        0xffff_8880_0000_0000,
    ];
    assert_eq!(
        writable_pointees(&baseline, &ranges),
        [(4, 0x5000), (5, 0x5ff8)]
    );
    // Checked with their own start-up words: a field moved out of the
    // image is a hook, one into text is not.
    let words = [0x1100, 0, 7];
    assert_eq!(
        hooked_entries(&[0x1100, 0x1200, 7], &words, &ranges, true, &[0, 1]),
        []
    );
    assert_eq!(
        hooked_entries(
            &[0x1100, 0xffff_8880_0000_1000, 7],
            &words,
            &ranges,
            true,
            &[0, 1]
        ),
        [(1, 0xffff_8880_0000_1000)]
    );
}

/// A structure's function pointers point into text from the start: a
/// hook set before the A-VM first read the structure (a module's
/// function, a forged one in writable data, even read-only data) is not a
/// start-up value to keep; its other words (sizes, flags, data pointers)
/// may keep theirs. An array's entries are no functions.
#[test]
fn function_pointers_point_into_text_from_the_start() {
    let ranges = image_ranges();
    // Words 1, 2 and 4 are function pointers; 0 a name in rodata, 3 a
    // data pointer to the heap, 5 a size.
    let functions = [1, 2, 4];
    let clean = [
        RODATA + 0x20,
        TEXT + 0x100,
        0,
        0xffff_8880_0000_2000,
        TEXT + 0x80,
        48,
    ];
    assert_eq!(
        hooked_entries(&clean, &clean, &ranges, true, &functions),
        []
    );
    // Hooked before the first read: the start-up words are the hooks.
    for hook in [MODULE, DATA + 0x40, RODATA + 0x40, 0xffff_8880_0000_1000, 1] {
        let mut hooked = clean;
        hooked[4] = hook;
        assert_eq!(
            hooked_entries(&hooked, &hooked, &ranges, true, &functions),
            [(4, hook)],
            "{hook:#x}"
        );
    }
    // A word not a function keeps its start-up value, whatever it is.
    let mut other = clean;
    other[3] = MODULE;
    assert_eq!(
        hooked_entries(&other, &other, &ranges, true, &functions),
        []
    );
    // Function words past the structure, or given for an array, change
    // nothing.
    assert_eq!(
        hooked_entries(&clean, &clean, &ranges, true, &[1, 2, 4, 99]),
        []
    );
    let array = [TEXT + 0x10, MODULE];
    assert_eq!(
        hooked_entries(&array, &array, &ranges, false, &[0, 1]),
        [(1, MODULE)]
    );
}

/// Netfilter: the functions at a hook point are read from its
/// `nf_hook_entries` (count bounded, a pointer that does not read an
/// error); those in neither the kernel's text nor a listed module's core
/// text are foreign.
#[test]
fn netfilter_hooks_are_read_and_judged() {
    let nf = R;
    let mut b = builder();
    // Three hooks: kernel text, a listed module, a hidden one's.
    b.write(0x3000, &3u16.to_le_bytes());
    for (i, (hook, private)) in [(TEXT + 0x40, 1), (MODULE + 0x80, 2), (MODULE + 0x9000, 3)]
        .into_iter()
        .enumerate()
    {
        b.write_u64(0x3008 + 16 * i as u64, hook);
        b.write_u64(0x3010 + 16 * i as u64, private);
    }
    // A count past the bound; a count whose entries run off guest RAM.
    b.write(0x3400, &u16::MAX.to_le_bytes());
    b.write(RAM - 0x18, &4u16.to_le_bytes());
    let hooks = with_space(&b, |s| {
        nf_hook_functions(s, va(0x3000).value(), &nf, MAX_NF_HOOKS)
    });
    assert_eq!(
        hooks,
        Ok(alloc::vec![TEXT + 0x40, MODULE + 0x80, MODULE + 0x9000])
    );
    assert_eq!(
        with_space(&b, |s| nf_hook_functions(s, 0, &nf, MAX_NF_HOOKS)),
        Ok(Vec::new())
    );
    assert_eq!(
        with_space(&b, |s| nf_hook_functions(
            s,
            va(0x3400).value(),
            &nf,
            MAX_NF_HOOKS
        )),
        Err(CrossViewError::TooMany)
    );
    // A round's budget bounds the count as well.
    assert_eq!(
        with_space(&b, |s| nf_hook_functions(s, va(0x3000).value(), &nf, 2)),
        Err(CrossViewError::TooMany)
    );
    assert!(
        with_space(&b, |s| nf_hook_functions(
            s,
            va(RAM - 0x18).value(),
            &nf,
            MAX_NF_HOOKS
        ))
        .is_err()
    );
    assert!(
        with_space(&b, |s| nf_hook_functions(
            s,
            DIRECT + RAM + 0x1000,
            &nf,
            MAX_NF_HOOKS
        ))
        .is_err()
    );
    assert!(
        with_space(&b, |s| nf_hook_functions(
            s,
            0x0000_8000_0000_0000,
            &nf,
            MAX_NF_HOOKS
        ))
        .is_err()
    );

    let ranges = image_ranges();
    let hooks = hooks.unwrap();
    let listed = [(MODULE, 0x1000)];
    assert_eq!(
        foreign_functions(&hooks, &ranges, &listed),
        [(2, MODULE + 0x9000)]
    );
    // With no module listed, both module hooks are foreign; read-only
    // data, writable image data and the heap are no place for a function.
    assert_eq!(
        foreign_functions(&hooks, &ranges, &[]),
        [(1, MODULE + 0x80), (2, MODULE + 0x9000)]
    );
    let elsewhere = [
        RODATA + 0x40,
        DATA + 0x100,
        DIRECT + 0x1000,
        0,
        MODULE + 0x1000,
    ];
    assert_eq!(
        foreign_functions(&elsewhere, &ranges, &listed).len(),
        elsewhere.len()
    );
}

#[test]
fn network_namespaces_are_walked() {
    let nf = CrossViewReference {
        net_list: 0x10,
        net_inum: 0x20,
        ..R
    };
    let head = 0x100;
    let nets = [0x1000, 0x2000, 0x3000];
    let mut b = builder();
    link(&mut b, &[head, 0x1010, 0x2010, 0x3010]);
    for (i, net) in nets.into_iter().enumerate() {
        b.write(net + 0x20, &(0xf000_0000u32 + i as u32).to_le_bytes());
    }
    let walk = |b: &PageTableBuilder| with_space(b, |s| net_namespaces(s, va(head), &nf));
    let found = alloc::vec![
        (va(0x1000).value(), 0xf000_0000),
        (va(0x2000).value(), 0xf000_0001),
        (va(0x3000).value(), 0xf000_0002),
    ];
    assert_eq!(walk(&b), (found.clone(), Ok(())));

    // A list that loops back to a namespace, not its head (the walk may
    // yield a node twice before it sees the loop); one that runs off guest
    // RAM: those read so far, and the error.
    b.write_u64(0x3010, DIRECT + 0x2010);
    let (read, walked) = walk(&b);
    assert!(read.starts_with(&found) && read.len() <= 6, "{read:x?}");
    assert_eq!(walked, Err(CrossViewError::List));
    b.write_u64(0x2010, DIRECT + RAM + 0x10);
    let (read, walked) = walk(&b);
    assert!(read == found[..2] && walked.is_err());
    // A namespace whose inode number does not read (its list_head at the
    // end of RAM, back to the head).
    b.write_u64(0x2010, DIRECT + RAM - 0x10);
    b.write_u64(RAM - 0x10, DIRECT + head);
    let (read, walked) = walk(&b);
    assert!(read == found[..2] && walked.is_err());

    // More namespaces than the bound.
    let mut b = builder();
    let nodes: Vec<u64> = (0..=MAX_NET_NAMESPACES as u64)
        .map(|i| 0x1000 + 0x30 * i + 0x10)
        .collect();
    link(&mut b, &[&[head][..], &nodes].concat());
    let (read, walked) = walk(&b);
    assert_eq!(
        (read.len(), walked),
        (MAX_NET_NAMESPACES, Err(CrossViewError::TooMany))
    );
}

#[test]
fn network_devices_are_walked() {
    let nf = CrossViewReference {
        net_dev_base_head: 0x40,
        netdev_dev_list: 0x50,
        netdev_name: 0x0,
        ..R
    };
    let net = 0x100;
    let devices = [0x1000, 0x2000];
    let mut b = builder();
    link(&mut b, &[net + 0x40, 0x1050, 0x2050]);
    b.write(0x1000, b"lo\0");
    b.write(0x2000, b"eth0_with_a_long");
    let walk = |b: &PageTableBuilder, max| with_space(b, |s| net_devices(s, va(net), &nf, max));
    let (found, walked) = walk(&b, MAX_NET_DEVICES);
    assert_eq!(walked, Ok(()));
    let found: Vec<(u64, Vec<u8>)> = found
        .iter()
        .map(|(d, n)| (d.value(), n.as_bytes().to_vec()))
        .collect();
    assert_eq!(
        found,
        [
            (va(devices[0]).value(), b"lo".to_vec()),
            (va(devices[1]).value(), b"eth0_with_a_long".to_vec())
        ]
    );
    // The caller's bound; a list that runs off RAM; a namespace address
    // that wraps.
    let (found, walked) = walk(&b, 1);
    assert_eq!((found.len(), walked), (1, Err(CrossViewError::TooMany)));
    b.write_u64(0x1050, DIRECT + RAM + 0x50);
    let (found, walked) = walk(&b, MAX_NET_DEVICES);
    assert!(found.len() == 1 && walked.is_err());
    let far = GuestVirtAddr::new(u64::MAX - 0x10).unwrap();
    let (found, walked) = with_space(&b, |s| net_devices(s, far, &nf, MAX_NET_DEVICES));
    assert!(found.is_empty() && walked.is_err());
}

#[test]
fn the_namespaces_tasks_are_in_are_read() {
    let nf = CrossViewReference {
        task_nsproxy: 0x80,
        nsproxy_net_ns: 0x28,
        ..R
    };
    let mut b = builder();
    // Four tasks: two share an nsproxy, one has its own in another
    // namespace, one is exiting (no nsproxy); one more's nsproxy is wild.
    let (shared, own) = (0x2000, 0x2100);
    for (task, nsproxy) in [(0x1000, shared), (0x1400, shared), (0x1800, own)] {
        b.write_u64(task + 0x80, DIRECT + nsproxy);
    }
    b.write_u64(0x1c00 + 0x80, 0);
    b.write_u64(0x3000 + 0x80, DIRECT + RAM + 0x1000);
    b.write_u64(shared + 0x28, DIRECT + 0x9000);
    b.write_u64(own + 0x28, DIRECT + 0x8000);
    let tasks = listed(&[0x1000, 0x1400, 0x1800, 0x1c00, 0x3000]);
    assert_eq!(
        with_space(&b, |s| task_net_namespaces(s, &tasks, &nf)),
        [va(0x8000).value(), va(0x9000).value()]
    );
    assert!(with_space(&b, |s| task_net_namespaces(s, &[], &nf)).is_empty());
}

#[test]
fn threads_of_each_group_are_read() {
    use crate::linux::tasks::{CredOffsets, TaskOffsets};
    let task = TaskOffsets {
        tasks: 0x58,
        pid: 0x10,
        tgid: 0x14,
        comm: 0x20,
        real_parent: 0x30,
        cred: 0x38,
        real_cred: 0x40,
        mm: 0x48,
        flags: 0x50,
    };
    let cred = CredOffsets {
        uid: 4,
        gid: 8,
        euid: 12,
        egid: 16,
    };
    let r = CrossViewReference {
        task_signal: 0x60,
        signal_thread_head: 0x10,
        task_thread_node: 0x70,
        signal_nr_threads: 0x20,
        ..R
    };
    let mut b = builder();
    // Leader 0x1000 (pid 10) with threads 0x1400 (11) and 0x1800 (12);
    // leader 0x2000 (20) alone. Thread 12 runs as root.
    let groups = [
        (0x1000, 0x5000, &[0x1400, 0x1800][..]),
        (0x2000, 0x5100, &[][..]),
    ];
    for (pid, (leader, signal, threads)) in (10..).step_by(10).zip(groups) {
        let mut nodes = alloc::vec![signal + 0x10];
        b.write(signal + 0x20, &(1 + threads.len() as u32).to_le_bytes());
        for (i, &t) in [leader].iter().chain(threads).enumerate() {
            b.write_u64(t + 0x60, DIRECT + signal);
            b.write(t + 0x10, &(pid + i as u32).to_le_bytes());
            b.write(t + 0x14, &pid.to_le_bytes());
            b.write(t + 0x20, b"worker\0");
            nodes.push(t + 0x70);
        }
        link(&mut b, &nodes);
    }
    b.write_u64(0x1800 + 0x38, DIRECT + 0x6000);
    let leaders = listed(&[0x1000, 0x2000]);
    let read = |b: &PageTableBuilder, leaders: &[Task]| {
        with_space(b, |s| {
            let (found, walked) = threads(s, leaders, &r, &task, &cred);
            let found: Vec<(u64, i32, i32, Option<u32>)> = found
                .threads
                .iter()
                .map(|t| (t.address.value(), t.pid, t.tgid, t.creds.map(|c| c.euid)))
                .collect();
            (found, walked)
        })
    };
    let (found, walked) = read(&b, &leaders);
    assert_eq!(walked, Ok(()));
    assert_eq!(
        found,
        [
            (va(0x1400).value(), 11, 10, None),
            (va(0x1800).value(), 12, 10, Some(0)),
        ]
    );
    assert_eq!(read(&b, &[]), (Vec::new(), Ok(())));
    let counts = |b: &PageTableBuilder| {
        with_space(b, |s| threads(s, &leaders, &r, &task, &cred).0.miscounted)
    };
    assert_eq!(counts(&b), []);
    // A thread unlinked from its group's list (as `list_del` would): the
    // list walks, the count says one more.
    let mut hidden = b.clone();
    link(&mut hidden, &[0x5000 + 0x10, 0x1000 + 0x70, 0x1400 + 0x70]);
    assert_eq!(read(&hidden, &leaders).0.len(), 1);
    assert_eq!(counts(&hidden), [(va(0x1000), 2, 3)]);
    // A thread list that loops back into itself, one that runs off RAM, a
    // leader without a signal struct: what was read comes with the error.
    let mut looped = b.clone();
    looped.write_u64(0x1800 + 0x70, DIRECT + 0x1400 + 0x70);
    let (found, walked) = read(&looped, &leaders);
    assert!(
        found.len() <= 3 && walked == Err(CrossViewError::List),
        "{found:?} {walked:?}"
    );
    let mut off = b.clone();
    off.write_u64(0x1400 + 0x70, DIRECT + RAM + 0x70);
    let (found, walked) = read(&off, &leaders);
    assert!(found.len() == 1 && walked.is_err());
    let mut no_signal = b.clone();
    no_signal.write_u64(0x2000 + 0x60, 0);
    let (found, walked) = read(&no_signal, &leaders);
    assert!(found.len() == 2 && walked.is_err());
}

/// The PID table of crafted memory: its root pointer at 0x100, nodes with
/// `shift` at 0 and slots at 0x28, `struct pid`s whose `PIDTYPE_PID` list
/// head is at 0x10, tasks whose `pid_links` are at 0x80.
#[test]
fn the_pid_table_holds_each_task_with_a_pid() {
    let r = CrossViewReference {
        xa_node_shift: 0,
        xa_node_slots: 0x28,
        pid_tasks: 0x10,
        task_pid_links: 0x80,
        ..R
    };
    let node = |b: &mut PageTableBuilder, at: u64, shift: u8, slots: &[(usize, u64)]| {
        b.write(at, &[shift]);
        for &(i, raw) in slots {
            b.write_u64(at + 0x28 + 8 * i as u64, raw);
        }
    };
    let as_node = |at: u64| DIRECT + at + 2;
    // A pid at `at` whose task is `task` (0: none, its PID held as a group
    // or session id only).
    let pid = |b: &mut PageTableBuilder, at: u64, task: u64| {
        b.write_u64(at + 0x10, if task == 0 { 0 } else { DIRECT + task + 0x80 });
        DIRECT + at
    };
    let mut b = builder();
    let (p1, p2, p3) = (
        pid(&mut b, 0x1_0000, 0x1000),
        pid(&mut b, 0x1_0100, 0),
        pid(&mut b, 0x1_0200, 0x2000),
    );
    b.write_u64(0x100, as_node(0x8000));
    node(
        &mut b,
        0x8000,
        6,
        &[(0, as_node(0x9000)), (2, as_node(0xa000))],
    );
    // A sibling entry (internal, below 256) and a value entry are no pid.
    node(
        &mut b,
        0x9000,
        0,
        &[(1, p1), (5, p2), (7, (7 << 2) | 2), (9, 0x41)],
    );
    node(&mut b, 0xa000, 0, &[(3, p3)]);
    let read = |b: &PageTableBuilder| {
        with_space(b, |s| {
            let (tasks, walked) = pid_table_tasks(s, va(0x100), &r);
            (tasks.iter().map(|t| t.value()).collect::<Vec<_>>(), walked)
        })
    };
    let both = [va(0x1000).value(), va(0x2000).value()];
    assert_eq!(read(&b), (both.to_vec(), Ok(())));
    // No PID at all, and one PID in the root pointer itself (index 0).
    let mut empty = b.clone();
    empty.write_u64(0x100, 0);
    assert_eq!(read(&empty), (Vec::new(), Ok(())));
    let mut single = b.clone();
    single.write_u64(0x100, p3);
    assert_eq!(read(&single), (alloc::vec![both[1]], Ok(())));
    // A node as its own descendant, a root of a shift no XArray has, a
    // node off RAM: errors, with what was read before.
    let mut looped = b.clone();
    node(&mut looped, 0xa000, 0, &[(0, as_node(0x8000))]);
    assert_eq!(
        read(&looped),
        (alloc::vec![both[0]], Err(CrossViewError::List))
    );
    let mut odd = b.clone();
    node(&mut odd, 0x8000, 7, &[]);
    assert_eq!(read(&odd), (Vec::new(), Err(CrossViewError::List)));
    let mut off = b.clone();
    node(&mut off, 0x8000, 6, &[(2, as_node(RAM + 0x1000))]);
    let (tasks, walked) = read(&off);
    assert!(
        tasks == [both[0]] && matches!(walked, Err(CrossViewError::Struct(_))),
        "{tasks:x?} {walked:?}"
    );
    // Every slot of every level naming the one node below it: 64^3 leaf
    // visits, stopped at the node bound.
    let mut wide = builder();
    let p = pid(&mut wide, 0x1_0000, 0x1000);
    wide.write_u64(0x100, as_node(0x8000));
    let all = |below: u64| {
        (0..XA_SLOTS)
            .map(|i| (i, as_node(below)))
            .collect::<Vec<_>>()
    };
    node(&mut wide, 0x8000, 18, &all(0x9000));
    node(&mut wide, 0x9000, 12, &all(0xa000));
    node(&mut wide, 0xa000, 6, &all(0xb000));
    node(&mut wide, 0xb000, 0, &[(0, p)]);
    let (tasks, walked) = read(&wide);
    assert_eq!(walked, Err(CrossViewError::TooMany));
    assert!(tasks.len() < MAX_PID_NODES, "{}", tasks.len());
}

/// The cgroups' task sets in crafted memory: `css_set_table` at 0x800
/// (128 buckets), css_sets whose `hlist` is at 0x8 and whose `tasks`,
/// `mg_tasks` and `dying_tasks` are at 0x20, 0x30 and 0x40, tasks whose
/// `cg_list` is at 0x90.
#[test]
fn the_cgroups_hold_each_task() {
    let r = CrossViewReference {
        css_set_hlist: 0x8,
        css_set_tasks: 0x20,
        css_set_mg_tasks: 0x30,
        css_set_dying_tasks: 0x40,
        task_cg_list: 0x90,
        ..R
    };
    // A css_set at `at` with these tasks on its three lists.
    let set = |b: &mut PageTableBuilder, at: u64, lists: [&[u64]; 3]| {
        for (list, tasks) in [0x20, 0x30, 0x40].into_iter().zip(lists) {
            let mut nodes = alloc::vec![at + list];
            nodes.extend(tasks.iter().map(|t| t + 0x90));
            link(b, &nodes);
        }
    };
    let mut b = builder();
    set(&mut b, 0x1_0000, [&[0x2000, 0x3000], &[], &[0x4000]]);
    set(&mut b, 0x1_1000, [&[], &[0x5000], &[]]);
    set(&mut b, 0x1_2000, [&[0x6000], &[], &[]]);
    // Bucket 3: two css_sets chained; bucket 127: one.
    b.write_u64(0x800 + 8 * 3, DIRECT + 0x1_0008);
    b.write_u64(0x1_0008, DIRECT + 0x1_1008);
    b.write_u64(0x800 + 8 * 127, DIRECT + 0x1_2008);
    let read = |b: &PageTableBuilder| {
        with_space(b, |s| {
            let (tasks, walked) = cgroup_tasks(s, va(0x800), &r);
            (tasks.iter().map(|t| t.value()).collect::<Vec<_>>(), walked)
        })
    };
    let all: Vec<u64> = [0x2000, 0x3000, 0x4000, 0x5000, 0x6000]
        .iter()
        .map(|&t| va(t).value())
        .collect();
    assert_eq!(read(&b), (all.clone(), Ok(())));
    // An empty table.
    assert_eq!(read(&builder()), (Vec::new(), Ok(())));
    // A chain that loops: bounded by the css_set limit, with what was read.
    let mut looped = b.clone();
    looped.write_u64(0x1_1008, DIRECT + 0x1_0008);
    let (tasks, walked) = read(&looped);
    assert_eq!(walked, Err(CrossViewError::TooMany));
    assert!(tasks.len() <= MAX_PID_TASKS && tasks.starts_with(&all[..4]));
    // A task list that runs off RAM: an error, with what was read (the
    // node that did not read among it).
    let mut broken = b.clone();
    broken.write_u64(0x3000 + 0x90, DIRECT + RAM + 0x1000);
    let (tasks, walked) = read(&broken);
    assert!(
        tasks.starts_with(&all[..2]) && tasks.len() == 3 && walked.is_err(),
        "{tasks:x?} {walked:?}"
    );
    // A chain pointing off RAM.
    let mut off = b.clone();
    off.write_u64(0x1_1008, DIRECT + RAM + 0x2000);
    let (tasks, walked) = read(&off);
    assert!(
        tasks == all[..4] && walked.is_err(),
        "{tasks:x?} {walked:?}"
    );
}

/// Each CPU's run queue in crafted memory: `nr_cpu_ids` at 0x200,
/// `__per_cpu_offset` at 0x300, the CPUs' areas at 0x4000 and 0x5000 with
/// `runqueues` 0x100 into them, `rq.curr` at 8 and `rq.idle` at 0x10.
#[test]
fn each_cpu_runs_its_current_task_unless_idle() {
    let r = CrossViewReference {
        runqueues: 0x100,
        rq_curr: 0x8,
        rq_idle: 0x10,
        ..R
    };
    let mut b = builder();
    b.write(0x200, &2u32.to_le_bytes());
    for (cpu, (curr, idle)) in [(0x1000, 0x7000), (0x7400, 0x7400)].into_iter().enumerate() {
        let area = 0x4000 + 0x1000 * cpu as u64;
        b.write_u64(0x300 + 8 * cpu as u64, DIRECT + area);
        b.write_u64(area + 0x100 + 0x8, DIRECT + curr);
        b.write_u64(area + 0x100 + 0x10, DIRECT + idle);
    }
    let tasks =
        |b: &PageTableBuilder| with_space(b, |s| running_tasks(s, va(0x300), va(0x200), &r));
    let read = |b: &PageTableBuilder| tasks(b).map(|t| t.running);
    let idle = |b: &PageTableBuilder| tasks(b).map(|t| t.idle);
    // CPU 0 runs a task, CPU 1 its idle task.
    assert_eq!(read(&b), Ok(alloc::vec![va(0x1000)]));
    assert_eq!(idle(&b), Ok(alloc::vec![va(0x7000), va(0x7400)]));
    let mut both = b.clone();
    both.write_u64(0x5000 + 0x108, DIRECT + 0x2000);
    assert_eq!(read(&both), Ok(alloc::vec![va(0x1000), va(0x2000)]));
    // A CPU not brought up has no task.
    let mut none = b.clone();
    none.write_u64(0x4000 + 0x108, 0);
    assert_eq!(read(&none), Ok(Vec::new()));
    none.write_u64(0x4000 + 0x110, 0);
    assert_eq!(idle(&none), Ok(alloc::vec![va(0x7400)]));
    // No CPU, absurdly many, an area off the canonical range: errors.
    for cpus in [0u32, MAX_CPUS + 1, u32::MAX] {
        let mut bad = b.clone();
        bad.write(0x200, &cpus.to_le_bytes());
        assert_eq!(read(&bad), Err(CrossViewError::TooMany), "{cpus}");
        assert_eq!(idle(&bad), Err(CrossViewError::TooMany), "{cpus}");
    }
    let mut odd = b.clone();
    odd.write_u64(0x308, 0x0000_8000_0000_0000);
    assert!(matches!(read(&odd), Err(CrossViewError::Struct(_))));
}

/// One round of `s`, and the tasks it then reports.
fn step(s: &mut RunningSightings, seen: &[u64], listed: impl Fn(u64) -> bool) -> Vec<u64> {
    s.round(seen, listed);
    s.hidden()
}

#[test]
fn a_task_running_off_every_list_is_reported_once_seen_in_two_rounds() {
    let mut s = RunningSightings::default();
    let none = |_| false;
    // Seen once (a thread's last instructions after its exit): nothing;
    // seen again RUNNING_ROUNDS rounds later: reported, and for
    // RUNNING_ROUNDS rounds after it was last seen.
    assert_eq!(step(&mut s, &[0x1000], none), []);
    for _ in 1..RUNNING_ROUNDS {
        assert_eq!(step(&mut s, &[], none), []);
    }
    assert_eq!(step(&mut s, &[0x1000, 0x2000], none), [0x1000]);
    for _ in 0..RUNNING_ROUNDS {
        assert_eq!(step(&mut s, &[], none), [0x1000]);
    }
    assert_eq!(step(&mut s, &[], none), []);
    // 0x2000, seen once more rounds ago than that, is forgotten.
    assert_eq!(step(&mut s, &[0x2000], none), []);
    // Twice on two CPUs in one round is one sighting.
    let mut s = RunningSightings::default();
    assert_eq!(step(&mut s, &[0x3000, 0x3000], none), []);
    assert_eq!(step(&mut s, &[0x3000], none), [0x3000]);
    // A task a list holds again is forgotten (its memory may be another
    // task's by then).
    assert_eq!(step(&mut s, &[], |t| t == 0x3000), []);
    assert_eq!(step(&mut s, &[0x3000], none), []);
    // Sightings are bounded: the one seen longest ago makes room, the
    // rest are still met the second time.
    let mut s = RunningSightings::default();
    let many: Vec<u64> = (1..=MAX_RUNNING_SIGHTINGS as u64 + 1)
        .map(|i| i << 12)
        .collect();
    assert_eq!(step(&mut s, &many[..1], none), []);
    assert_eq!(step(&mut s, &many[1..], none), []);
    let mut evicted = s.clone();
    assert_eq!(step(&mut s, &many[1..], none), many[1..]);
    assert_eq!(step(&mut evicted, &many[..1], none), []);
}

/// Busy vmalloc areas in crafted memory: `vmap_area_list` at 0x800, areas
/// whose `va_start`, `va_end` and `list` are at 0, 8 and 0x28; for the
/// nodes form, `vmap_nodes` at 0x900 pointing at two nodes at 0x3000 of
/// 0x100 bytes each, busy heads 0x40 into them, `nr_vmap_nodes` at 0x980.
fn vmap() -> CrossViewReference {
    CrossViewReference {
        vmap_area_list: 0x800,
        vmap_area_list_node: 0x28,
        vmap_area_va_start: 0,
        vmap_area_va_end: 0x8,
        task_stack: 0x20,
        vm_struct_addr: 0x8,
        runqueues: 0x100,
        rq_idle: 0x10,
        cached_stacks: 0x200,
        ..R
    }
}

/// An area struct at `at` for `[start, start + len)` (direct-map
/// addresses stand in for the vmalloc space).
fn area(b: &mut PageTableBuilder, at: u64, start: u64, len: u64) {
    b.write_u64(at, DIRECT + start);
    b.write_u64(at + 8, DIRECT + start + len);
}

fn areas_of(
    b: &PageTableBuilder,
    r: &CrossViewReference,
) -> (Vec<VmapArea>, Result<(), CrossViewError>) {
    with_space(b, |s| busy_vmap_areas(s, |link| Some(va(link)), r))
}

fn span(start: u64, len: u64) -> VmapArea {
    VmapArea {
        start: DIRECT + start,
        end: DIRECT + start + len,
    }
}

#[test]
fn the_busy_vmalloc_areas_are_read_from_the_list_or_the_nodes() {
    let mut b = builder();
    area(&mut b, 0x1_0000, 0x2_0000, 0x5000);
    area(&mut b, 0x1_0100, 0x2_8000, 0x2000);
    link(&mut b, &[0x800, 0x1_0028, 0x1_0128]);
    let both = alloc::vec![span(0x2_0000, 0x5000), span(0x2_8000, 0x2000)];
    assert_eq!(areas_of(&b, &vmap()), (both.clone(), Ok(())));
    // 6.12's nodes: the first area on node 0, the second on node 1.
    let nodes = CrossViewReference {
        vmap_area_list: 0,
        vmap_nodes: 0x900,
        nr_vmap_nodes: 0x980,
        vmap_node_size: 0x100,
        vmap_node_busy_head: 0x40,
        ..vmap()
    };
    let mut n = builder();
    area(&mut n, 0x1_0000, 0x2_0000, 0x5000);
    area(&mut n, 0x1_0100, 0x2_8000, 0x2000);
    n.write_u64(0x900, DIRECT + 0x3000);
    n.write(0x980, &2u32.to_le_bytes());
    link(&mut n, &[0x3040, 0x1_0028]);
    link(&mut n, &[0x3140, 0x1_0128]);
    assert_eq!(areas_of(&n, &nodes), (both.clone(), Ok(())));
    // No node, too many, or a profile with neither list: errors.
    for count in [0u32, MAX_VMAP_NODES + 1] {
        let mut bad = n.clone();
        bad.write(0x980, &count.to_le_bytes());
        assert_eq!(
            areas_of(&bad, &nodes),
            (Vec::new(), Err(CrossViewError::TooMany))
        );
    }
    let neither = CrossViewReference {
        vmap_nodes: 0,
        ..nodes
    };
    assert_eq!(
        areas_of(&n, &neither),
        (Vec::new(), Err(CrossViewError::List))
    );
    // A list that loops back into itself: bounded, with what was read.
    let mut looped = b.clone();
    looped.write_u64(0x1_0128, DIRECT + 0x1_0028);
    let (read, walked) = areas_of(&looped, &vmap());
    assert!(walked.is_err() && read.len() <= MAX_VMAP_AREAS && read.starts_with(&both));
    // An area off RAM: an error, with the areas before it.
    let mut off = b.clone();
    off.write_u64(0x1_0028, DIRECT + RAM + 0x28);
    let (read, walked) = areas_of(&off, &vmap());
    assert!(walked.is_err() && read == both[..1], "{read:x?}");
}

#[test]
fn a_live_stack_of_no_known_task_is_an_orphan() {
    const LEN: u64 = 0x5000;
    let mut b = builder();
    let starts = [0x2_0000u64, 0x2_6000, 0x2_c000, 0x3_2000];
    for (i, &start) in starts.iter().enumerate() {
        area(&mut b, 0x1_0000 + 0x100 * i as u64, start, LEN);
    }
    // Of another length (not a stack), with the word all the same.
    area(&mut b, 0x1_0400, 0x3_8000, 0x2000);
    let mut nodes = alloc::vec![0x800];
    nodes.extend((0..5).map(|i| 0x1_0028 + 0x100 * i));
    link(&mut b, &nodes);
    // Known: the first. Live, unknown: the second and the odd-sized one.
    // Freed (an rcu_head over the word): the third. Unknown with the word:
    // the fourth.
    for start in [0x2_0000, 0x2_6000, 0x3_2000, 0x3_8000] {
        b.write_u64(start, STACK_END_MAGIC);
    }
    let known = [DIRECT + 0x2_0000];
    let orphans = |b: &PageTableBuilder, known: &[u64]| {
        let (areas, walked) = areas_of(b, &vmap());
        assert_eq!(walked, Ok(()));
        with_space(b, |s| orphan_stacks(s, &areas, known))
    };
    assert_eq!(orphans(&b, &known), [DIRECT + 0x2_6000, DIRECT + 0x3_2000]);
    // Known, they are not; with no known stack there is no stack length.
    let all: Vec<u64> = starts.iter().map(|s| DIRECT + s).collect();
    assert!(orphans(&b, &all).is_empty());
    assert!(orphans(&b, &[]).is_empty());
    // A stack whose bottom does not read is not counted.
    let mut gone = b.clone();
    area(&mut gone, 0x1_0100, RAM + 0x6000, LEN);
    assert_eq!(orphans(&gone, &known), [DIRECT + 0x3_2000]);
}

#[test]
fn the_page_tables_map_every_live_stack_whatever_the_busy_lists_say() {
    const VMALLOC: u64 = 0xffff_c900_0000_0000;
    let mut b = builder();
    // Pages at `at` on `frames`, the magic word on the first frame.
    let map = |b: &mut PageTableBuilder, at: u64, frames: &[u64], magic: bool| {
        for (i, &frame) in frames.iter().enumerate() {
            b.map_4k(at + 0x1000 * i as u64, frame, true, false);
        }
        if magic {
            b.write_u64(frames[0], STACK_END_MAGIC);
        }
    };
    // A known stack; a hidden one on scattered frames; one with its
    // guard page (and the page before it) mapped.
    map(
        &mut b,
        VMALLOC,
        &[0x2_0000, 0x2_1000, 0x2_2000, 0x2_3000],
        true,
    );
    let hidden = [0x2_8000, 0x3_1000, 0x2_6000, 0x3_3000];
    map(&mut b, VMALLOC + 0x8000, &hidden, true);
    let guarded = [0x3_4000, 0x2_9000, 0x3_5000, 0x3_6000, 0x3_7000, 0x3_8000];
    map(&mut b, VMALLOC + 0x2_7000, &guarded, false);
    b.write_u64(0x2_9000, STACK_END_MAGIC);
    // Not stacks: three pages; four without the word; four with it at a
    // page that is not the stack's alignment.
    map(
        &mut b,
        VMALLOC + 0x1_0000,
        &[0x2_a000, 0x3_9000, 0x3_a000],
        true,
    );
    map(
        &mut b,
        VMALLOC + 0x1_8000,
        &[0x2_b000, 0x3_b000, 0x3_c000, 0x3_d000],
        false,
    );
    map(
        &mut b,
        VMALLOC + 0x2_1000,
        &[0x2_c000, 0x3_b000, 0x3_c000, 0x3_d000],
        true,
    );
    let mapped = |b: &PageTableBuilder, known: &[u64]| with_space(b, |s| mapped_stacks(s, known));
    let found = [VMALLOC, VMALLOC + 0x8000, VMALLOC + 0x2_8000];
    assert_eq!(mapped(&b, &[VMALLOC]), Ok(found.to_vec()));
    assert_eq!(mapped(&b, &[0x1000, VMALLOC + 0x8000]), Ok(found.to_vec()));
    // Walked from the lowest known stack's slot, and the next: one in the
    // direct map moves the walk there, where each aligned frame with the
    // word is a stack too (why it starts in the vmalloc range).
    let direct = [DIRECT + 0x2_0000, DIRECT + 0x2_8000, DIRECT + 0x2_c000];
    assert_eq!(
        mapped(&b, &[DIRECT + 0x2_0000, VMALLOC]),
        Ok(direct.to_vec())
    );
    // A stack in the next slot is found; two slots on, or in the image's
    // slot (modules, fixed mappings), not.
    let mut far = b.clone();
    let slot = 1u64 << 39;
    map(
        &mut far,
        VMALLOC + slot,
        &[0x2_d000, 0x3_1000, 0x3_2000, 0x3_3000],
        true,
    );
    map(
        &mut far,
        VMALLOC + 2 * slot,
        &[0x2_e000, 0x3_1000, 0x3_2000, 0x3_3000],
        true,
    );
    map(
        &mut far,
        0xffff_ffff_a000_0000,
        &[0x2_f000, 0x3_1000, 0x3_2000, 0x3_3000],
        true,
    );
    let next = [found.as_slice(), &[VMALLOC + slot]].concat();
    assert_eq!(mapped(&far, &[VMALLOC]), Ok(next));
    assert_eq!(mapped(&far, &[0xffff_ffff_a000_0000]), Ok(Vec::new()));
    // No known stack in the kernel half: nothing to start from.
    assert_eq!(mapped(&b, &[]), Err(CrossViewError::List));
    assert_eq!(mapped(&b, &[0x2_0000]), Err(CrossViewError::List));
    // Tables linked over and over: more than MAX_STACK_TABLES, an error.
    let mut many = builder();
    let (pdpt, pd, pt) = (0x3_c000u64, 0x3_d000u64, 0x3_e000u64);
    for i in 0..512 {
        many.write_u64(pdpt + 8 * i, pd | 3);
        many.write_u64(pd + 8 * i, pt | 3);
    }
    many.write_u64(many.root().0 + 8 * ((VMALLOC >> 39) & 511), pdpt | 3);
    assert_eq!(mapped(&many, &[VMALLOC]), Err(CrossViewError::TooMany));
}

proptest::proptest! {
    /// Against a model: the stacks found are exactly the aligned places
    /// whose four pages are mapped and whose first frame holds the word.
    #[test]
    fn mapped_stacks_are_the_aligned_mapped_runs_with_the_word(
        pages in proptest::collection::btree_map(0u64..48, (0u64..32, proptest::bool::ANY), 0..40),
    ) {
        const VMALLOC: u64 = 0xffff_c900_0000_0000;
        let mut b = builder();
        // Frames 0x2_0000 + 0x1000 * n, the word on some (a frame shared
        // by pages holds it for all of them).
        for (&page, &(frame, magic)) in &pages {
            let frame = 0x2_0000 + 0x1000 * frame;
            b.map_4k(VMALLOC + 0x1000 * page, frame, true, false);
            if magic {
                b.write_u64(frame, STACK_END_MAGIC);
            }
        }
        let has_word = |frame: u64| pages.values().any(|&(f, m)| m && f == frame);
        let want: Vec<u64> = (0..48)
            .step_by(4)
            .filter(|&p| (p..p + 4).all(|q| pages.contains_key(&q)))
            .filter(|p| has_word(pages[p].0))
            .map(|p| VMALLOC + 0x1000 * p)
            .collect();
        let got = with_space(&b, |s| mapped_stacks(s, &[VMALLOC]));
        proptest::prop_assert_eq!(got, Ok(want));
    }
}

#[test]
fn a_stack_names_its_task_by_a_word_that_points_back_at_it() {
    // A stack at 0x2_6000 (four pages); its task at 0x6000 (`stack` at
    // 0x20 in), the task's address among its top frames.
    const STACK: u64 = 0x2_6000;
    let mut b = builder();
    b.write_u64(STACK, STACK_END_MAGIC);
    b.write_u64(0x6000 + 0x20, DIRECT + STACK);
    b.write_u64(STACK + 0x3f00, DIRECT + 0x6000);
    // Above it (tried first): pointers into the stack itself, to a task
    // of another stack, off RAM, unaligned, and user addresses.
    b.write_u64(0x7000 + 0x20, DIRECT + 0x2_0000);
    for (i, word) in [
        DIRECT + STACK + 0x3f80,
        DIRECT + 0x7000,
        DIRECT + RAM + 0x1000,
        DIRECT + 0x6008,
        0x6000,
    ]
    .into_iter()
    .enumerate()
    {
        b.write_u64(STACK + 0x3f40 + 8 * i as u64, word);
    }
    let owner = |b: &PageTableBuilder| with_space(b, |s| stack_owner(s, DIRECT + STACK, &vmap()));
    assert_eq!(owner(&b), Some(va(0x6000)));
    // Nothing on it points back: no task, not a wrong one.
    let mut none = b.clone();
    none.write_u64(STACK + 0x3f00, 0);
    assert_eq!(owner(&none), None);
    // A stack filled with distinct candidates above the task's address:
    // given up on after MAX_OWNER_CANDIDATES of them.
    let mut filled = b.clone();
    for i in 0..=MAX_OWNER_CANDIDATES as u64 {
        filled.write_u64(STACK + 0x3f08 + 8 * i, DIRECT + 0x8000 + 0x40 * i);
    }
    assert_eq!(owner(&filled), None);
    // A stack that does not read.
    let gone = with_space(&b, |s| stack_owner(s, DIRECT + RAM + 0x1000, &vmap()));
    assert_eq!(gone, None);
}

/// Two CPUs: areas at 0x4000 and 0x5000 (`__per_cpu_offset` at 0x300,
/// `nr_cpu_ids` at 0x200), each with a run queue 0x100 in (`idle` at 0x10)
/// and `cached_stacks` 0x200 in.
#[test]
fn each_cpu_holds_its_idle_task_stack_and_its_cached_ones() {
    let mut b = builder();
    b.write(0x200, &2u32.to_le_bytes());
    for cpu in 0..2u64 {
        let area = 0x4000 + 0x1000 * cpu;
        b.write_u64(0x300 + 8 * cpu, DIRECT + area);
        // Idle task at 0x6000 + 0x100 * cpu, its stack 0x2_0000 + ...
        let idle = 0x6000 + 0x100 * cpu;
        b.write_u64(area + 0x100 + 0x10, DIRECT + idle);
        b.write_u64(idle + 0x20, DIRECT + 0x2_0000 + 0x1000 * cpu);
    }
    // CPU 1 keeps one stack, in its second slot: a vm_struct at 0x7000.
    b.write_u64(0x5000 + 0x200 + 8, DIRECT + 0x7000);
    b.write_u64(0x7000 + 8, DIRECT + 0x2_8000);
    let read =
        |b: &PageTableBuilder| with_space(b, |s| cpu_stacks(s, va(0x300), va(0x200), &vmap()));
    assert_eq!(
        read(&b),
        Ok(alloc::vec![
            DIRECT + 0x2_0000,
            DIRECT + 0x2_1000,
            DIRECT + 0x2_8000
        ])
    );
    let mut absurd = b.clone();
    absurd.write(0x200, &(MAX_CPUS + 1).to_le_bytes());
    assert_eq!(read(&absurd), Err(CrossViewError::TooMany));
    // A cached slot pointing off RAM: an error, not a stack less.
    let mut off = b.clone();
    off.write_u64(0x5000 + 0x200, DIRECT + RAM + 0x10);
    assert!(read(&off).is_err());
    // Tasks' stacks: a task that does not read has none.
    let tasks = [DIRECT + 0x6000, DIRECT + RAM + 0x100, DIRECT + 0x6100];
    let stacks = with_space(&b, |s| task_stacks(s, &tasks, &vmap()));
    assert_eq!(stacks, [DIRECT + 0x2_0000, DIRECT + 0x2_1000]);
}

/// The `net` class's offsets (those of Debian's 6.12 where they differ
/// little) over [`R`].
fn class_reference() -> CrossViewReference {
    CrossViewReference {
        net_class: 1,
        class_subsys: 0x70,
        subsys_private_kobj: 0x18,
        subsys_private_class: 0x198,
        subsys_private_devices: 0xa8,
        device_private_knode_class: 0x90,
        device_private_device: 0xc8,
        netdev_dev: 0x300,
        netdev_nd_net: 0x100,
        ..R
    }
}

/// A `subsys_private` at 0x1000 whose device list holds devices of the
/// namespaces `nets` (0: a device without one; `None`: a device_private
/// without a device), each a `net_device` of its own.
fn class_devices(b: &mut PageTableBuilder, c: &CrossViewReference, nets: &[Option<u64>]) {
    let mut nodes = alloc::vec![0x1000 + c.subsys_private_devices];
    for (i, net) in nets.iter().enumerate() {
        let private = 0x2000 + 0x400 * i as u64;
        let netdev = 0x8000 + 0x1000 * i as u64;
        nodes.push(private + c.device_private_knode_class);
        match net {
            Some(net) => {
                b.write_u64(
                    private + c.device_private_device,
                    DIRECT + netdev + c.netdev_dev,
                );
                let nd_net = if *net == 0 { 0 } else { DIRECT + net };
                b.write_u64(netdev + c.netdev_nd_net, nd_net);
            }
            None => b.write_u64(private + c.device_private_device, 0),
        }
    }
    link(b, &nodes);
}

/// Every device's namespace, once each, ascending, whichever way the
/// class finds its devices: 6.1's `class.p`, or the `subsys_private`
/// on `class_kset`'s list whose `class` is `net_class`.
#[test]
fn the_net_class_lists_the_namespace_of_every_device() {
    let c = class_reference();
    let nets = [
        Some(0x3_1000),
        Some(0x3_0000),
        None,
        Some(0),
        Some(0x3_1000),
    ];
    let want = [DIRECT + 0x3_0000, DIRECT + 0x3_1000];
    // 6.1: net_class (0x100) points at its subsys_private.
    let mut b = builder();
    class_devices(&mut b, &c, &nets);
    b.write_u64(0x100 + c.class_subsys, DIRECT + 0x1000);
    let found = with_space(&b, |s| class_net_namespaces(s, va(0x100), None, &c));
    assert_eq!(found, Ok(want.to_vec()));
    b.write_u64(0x100 + c.class_subsys, 0);
    assert!(with_space(&b, |s| class_net_namespaces(s, va(0x100), None, &c)).is_err());
    // 6.4 and later: class_kset (0x180) -> a kset (0x1800) whose list holds
    // another class's subsys_private (0x1c00), then the net class's.
    let mut b = builder();
    class_devices(&mut b, &c, &nets);
    b.write_u64(0x180, DIRECT + 0x1800);
    let kobj_entry = c.subsys_private_kobj + c.kobject_entry;
    link(
        &mut b,
        &[
            0x1800 + c.kset_list,
            0x1c00 + kobj_entry,
            0x1000 + kobj_entry,
        ],
    );
    b.write_u64(0x1c00 + c.subsys_private_class, DIRECT + 0x140);
    b.write_u64(0x1000 + c.subsys_private_class, DIRECT + 0x100);
    let walk = |b: &PageTableBuilder| {
        with_space(b, |s| {
            class_net_namespaces(s, va(0x100), Some(va(0x180)), &c)
        })
    };
    assert_eq!(walk(&b), Ok(want.to_vec()));
    // The net class not on the list; no kset.
    b.write_u64(0x1000 + c.subsys_private_class, DIRECT + 0x140);
    assert!(walk(&b).is_err());
    b.write_u64(0x1000 + c.subsys_private_class, DIRECT + 0x100);
    b.write_u64(0x180, 0);
    assert!(walk(&b).is_err());
}

/// A device list that loops or leaves RAM is an error, in bounded time.
#[test]
fn a_broken_net_class_device_list_is_an_error() {
    let c = class_reference();
    let mut b = builder();
    class_devices(&mut b, &c, &[Some(0x3_0000), Some(0x3_1000)]);
    b.write_u64(0x100 + c.class_subsys, DIRECT + 0x1000);
    let walk =
        |b: &PageTableBuilder| with_space(b, |s| class_net_namespaces(s, va(0x100), None, &c));
    assert!(walk(&b).is_ok());
    // The second device's next pointing back at the first (a loop that
    // misses the head).
    let first = 0x2000 + c.device_private_knode_class;
    b.write_u64(0x2400 + c.device_private_knode_class, DIRECT + first);
    assert!(walk(&b).is_err());
    // Off RAM.
    b.write_u64(0x2400 + c.device_private_knode_class, DIRECT + RAM + 0x1000);
    assert!(walk(&b).is_err());
}

/// The offsets of the per-user task counts, as `craft::SETUID_REFERENCE`
/// has them.
fn count_reference() -> CrossViewReference {
    CrossViewReference {
        cred_ucounts: 0x90,
        ucounts_ns: 0x10,
        ucounts_uid: 0x18,
        ucounts_rlimit: 0x20,
        user_ns_ucounts: 0x8,
        ..R
    }
}

/// A ucounts at `at` for `uid` in the user namespace at `ns`, counting
/// `counted` tasks.
fn ucounts(
    b: &mut PageTableBuilder,
    c: &CrossViewReference,
    at: u64,
    ns: u64,
    uid: u32,
    counted: u64,
) {
    b.write_u64(at + c.ucounts_ns, DIRECT + ns);
    b.write(at + c.ucounts_uid, &uid.to_le_bytes());
    b.write_u64(at + c.ucounts_rlimit, counted);
}

/// Two creds of root and one of nobody in the initial user namespace
/// (0x8000, its creator's ucounts NULL), and one of uid 1000 in a
/// namespace (0x8400) that root made: its tasks count for root too.
fn count_memory(c: &CrossViewReference, root: u64, nobody: u64, inner: u64) -> PageTableBuilder {
    let mut b = builder();
    ucounts(&mut b, c, 0x9000, 0x8000, 0, root);
    ucounts(&mut b, c, 0x9100, 0x8000, 65534, nobody);
    ucounts(&mut b, c, 0x9200, 0x8400, 1000, inner);
    b.write_u64(0x8400 + c.user_ns_ucounts, DIRECT + 0x9000);
    for (cred, ucounts) in [
        (0x2000, 0x9000),
        (0x2100, 0x9000),
        (0x2200, 0x9100),
        (0x2300, 0x9200),
    ] {
        b.write_u64(cred + c.cred_ucounts, DIRECT + ucounts);
    }
    b
}

/// Each ucounts with the tasks charged to it, a namespace's tasks also to
/// its creator's; a task whose cred a rootkit swapped for root's is one
/// more for root and one fewer for its user than the kernel counts.
#[test]
fn each_users_task_count_is_the_tasks_charged_to_it() {
    let c = count_reference();
    let creds = |list: &[u64]| list.iter().map(|&a| va(a)).collect::<Vec<_>>();
    // Root: three tasks on two creds, plus the inner task; nobody: one.
    let tasks = creds(&[0x2000, 0x2100, 0x2000, 0x2200, 0x2300]);
    let b = count_memory(&c, 4, 1, 1);
    let counts = with_space(&b, |s| process_counts(s, &tasks, &c)).expect("reads");
    let want = |ucounts, uid, counted, found| ProcessCount {
        ucounts: DIRECT + ucounts,
        uid,
        counted,
        found,
    };
    assert_eq!(
        counts,
        [
            want(0x9000, 0, 4, 4),
            want(0x9100, 65534, 1, 1),
            want(0x9200, 1000, 1, 1)
        ]
    );
    assert!(counts.iter().all(|c| !c.differs()));
    // nobody's task given a root cred: counted for nobody, found as root's.
    let swapped = creds(&[0x2000, 0x2100, 0x2000, 0x2000, 0x2300]);
    let counts = with_space(&b, |s| process_counts(s, &swapped, &c)).expect("reads");
    assert_eq!(counts, [want(0x9000, 0, 4, 5), want(0x9200, 1000, 1, 1)]);
    assert_eq!(counts[0].to_string(), "uid 0: 4 tasks counted, 5 found");
    // No tasks: nothing to compare.
    assert_eq!(
        with_space(&b, |s| process_counts(s, &[], &c)),
        Ok(Vec::new())
    );
}

/// A cred without ucounts, a ucounts without a namespace, unreadable
/// memory and a cycle of namespaces are errors, in bounded time.
#[test]
fn a_broken_chain_of_task_counts_is_an_error() {
    let c = count_reference();
    let read =
        |b: &PageTableBuilder, cred: u64| with_space(b, |s| process_counts(s, &[va(cred)], &c));
    let mut b = count_memory(&c, 1, 1, 1);
    assert!(read(&b, 0x2300).is_ok());
    // NULL ucounts.
    assert!(read(&b, 0x2400).is_err());
    // The namespace's creator's ucounts pointing back at the inner one.
    b.write_u64(0x8000 + c.user_ns_ucounts, DIRECT + 0x9200);
    assert!(matches!(read(&b, 0x2300), Err(CrossViewError::TooMany)));
    b.write_u64(0x8000 + c.user_ns_ucounts, 0);
    // A ucounts without a namespace, one off RAM.
    b.write_u64(0x9100 + c.ucounts_ns, 0);
    assert!(read(&b, 0x2200).is_err());
    b.write_u64(0x2200 + c.cred_ucounts, DIRECT + RAM + 0x1000);
    assert!(read(&b, 0x2200).is_err());
}

/// More ucounts than a round reads is an error, not a cut.
#[test]
fn too_many_users_is_an_error() {
    let c = count_reference();
    let mut b = builder();
    let n = MAX_UCOUNTS as u64 + 1;
    let mut creds = Vec::new();
    for i in 0..n {
        // Packed: only a cred's `ucounts` and a ucounts' `ns`, `uid` and
        // `rlimit` are read, which do not overlap at these strides.
        let (cred, uc) = (0x1_0000 + 8 * i, 0x2_0000 + 0x18 * i);
        b.write_u64(cred + c.cred_ucounts, DIRECT + uc);
        b.write_u64(uc + c.ucounts_ns, DIRECT + 0x8000);
        creds.push(va(cred));
    }
    let read = |creds: &[GuestVirtAddr]| with_space(&b, |s| process_counts(s, creds, &c));
    assert_eq!(
        read(&creds[..MAX_UCOUNTS]).map(|v| v.len()),
        Ok(MAX_UCOUNTS)
    );
    assert!(matches!(read(&creds), Err(CrossViewError::TooMany)));
}

/// A difference is reported once it has stayed exactly the same for
/// `PROCESS_COUNT_ROUNDS` rounds in a row: one that changes (forks and
/// releases in flight) or goes away starts over.
#[test]
fn a_count_difference_is_reported_once_it_lasts() {
    let count = |counted, found| ProcessCount {
        ucounts: 0x9000,
        uid: 0,
        counted,
        found,
    };
    let steady = ProcessCount {
        ucounts: 0x9100,
        uid: 7,
        counted: 2,
        found: 2,
    };
    let mut tracker = ProcessCountTracker::default();
    for _ in 1..PROCESS_COUNT_ROUNDS {
        assert_eq!(tracker.update(&[count(4, 5), steady]), []);
    }
    assert_eq!(tracker.update(&[count(4, 5), steady]), [count(4, 5)]);
    assert_eq!(tracker.update(&[count(4, 5)]), [count(4, 5)]);
    // Another difference starts over, as one that went away.
    assert_eq!(tracker.update(&[count(5, 6)]), []);
    assert_eq!(tracker.update(&[count(4, 4)]), []);
    for _ in 1..PROCESS_COUNT_ROUNDS {
        assert_eq!(tracker.update(&[count(4, 5)]), []);
    }
    assert_eq!(tracker.update(&[count(4, 5)]), [count(4, 5)]);
    // A difference that flips every round is never reported.
    let mut tracker = ProcessCountTracker::default();
    for round in 0..4 * PROCESS_COUNT_ROUNDS {
        let now = if round % 2 == 0 {
            count(4, 5)
        } else {
            count(5, 5)
        };
        assert_eq!(tracker.update(&[now]), []);
    }
}
