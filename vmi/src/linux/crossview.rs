//! What rootkits hide or hook, seen from a second place in the kernel
//! (pure functions over guest memory; the A-VM schedules them):
//!
//! - **Hidden modules**: every module with a kobject in sysfs
//!   (`module_kset->list`: what `/sys/module` lists) must be on the module
//!   list (`modules`: what `lsmod` and `/proc/modules` list). A rootkit that
//!   unlinks itself from the list (`list_del(&THIS_MODULE->list)`) still has
//!   its kobject, unless it also deletes that, which breaks its unloading.
//!   Built-in modules have kobjects without a module (`mod == NULL`).
//! - **Hidden processes**: every process in the process tree (each task's
//!   `children` list, from `init_task` down: how the kernel reparents and
//!   reaps) must be on the task list (`init_task.tasks`: what `for_each_process`
//!   walks). Both hold exactly the thread-group leaders; unlinking a task
//!   from `tasks` to hide it leaves it in its parent's children. Every
//!   task with a PID (`init_pid_ns`'s IDR, [`pid_table_tasks`]) must be on
//!   the task list or its group's thread list ([`threads`]), and every
//!   CPU's current task ([`running_tasks`]) on a list or in the PID table
//!   ([`RunningSightings`]); a sleeping task off every list still has
//!   its kernel stack ([`orphan_stacks`]).
//! - **Credentials**: a user process running with `init_cred` (the kernel's
//!   own credentials, what `commit_creds(&init_cred)`-style rootkits hand
//!   out), or with euid 0 under a parent whose euid is not 0 (a privilege
//!   rise without a set-uid exec: Debian's Mon-VM has no set-uid programs;
//!   a deployment that has them lists them in the policy). And across
//!   rounds ([`CredTracker`]): a process that becomes root in the same
//!   address space (no exec), also when it was missing from the task list
//!   for a few rounds in between.
//! - **Function-pointer tables in writable data** ([`PointerTable`]): every
//!   entry is NULL, points into the kernel image, or is what it was at
//!   start-up; a new entry pointing elsewhere (module area, heap) is a hook,
//!   and a function pointer of a structure built into the image points into
//!   its text from the start.
//!
//! Every walk is bounded and cycle-safe (the list walker); garbage yields
//! an error, never a panic.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::addr::GuestVirtAddr;
use crate::list::{ListOptions, walk_list};
use crate::paging::VirtualMemory;

use super::structs::heapless_str::FixedStr;
use super::structs::{StructError, container_of, field, read_pointer};
use super::tasks::Task;

/// Most kobjects, children or table entries looked at.
pub const MAX_KOBJECTS: usize = 8192;
pub const MAX_TASKS: usize = 32_768;
pub const MAX_TABLE_ENTRIES: usize = 1024;

/// A table of function-pointer structures in writable kernel data that
/// rootkits replace entries of (docs/monitoring.md lists the choice).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointerTable {
    pub name: String,
    /// Link address of the array.
    pub address: u64,
    /// Entries (pointers).
    pub entries: u32,
    /// A structure rather than an array of pointers (`struct proto`
    /// holds sizes and flags too): an entry may also hold what it held at
    /// start-up. An array's entries are NULL or in the kernel image from
    /// the start.
    pub structure: bool,
    /// An array's: the words of the structure each entry points at
    /// (`struct tty_ldisc_ops` for `tty_ldiscs`), checked field by field
    /// where an entry points into the image's writable data
    /// ([`writable_pointees`]); 0 for a structure.
    pub pointee_entries: u32,
    /// The words that hold function pointers (from BTF, ascending): a
    /// structure's own, an array's those of the structure its entries
    /// point at. Such a word of a structure in the kernel image is NULL or
    /// points into its text, from the first read on: a hook set before
    /// the A-VM first read the structure is no start-up value to keep.
    pub functions: Vec<u32>,
    /// Netfilter hook points (`init_net.nf.hooks_ipv4`, ...): an array of
    /// one `struct nf_hook_entries *` per hook point, heap memory that no
    /// sweep covers, each a count (u16) and the `{ hook, priv }` entries
    /// every packet through that point runs (a "magic packet" backdoor's
    /// place). Its entries are not judged as pointers; the functions each
    /// holds are ([`nf_hook_functions`], [`foreign_functions`]).
    pub hook_points: bool,
}

/// Most hooks at one netfilter hook point (the kernel allows 1024).
pub const MAX_NF_HOOKS: usize = 1024;

