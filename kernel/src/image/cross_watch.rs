//! The cross-views of [`vmi::linux::crossview`] on the live Mon-VM, run
//! with the IMA round (every 500 ms): modules hidden from the module list,
//! processes hidden from the task list, credentials a rootkit handed out,
//! hooks in function-pointer tables, and processes whose top-level page
//! table does not share the kernel's mappings ([`vmi::linux::top_tables`]).
//! A module or process is reported hidden only when two rounds in a row
//! see it so (a module being unloaded or a task exiting can be between the
//! two views for a moment). `monvm` turns the verdicts into events.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use avm_attest::monitor_policy::MonitorPolicy;
use vmi::linux::KernelView;
use vmi::linux::crossview::{
    self, ImageRanges, TaskPose, hidden_modules, hidden_tasks, hooked_entries, kset_modules,
    process_tree,
};
use vmi::linux::structs::heapless_str::FixedStr;
use vmi::linux::top_tables::{KernelHalf, SharedEntries, TableOffsets, check_task_table};
use vmi::memory::GuestMemory;
use vmi::profile::KernelProfile;

use crate::monvm::text;

/// The areas reported, in the order of [`CrossWatch::check`]'s result.
pub const AREAS: [&str; 5] = [
    "hidden_module",
    "hidden_process",
    "creds",
    "pointer_table",
    "page_tables",
];

/// Most `page_tables` findings per round (a rootkit that rewrote every
/// table is named by its first ones).
const MAX_TABLE_FINDINGS: usize = 64;

/// Rounds in a row a view may fail before its area reports it: a list
/// torn by a task exiting under the walk is whole again in the next
/// round, but a rootkit can break a link the kernel never follows (a
/// back link, a child list) to freeze the verdict; at the default 500 ms
/// this reports it within about 4 s.
pub const UNWALKED_ROUNDS: u32 = 8;
/// Stacks of no task whose task is searched for, for its PID and name, in
/// a round (see [`crossview::stack_owner`]); the others are reported by
/// address alone.
const NAMED_STACKS: usize = 16;

/// Counts the rounds in a row a view failed; `Some(text)` once it failed
/// [`UNWALKED_ROUNDS`] in a row (the area then reports `unwalkable:WHAT`).
#[derive(Default)]
pub struct Unwalked(u32);

impl Unwalked {
    pub fn round(&mut self, walked: bool, what: &str) -> Option<String> {
        if walked {
            self.0 = 0;
            return None;
        }
        self.0 = self.0.saturating_add(1);
        (self.0 >= UNWALKED_ROUNDS).then(|| text(format_args!("unwalkable:{what}")))
    }
}

/// A structure an array's start-up entry points at in the image's
/// writable data: the entry's index, the structure's address, its name in
/// findings (`tty_ldiscs[0]->`) and its words when first read.
type Pointee = (usize, u64, String, Option<Vec<u64>>);

/// A netfilter hook whose function is foreign: its network namespace
/// (`struct net`, 0 for `init_net`) and that namespace's inode number,
/// where it is registered, the hook's index there and its function.
type ForeignHook = (u64, u32, HookPlace, usize, u64);

/// Where a netfilter hook is registered: at a hook point of a family's
/// array (the pointer table's index, the point), or among a device's
/// ingress or egress hooks (the `struct net_device`, its name, egress).
/// `Unlisted` is no hook: its namespace, which a task is in, is not on
/// `net_namespace_list` (a rootkit unlinked it to hide its hooks).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum HookPlace {
    Unlisted,
    Point(usize, usize),
    Device(u64, FixedStr<16>, bool),
}

/// Most netfilter hooks one round reads, over every namespace and device
/// (forged ones could otherwise hold a thousand at each of thousands of
/// points); a point past it shows as unreadable.
const MAX_ROUND_HOOKS: usize = 65_536;

