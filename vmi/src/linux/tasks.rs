//! The task list from `init_task` (pid, parent, comm, credentials, whether
//! it has a user address space), bounded and cycle-safe.

use serde::Serialize;

use crate::addr::GuestVirtAddr;
use crate::list::{ListOptions, ListWalk, walk_list};
use crate::paging::VirtualMemory;

use super::structs::{
    StructError, container_of, field, heapless_str::FixedStr, read_char_array, read_pointer,
    read_u32,
};

/// Member offsets of `struct task_struct` (from BTF).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TaskOffsets {
    /// `tasks` (struct list_head).
    pub tasks: u64,
    pub pid: u64,
    pub tgid: u64,
    /// `comm` (`char[16]`).
    pub comm: u64,
    /// `real_parent` (pointer).
    pub real_parent: u64,
    /// `cred` (pointer to the effective credentials).
    pub cred: u64,
    /// `real_cred` (pointer to the objective credentials; the same as
    /// `cred` except while a task overrides its credentials).
    pub real_cred: u64,
    /// `mm` (pointer; NULL for kernel threads).
    pub mm: u64,
    /// `flags` (u32: `PF_*`).
    pub flags: u64,
}

crate::words::deserialize_members!(TaskOffsets {
    words [
        tasks, pid, tgid, comm, real_parent, cred, real_cred, mm, flags
    ],
});

/// `task_struct.flags`: the task is exiting (set before its address space
/// goes, kept while it is a zombie).
pub const PF_EXITING: u32 = 0x0000_0004;
/// `task_struct.flags`: a kernel thread (cleared by an exec).
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// Member offsets of `struct cred` (from BTF).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CredOffsets {
    pub uid: u64,
    pub gid: u64,
    pub euid: u64,
    pub egid: u64,
}

crate::words::deserialize_members!(CredOffsets {
    words [
        uid, gid, euid, egid
    ],
});

/// A task's credentials and where they are (tasks sharing one `cred` with
/// a task of other identity is a classic rootkit trick).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creds {
    pub address: GuestVirtAddr,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
}

/// One task as read from guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    pub address: GuestVirtAddr,
    pub pid: i32,
    pub tgid: i32,
    pub comm: FixedStr<16>,
    pub parent: Option<GuestVirtAddr>,
    pub parent_pid: Option<i32>,
    pub creds: Option<Creds>,
    /// `real_cred`.
    pub real_cred: Option<GuestVirtAddr>,
    pub mm: Option<GuestVirtAddr>,
    /// `flags` (`PF_*`).
    pub flags: u32,
}

impl Task {
    pub fn is_kernel_thread(&self) -> bool {
        self.mm.is_none()
    }
}

/// Reads the task at `task`.
pub fn read_task<V: VirtualMemory + ?Sized>(
    mem: &V,
    task: GuestVirtAddr,
    offsets: &TaskOffsets,
    cred: &CredOffsets,
) -> Result<Task, StructError> {
    let pid = read_u32(mem, task, offsets.pid)? as i32;
    let tgid = read_u32(mem, task, offsets.tgid)? as i32;
    let comm = read_char_array::<V, 16>(mem, task, offsets.comm)?;
    let parent = read_pointer(mem, task, offsets.real_parent)?;
    let parent_pid = match parent {
        Some(p) => Some(read_u32(mem, p, offsets.pid)? as i32),
        None => None,
    };
    let creds = match read_pointer(mem, task, offsets.cred)? {
        Some(c) => Some(Creds {
            address: c,
            uid: read_u32(mem, c, cred.uid)?,
            gid: read_u32(mem, c, cred.gid)?,
            euid: read_u32(mem, c, cred.euid)?,
            egid: read_u32(mem, c, cred.egid)?,
        }),
        None => None,
    };
    let real_cred = read_pointer(mem, task, offsets.real_cred)?;
    let mm = read_pointer(mem, task, offsets.mm)?;
    let flags = read_u32(mem, task, offsets.flags)?;
    Ok(Task {
        address: task,
        pid,
        tgid,
        comm,
        parent,
        parent_pid,
        creds,
        real_cred,
        mm,
        flags,
    })
}

/// Iterator over `init_task` and every task on its `tasks` list.
#[derive(Debug)]
pub struct Tasks<'a, V: ?Sized> {
    mem: &'a V,
    offsets: TaskOffsets,
    cred: CredOffsets,
    init_task: Option<GuestVirtAddr>,
    list: ListWalk<'a, V>,
    done: bool,
}

/// Walks the task list: `init_task` first, then at most `max` more tasks
/// (checking `prev` links). Ends after the first error, which it yields.
pub fn tasks<'a, V: VirtualMemory + ?Sized>(
    mem: &'a V,
    init_task: GuestVirtAddr,
    offsets: &TaskOffsets,
    cred: &CredOffsets,
    max: usize,
) -> Result<Tasks<'a, V>, StructError> {
    let head = field(init_task, offsets.tasks)?;
    Ok(Tasks {
        mem,
        offsets: *offsets,
        cred: *cred,
        init_task: Some(init_task),
        list: walk_list(mem, head, ListOptions::new(max).with_prev_check()),
        done: false,
    })
}

impl<V: VirtualMemory + ?Sized> Iterator for Tasks<'_, V> {
    type Item = Result<Task, StructError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let task = match self.init_task.take() {
            Some(t) => Ok(t),
            None => match self.list.next()? {
                Ok(node) => container_of(node, self.offsets.tasks),
                Err(e) => Err(e.into()),
            },
        };
        let result = task.and_then(|t| read_task(self.mem, t, &self.offsets, &self.cred));
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}