/// Link-time symbols and member offsets the cross-views read (profile
/// section, from kallsyms and BTF).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CrossViewReference {
    /// `module_kset` (a `struct kset *`).
    pub module_kset: u64,
    /// `kset.list`, `kobject.entry`.
    pub kset_list: u64,
    pub kobject_entry: u64,
    /// `module_kobject.kobj`, `module_kobject.mod`.
    pub module_kobject_kobj: u64,
    pub module_kobject_mod: u64,
    /// `task_struct.children`, `task_struct.sibling`.
    pub task_children: u64,
    pub task_sibling: u64,
    /// `init_cred`'s link address.
    pub init_cred: u64,
    pub pointer_tables: Vec<PointerTable>,
    /// `nf_hook_entries.hooks` (where the first `struct nf_hook_entry`
    /// starts) and `sizeof(struct nf_hook_entry)`, whose `hook` is its
    /// first word: how the functions of a netfilter hook point are read
    /// ([`PointerTable::hook_points`]).
    pub nf_entries_hooks: u64,
    pub nf_entry_size: u64,
    /// Network namespaces, each with hook points of its own (a
    /// container's, an `unshare -n`'s): `net_namespace_list` and
    /// `init_net` (link addresses; a hook-point table's offset in `struct
    /// net` is its address less `init_net`'s), `net.list` and `net.ns.inum`
    /// (u32: the number `/proc/PID/ns/net` shows). 0 without hook points.
    pub net_namespace_list: u64,
    pub init_net: u64,
    pub net_list: u64,
    pub net_inum: u64,
    /// Each namespace's devices and their own hooks: `net.dev_base_head`,
    /// `net_device.dev_list`, `net_device.name` (`char[16]`), and
    /// `net_device.nf_hooks_ingress` / `nf_hooks_egress` (each a `struct
    /// nf_hook_entries *`; 0: not built in). 0 without hook points.
    pub net_dev_base_head: u64,
    pub netdev_dev_list: u64,
    pub netdev_name: u64,
    pub netdev_nf_hooks_ingress: u64,
    pub netdev_nf_hooks_egress: u64,
    /// `task_struct.nsproxy`, `nsproxy.net_ns`: the namespace each task is
    /// in, which must be on `net_namespace_list` ([`task_net_namespaces`]).
    pub task_nsproxy: u64,
    pub nsproxy_net_ns: u64,
    /// `task_struct.signal`, `signal_struct.thread_head`,
    /// `task_struct.thread_node`: a thread group's threads, which the task
    /// list holds only the leader of ([`threads`]); credentials and
    /// namespaces are each thread's own.
    pub task_signal: u64,
    pub signal_thread_head: u64,
    pub task_thread_node: u64,
    /// `signal_struct.nr_threads` (int): the kernel's count of the
    /// group's threads, which its list must hold.
    pub signal_nr_threads: u64,
    /// The PID table, a third view of the tasks ([`pid_table_tasks`]):
    /// `init_pid_ns` (link address), where the root of its IDR is in it
    /// (`pid_namespace.idr.idr_rt.xa_head`), an XArray node's `shift` (u8)
    /// and `slots` (64 pointers), `pid.tasks` (its `PIDTYPE_PID` list head
    /// first) and `task_struct.pid_links` (its `PIDTYPE_PID` node first).
    pub init_pid_ns: u64,
    pub pid_ns_xa_head: u64,
    pub xa_node_shift: u64,
    pub xa_node_slots: u64,
    pub pid_tasks: u64,
    pub task_pid_links: u64,
    /// The run queues, a fourth view ([`running_tasks`]): `runqueues` (a
    /// per-CPU variable: its offset in each CPU's area), `__per_cpu_offset`
    /// and `nr_cpu_ids` (link addresses), `rq.curr` and `rq.idle`.
    pub runqueues: u64,
    pub per_cpu_offset: u64,
    pub nr_cpu_ids: u64,
    pub rq_curr: u64,
    pub rq_idle: u64,
    /// The cgroups' task sets, a fifth view ([`cgroup_tasks`]):
    /// `css_set_table` (link address; [`CSS_SET_BUCKETS`] hlist heads),
    /// `css_set.hlist` (its node in that table), the three lists of its
    /// tasks `css_set.tasks`, `mg_tasks` and `dying_tasks`, and
    /// `task_struct.cg_list` (a task's node on one of them).
    pub css_set_table: u64,
    pub css_set_hlist: u64,
    pub css_set_tasks: u64,
    pub css_set_mg_tasks: u64,
    pub css_set_dying_tasks: u64,
    pub task_cg_list: u64,
    /// The kernel stacks, a sixth view ([`stacks`]): the busy vmalloc
    /// areas, on `vmap_area_list` (6.1; link address, else 0) or on each
    /// node's busy list (6.12: `vmap_nodes`, a pointer to the array of
    /// `nr_vmap_nodes` (u32) `struct vmap_node`s of `vmap_node_size`
    /// bytes, `vmap_node.busy.head`; 0 on 6.1), `vmap_area.list`,
    /// `va_start` and `va_end`; `task_struct.stack`; `cached_stacks` (a
    /// per-CPU array of `struct vm_struct *`) and `vm_struct.addr`.
    pub vmap_area_list: u64,
    pub vmap_nodes: u64,
    pub nr_vmap_nodes: u64,
    pub vmap_node_size: u64,
    pub vmap_node_busy_head: u64,
    pub vmap_area_list_node: u64,
    pub vmap_area_va_start: u64,
    pub vmap_area_va_end: u64,
    pub task_stack: u64,
    pub cached_stacks: u64,
    pub vm_struct_addr: u64,
    /// `mm_struct.pgd`: a process's top-level page table
    /// ([`super::top_tables`]).
    pub mm_pgd: u64,
    /// `mm_struct.flags`: its low bits are the address space's dumpable
    /// mode ([`setuid_exec`]).
    pub mm_flags: u64,
    /// `file.f_inode`, `inode.i_mode` (u16), `inode.i_uid` (u32): whether
    /// an executable is set-uid root ([`setuid_exec`]).
    pub file_f_inode: u64,
    pub inode_i_mode: u64,
    pub inode_i_uid: u64,
    /// `cred.user` (a `struct user_struct *`), `user_struct.uid` (u32):
    /// the account a cred's real uid is charged to ([`account_uid`]).
    pub cred_user: u64,
    pub user_struct_uid: u64,
    /// `file.f_cred` (a `const struct cred *`): the credentials a file
    /// was opened with; an executable's are those of the task that
    /// exec'd it ([`exec_ids`]).
    pub file_f_cred: u64,
    /// The device model's `net` class, which lists every network device
    /// of every namespace ([`class_net_namespaces`]): `net_class` (link
    /// address; 0: not read); where its `subsys_private` is: `class.p`
    /// (6.1; else 0), or the one on `class_kset`'s list (link address of
    /// the pointer; 6.4 and later, else 0) whose `class` member
    /// (`subsys_private_class`) is `net_class`, the list linking
    /// `subsys_private.subsys.kobj` (`subsys_private_kobj`) through
    /// `kobject.entry`; `subsys_private.klist_devices.k_list`,
    /// `device_private.knode_class.n_node`, `device_private.device`,
    /// `net_device.dev` and `net_device.nd_net.net`.
    pub net_class: u64,
    pub class_subsys: u64,
    pub class_kset: u64,
    pub subsys_private_kobj: u64,
    pub subsys_private_class: u64,
    pub subsys_private_devices: u64,
    pub device_private_knode_class: u64,
    pub device_private_device: u64,
    pub netdev_dev: u64,
    pub netdev_nd_net: u64,
    /// The kernel's count of each user's tasks ([`process_counts`]):
    /// `cred.ucounts` (a `struct ucounts *`), `ucounts.ns` (its user
    /// namespace), `ucounts.uid` (u32), `ucounts.rlimit` (its first entry
    /// is `UCOUNT_RLIMIT_NPROC`'s, an `atomic_long_t`) and
    /// `user_namespace.ucounts` (the ucounts of the namespace's creator in
    /// the parent namespace; NULL for the initial one).
    pub cred_ucounts: u64,
    pub ucounts_ns: u64,
    pub ucounts_uid: u64,
    pub ucounts_rlimit: u64,
    pub user_ns_ucounts: u64,
    /// Whether top-level tables are 8 KiB, the second half the user copy
    /// (a kernel built with page-table isolation: `init_top_pgt` is 8 KiB).
    pub pgd_user_copy: bool,
}

crate::words::deserialize_members!(CrossViewReference {
    words [
        module_kset, kset_list, kobject_entry, module_kobject_kobj, module_kobject_mod,
        task_children, task_sibling, init_cred
    ],
    one [pointer_tables],
    words [
        nf_entries_hooks, nf_entry_size, net_namespace_list, init_net, net_list, net_inum,
        net_dev_base_head, netdev_dev_list, netdev_name, netdev_nf_hooks_ingress,
        netdev_nf_hooks_egress, task_nsproxy, nsproxy_net_ns, task_signal, signal_thread_head,
        task_thread_node, signal_nr_threads, init_pid_ns, pid_ns_xa_head, xa_node_shift,
        xa_node_slots, pid_tasks, task_pid_links, runqueues, per_cpu_offset, nr_cpu_ids,
        rq_curr, rq_idle, css_set_table, css_set_hlist, css_set_tasks, css_set_mg_tasks,
        css_set_dying_tasks, task_cg_list, vmap_area_list, vmap_nodes, nr_vmap_nodes,
        vmap_node_size, vmap_node_busy_head, vmap_area_list_node, vmap_area_va_start,
        vmap_area_va_end, task_stack, cached_stacks, vm_struct_addr, mm_pgd, mm_flags,
        file_f_inode, inode_i_mode, inode_i_uid, cred_user, user_struct_uid, file_f_cred,
        net_class, class_subsys, class_kset, subsys_private_kobj, subsys_private_class,
        subsys_private_devices, device_private_knode_class, device_private_device, netdev_dev,
        netdev_nd_net, cred_ucounts, ucounts_ns, ucounts_uid, ucounts_rlimit, user_ns_ucounts
    ],
    one [pgd_user_copy],
});

/// Why a cross-view was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrossViewError {
    Struct(StructError),
    /// A list that does not end (or ends in garbage) within its bound.
    List,
    TooMany,
}

impl From<StructError> for CrossViewError {
    fn from(e: StructError) -> Self {
        CrossViewError::Struct(e)
    }
}

impl From<crate::list::ListError> for CrossViewError {
    fn from(e: crate::list::ListError) -> Self {
        match e {
            crate::list::ListError::TooLong { .. } => CrossViewError::TooMany,
            _ => CrossViewError::List,
        }
    }
}

impl core::fmt::Display for CrossViewError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CrossViewError::Struct(e) => write!(f, "{e}"),
            CrossViewError::List => write!(f, "list broken"),
            CrossViewError::TooMany => write!(f, "too many entries"),
        }
    }
}

/// The modules that have a kobject under `/sys/module` (their `struct
/// module` addresses; built-in "modules" without one are skipped).
/// `module_kset` is the runtime address of the symbol. The kernel sets it
/// at boot (`param_sysfs_init`), long before user space: NULL is an error,
/// not an empty view.
pub fn kset_modules<V: VirtualMemory + ?Sized>(
    mem: &V,
    module_kset: GuestVirtAddr,
    r: &CrossViewReference,
) -> Result<Vec<GuestVirtAddr>, CrossViewError> {
    let kset = read_pointer(mem, module_kset, 0)?.ok_or(StructError::Null {
        what: "module_kset",
    })?;
    let head = field(kset, r.kset_list)?;
    let mut out = Vec::new();
    for node in walk_list(mem, head, ListOptions::new(MAX_KOBJECTS)) {
        let node = node.map_err(|_| CrossViewError::List)?;
        let kobj = container_of(node, r.kobject_entry)?;
        let mk = container_of(kobj, r.module_kobject_kobj)?;
        let named = read_pointer(mem, mk, r.module_kobject_mod)?;
        // A loadable module's kobject is its own `struct module`'s, in the
        // module area, and `mod` points just before it; one that does not
        // was rewritten (NULL, as a built-in module's, or a listed module)
        // to hide the module: it counts by its kobject, which no listed
        // module is.
        let module = if super::text::ftrace::MODULE_AREA.contains(&mk.value())
            && named.is_none_or(|m| mk.value().wrapping_sub(m.value()) >= 4096)
        {
            Some(mk)
        } else {
            named
        };
        if let Some(module) = module {
            if out.len() >= MAX_KOBJECTS {
                return Err(CrossViewError::TooMany);
            }
            out.push(module);
        }
    }
    Ok(out)
}