/// State kept between rounds.
#[derive(Default)]
pub struct CrossWatch {
    /// Candidates seen hidden in the last round.
    modules_before: BTreeSet<u64>,
    tasks_before: BTreeSet<u64>,
    /// The last verdicts (kept when a view cannot be taken this round).
    last: [Vec<String>; 5],
    /// Each user process's euid across rounds.
    creds: crossview::CredTracker,
    /// The kernel's per-user task counts that differ from the tasks found.
    counts: crossview::ProcessCountTracker,
    /// Each table's entries at start-up: a structure's fields may keep
    /// any of them, an array's entries those into the kernel image.
    baselines: Vec<Option<Vec<u64>>>,
    /// Each array's start-up entries into the image's writable data.
    pointees: Vec<Vec<Pointee>>,
    /// The listed modules' core text (start, length), as last walked.
    module_texts: Vec<(u64, u64)>,
    /// Netfilter hooks found foreign in the last round: one is reported
    /// once seen two rounds running (a hook point's entries are replaced
    /// under RCU as hooks come and go, and a read can meet the old, freed
    /// ones).
    netfilter_before: Vec<ForeignHook>,
    /// Whether this round's walk of the network namespaces reached its end.
    namespaces_walked: bool,
    /// Tasks in the PID table but on no task or thread list, as last
    /// found (kept for a round whose PID table does not walk), ascending.
    pid_only: Vec<u64>,
    /// Tasks on a cgroup's task lists but on no task or thread list, as
    /// `pid_only`.
    cgroup_only: Vec<u64>,
    /// Tasks seen running on a CPU while on no list and not in the PID
    /// table.
    running: crossview::RunningSightings,
    /// Live kernel stacks of no task any view found, as last found (one
    /// is reported once seen two rounds running: a task being forked has
    /// its stack before it is listed), and those reported (kept for a
    /// round whose stacks do not walk).
    stacks_before: Vec<u64>,
    stacks_reported: Vec<u64>,
    /// Of the last found, those the page tables map without a busy area.
    stacks_off_busy: Vec<u64>,
    /// Rounds the module view, the process view, the task list, the
    /// top-level tables, the network namespaces, the PID table, the run
    /// queues, the cgroups, the kernel stacks and the per-user task counts
    /// failed.
    unwalked: [Unwalked; 10],
    /// `init_top_pgt`'s shared slots at start-up, and where the tables are.
    top_tables: Option<(SharedEntries, TableOffsets)>,
}

/// Keeps in `kept` (ascending) the tasks of a view (a walk of the PID
/// table or the cgroups) that no list in `listed` holds: this round's, if
/// the view walked to its end, else the last round's still off the lists.
fn unlisted(
    view: Option<(
        Vec<vmi::GuestVirtAddr>,
        Result<(), crossview::CrossViewError>,
    )>,
    kept: &mut Vec<u64>,
    listed: &BTreeSet<u64>,
) {
    if let Some((found, Ok(()))) = view {
        *kept = found.iter().map(|t| t.value()).collect();
        vmi::sort::heapsort(kept);
        kept.dedup();
    }
    kept.retain(|t| !listed.contains(t));
}

