//! The kernel's count of each user's tasks, against the tasks found.
//!
//! Linux charges every task to the user of its real credentials: each
//! `struct cred` points at the `struct ucounts` of its real uid in its user
//! namespace (`cred.ucounts`), and that ucounts' `RLIMIT_NPROC` entry
//! counts the tasks charged to it (what `RLIMIT_NPROC` limits). The kernel
//! keeps the count with the credentials: `copy_creds` adds the new task at
//! fork, `release_task` takes it away, and `commit_creds` moves it from
//! the old ucounts to the new one whenever the real user changes (a
//! `setuid`). The count also goes up the chain of user namespaces: a task
//! in a namespace counts for the ucounts of the namespace's creator in
//! the parent namespace too (`user_namespace.ucounts`), up to the initial
//! namespace. Every task is counted: `init_task`, never forked, by
//! `user_namespace_sysctl_init` at boot, and the other CPUs' idle tasks
//! (forked at boot, on no list) too.
//!
//! A rootkit that hands a process other credentials by writing the
//! task's `cred` and `real_cred` (a copy of `init_cred`, whose ids and
//! account are root's) moves no count: the user's ucounts still counts
//! the process, root's does not. Whatever else it rewrites to look
//! consistent (the account, the executable's `f_cred`), the counts of
//! two users now differ from the tasks found charged to them; only
//! writing both counts as well hides it.
//!
//! The counts and the tasks are read apart while the Mon-VM runs: a task
//! being forked is counted before it is listed, one being released is
//! uncounted before it leaves the list. [`ProcessCountTracker`] reports a
//! difference only once it has stayed exactly the same for
//! [`PROCESS_COUNT_ROUNDS`] rounds in a row.

use alloc::vec::Vec;

use crate::addr::GuestVirtAddr;
use crate::paging::VirtualMemory;

use super::super::structs::{StructError, pointer, read_pointer, read_u32, read_u64};
use super::{CrossViewError, CrossViewReference};

/// Longest chain of user namespaces followed from a task's ucounts: the
/// kernel nests at most 32 below the initial one.
pub const MAX_USER_NS_DEPTH: usize = 33;
/// Most distinct ucounts one round reads (one per user and user
/// namespace with a task).
pub const MAX_UCOUNTS: usize = 4096;
/// Rounds in a row a difference must stay the same before it is
/// reported: a fork or a release in flight lasts far less than one round.
pub const PROCESS_COUNT_ROUNDS: u32 = 6;

/// One user's tasks in one user namespace: the kernel's count and the
/// tasks found charged to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessCount {
    /// The `struct ucounts`.
    pub ucounts: u64,
    pub uid: u32,
    /// Its `RLIMIT_NPROC` count (an `atomic_long_t`, as read).
    pub counted: u64,
    /// The tasks found whose real credentials are charged to it, directly
    /// or through a user namespace below it.
    pub found: u64,
}

impl ProcessCount {
    /// Whether the kernel's count and the tasks found differ.
    pub fn differs(&self) -> bool {
        self.counted != self.found
    }
}

/// The finding text, after `account:`.
impl core::fmt::Display for ProcessCount {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "uid {}: {} tasks counted, {} found",
            self.uid, self.counted, self.found
        )
    }
}

/// Each ucounts charged with one of the tasks whose real credentials are
/// `real_creds` (one entry per task, every task), in
/// ascending address order, with the kernel's count and the tasks found.
/// A credential, ucounts or namespace that does not read, a chain of
/// namespaces longer than [`MAX_USER_NS_DEPTH`] (a cycle) or more than
/// [`MAX_UCOUNTS`] ucounts is an error.
pub fn process_counts<V: VirtualMemory + ?Sized>(
    mem: &V,
    real_creds: &[GuestVirtAddr],
    r: &CrossViewReference,
) -> Result<Vec<ProcessCount>, CrossViewError> {
    let null = CrossViewError::Struct(StructError::Null { what: "ucounts" });
    // Tasks share credentials: each cred's chain is followed once, for
    // all its tasks.
    let mut creds: Vec<u64> = real_creds.iter().map(|c| c.value()).collect();
    crate::sort::heapsort(&mut creds);
    // (ucounts, tasks), ascending, each ucounts once.
    let mut pairs: Vec<(u64, u64)> = Vec::new();
    for run in creds.chunk_by(|a, b| a == b) {
        let tasks = run.len() as u64;
        let mut next = read_pointer(mem, pointer(run[0])?, r.cred_ucounts)?;
        if next.is_none() {
            return Err(null);
        }
        let mut depth = 0;
        while let Some(ucounts) = next {
            if depth == MAX_USER_NS_DEPTH {
                return Err(CrossViewError::TooMany);
            }
            depth += 1;
            match pairs.binary_search_by_key(&ucounts.value(), |p| p.0) {
                Ok(i) => pairs[i].1 += tasks,
                Err(_) if pairs.len() == MAX_UCOUNTS => return Err(CrossViewError::TooMany),
                Err(i) => pairs.insert(i, (ucounts.value(), tasks)),
            }
            let ns = read_pointer(mem, ucounts, r.ucounts_ns)?.ok_or(null)?;
            next = read_pointer(mem, ns, r.user_ns_ucounts)?;
        }
    }
    let mut out = Vec::with_capacity(pairs.len());
    for (ucounts, found) in pairs {
        let at = pointer(ucounts)?;
        out.push(ProcessCount {
            ucounts,
            uid: read_u32(mem, at, r.ucounts_uid)?,
            counted: read_u64(mem, at, r.ucounts_rlimit)?,
            found,
        });
    }
    Ok(out)
}

/// Follows the differences between the kernel's counts and the tasks
/// found across rounds ([`Self::update`]).
#[derive(Clone, Debug, Default)]
pub struct ProcessCountTracker {
    /// Each differing ucounts (ascending), its difference (count, found)
    /// and the rounds in a row it has been exactly that.
    differing: Vec<(u64, u64, u64, u32)>,
}

impl ProcessCountTracker {
    /// Takes this round's counts (from [`process_counts`], ascending);
    /// returns those that have differed exactly so for
    /// [`PROCESS_COUNT_ROUNDS`] rounds in a row, this one included.
    pub fn update(&mut self, counts: &[ProcessCount]) -> Vec<ProcessCount> {
        let mut differing = Vec::new();
        let mut out = Vec::new();
        for c in counts.iter().filter(|c| c.differs()) {
            let before = self
                .differing
                .binary_search_by_key(&c.ucounts, |d| d.0)
                .ok()
                .and_then(|i| self.differing.get(i))
                .filter(|d| (d.1, d.2) == (c.counted, c.found));
            let rounds = before.map_or(1, |d| d.3.saturating_add(1));
            if rounds >= PROCESS_COUNT_ROUNDS {
                out.push(*c);
            }
            differing.push((c.ucounts, c.counted, c.found, rounds));
        }
        self.differing = differing;
        out
    }
}