/// Modules in sysfs that are not on the module list (`listed`: their
/// `struct module` addresses).
pub fn hidden_modules(in_sysfs: &[GuestVirtAddr], listed: &[GuestVirtAddr]) -> Vec<GuestVirtAddr> {
    missing_from(in_sysfs.iter().copied(), listed.iter().copied())
}

/// The addresses of `candidates` (in their order) that are not in `seen`.
fn missing_from(
    candidates: impl Iterator<Item = GuestVirtAddr>,
    seen: impl Iterator<Item = GuestVirtAddr>,
) -> Vec<GuestVirtAddr> {
    let set = address_set(seen);
    candidates.filter(|a| !set.contains(&a.value())).collect()
}

/// The addresses as a set, built by inserts: collecting into a set sorts
/// first, and that sort's code would cost the A-VM image a few KiB.
pub fn address_set(addresses: impl IntoIterator<Item = GuestVirtAddr>) -> BTreeSet<u64> {
    let mut set = BTreeSet::new();
    for a in addresses {
        set.insert(a.value());
    }
    set
}

/// A task of the process tree and the task whose `children` list holds
/// it: its real parent, as the kernel keeps them (`copy_process` adds a
/// thread-group leader to `real_parent->children`; reparenting moves it
/// with `real_parent`, under `tasklist_lock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeTask {
    pub task: GuestVirtAddr,
    pub parent: GuestVirtAddr,
}

/// Every task of the process tree below `init_task` (breadth first over
/// `children`/`sibling`, each task once; `init_task` itself not included),
/// with the task whose children list it was found on.
/// At most [`MAX_TASKS`] links are followed over all the children lists
/// together: each task is on one parent's list, so a tree never needs
/// more, while lists that lead through one another could otherwise make
/// every task found walk them all again.
pub fn process_tree<V: VirtualMemory + ?Sized>(
    mem: &V,
    init_task: GuestVirtAddr,
    r: &CrossViewReference,
) -> Result<Vec<TreeTask>, CrossViewError> {
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut queue = alloc::vec![init_task];
    let mut out = Vec::new();
    let mut at = 0;
    let mut links_left = MAX_TASKS;
    while let Some(&parent) = queue.get(at) {
        at += 1;
        let head = field(parent, r.task_children)?;
        for node in walk_list(mem, head, ListOptions::new(links_left)) {
            let node = node?;
            links_left = links_left.saturating_sub(1);
            let task = container_of(node, r.task_sibling)?;
            if task == init_task || !seen.insert(task.value()) {
                continue;
            }
            if out.len() >= MAX_TASKS {
                return Err(CrossViewError::TooMany);
            }
            out.push(TreeTask { task, parent });
            queue.push(task);
        }
    }
    Ok(out)
}

/// Tasks in the process tree that are not on the task list.
pub fn hidden_tasks(in_tree: &[TreeTask], listed: &[Task]) -> Vec<GuestVirtAddr> {
    missing_from(
        in_tree.iter().map(|t| t.task),
        listed.iter().map(|t| t.address),
    )
}

/// Tasks on the task list (but `init_task`, the tree's root) that are not
/// in the process tree: the kernel adds and removes a thread-group leader
/// on both together (`copy_process`, `__unhash_process`), so one taken out
/// of its parent's `children` (to hide it from a tree view, or so that the
/// credential check cannot find its real parent there) stays listed.
pub fn tasks_off_the_tree(
    in_tree: &[TreeTask],
    listed: &[Task],
    init_task: GuestVirtAddr,
) -> Vec<GuestVirtAddr> {
    missing_from(
        listed.iter().map(|t| t.address).filter(|&t| t != init_task),
        in_tree.iter().map(|t| t.task),
    )
}

/// A listed task that is not what it poses as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskPose {
    /// A kernel thread (`PF_KTHREAD`) not started by `kthreadd` (PID 2):
    /// every kernel thread but PID 1 and 2 is (`kthread_create`); a task
    /// a rootkit links in, or marks, as a kernel thread is passed over by
    /// every check of user processes.
    KernelThreadOutsideKthreadd,
    /// A user task (no `PF_KTHREAD`) without an address space that is not
    /// exiting: what clearing `mm` does to hide a process from the checks
    /// of executables and credentials. (A helper the kernel starts for a
    /// user program has none until its exec, a moment.)
    UserTaskWithoutMemory,
}

/// The tasks of `listed` that pose as what they are not ([`TaskPose`]).
/// PIDs 0-2 are the kernel's own (init is a kernel-started user task
/// before its exec).
pub fn posing_tasks(listed: &[Task]) -> Vec<(GuestVirtAddr, TaskPose)> {
    use super::tasks::{PF_EXITING, PF_KTHREAD};
    let kthreadd = listed.iter().find(|t| t.pid == 2).map(|t| t.address);
    listed
        .iter()
        .filter(|t| t.pid > 2)
        .filter_map(|t| {
            let pose = if t.flags & PF_KTHREAD != 0 {
                (kthreadd.is_none() || t.parent != kthreadd)
                    .then_some(TaskPose::KernelThreadOutsideKthreadd)
            } else {
                (t.mm.is_none() && t.flags & PF_EXITING == 0)
                    .then_some(TaskPose::UserTaskWithoutMemory)
            };
            pose.map(|p| (t.address, p))
        })
        .collect()
}

/// A credential finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredFinding {
    /// A user process runs with the kernel's own credentials.
    InitCred { pid: i32 },
    /// euid 0 under a parent whose euid is not 0.
    RootUnderUser {
        pid: i32,
        parent_pid: i32,
        parent_euid: u32,
    },
    /// A process became root without an exec (same address space, euid
    /// was `was`): what a rootkit writing its cred does; Linux only grants
    /// root on exec of a set-uid program.
    RootWithoutExec { pid: i32, was: u32 },
    /// A cred whose real uid is not the uid of the account (`user`) it is
    /// charged to: the kernel changes both together (`set_user` on every
    /// change of the real uid, before the cred is committed), a rootkit
    /// that writes the ids in place leaves the account as it was. Seen in
    /// any round, whoever the parent, however young the process.
    NotItsAccount { pid: i32, uid: u32, account: u32 },
    /// euid 0 under a real uid that is not 0, not a set-uid program the
    /// policy allows, whoever the parent: only the exec of a set-uid
    /// program gives a user's process euid 0 and leaves its real uid (a
    /// rootkit that writes euid alone, and moves the process under a root
    /// parent so that [`CredFinding::RootUnderUser`] does not see the rise,
    /// leaves this). Not reported where `RootUnderUser` is.
    RootUnderUserUid { pid: i32, uid: u32 },
    /// euid 0 (with real uid 0), its executable opened by a task with
    /// neither uid 0 nor euid 0 (`mm->exe_file->f_cred`, the credentials
    /// of the exec's caller), not a set-uid program the policy allows:
    /// after such an exec the process holds no root id to go back to, so
    /// only a set-uid exec makes it root. A rootkit that gives a user's
    /// process a whole new root cred (ids and account) at once after its
    /// exec, under a root parent, leaves this, however young the process.
    /// Not reported where `RootUnderUser` or `RootUnderUserUid` is.
    RootAfterUserExec { pid: i32, euid: u32 },
}

impl CredFinding {
    /// The process it is about.
    pub fn pid(&self) -> i32 {
        match *self {
            CredFinding::InitCred { pid }
            | CredFinding::RootUnderUser { pid, .. }
            | CredFinding::RootWithoutExec { pid, .. }
            | CredFinding::NotItsAccount { pid, .. }
            | CredFinding::RootUnderUserUid { pid, .. }
            | CredFinding::RootAfterUserExec { pid, .. } => pid,
        }
    }
}

/// What is wrong with the process's credentials, as the A-VM's finding
/// text says it after `process:PID:COMM:`.
impl core::fmt::Display for CredFinding {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            CredFinding::InitCred { .. } => f.write_str("init_cred"),
            CredFinding::RootUnderUser {
                parent_pid,
                parent_euid,
                ..
            } => write!(f, "euid 0 under pid {parent_pid} euid {parent_euid}"),
            CredFinding::RootWithoutExec { was, .. } => {
                write!(f, "euid 0 without exec (was {was})")
            }
            CredFinding::NotItsAccount { uid, account, .. } => {
                write!(f, "uid {uid} in a cred of uid {account}'s account")
            }
            CredFinding::RootUnderUserUid { uid, .. } => write!(f, "euid 0 under uid {uid}"),
            CredFinding::RootAfterUserExec { euid, .. } => {
                write!(f, "euid 0 after an exec by euid {euid}")
            }
        }
    }
}