impl CrossWatch {
    /// One round of every cross-view. `lists` are the task list and the
    /// module list as walked this round (`None` if either did not walk to
    /// its end: the verdicts that need them stand). `policy` names the
    /// set-uid programs that may run as root under a user.
    pub fn check<M: GuestMemory + ?Sized>(
        &mut self,
        view: &KernelView<'_, M>,
        profile: &KernelProfile,
        lists: Option<(&[vmi::linux::Task], &[vmi::linux::Module])>,
        policy: &MonitorPolicy,
    ) -> [Vec<String>; 5] {
        let Some(r) = profile.cross_view.as_ref() else {
            return Default::default();
        };
        let space = &view.space;
        let location = &view.location;
        let mut out = self.last.clone();

        // Modules: sysfs against the list.
        let listed_modules: Option<Vec<_>> =
            lists.map(|(_, modules)| modules.iter().map(|m| m.address).collect());
        let in_sysfs = location
            .runtime_of(r.module_kset)
            .and_then(|kset| kset_modules(space, kset, r).ok());
        let modules_walked = listed_modules.is_some() && in_sysfs.is_some();
        if let Some(t) = self.unwalked[0].round(modules_walked, "module-list-or-kset") {
            out[0] = alloc::vec![t];
        }
        if let (Some(listed), Some(in_sysfs)) = (listed_modules, in_sysfs) {
            let now = crossview::address_set(hidden_modules(&in_sysfs, &listed));
            out[0] = now
                .intersection(&self.modules_before)
                .map(|&m| {
                    let name = read_module_name(view, profile, m);
                    text(format_args!("module:{}@{:#x}", name, m))
                })
                .collect();
            self.modules_before = now;
        }

        // Processes: the process tree against the task list; credentials.
        let tasks = lists.map(|(tasks, _)| tasks);
        // Credentials and namespaces are each thread's own: the leaders and
        // every other thread of their groups (`None`, as a task list that
        // did not walk, if a thread list did not).
        let groups = tasks.and_then(|tasks| {
            let offsets = &profile.offsets;
            let (groups, walked) =
                crossview::threads(space, tasks, r, &offsets.task, &offsets.cred);
            walked.ok().map(|()| groups)
        });
        let everyone: Option<Vec<vmi::linux::Task>> = tasks
            .zip(groups.as_ref())
            .map(|(tasks, groups)| [tasks, &groups.threads].concat());
        let everyone = everyone.as_deref();
        // Groups whose thread list is short of the kernel's count.
        let miscounted = groups.as_ref().map_or(&[][..], |g| &g.miscounted[..]);
        // Each CPU's current task, read before the PID table: a task
        // forked after the lists were read is in the table by then.
        let on_cpus = location
            .runtime_of(r.per_cpu_offset)
            .zip(location.runtime_of(r.nr_cpu_ids))
            .and_then(|(offsets, cpus)| crossview::running_tasks(space, offsets, cpus, r).ok());
        let running = on_cpus.as_ref().map(|c| c.running.as_slice());
        let running_unwalked = self.unwalked[6].round(running.is_some(), "run-queues");
        // Tasks with a PID that no task or thread list holds: a thread
        // unlinked from its group's list and taken off its count. A round
        // whose PID table does not walk keeps those of the last that are
        // still off the lists.
        let pid_table = location
            .runtime_of(r.init_pid_ns)
            .and_then(|ns| ns.checked_add(r.pid_ns_xa_head))
            .map(|head| crossview::pid_table_tasks(space, head, r));
        let pid_walked = matches!(pid_table, Some((_, Ok(()))));
        let pid_unwalked = self.unwalked[5].round(pid_walked, "pid-table");
        // Tasks on a cgroup's lists that no list holds: a process taken off
        // every list but its cgroup's, asleep where no run queue shows it.
        let cgroups = location
            .runtime_of(r.css_set_table)
            .map(|table| crossview::cgroup_tasks(space, table, r));
        let cgroups_walked = matches!(cgroups, Some((_, Ok(()))));
        let cgroups_unwalked = self.unwalked[7].round(cgroups_walked, "cgroups");
        if let Some(everyone) = everyone {
            let listed = crossview::address_set(everyone.iter().map(|t| t.address));
            unlisted(pid_table, &mut self.pid_only, &listed);
            unlisted(cgroups, &mut self.cgroup_only, &listed);
            // Each CPU's current task that no list holds and the PID table
            // does not either (see `RunningSightings`).
            let off_lists =
                |t: &u64| !listed.contains(t) && self.pid_only.binary_search(t).is_err();
            let seen: Vec<u64> = running
                .into_iter()
                .flatten()
                .map(|t| t.value())
                .filter(off_lists)
                .collect();
            self.running.round(&seen, |t| listed.contains(&t));
        }
        // Live kernel stacks that no task any view found holds: a task off
        // every list, cgroup included, that sleeps.
        let orphans = everyone.and_then(|everyone| {
            let mut tasks: Vec<u64> = everyone.iter().map(|t| t.address.value()).collect();
            tasks.extend_from_slice(&self.pid_only);
            tasks.extend_from_slice(&self.cgroup_only);
            tasks.extend(running.into_iter().flatten().map(|t| t.value()));
            let mut known = crossview::task_stacks(space, &tasks, r);
            let cpus = location
                .runtime_of(r.per_cpu_offset)
                .zip(location.runtime_of(r.nr_cpu_ids))
                .and_then(|(offsets, cpus)| crossview::cpu_stacks(space, offsets, cpus, r).ok())?;
            known.extend(cpus);
            vmi::sort::heapsort(&mut known);
            let (areas, walked) =
                crossview::busy_vmap_areas(space, |link| location.runtime_of(link), r);
            walked.ok()?;
            let mut orphans = crossview::orphan_stacks(space, &areas, &known);
            // Stacks the page tables map that no busy area holds: a
            // rootkit took the area off the busy lists.
            let mapped = crossview::mapped_stacks(space, &known).ok()?;
            let off_busy: Vec<u64> = mapped
                .into_iter()
                .filter(|s| known.binary_search(s).is_err() && !areas.iter().any(|a| a.start == *s))
                .collect();
            // (Disjoint from the busy areas' orphans.)
            orphans.extend_from_slice(&off_busy);
            vmi::sort::heapsort(&mut orphans);
            Some((orphans, off_busy))
        });
        // (Without the task list, that is what is reported.)
        let stacks_unwalked =
            everyone.and_then(|_| self.unwalked[8].round(orphans.is_some(), "kernel-stacks"));
        let init_task = location.runtime_of(profile.symbols.init_task);
        let tree = init_task.and_then(|init| process_tree(space, init, r).ok());
        if let Some(t) = self.unwalked[1].round(
            tasks.is_some() && tree.is_some(),
            "task-list-or-process-tree",
        ) {
            out[1] = alloc::vec![t];
        }
        if let (Some(tasks), Some(tree), Some(init)) = (tasks, &tree, init_task) {
            // Hidden from the list, or taken off the tree: two rounds in a
            // row (the kernel moves tasks between lists under a lock the
            // A-VM does not take).
            let hidden = crossview::address_set(hidden_tasks(tree, tasks));
            let off_tree = crossview::address_set(crossview::tasks_off_the_tree(tree, tasks, init));
            let posing = crossview::posing_tasks(tasks);
            let read_task = |t: u64| {
                let addr = vmi::GuestVirtAddr::new(t).ok()?;
                let offsets = &profile.offsets;
                vmi::linux::tasks::read_task(space, addr, &offsets.task, &offsets.cred).ok()
            };
            // By address, for the texts (a rootkit can forge thousands).
            let pose_set = |pose: TaskPose| {
                crossview::address_set(posing.iter().filter(|(_, p)| *p == pose).map(|(t, _)| *t))
            };
            let kthreads = pose_set(TaskPose::KernelThreadOutsideKthreadd);
            let memoryless = pose_set(TaskPose::UserTaskWithoutMemory);
            let mut now = BTreeSet::new();
            for set in [&hidden, &off_tree, &kthreads, &memoryless] {
                now.extend(set.iter().copied());
            }
            now.extend(self.pid_only.iter().copied());
            now.extend(self.cgroup_only.iter().copied());
            now.extend(miscounted.iter().map(|m| m.0.value()));
            out[1] = now
                .intersection(&self.tasks_before)
                .map(|&t| {
                    // A hidden task that does not read is reported all
                    // the same, by its address.
                    let task = read_task(t);
                    let off = if miscounted.iter().any(|m| m.0.value() == t) {
                        ":thread list and count differ"
                    } else if kthreads.contains(&t) {
                        ":kernel thread not started by kthreadd"
                    } else if memoryless.contains(&t) {
                        ":user task without an address space"
                    } else if off_tree.contains(&t) {
                        ":off the process tree"
                    } else if hidden.contains(&t) {
                        ""
                    } else if self.pid_only.binary_search(&t).is_ok() {
                        ":only in the PID table"
                    } else {
                        ":only in a cgroup"
                    };
                    match task {
                        Some(task) => text(format_args!(
                            "process:{}:{}{}",
                            task.pid,
                            comm(task.comm.as_bytes()),
                            off
                        )),
                        None => text(format_args!("process:?:?@{:#x}", t)),
                    }
                })
                .collect();
            self.tasks_before = now;
            if let Some((now, off_busy)) = orphans {
                self.stacks_off_busy = off_busy;
                self.stacks_reported = now
                    .iter()
                    .copied()
                    .filter(|s| self.stacks_before.binary_search(s).is_ok())
                    .collect();
                self.stacks_before = now;
            }
            // Named by the task found on the stack, for the first few (a
            // rootkit could make thousands: each costs a search).
            for (i, &s) in self.stacks_reported.iter().enumerate() {
                let task = (i < NAMED_STACKS)
                    .then(|| crossview::stack_owner(space, s, r))
                    .flatten()
                    .and_then(|t| read_task(t.value()));
                let area = if self.stacks_off_busy.binary_search(&s).is_ok() {
                    " or busy area"
                } else {
                    ""
                };
                out[1].push(match task {
                    Some(task) => text(format_args!(
                        "process:{}:{}:kernel stack {:#x}, of no task{}",
                        task.pid,
                        comm(task.comm.as_bytes()),
                        s,
                        area
                    )),
                    None => text(format_args!(
                        "process:?:?:kernel stack {:#x}, of no task{}",
                        s, area
                    )),
                });
            }
            for t in self.running.hidden() {
                out[1].push(match read_task(t) {
                    Some(task) => text(format_args!(
                        "process:{}:{}:running on a CPU, on no list",
                        task.pid,
                        comm(task.comm.as_bytes())
                    )),
                    None => text(format_args!("process:?:?@{:#x}:running on a CPU", t)),
                });
            }
        }
        out[1].retain(|f| {
            !matches!(
                f.as_str(),
                "unwalkable:pid-table"
                    | "unwalkable:run-queues"
                    | "unwalkable:cgroups"
                    | "unwalkable:kernel-stacks"
            )
        });
        out[1].extend(pid_unwalked);
        out[1].extend(running_unwalked);
        out[1].extend(cgroups_unwalked);
        out[1].extend(stacks_unwalked);
        let init_cred = location.runtime_of(r.init_cred);
        if let Some(t) = self.unwalked[2].round(
            everyone.is_some() && init_cred.is_some(),
            "task-list-or-thread-lists",
        ) {
            out[2] = alloc::vec![t];
        }
        if let (Some(tasks), Some(init_cred)) = (everyone, init_cred) {
            let by_pid = crossview::TaskIndex::new(tasks, |t| u64::from(t.pid as u32));
            let comm_of = |pid: i32| {
                by_pid
                    .first(tasks, u64::from(pid as u32))
                    .map(|t| comm(t.comm.as_bytes()))
                    .unwrap_or_default()
            };
            // A set-uid program the policy names is root under its user's
            // shell by design; only its own exec may have made it so.
            let set_uid_program = |t: &vmi::linux::Task| {
                !policy.setuid.is_empty()
                    && crossview::setuid_exec(space, t, &profile.offsets.path, r, |path| {
                        policy.allows_setuid(path)
                    })
            };
            let mut findings = crossview::cred_findings(
                tasks,
                tree.as_deref().unwrap_or(&[]),
                init_cred.value(),
                set_uid_program,
                |t| crossview::account_uid(space, t, r),
                |t| crossview::exec_ids(space, t, &profile.offsets.path, r, &profile.offsets.cred),
            );
            findings.extend(self.creds.update(tasks));
            out[2] = findings
                .into_iter()
                .map(|f| {
                    let pid = f.pid();
                    text(format_args!("process:{}:{}:{}", pid, comm_of(pid), f))
                })
                .collect();
            // The kernel's count of each user's tasks against the tasks
            // found charged to each: every listed task and every CPU's idle
            // task (`init_task`, counted at boot by
            // `user_namespace_sysctl_init`, and its copies, forked at boot).
            // A task a rootkit took off the lists is one more counted than
            // found, besides its finding in `hidden_process`.
            let counts = on_cpus.as_ref().and_then(|on_cpus| {
                let init = init_task?;
                let mut creds = Vec::new();
                for t in tasks.iter().filter(|t| t.address != init) {
                    creds.push(t.real_cred?);
                }
                // `init_task` is CPU 0's idle task; the others are copies of
                // it (its ucounts).
                let init_cred = tasks.iter().find(|t| t.address == init)?.real_cred?;
                creds.extend(on_cpus.idle.iter().map(|_| init_cred));
                crossview::process_counts(space, &creds, r).ok()
            });
            let counts_unwalked = self.unwalked[9].round(counts.is_some(), "task-counts");
            if let Some(counts) = counts {
                let differing = self.counts.update(&counts);
                out[2].extend(differing.iter().map(|c| text(format_args!("account:{c}"))));
            }
            out[2].extend(counts_unwalked);
        }

        // Function-pointer tables: every entry NULL, into the image's text
        // or read-only data, or as it was at start-up, a structure's
        // function pointers into its text from the start (see
        // `hooked_entries`; without the profile's image in this mapping no
        // range holds, so every entry counts as a hook unless it was there
        // at start-up).
        let ranges = ImageRanges::of(location, &profile.symbols);
        let mut hooks = TableHooks {
            space,
            ranges: &ranges,
            found: Vec::new(),
        };
        // Netfilter hook points: every function a listed module's or the
        // kernel's (the modules as walked this round, else as last walked).
        if let Some((_, modules)) = lists {
            self.module_texts = modules
                .iter()
                .map(|m| (m.text_base, u64::from(m.text_size)))
                .collect();
        }
        let netfilter_now = self.foreign_hooks(space, location, r, &ranges, everyone);
        self.baselines.resize(r.pointer_tables.len(), None);
        self.pointees.resize(r.pointer_tables.len(), Vec::new());
        let tables = r.pointer_tables.iter().zip(&mut self.baselines);
        for ((table, baseline), pointees) in tables.zip(&mut self.pointees) {
            let Some(at) = location.runtime_of(table.address) else {
                continue;
            };
            if table.hook_points {
                continue;
            }
            let first = baseline.is_none();
            let (name, n, functions) = (&table.name, table.entries, &table.functions);
            let Some(entries) = hooks.table(name, at, n, baseline, table.structure, functions)
            else {
                continue;
            };
            if first {
                *pointees = crossview::writable_pointees(&entries, &ranges)
                    .into_iter()
                    .map(|(i, v)| (i, v, text(format_args!("{name}[{i}]->")), None))
                    .collect();
            }
            // The structures in writable data the entries still point at,
            // field by field (a changed entry is judged above).
            for (index, address, label, words) in pointees.iter_mut() {
                let at = vmi::GuestVirtAddr::new(*address);
                if let (Some(&now), Ok(at)) = (entries.get(*index), at)
                    && now == *address
                {
                    let n = table.pointee_entries;
                    hooks.table(label, at, n, words, true, &table.functions);
                }
            }
        }
        // Both rounds' hooks in ascending order: those in both, in one pass
        // (a rootkit can register thousands).
        let before = core::mem::replace(&mut self.netfilter_before, netfilter_now);
        let mut earlier = before.iter().peekable();
        for hook in &self.netfilter_before {
            while earlier.next_if(|b| *b < hook).is_some() {}
            if earlier.peek() == Some(&hook) {
                let (net, inum, place, i, f) = *hook;
                let (name, at) = match place {
                    HookPlace::Unlisted => {
                        let finding = "not on net_namespace_list";
                        hooks
                            .found
                            .push(text(format_args!("netns:{inum}@{net:#x}:{finding}")));
                        continue;
                    }
                    HookPlace::Point(t, point) => (
                        r.pointer_tables.get(t).map_or("", |t| t.name.as_str()),
                        text(format_args!("{point}")),
                    ),
                    HookPlace::Device(_, dev, egress) => (
                        if egress {
                            "nf_hooks_egress"
                        } else {
                            "nf_hooks_ingress"
                        },
                        comm(dev.as_bytes()),
                    ),
                };
                let netns = match net {
                    0 => String::new(),
                    _ => text(format_args!("@netns:{inum}")),
                };
                hooks
                    .found
                    .push(text(format_args!("{name}{netns}[{at}][{i}]:{f:#x}")));
            }
        }
        let walked = self.namespaces_walked;
        let what = "net_namespace_list-or-dev_base_head";
        hooks.found.extend(self.unwalked[4].round(walked, what));
        out[3] = hooks.found;

        // Top-level page tables: every process's shares the kernel's slots.
        if self.top_tables.is_none() {
            self.top_tables = top_tables_snapshot(view, profile, r);
        }
        let tables = self.top_tables.as_ref();
        if let Some(t) = self.unwalked[3].round(
            tasks.is_some() && tables.is_some(),
            "task-list-or-init_top_pgt",
        ) {
            out[4] = alloc::vec![t];
        }
        if let (Some(tasks), Some((shared, offsets))) = (tasks, tables) {
            out[4] = top_table_findings(view, shared, offsets, tasks);
        }
        self.last = out.clone();
        out
    }
}

impl CrossWatch {
    /// The netfilter hooks of every network namespace whose functions are
    /// neither the kernel's nor a listed module's, in ascending order:
    /// `init_net`'s at the profile's addresses, then the others' (a
    /// container's, an `unshare -n`'s) at the same offsets in their own
    /// `struct net`; and in each namespace, those of every device
    /// (ingress, egress). The namespaces `tasks` are in must be on the
    /// list: one that is not is reported and walked too. Notes whether
    /// every list walked to its end.
    #[inline(never)]
    fn foreign_hooks<V: vmi::paging::VirtualMemory + ?Sized>(
        &mut self,
        space: &V,
        location: &vmi::linux::KernelLocation,
        r: &crossview::CrossViewReference,
        ranges: &ImageRanges,
        tasks: Option<&[vmi::linux::Task]>,
    ) -> Vec<ForeignHook> {
        let points = || {
            r.pointer_tables
                .iter()
                .enumerate()
                .filter(|(_, t)| t.hook_points)
        };
        let (mut namespaces, listed) = match location.runtime_of(r.net_namespace_list) {
            Some(head) if points().next().is_some() => crossview::net_namespaces(space, head, r),
            _ => (Vec::new(), Ok(())),
        };
        let mut walked = listed.is_ok();
        let init_net = location.runtime_of(r.init_net).map(|a| a.value());
        // The tasks' namespaces missing from a list that walked (at most
        // as many as a list holds).
        let mut found = Vec::new();
        vmi::sort::heapsort(&mut namespaces);
        let in_tasks = match tasks {
            Some(tasks) if walked && points().next().is_some() => {
                crossview::task_net_namespaces(space, tasks, r)
            }
            // Without this round's task list, those found unlisted last
            // round stand (if still unlisted), as the other views' do.
            None if walked => (self.netfilter_before.iter())
                .filter(|h| h.2 == HookPlace::Unlisted)
                .map(|h| h.0)
                .collect(),
            _ => Vec::new(),
        };
        // And those of the devices the `net` class lists (every
        // namespace's loopback): one that no task is in is still there.
        let mut in_devices = match location.runtime_of(r.net_class) {
            Some(class) if walked && points().next().is_some() => {
                let kset = location.runtime_of(r.class_kset);
                crossview::class_net_namespaces(space, class, kset, r).unwrap_or_else(|_| {
                    walked = false;
                    Vec::new()
                })
            }
            _ => Vec::new(),
        };
        in_devices.extend(in_tasks);
        vmi::sort::heapsort(&mut in_devices);
        in_devices.dedup();
        let unlisted = in_devices
            .into_iter()
            .filter(|&net| {
                Some(net) != init_net && namespaces.binary_search_by_key(&net, |n| n.0).is_err()
            })
            .take(crossview::MAX_NET_NAMESPACES)
            .map(|net| {
                let inum = vmi::GuestVirtAddr::new(net)
                    .ok()
                    .and_then(|at| vmi::linux::structs::read_u32(space, at, r.net_inum).ok())
                    .unwrap_or(0);
                found.push((net, inum, HookPlace::Unlisted, 0, 0));
                (net, inum)
            })
            .collect::<Vec<_>>();
        let others = namespaces
            .into_iter()
            .chain(unlisted)
            .filter(|&(net, _)| Some(net) != init_net);
        let (mut hooks_left, mut devices_left) = (MAX_ROUND_HOOKS, crossview::MAX_NET_DEVICES);
        let modules = &self.module_texts;
        for (net, inum) in core::iter::once((0, 0)).chain(others) {
            // A place whose entries do not read shows as one hook at 0.
            let mut judge = |place: HookPlace, entries: Option<u64>| {
                let functions = entries
                    .ok_or(crossview::CrossViewError::List)
                    .and_then(|e| crossview::nf_hook_functions(space, e, r, hooks_left))
                    .unwrap_or_else(|_| alloc::vec![0]);
                hooks_left = hooks_left.saturating_sub(functions.len());
                for (i, f) in crossview::foreign_functions(&functions, ranges, modules) {
                    found.push((net, inum, place, i, f));
                }
            };
            for (t, table) in points() {
                // Validated: a table of hook points lies in `struct net`.
                let at = match net {
                    0 => location.runtime_of(table.address),
                    _ => net
                        .checked_add(table.address.wrapping_sub(r.init_net))
                        .and_then(|a| vmi::GuestVirtAddr::new(a).ok()),
                };
                let entries =
                    at.and_then(|at| crossview::read_table(space, at, table.entries).ok());
                for point in 0..table.entries as usize {
                    let entry = entries.as_ref().and_then(|e| e.get(point).copied());
                    judge(HookPlace::Point(t, point), entry);
                }
            }
            let base = if net == 0 { init_net } else { Some(net) };
            let Some(base) = base.and_then(|b| vmi::GuestVirtAddr::new(b).ok()) else {
                continue;
            };
            let (devices, listed) = crossview::net_devices(space, base, r, devices_left);
            walked &= listed.is_ok();
            devices_left = devices_left.saturating_sub(devices.len());
            let hooks = [
                (false, r.netdev_nf_hooks_ingress),
                (true, r.netdev_nf_hooks_egress),
            ];
            for (dev, name) in devices {
                for (egress, offset) in hooks.into_iter().filter(|h| h.1 != 0) {
                    let entries = vmi::linux::structs::read_u64(space, dev, offset).ok();
                    judge(HookPlace::Device(dev.value(), name, egress), entries);
                }
            }
        }
        self.namespaces_walked = walked;
        // Once each, sorted (a looping list can yield a namespace twice
        // before the walk sees the loop).
        vmi::sort::heapsort(&mut found);
        found.dedup();
        found
    }
}