/// Rounds a task missing from the task list (or read without an address
/// space or credentials) is remembered: one that comes back within them,
/// in the same address space, is still compared with what it was. A
/// rootkit cannot make a task "new" by unlinking it (or zeroing its `mm`)
/// for a round while it writes the credentials; `hidden_process` needs two
/// rounds in a row, so a task hidden for longer is reported there unless it
/// also leaves the process tree.
pub const CRED_FORGET_AFTER: u32 = 16;
/// Most tasks the credential tracker holds, present and missing: the guest
/// decides how many tasks there are.
pub const MAX_CRED_TRACKED: usize = 2 * MAX_TASKS;

/// What [`CredTracker`] holds of one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tracked {
    mm: u64,
    euid: u32,
    /// The euid the task had before it became root without an exec (it is
    /// reported as long as it stays root in that address space).
    risen_from: Option<u32>,
    /// Rounds in a row it has been missing (0: in this round's list).
    missing: u32,
    /// Its pid when last seen: a task back after missing rounds must have
    /// it still (slab slots are reused: a user process that exits and a
    /// root daemon's fork soon after can share both addresses).
    pid: i32,
}

/// Follows each user process's euid across rounds ([`Self::update`]).
///
/// A task is its `task_struct` address and its address space (`mm`): an
/// exec gives a new `mm` (a set-uid exec raises the euid legitimately), and
/// a task whose address comes back with another `mm` is a new task. A task
/// missing from a round is remembered for [`CRED_FORGET_AFTER`] rounds, and
/// taken for the same task again only with the same pid;
/// only those that could still be reported are (not root, or risen). At
/// most [`MAX_CRED_TRACKED`] tasks: this round's first, then the missing
/// ones, most recently seen first.
#[derive(Clone, Debug, Default)]
pub struct CredTracker {
    /// Task address -> what was last seen of it.
    tracked: alloc::collections::BTreeMap<u64, Tracked>,
}

impl CredTracker {
    /// Takes this round's task list (walked to its end); returns every
    /// process that is root now after having had another euid in the same
    /// address space, in this round or before it was missing.
    pub fn update(&mut self, tasks: &[Task]) -> Vec<CredFinding> {
        let mut tracked = alloc::collections::BTreeMap::new();
        let mut out = Vec::new();
        for t in tasks.iter().filter(|t| !t.is_kernel_thread()) {
            let (Some(creds), Some(mm)) = (t.creds, t.mm) else {
                continue;
            };
            let key = t.address.value();
            let was = self
                .tracked
                .get(&key)
                .filter(|before| {
                    before.mm == mm.value() && (before.missing == 0 || before.pid == t.pid)
                })
                .and_then(|before| {
                    before
                        .risen_from
                        .or(Some(before.euid).filter(|&euid| euid != 0))
                });
            let risen_from = was.filter(|_| creds.euid == 0);
            if let Some(was) = risen_from {
                out.push(CredFinding::RootWithoutExec { pid: t.pid, was });
            }
            if tracked.len() < MAX_CRED_TRACKED {
                tracked.insert(
                    key,
                    Tracked {
                        mm: mm.value(),
                        euid: creds.euid,
                        risen_from,
                        missing: 0,
                        pid: t.pid,
                    },
                );
            }
        }
        // The tasks missing this round, most recently seen first. A task
        // read with an address space and credentials is not missing, even
        // as a new task at the same address; one read without them is.
        let missing: Vec<(u64, Tracked)> = self
            .tracked
            .iter()
            .filter(|&(key, before)| {
                before.missing < CRED_FORGET_AFTER
                    && (before.euid != 0 || before.risen_from.is_some())
                    && !tracked.contains_key(key)
            })
            .map(|(&key, &before)| {
                (
                    key,
                    Tracked {
                        missing: before.missing + 1,
                        ..before
                    },
                )
            })
            .collect();
        // As many as there is room for, fewest rounds missing first (ties
        // in address order): one pass per count, no sort (`missing` is
        // 1..=CRED_FORGET_AFTER here).
        let room = MAX_CRED_TRACKED.saturating_sub(tracked.len());
        let by_rounds = (1..=CRED_FORGET_AFTER)
            .flat_map(|rounds| missing.iter().filter(move |(_, t)| t.missing == rounds));
        tracked.extend(by_rounds.copied().take(room));
        self.tracked = tracked;
        out
    }
}

/// Credential findings over the task list. `init_cred` is its runtime
/// address. `set_uid_program` says whether a task with euid 0 under a
/// parent whose euid is not 0, or under a real uid that is not 0, is a
/// set-uid program the policy allows ([`setuid_exec`]): such a task is not
/// reported as [`CredFinding::RootUnderUser`] nor
/// [`CredFinding::RootUnderUserUid`] (the other rules still apply to it).
/// `account_uid` gives the uid of the account a task's cred is charged to
/// ([`account_uid`]; `None` if it does not read: no finding), `exec_ids`
/// the uid and euid its executable was opened with ([`exec_ids`]; `None`
/// likewise).
///
/// A task's parent is its `real_parent`, and also the task whose
/// `children` list holds it in the process tree (`tree`; empty if the
/// tree was not walked): the two are the same in a kernel nobody wrote
/// to, and a rootkit that points `real_parent` at a root task (or NULL,
/// or anywhere off the list) to pass this check leaves the task on its
/// user parent's list, unless it also moves it there, which takes it off
/// the tree ([`tasks_off_the_tree`]) or into another parent's list.
pub fn cred_findings(
    tasks: &[Task],
    tree: &[TreeTask],
    init_cred: u64,
    set_uid_program: impl Fn(&Task) -> bool,
    account_uid: impl Fn(&Task) -> Option<u32>,
    exec_ids: impl Fn(&Task) -> Option<(u32, u32)>,
) -> Vec<CredFinding> {
    let by_address = TaskIndex::new(tasks, |t| t.address.value());
    let euid_of = |address: Option<GuestVirtAddr>| {
        by_address
            .first(tasks, address?.value())?
            .creds
            .map(|c| c.euid)
    };
    // Each task's parent in the tree (by the first listed task of its
    // address, as every lookup here).
    let mut tree_parents: Vec<Option<GuestVirtAddr>> = alloc::vec![None; tasks.len()];
    for node in tree {
        if let Some(slot) = by_address
            .position(node.task.value())
            .and_then(|i| tree_parents.get_mut(i))
        {
            *slot = Some(node.parent);
        }
    }
    let mut out = Vec::new();
    for (t, tree_parent) in tasks
        .iter()
        .zip(&tree_parents)
        .filter(|(t, _)| !t.is_kernel_thread())
    {
        let Some(creds) = t.creds else { continue };
        if creds.address.value() == init_cred || t.real_cred.is_some_and(|c| c.value() == init_cred)
        {
            out.push(CredFinding::InitCred { pid: t.pid });
            continue;
        }
        if let Some(account) = account_uid(t).filter(|&a| a != creds.uid) {
            out.push(CredFinding::NotItsAccount {
                pid: t.pid,
                uid: creds.uid,
                account,
            });
        }
        if creds.euid != 0 {
            continue;
        }
        // The real parent first, then the tree's where it is another.
        let real = t.parent.map(|p| (p, t.parent_pid.unwrap_or(-1)));
        let in_tree = tree_parent.filter(|&p| Some(p) != t.parent).map(|p| {
            let pid = by_address.first(tasks, p.value()).map_or(-1, |q| q.pid);
            (p, pid)
        });
        let rise = [real, in_tree].into_iter().flatten().find_map(|(p, pid)| {
            euid_of(Some(p))
                .filter(|&e| e != 0)
                .map(|parent_euid| (pid, parent_euid))
        });
        let exec_euid = (rise.is_none() && creds.uid == 0)
            .then(|| exec_ids(t))
            .flatten()
            .filter(|&(uid, euid)| uid != 0 && euid != 0)
            .map(|(_, euid)| euid);
        if (rise.is_some() || creds.uid != 0 || exec_euid.is_some()) && set_uid_program(t) {
            continue;
        }
        if let Some((parent_pid, parent_euid)) = rise {
            out.push(CredFinding::RootUnderUser {
                pid: t.pid,
                parent_pid,
                parent_euid,
            });
        } else if creds.uid != 0 {
            out.push(CredFinding::RootUnderUserUid {
                pid: t.pid,
                uid: creds.uid,
            });
        } else if let Some(euid) = exec_euid {
            out.push(CredFinding::RootAfterUserExec { pid: t.pid, euid });
        }
    }
    out
}

/// A task list indexed by a key of each task (its address, its pid),
/// sorted once: a search of the list per lookup would make N forged tasks
/// cost N² steps.
pub struct TaskIndex(Vec<(u64, u32)>);

impl TaskIndex {
    /// The index of `tasks` by `key`.
    pub fn new(tasks: &[Task], key: impl Fn(&Task) -> u64) -> Self {
        let mut pairs: Vec<(u64, u32)> =
            tasks.iter().zip(0u32..).map(|(t, i)| (key(t), i)).collect();
        crate::sort::heapsort(&mut pairs);
        Self(pairs)
    }

    /// The first task of `tasks` (the list indexed) with `key`.
    pub fn first<'t>(&self, tasks: &'t [Task], key: u64) -> Option<&'t Task> {
        tasks.get(self.position(key)?)
    }

    /// The position in the list indexed of its first task with `key`.
    pub fn position(&self, key: u64) -> Option<usize> {
        let at = self.0.partition_point(|&(k, _)| k < key);
        self.0
            .get(at)
            .filter(|&&(k, _)| k == key)
            .map(|&(_, i)| i as usize)
    }
}

/// `MMF_DUMPABLE_MASK`: the dumpable mode in `mm_struct.flags`.
const DUMPABLE_MASK: u64 = 3;
/// `SUID_DUMP_USER`: the mode of an address space whose exec changed no
/// ids and whose credentials never changed since.
const SUID_DUMP_USER: u64 = 1;

/// `S_ISUID` in an inode's mode.
const S_ISUID: u16 = 0o4000;

/// Whether `task` (a [`CredFinding::RootUnderUser`]) is let off as a
/// set-uid program the policy allows (`allowed` says which paths are).
/// All of:
/// - its executable (`mm->exe_file`, which a user process cannot change;
///   `comm` it can) is at an allowed path;
/// - that file is set-uid root (its inode's mode has `S_ISUID`, its owner
///   is uid 0): a process a rootkit made root that then execs an allowed
///   path holding anything else is not let off;
/// - its address space's dumpable mode is not `SUID_DUMP_USER`: the
///   kernel sets it to `suid_dumpable` (`SUID_DUMP_DISABLE` by default)
///   on an exec that raises the ids or capabilities and in `commit_creds`
///   whenever they change; a rootkit that writes the ids of a process
///   exec'd without that (a `nosuid` mount, a set-uid bit added later)
///   leaves it as it was.
///
/// Not let off (false) when anything cannot be read: the finding stands.
pub fn setuid_exec<V: VirtualMemory + ?Sized>(
    mem: &V,
    task: &Task,
    paths: &super::path::PathOffsets,
    r: &CrossViewReference,
    allowed: impl Fn(&[u8]) -> bool,
) -> bool {
    use super::structs::{read_u32, read_u64};
    let Some(mm) = task.mm else {
        return false;
    };
    let Ok(flags) = read_u64(mem, mm, r.mm_flags) else {
        return false;
    };
    if flags & DUMPABLE_MASK == SUID_DUMP_USER {
        return false;
    }
    // The executable is read once: its inode and its path are those of
    // the same `struct file`.
    let file = match read_pointer(mem, mm, paths.mm_exe_file) {
        Ok(Some(file)) => file,
        _ => return false,
    };
    let set_uid_root = || -> Result<bool, StructError> {
        let Some(inode) = read_pointer(mem, file, r.file_f_inode)? else {
            return Ok(false);
        };
        let mode = mem.read_virt_u16(field(inode, r.inode_i_mode)?)?;
        Ok(mode & S_ISUID != 0 && read_u32(mem, inode, r.inode_i_uid)? == 0)
    };
    set_uid_root().unwrap_or(false)
        && super::path::file_path(mem, file, paths).is_ok_and(|exe| allowed(exe.as_bytes()))
}

/// The uid of the account `task`'s cred is charged to (`cred->user->uid`),
/// for [`CredFinding::NotItsAccount`]; `None` if the task has no cred or
/// any of it does not read.
pub fn account_uid<V: VirtualMemory + ?Sized>(
    mem: &V,
    task: &Task,
    r: &CrossViewReference,
) -> Option<u32> {
    let creds = task.creds?;
    let user = read_pointer(mem, creds.address, r.cred_user).ok()??;
    super::structs::read_u32(mem, user, r.user_struct_uid).ok()
}

/// The uid and euid of the credentials `task`'s executable was opened
/// with (`mm->exe_file->f_cred`: the exec's caller's, before a set-uid
/// exec raised them), for [`CredFinding::RootAfterUserExec`]; `None` if
/// the task has no executable or any of it does not read.
#[inline(never)]
pub fn exec_ids<V: VirtualMemory + ?Sized>(
    mem: &V,
    task: &Task,
    paths: &super::path::PathOffsets,
    r: &CrossViewReference,
    cred: &super::CredOffsets,
) -> Option<(u32, u32)> {
    use super::structs::read_u32;
    let file = read_pointer(mem, task.mm?, paths.mm_exe_file).ok()??;
    let opened_by = read_pointer(mem, file, r.file_f_cred).ok()??;
    Some((
        read_u32(mem, opened_by, cred.uid).ok()?,
        read_u32(mem, opened_by, cred.euid).ok()?,
    ))
}

/// The entries of a pointer table at runtime address `at`.
pub fn read_table<V: VirtualMemory + ?Sized>(
    mem: &V,
    at: GuestVirtAddr,
    entries: u32,
) -> Result<Vec<u64>, CrossViewError> {
    let n = entries as usize;
    if n > MAX_TABLE_ENTRIES {
        return Err(CrossViewError::TooMany);
    }
    let mut raw = alloc::vec![0u8; n * 8];
    mem.read_virt(at, &mut raw)
        .map_err(|e| CrossViewError::Struct(StructError::Walk(e)))?;
    Ok(raw
        .chunks_exact(8)
        .map(|w| {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            u64::from_le_bytes(b)
        })
        .collect())
}

/// Where the kernel image's pointers may lead (runtime ranges): its text
/// and read-only data (`_text.._etext`, `__start_rodata..__end_rodata`,
/// ro_after_init), which a rootkit cannot write without the text and rodata
/// sweep seeing it, and the whole image (`_text.._end`), whose writable
/// data it can.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageRanges {
    pub read_only: [core::ops::Range<u64>; 3],
    pub whole: core::ops::Range<u64>,
}

impl ImageRanges {
    /// The ranges of the kernel at `location` whose link-time symbols are
    /// `s` (an end outside the image mapping gives an empty range).
    pub fn of(location: &super::kaslr::KernelLocation, s: &crate::profile::KernelSymbols) -> Self {
        let runtime =
            |from: u64, to: u64| match (location.runtime_of(from), location.runtime_of(to)) {
                (Some(from), Some(to)) => from.value()..to.value(),
                _ => 0..0,
            };
        ImageRanges {
            read_only: [
                runtime(s.text, s.etext),
                runtime(s.start_rodata, s.end_rodata),
                runtime(s.start_ro_after_init, s.end_ro_after_init),
            ],
            whole: runtime(s.text, s.end),
        }
    }

    fn read_only(&self, value: u64) -> bool {
        self.read_only.iter().any(|r| r.contains(&value))
    }

    /// Whether `value` is in the kernel's text (`_text.._etext`).
    fn text(&self, value: u64) -> bool {
        self.read_only[0].contains(&value)
    }
}

/// The entries of a table that are hooks. An entry passes if it is NULL,
/// points into the image's text or read-only data, or holds what it held
/// at start-up (`baseline`, same length) where that may stand: any value
/// for a structure's field (sizes and flags too), a pointer into the image
/// for an array's entry. A structure forged in the image's own writable
/// data (`.data`, `.bss`) and put in a table is thus a hook, as is any
/// pointer out of the image. A structure's words listed in `functions`
/// (function pointers of a structure built into the image) pass only if
/// NULL or into the image's text, whatever they held at start-up.
/// Returns `(index, value)`.
pub fn hooked_entries(
    now: &[u64],
    baseline: &[u64],
    ranges: &ImageRanges,
    structure: bool,
    functions: &[u32],
) -> Vec<(usize, u64)> {
    now.iter()
        .enumerate()
        .filter(|&(i, &v)| {
            if structure && u32::try_from(i).is_ok_and(|i| functions.binary_search(&i).is_ok()) {
                return v != 0 && !ranges.text(v);
            }
            let kept = baseline.get(i) == Some(&v) && (structure || ranges.whole.contains(&v));
            v != 0 && !ranges.read_only(v) && !kept
        })
        .map(|(i, &v)| (i, v))
        .collect()
}