/// `init_top_pgt`'s shared slots, read once the kernel is up (`None` if
/// they cannot be read: the area then reports itself unwalkable).
fn top_tables_snapshot<M: GuestMemory + ?Sized>(
    view: &KernelView<'_, M>,
    profile: &KernelProfile,
    r: &vmi::linux::crossview::CrossViewReference,
) -> Option<(SharedEntries, TableOffsets)> {
    use vmi::paging::VirtualMemory;
    let at = view.location.runtime_of(profile.symbols.page_offset_base)?;
    let page_offset_base = view.space.read_virt_u64(at).ok()?;
    let half = KernelHalf::new(page_offset_base, view.paging)?;
    let shared = SharedEntries::snapshot(
        view.space.memory(),
        view.space.root(),
        half,
        r.pgd_user_copy,
    )
    .ok()?;
    info!(
        "monvm: top-level tables share slots {}.. of init_top_pgt (PTI {})",
        half.first,
        if shared.pti() { "on" } else { "off" }
    );
    let offsets = TableOffsets {
        task_mm: profile.offsets.task.mm,
        mm_pgd: r.mm_pgd,
        page_offset_base,
    };
    Some((shared, offsets))
}

/// `init_top_pgt` and the table of every process of `tasks` (once per
/// address space) against the snapshot.
fn top_table_findings<M: GuestMemory + ?Sized>(
    view: &KernelView<'_, M>,
    shared: &SharedEntries,
    offsets: &TableOffsets,
    tasks: &[vmi::linux::Task],
) -> Vec<String> {
    let mem = view.space.memory();
    let mut out: Vec<String> = shared
        .check_init(mem, MAX_TABLE_FINDINGS)
        .iter()
        .map(|f| text(format_args!("init_top_pgt:{f}")))
        .collect();
    let mut seen = BTreeSet::new();
    for task in tasks {
        let Some(mm) = task.mm else { continue };
        let room = MAX_TABLE_FINDINGS.saturating_sub(out.len());
        if room == 0 {
            break;
        }
        if !seen.insert(mm.value()) {
            continue;
        }
        for f in check_task_table(&view.space, mem, shared, offsets, task.address, mm, room) {
            out.push(text(format_args!(
                "process:{}:{}:{f}",
                task.pid,
                comm(task.comm.as_bytes())
            )));
        }
    }
    out
}