/// The functions hooked at one netfilter hook point: `entries` is the
/// `struct nf_hook_entries *` the family's array holds there (NULL: none).
/// The count is bounded by [`MAX_NF_HOOKS`] and by `max` (what a caller's
/// round has left: forged namespaces and devices could make every point
/// hold a thousand); a pointer that does not read is an error.
pub fn nf_hook_functions<V: VirtualMemory + ?Sized>(
    mem: &V,
    entries: u64,
    r: &CrossViewReference,
    max: usize,
) -> Result<Vec<u64>, CrossViewError> {
    if entries == 0 {
        return Ok(Vec::new());
    }
    let at = GuestVirtAddr::new(entries)
        .map_err(|e| CrossViewError::Struct(StructError::Walk(e.into())))?;
    let mut count = [0u8; 2];
    super::structs::read_bytes(mem, at, 0, &mut count)?;
    let count = usize::from(u16::from_le_bytes(count));
    if count > MAX_NF_HOOKS.min(max) {
        return Err(CrossViewError::TooMany);
    }
    let mut hooks = Vec::with_capacity(count);
    for i in 0..count as u64 {
        let offset = i
            .checked_mul(r.nf_entry_size)
            .and_then(|o| o.checked_add(r.nf_entries_hooks))
            .ok_or(CrossViewError::TooMany)?;
        hooks.push(super::structs::read_u64(mem, at, offset)?);
    }
    Ok(hooks)
}

/// Most network namespaces [`net_namespaces`] walks: one per container on
/// a node, with room; more is an error, not a cut.
pub const MAX_NET_NAMESPACES: usize = 1024;

/// The network namespaces on `net_namespace_list` (`head`, its runtime
/// address), `init_net` first as the kernel keeps it: each `struct net`'s
/// address and its `ns.inum`. Those read before the list breaks or runs past
/// [`MAX_NET_NAMESPACES`] come with the error: the kernel adds and removes
/// namespaces under RCU, so one read can meet a freed node.
#[inline(never)]
pub fn net_namespaces<V: VirtualMemory + ?Sized>(
    mem: &V,
    head: GuestVirtAddr,
    r: &CrossViewReference,
) -> (Vec<(u64, u32)>, Result<(), CrossViewError>) {
    let mut out = Vec::new();
    for node in walk_list(mem, head, ListOptions::new(MAX_NET_NAMESPACES)) {
        let read = node.map_err(CrossViewError::from).and_then(|node| {
            let net = container_of(node, r.net_list)?;
            Ok((net.value(), super::structs::read_u32(mem, net, r.net_inum)?))
        });
        match read {
            Ok(net) => out.push(net),
            Err(e) => return (out, Err(e)),
        }
    }
    (out, Ok(()))
}

/// Most devices [`class_net_namespaces`] reads.
pub const MAX_CLASS_DEVICES: usize = 8192;

/// The network namespaces of the devices the device model's `net` class
/// lists (`class_dev_iter` over `klist_devices`: what `/sys/class/net`
/// holds across namespaces), ascending, each once. Every namespace has a
/// device there, its own loopback, registered when the namespace is made
/// and unregistered only when it is torn down: a namespace unlinked from
/// `net_namespace_list` that no task is in (held by a socket or a
/// rootkit's reference) still has its loopback here. `net_class` and
/// `class_kset` are runtime addresses (`class_kset` `None` on kernels
/// whose class holds its `subsys_private`, `class.p`). A device without
/// a namespace is left out; a list that breaks or runs past
/// [`MAX_CLASS_DEVICES`] is an error.
#[inline(never)]
pub fn class_net_namespaces<V: VirtualMemory + ?Sized>(
    mem: &V,
    net_class: GuestVirtAddr,
    class_kset: Option<GuestVirtAddr>,
    r: &CrossViewReference,
) -> Result<Vec<u64>, CrossViewError> {
    let subsys = match class_kset {
        None => read_pointer(mem, net_class, r.class_subsys)?,
        Some(at) => {
            let kset = read_pointer(mem, at, 0)?.ok_or(StructError::Null { what: "class_kset" })?;
            let mut found = None;
            for node in walk_list(
                mem,
                field(kset, r.kset_list)?,
                ListOptions::new(MAX_KOBJECTS),
            ) {
                let kobj = container_of(node?, r.kobject_entry)?;
                let subsys = container_of(kobj, r.subsys_private_kobj)?;
                if read_pointer(mem, subsys, r.subsys_private_class)? == Some(net_class) {
                    found = Some(subsys);
                    break;
                }
            }
            found
        }
    };
    let subsys = subsys.ok_or(StructError::Null { what: "net class" })?;
    let mut out = Vec::new();
    let devices = field(subsys, r.subsys_private_devices)?;
    for node in walk_list(mem, devices, ListOptions::new(MAX_CLASS_DEVICES)) {
        let private = container_of(node?, r.device_private_knode_class)?;
        let Some(device) = read_pointer(mem, private, r.device_private_device)? else {
            continue;
        };
        let netdev = container_of(device, r.netdev_dev)?;
        if let Some(net) = read_pointer(mem, netdev, r.netdev_nd_net)? {
            out.push(net.value());
        }
    }
    crate::sort::heapsort(&mut out);
    out.dedup();
    Ok(out)
}

/// The network namespaces `tasks` are in (`task_struct.nsproxy->net_ns`),
/// ascending, each once: every one must be on `net_namespace_list`, from
/// which a namespace is unlinked only once no task is in it (a task's
/// `nsproxy` holds a reference). A task without an `nsproxy` (exiting) or
/// whose pointers do not read is left out.
pub fn task_net_namespaces<V: VirtualMemory + ?Sized>(
    mem: &V,
    tasks: &[Task],
    r: &CrossViewReference,
) -> Vec<u64> {
    let mut out: Vec<u64> = tasks
        .iter()
        .filter_map(|t| {
            let nsproxy = read_pointer(mem, t.address, r.task_nsproxy).ok()??;
            read_pointer(mem, nsproxy, r.nsproxy_net_ns).ok()?
        })
        .map(GuestVirtAddr::value)
        .collect();
    crate::sort::heapsort(&mut out);
    out.dedup();
    out
}

/// Most threads [`threads`] reads besides the group leaders.
pub const MAX_THREADS: usize = MAX_TASKS;

/// What [`threads`] read of the thread groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupThreads {
    /// Every thread but the leaders.
    pub threads: Vec<Task>,
    /// Each group whose thread list holds another number of threads (its
    /// leader included) than the kernel's count, `signal->nr_threads`:
    /// (leader, on the list, counted). A thread unlinked from the list to
    /// hide its cred and namespace leaves the count as it was.
    pub miscounted: Vec<(GuestVirtAddr, u32, u32)>,
}

/// Every thread of the thread groups `leaders` lead, other than the
/// leaders themselves (the task list holds only leaders): each leader's
/// `signal->thread_head`, linked through `task_struct.thread_node`, walked
/// cycle-safe, at most [`MAX_THREADS`] threads over all groups (more is an
/// error, not a cut), and each list's length against `signal->nr_threads`.
/// A thread keeps credentials and namespaces of its own, so a rootkit that
/// gives a thread root, or moves one into a namespace it hides, is judged
/// there. Those read before a list breaks come with the error: the kernel
/// unlinks an exiting thread under RCU, so one read can meet a freed node
/// (and a count and a list read apart can differ for a moment).
pub fn threads<V: VirtualMemory + ?Sized>(
    mem: &V,
    leaders: &[Task],
    r: &CrossViewReference,
    task: &super::tasks::TaskOffsets,
    cred: &super::tasks::CredOffsets,
) -> (GroupThreads, Result<(), CrossViewError>) {
    let mut out = GroupThreads::default();
    for leader in leaders {
        let signal = read_pointer(mem, leader.address, r.task_signal).and_then(|signal| {
            signal.ok_or(StructError::Null {
                what: "task_struct.signal",
            })
        });
        let group = signal.and_then(|signal| {
            Ok((
                field(signal, r.signal_thread_head)?,
                super::structs::read_u32(mem, signal, r.signal_nr_threads)?,
            ))
        });
        let (head, counted) = match group {
            Ok(group) => group,
            Err(e) => return (out, Err(e.into())),
        };
        // The leader's own node is on the list too.
        let room = MAX_THREADS - out.threads.len() + 1;
        let mut listed = 0u32;
        for node in walk_list(mem, head, ListOptions::new(room)) {
            let read = node.map_err(CrossViewError::from).and_then(|node| {
                let at = container_of(node, r.task_thread_node)?;
                if at == leader.address {
                    return Ok(None);
                }
                Ok(Some(super::tasks::read_task(mem, at, task, cred)?))
            });
            match read {
                Ok(Some(thread)) => out.threads.push(thread),
                Ok(None) => {}
                Err(e) => return (out, Err(e)),
            }
            listed += 1;
        }
        if listed != counted {
            out.miscounted.push((leader.address, listed, counted));
        }
    }
    (out, Ok(()))
}

/// Slots of an XArray node (`XA_CHUNK_SIZE`: the profile builder checks
/// the kernel's is this).
pub const XA_SLOTS: usize = 64;
/// Bits of the index each level of an XArray takes.
const XA_CHUNK_SHIFT: u8 = 6;
/// Highest `shift` of an XArray root node [`pid_table_tasks`] accepts: 30
/// bits of index below it, where `pid_max` is at most 2^22.
const MAX_XA_ROOT_SHIFT: u8 = 24;
/// Most XArray nodes [`pid_table_tasks`] reads (PIDs scattered one to a
/// node would fill 8192 with as many tasks; a live Mon-VM uses a handful).
pub const MAX_PID_NODES: usize = 8192;
/// Most tasks [`pid_table_tasks`] returns: the task list's and the thread
/// lists' bounds together.
pub const MAX_PID_TASKS: usize = MAX_TASKS + MAX_THREADS;

/// What an XArray slot holds (`include/linux/xarray.h`): a pointer to a
/// node is an internal entry (low bits `10`) above 4096; other internal
/// entries (sibling, retry, zero) and value entries (low bit set) are no
/// `struct pid`.
enum XaSlot {
    Empty,
    Node(u64),
    Entry(u64),
    Other,
}

fn xa_slot(raw: u64) -> XaSlot {
    match raw {
        0 => XaSlot::Empty,
        _ if raw & 3 == 2 && raw > 4096 => XaSlot::Node(raw - 2),
        _ if raw & 3 != 0 => XaSlot::Other,
        _ => XaSlot::Entry(raw),
    }
}

/// Every task that holds a PID in the kernel's PID table: the IDR of
/// `init_pid_ns` (`xa_head` is the runtime address of its root pointer),
/// which `alloc_pid` fills for every thread of every namespace (a task in
/// a child PID namespace has a number here too) and `find_vpid`, `kill`
/// and `/proc` look up, each `struct pid`'s `PIDTYPE_PID` task (a PID
/// still held as a group or session id after its task ended has none).
/// A thread unlinked from its group's list and taken off the group's count
/// is still here, or it has no PID. The tree is read depth-first in index
/// order, each node's `shift` exactly its parent's less 6 (so no node is
/// its own ancestor), at most [`MAX_PID_NODES`] nodes and
/// [`MAX_PID_TASKS`] tasks; more is an error, not a cut. Those read before
/// an error come with it: the kernel frees nodes and PIDs under RCU, so
/// one read can meet a freed one.
pub fn pid_table_tasks<V: VirtualMemory + ?Sized>(
    mem: &V,
    xa_head: GuestVirtAddr,
    r: &CrossViewReference,
) -> (Vec<GuestVirtAddr>, Result<(), CrossViewError>) {
    let mut out = Vec::new();
    let walked = pid_table_walk(mem, xa_head, r, &mut out);
    (out, walked)
}

fn pid_table_walk<V: VirtualMemory + ?Sized>(
    mem: &V,
    xa_head: GuestVirtAddr,
    r: &CrossViewReference,
    out: &mut Vec<GuestVirtAddr>,
) -> Result<(), CrossViewError> {
    let root = super::structs::read_u64(mem, xa_head, 0)?;
    // Slots still to read, each with its parent node's shift (`None`: the
    // root). A node adds at most 64, and the depth is at most 5.
    let mut pending: Vec<(u64, Option<u8>)> = alloc::vec![(root, None)];
    let mut nodes = 0usize;
    let mut slots = [0u8; 8 * XA_SLOTS];
    while let Some((raw, parent)) = pending.pop() {
        match xa_slot(raw) {
            XaSlot::Empty | XaSlot::Other => {}
            XaSlot::Node(at) => {
                nodes += 1;
                if nodes > MAX_PID_NODES {
                    return Err(CrossViewError::TooMany);
                }
                let node = super::structs::pointer(at)?;
                let shift = super::structs::read_u8(mem, node, r.xa_node_shift)?;
                let expected = match parent {
                    None => shift.is_multiple_of(XA_CHUNK_SHIFT) && shift <= MAX_XA_ROOT_SHIFT,
                    Some(p) => p.checked_sub(XA_CHUNK_SHIFT) == Some(shift),
                };
                if !expected {
                    return Err(CrossViewError::List);
                }
                super::structs::read_bytes(mem, node, r.xa_node_slots, &mut slots)?;
                // Pushed last slot first: popped in index order.
                for word in slots.as_chunks::<8>().0.iter().rev() {
                    pending.push((u64::from_le_bytes(*word), Some(shift)));
                }
            }
            XaSlot::Entry(pid) => {
                let pid = super::structs::pointer(pid)?;
                // The first task on the PID's PIDTYPE_PID list (there is
                // at most one).
                let Some(link) = read_pointer(mem, pid, r.pid_tasks)? else {
                    continue;
                };
                if out.len() == MAX_PID_TASKS {
                    return Err(CrossViewError::TooMany);
                }
                out.push(container_of(link, r.task_pid_links)?);
            }
        }
    }
    Ok(())
}

/// Most CPUs [`running_tasks`] reads (`nr_cpu_ids` above it is an error).
pub const MAX_CPUS: u32 = 1024;

/// The tasks on the CPUs, from every possible CPU's run queue
/// (`per_cpu(runqueues, cpu)`): the task each runs now (`rq->curr`), but
/// for its idle task (PID 0, on no list) and a CPU not brought up (no
/// task), and each one's idle task (`rq->idle`); see [`CpuTasks`]. A task
/// that runs is on a CPU whatever lists a rootkit took it off, so one seen
/// there that no list holds is hidden. `per_cpu_offset` and `nr_cpu_ids`
/// are the runtime addresses of `__per_cpu_offset` and `nr_cpu_ids`.
pub fn running_tasks<V: VirtualMemory + ?Sized>(
    mem: &V,
    per_cpu_offset: GuestVirtAddr,
    nr_cpu_ids: GuestVirtAddr,
    r: &CrossViewReference,
) -> Result<CpuTasks, CrossViewError> {
    let mut out = CpuTasks::default();
    for offset in per_cpu_offsets(mem, per_cpu_offset, nr_cpu_ids)? {
        let rq = super::structs::pointer(r.runqueues.wrapping_add(offset?))?;
        let curr = read_pointer(mem, rq, r.rq_curr)?;
        let idle = read_pointer(mem, rq, r.rq_idle)?;
        if curr != idle {
            out.running.extend(curr);
        }
        out.idle.extend(idle);
    }
    Ok(out)
}

/// The tasks on the CPUs ([`running_tasks`]), each list in ascending CPU
/// order, a CPU without one left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuTasks {
    /// Each CPU's current task, unless it is the CPU's idle task.
    pub running: Vec<GuestVirtAddr>,
    /// Each CPU's idle task (`rq.idle`): forked at boot for every CPU but
    /// the first (whose idle task is `init_task`), on no list, but counted
    /// for root like every task ([`process_counts`]).
    pub idle: Vec<GuestVirtAddr>,
}

/// Each CPU's offset to its per-CPU area (`__per_cpu_offset[cpu]` for
/// every CPU below `nr_cpu_ids`, the runtime addresses of both): at most
/// [`MAX_CPUS`], none or more is an error.
fn per_cpu_offsets<V: VirtualMemory + ?Sized>(
    mem: &V,
    per_cpu_offset: GuestVirtAddr,
    nr_cpu_ids: GuestVirtAddr,
) -> Result<impl Iterator<Item = Result<u64, StructError>> + '_, CrossViewError> {
    let cpus = super::structs::read_u32(mem, nr_cpu_ids, 0)?;
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(CrossViewError::TooMany);
    }
    Ok((0..u64::from(cpus)).map(move |cpu| super::structs::read_u64(mem, per_cpu_offset, 8 * cpu)))
}