/// A task's comm as printable text (`:` and non-printable bytes as `?`).
fn comm(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) && b != b':' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

fn read_module_name<M: GuestMemory + ?Sized>(
    view: &KernelView<'_, M>,
    profile: &KernelProfile,
    module: u64,
) -> String {
    vmi::GuestVirtAddr::new(module)
        .ok()
        .and_then(|m| {
            vmi::linux::modules::read_module(&view.space, m, &profile.offsets.module).ok()
        })
        .map(|m| {
            text(format_args!(
                "{}",
                avm_attest::monvm::EscapedPath(m.name.as_bytes())
            ))
        })
        .unwrap_or_else(|| String::from("?"))
}

/// The hooked entries of pointer tables read in one address space.
struct TableHooks<'a, V: ?Sized> {
    space: &'a V,
    ranges: &'a ImageRanges,
    /// `name[index]:value` of each, or `name:unreadable:why`.
    found: Vec<String>,
}

impl<V: vmi::paging::VirtualMemory + ?Sized> TableHooks<'_, V> {
    /// Reads the `n` words of the table `name` at `at` and notes its
    /// hooked entries (`hooked_entries`; `functions`: a structure's
    /// function-pointer words); the first read is its baseline.
    /// The words read, if they could be.
    #[inline(never)]
    fn table(
        &mut self,
        name: &str,
        at: vmi::GuestVirtAddr,
        n: u32,
        baseline: &mut Option<Vec<u64>>,
        structure: bool,
        functions: &[u32],
    ) -> Option<Vec<u64>> {
        let entries = match crossview::read_table(self.space, at, n) {
            Ok(entries) => entries,
            Err(e) => {
                self.found.push(text(format_args!("{name}:unreadable:{e}")));
                return None;
            }
        };
        let allowed = baseline.get_or_insert_with(|| entries.clone());
        for (index, value) in hooked_entries(&entries, allowed, self.ranges, structure, functions) {
            self.found
                .push(text(format_args!("{name}[{index}]:{value:#x}")));
        }
        Some(entries)
    }
}