/// Buckets of the kernel's `css_set_table` (`CSS_SET_HASH_BITS` 7: the
/// profile builder checks the table's size).
pub const CSS_SET_BUCKETS: u64 = 128;
/// Most css_sets [`cgroup_tasks`] reads (one per combination of cgroups
/// tasks are in: a handful without containers, one or a few per container
/// with them).
pub const MAX_CSS_SETS: usize = 4096;

/// Every task on a css_set's task lists: the hash table `css_set_table`
/// (`table`, its runtime address) holds every css_set, and each css_set
/// lists its tasks through `task_struct.cg_list` on `tasks`, `mg_tasks`
/// (being moved to another cgroup) or `dying_tasks` (exited, not yet
/// released). `cgroup_post_fork` adds a task after it is on the task list
/// and `cgroup_release` takes it off before it leaves the task list, so a
/// task found here that no list holds was taken off the lists, not
/// caught in between (or, read apart, forked or released meanwhile: a
/// caller asks for two rounds). A process a rootkit took off the task
/// list, its parent's children and the PID table is still here while it
/// sleeps, where the run queues do not see it. Each bucket's chain ends
/// at NULL; at most [`MAX_CSS_SETS`] css_sets and [`MAX_PID_TASKS`] tasks
/// (so a cycle ends too), more is an error, not a cut. Those read before
/// an error come with it: css_sets are freed under RCU.
pub fn cgroup_tasks<V: VirtualMemory + ?Sized>(
    mem: &V,
    table: GuestVirtAddr,
    r: &CrossViewReference,
) -> (Vec<GuestVirtAddr>, Result<(), CrossViewError>) {
    let mut out = Vec::new();
    let walked = cgroup_walk(mem, table, r, &mut out);
    (out, walked)
}

fn cgroup_walk<V: VirtualMemory + ?Sized>(
    mem: &V,
    table: GuestVirtAddr,
    r: &CrossViewReference,
    out: &mut Vec<GuestVirtAddr>,
) -> Result<(), CrossViewError> {
    let mut sets = 0usize;
    for bucket in 0..CSS_SET_BUCKETS {
        // `hlist_head.first`, then each `hlist_node.next` (both at 0).
        let mut node = read_pointer(mem, table, 8 * bucket)?;
        while let Some(at) = node {
            sets += 1;
            if sets > MAX_CSS_SETS {
                return Err(CrossViewError::TooMany);
            }
            let set = container_of(at, r.css_set_hlist)?;
            for list in [r.css_set_tasks, r.css_set_mg_tasks, r.css_set_dying_tasks] {
                let room = MAX_PID_TASKS - out.len();
                for link in walk_list(mem, field(set, list)?, ListOptions::new(room)) {
                    out.push(container_of(link?, r.task_cg_list)?);
                }
            }
            node = read_pointer(mem, at, 0)?;
        }
    }
    Ok(())
}

/// Most tasks [`RunningSightings`] remembers (the one seen longest ago
/// makes room).
pub const MAX_RUNNING_SIGHTINGS: usize = 64;

/// Rounds a task seen running off every list is remembered and, once seen
/// in two rounds, reported after it was last seen (8 s at the default
/// 500 ms): a hidden task that sleeps most of the time is still met twice,
/// and one that ended is forgotten.
pub const RUNNING_ROUNDS: u32 = 16;

/// Tasks seen as a CPU's current task ([`running_tasks`]) while on no list
/// and not in the PID table, across rounds ([`Self::round`]). Seen once,
/// such a task may be a thread running its last instructions after its
/// exit unlinked it (gone by the next round); a task seen in two rounds
/// within [`RUNNING_ROUNDS`] of each other runs hidden. A task that a list
/// holds again is forgotten (its memory may be a new task's).
#[derive(Clone, Debug, Default)]
pub struct RunningSightings {
    /// (task, the round last seen, seen in two rounds or more).
    seen: Vec<(u64, u32, bool)>,
    round: u32,
}

impl RunningSightings {
    /// One round: `off_lists` are this round's current tasks that no list
    /// and not the PID table hold; `listed` says whether a list holds a
    /// task now.
    pub fn round(&mut self, off_lists: &[u64], listed: impl Fn(u64) -> bool) {
        self.round = self.round.wrapping_add(1);
        let round = self.round;
        for &t in off_lists {
            if let Some(s) = self.seen.iter_mut().find(|s| s.0 == t) {
                *s = (t, round, s.2 || s.1 != round);
                continue;
            }
            if self.seen.len() == MAX_RUNNING_SIGHTINGS
                && let Some(oldest) =
                    (0..self.seen.len()).max_by_key(|&i| round.wrapping_sub(self.seen[i].1))
            {
                self.seen.swap_remove(oldest);
            }
            self.seen.push((t, round, false));
        }
        self.seen
            .retain(|s| !listed(s.0) && round.wrapping_sub(s.1) <= RUNNING_ROUNDS);
    }

    /// The tasks seen hidden in two rounds (as of the last round),
    /// ascending.
    pub fn hidden(&self) -> Vec<u64> {
        let mut hidden: Vec<u64> = self.seen.iter().filter(|s| s.2).map(|s| s.0).collect();
        crate::sort::heapsort(&mut hidden);
        hidden
    }
}

/// Most network devices [`net_devices`] walks in one call (a caller
/// walking several namespaces passes what its round has left).
pub const MAX_NET_DEVICES: usize = 4096;

/// A network namespace's devices (`net.dev_base_head`; `net` is the
/// `struct net`): each `struct net_device`'s address and name, at most
/// `max` (and [`MAX_NET_DEVICES`]). Those read before the list breaks or
/// runs past the bound come with the error.
pub fn net_devices<V: VirtualMemory + ?Sized>(
    mem: &V,
    net: GuestVirtAddr,
    r: &CrossViewReference,
    max: usize,
) -> (
    Vec<(GuestVirtAddr, FixedStr<16>)>,
    Result<(), CrossViewError>,
) {
    let mut out = Vec::new();
    let head = match field(net, r.net_dev_base_head) {
        Ok(head) => head,
        Err(e) => return (out, Err(e.into())),
    };
    for node in walk_list(mem, head, ListOptions::new(max.min(MAX_NET_DEVICES))) {
        let read = node.map_err(CrossViewError::from).and_then(|node| {
            let dev = container_of(node, r.netdev_dev_list)?;
            Ok((
                dev,
                super::structs::read_char_array(mem, dev, r.netdev_name)?,
            ))
        });
        match read {
            Ok(dev) => out.push(dev),
            Err(e) => return (out, Err(e)),
        }
    }
    (out, Ok(()))
}

/// The hook functions (`(index, address)`) that are neither in the kernel's
/// text nor in the core text of a module on the module list (`modules`:
/// each module's text start and length): a module that hid itself, freed
/// memory, the heap, data.
pub fn foreign_functions(
    functions: &[u64],
    ranges: &ImageRanges,
    modules: &[(u64, u64)],
) -> Vec<(usize, u64)> {
    functions
        .iter()
        .enumerate()
        .filter(|&(_, &f)| {
            !ranges.text(f)
                && !modules
                    .iter()
                    .any(|&(base, len)| f >= base && f - base < len)
        })
        .map(|(i, &f)| (i, f))
        .collect()
}

/// The entries of an array at start-up (`baseline`) that point into the
/// image's writable data, `(index, value)`: structures the kernel did not
/// make `const` (`n_tty_ops`, 6.12's `tcp_protocol`), which the text and
/// rodata sweep does not cover, so a rootkit can replace their functions
/// without the entry changing. Each is checked field by field as a
/// structure table is ([`hooked_entries`] with its own start-up words).
pub fn writable_pointees(baseline: &[u64], ranges: &ImageRanges) -> Vec<(usize, u64)> {
    baseline
        .iter()
        .enumerate()
        .filter(|&(_, &v)| ranges.whole.contains(&v) && !ranges.read_only(v))
        .map(|(i, &v)| (i, v))
        .collect()
}

mod accounting;
pub use accounting::{
    MAX_UCOUNTS, MAX_USER_NS_DEPTH, PROCESS_COUNT_ROUNDS, ProcessCount, ProcessCountTracker,
    process_counts,
};
mod stacks;
pub use stacks::{
    CACHED_STACKS, MAX_OWNER_CANDIDATES, MAX_STACK_PAGES, MAX_STACK_TABLES, MAX_VMAP_AREAS,
    MAX_VMAP_NODES, STACK_END_MAGIC, STACK_SIZE, VmapArea, busy_vmap_areas, cpu_stacks,
    mapped_stacks, orphan_stacks, stack_owner, task_stacks,
};

#[cfg(test)]
mod tests;
