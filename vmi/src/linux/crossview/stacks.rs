//! The kernel stacks, a sixth and a seventh view of the tasks.
//!
//! Every task but `init_task` runs on a kernel stack of its own, a vmalloc
//! area (`CONFIG_VMAP_STACK`, Debian's kernels) that the kernel keeps on
//! its list of busy areas for as long as the task lives, and whose lowest
//! word is `STACK_END_MAGIC`, which the scheduler checks every time the
//! task is switched out (`CONFIG_SCHED_STACK_END_CHECK`: a changed word
//! panics the kernel). A rootkit can take a task off the task list, the
//! process tree, the PID table and its cgroup's list, and a task that
//! sleeps is on no CPU; its stack stays where the kernel put it, with the
//! magic word at its bottom, or the task dies on its next switch.
//!
//! So a busy area of a task stack's size (as the known tasks' stacks are)
//! whose lowest word is the magic, and that is no known task's stack (the
//! listed tasks', every CPU's idle task's) nor one a CPU keeps for reuse
//! (`cached_stacks`: a freed stack keeps its word until it is reused), is
//! the stack of a task no list holds. A stack freed otherwise waits for
//! an RCU grace period still busy, but with an `rcu_head` written over its
//! lowest words; a task being forked has its stack before it is listed
//! (a caller asks for two rounds).
//!
//! A rootkit can also take the stack's area off the busy list (the
//! kernel's tree of areas keeps it, so it is still freed), but not out of
//! the page tables: the task's next run needs its stack mapped where its
//! saved stack pointer points. So the same stacks are also found in the
//! kernel's page tables over the vmalloc range ([`mapped_stacks`]).

use alloc::vec;
use alloc::vec::Vec;

use crate::addr::GuestVirtAddr;
use crate::list::{ListOptions, walk_list};
use crate::memory::GuestMemory;
use crate::paging::{AddressSpace, VirtualMemory};

use super::super::structs::{
    container_of, field, pointer, read_bytes, read_pointer, read_u32, read_u64,
};
use super::{CrossViewError, CrossViewReference, per_cpu_offsets};
use crate::linux::KERNEL_HALF;

/// The word at the lowest address of a live task's kernel stack
/// (`set_task_stack_end_magic`).
pub const STACK_END_MAGIC: u64 = 0x57AC_6E9D;

/// Most busy vmalloc areas read (a task's stack is one; module memory,
/// BPF programs and mappings of devices are others).
pub const MAX_VMAP_AREAS: usize = 65_536;

/// Most vmap nodes read (6.12 makes one per possible CPU, at most 128).
pub const MAX_VMAP_NODES: u32 = 1024;

/// Stacks each CPU keeps for reuse (`NR_CACHED_STACKS`).
pub const CACHED_STACKS: u64 = 2;

/// Most pages of a stack searched for its task (16 KiB stacks and a guard
/// page on Debian's kernels; the search stops at the first page that does
/// not read).
pub const MAX_STACK_PAGES: u64 = 8;

/// Most distinct words of a stack tried as its task (a rootkit can fill
/// the stack of a task it hides with them).
pub const MAX_OWNER_CANDIDATES: usize = 256;

/// Most page tables read for the stacks the kernel's page tables map
/// ([`mapped_stacks`]: a node's vmalloc range takes a handful; 6.12's maps
/// some 1,300 small pages on an idle Mon-VM).
pub const MAX_STACK_TABLES: usize = 4096;

const PAGE: u64 = 4096;

/// Top-level slots walked for [`mapped_stacks`]: the lowest known stack's
/// and the next, so that a vmalloc range that crosses into the next slot
/// is walked whole (the range a node uses is well under a slot's 512 GiB).
const VMALLOC_SLOTS: usize = 2;

/// The last top-level slot (the kernel image, modules and fixed mappings),
/// where the kernel puts no task stack; never walked for stacks (its
/// modules alone map more pages than the vmalloc range).
const IMAGE_SLOT: usize = 511;

/// A task stack's size on x86-64 (`THREAD_SIZE`, 16 KiB since Linux 3.15;
/// KASAN, which Debian's kernels do not enable, doubles it), to which
/// stacks are aligned. A larger stack is found all the same: its lowest
/// 16 KiB are such a stack.
pub const STACK_SIZE: u64 = 16 * 1024;

/// `task_struct`'s alignment: its slab cache aligns it to the cache line
/// (`L1_CACHE_BYTES`, 64 on x86-64).
const TASK_ALIGN: u64 = 64;

/// A busy vmalloc area: `[start, end)`, its guard page included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmapArea {
    pub start: u64,
    pub end: u64,
}

impl VmapArea {
    fn len(&self) -> u64 {
        self.end.wrapping_sub(self.start)
    }
}

/// Every busy vmalloc area, in list order: 6.1 keeps them all on
/// `vmap_area_list`; 6.12 on the busy list of each of its
/// `nr_vmap_nodes` nodes (`vmap_nodes`, an array). `runtime` turns a link
/// address into its runtime address. At most [`MAX_VMAP_AREAS`] (so a
/// cycle ends), more is an error, not a cut; those read before an error
/// come with it. A profile with neither list is an error.
pub fn busy_vmap_areas<V: VirtualMemory + ?Sized>(
    mem: &V,
    runtime: impl Fn(u64) -> Option<GuestVirtAddr>,
    r: &CrossViewReference,
) -> (Vec<VmapArea>, Result<(), CrossViewError>) {
    let mut out = Vec::new();
    let walked = vmap_heads(mem, &runtime, r).and_then(|heads| {
        for head in heads {
            let room = MAX_VMAP_AREAS - out.len();
            for link in walk_list(mem, head, ListOptions::new(room)) {
                let area = container_of(link?, r.vmap_area_list_node)?;
                out.push(read_area(mem, area, r)?);
            }
        }
        Ok(())
    });
    (out, walked)
}

/// An area's `va_start` and `va_end`, in one read where they are
/// neighbours (both kernels).
fn read_area<V: VirtualMemory + ?Sized>(
    mem: &V,
    area: GuestVirtAddr,
    r: &CrossViewReference,
) -> Result<VmapArea, CrossViewError> {
    if r.vmap_area_va_end == r.vmap_area_va_start.wrapping_add(8) {
        let mut both = [0u8; 16];
        read_bytes(mem, area, r.vmap_area_va_start, &mut both)?;
        if let ([start, end], []) = both.as_chunks::<8>() {
            return Ok(VmapArea {
                start: u64::from_le_bytes(*start),
                end: u64::from_le_bytes(*end),
            });
        }
    }
    Ok(VmapArea {
        start: read_u64(mem, area, r.vmap_area_va_start)?,
        end: read_u64(mem, area, r.vmap_area_va_end)?,
    })
}

/// The heads of the busy lists.
fn vmap_heads<V: VirtualMemory + ?Sized>(
    mem: &V,
    runtime: &impl Fn(u64) -> Option<GuestVirtAddr>,
    r: &CrossViewReference,
) -> Result<Vec<GuestVirtAddr>, CrossViewError> {
    let at = |link: u64| {
        (link != 0)
            .then(|| runtime(link))
            .flatten()
            .ok_or(CrossViewError::List)
    };
    if r.vmap_area_list != 0 {
        return Ok(vec![at(r.vmap_area_list)?]);
    }
    let nodes = read_pointer(mem, at(r.vmap_nodes)?, 0)?.ok_or(CrossViewError::List)?;
    let count = read_u32(mem, at(r.nr_vmap_nodes)?, 0)?;
    if count == 0 || count > MAX_VMAP_NODES {
        return Err(CrossViewError::TooMany);
    }
    (0..u64::from(count))
        .map(|node| {
            let offset = node
                .checked_mul(r.vmap_node_size)
                .and_then(|o| o.checked_add(r.vmap_node_busy_head))
                .ok_or(CrossViewError::TooMany)?;
            Ok(field(nodes, offset)?)
        })
        .collect()
}

/// The stacks each CPU holds: its idle task's (`rq->idle->stack`; CPU 0's
/// is `init_task`'s, in the image) and those it keeps for reuse
/// (`cached_stacks`, each a `struct vm_struct *` whose `addr` is the
/// stack). `per_cpu_offset` and `nr_cpu_ids` are the runtime addresses of
/// `__per_cpu_offset` and `nr_cpu_ids`.
pub fn cpu_stacks<V: VirtualMemory + ?Sized>(
    mem: &V,
    per_cpu_offset: GuestVirtAddr,
    nr_cpu_ids: GuestVirtAddr,
    r: &CrossViewReference,
) -> Result<Vec<u64>, CrossViewError> {
    let mut out = Vec::new();
    for offset in per_cpu_offsets(mem, per_cpu_offset, nr_cpu_ids)? {
        let offset = offset?;
        let rq = pointer(r.runqueues.wrapping_add(offset))?;
        if let Some(idle) = read_pointer(mem, rq, r.rq_idle)?
            && let Some(stack) = read_pointer(mem, idle, r.task_stack)?
        {
            out.push(stack.value());
        }
        let cached = pointer(r.cached_stacks.wrapping_add(offset))?;
        for slot in 0..CACHED_STACKS {
            if let Some(vm) = read_pointer(mem, cached, 8 * slot)?
                && let Some(stack) = read_pointer(mem, vm, r.vm_struct_addr)?
            {
                out.push(stack.value());
            }
        }
    }
    Ok(out)
}

/// The stacks of `tasks` (`task_struct.stack`; a task whose field does not
/// read, or is NULL as an exited task's, has none).
pub fn task_stacks<V: VirtualMemory + ?Sized>(
    mem: &V,
    tasks: &[u64],
    r: &CrossViewReference,
) -> Vec<u64> {
    tasks
        .iter()
        .filter_map(|&t| {
            let task = GuestVirtAddr::new(t).ok()?;
            read_pointer(mem, task, r.task_stack).ok().flatten()
        })
        .map(|s| s.value())
        .collect()
}

/// The task whose kernel stack starts at `stack`, found on the stack itself
/// (nothing else points back at a task no list holds): the words, from the
/// top of the stack down, that could be a `task_struct` (kernel half,
/// aligned, outside the stack) are tried until one's `stack` field is
/// `stack`. A sleeping task's frames hold its own address (the scheduler
/// keeps `current` at hand). At most [`MAX_STACK_PAGES`] pages read and
/// [`MAX_OWNER_CANDIDATES`] words tried; `None` if none is the task, which
/// says nothing of the stack (its finding stands without a name).
pub fn stack_owner<V: VirtualMemory + ?Sized>(
    mem: &V,
    stack: u64,
    r: &CrossViewReference,
) -> Option<GuestVirtAddr> {
    let mut words: Vec<u64> = Vec::new();
    let mut page = vec![0u8; PAGE as usize];
    for i in 0..MAX_STACK_PAGES {
        let at = GuestVirtAddr::new(stack.checked_add(i * PAGE)?).ok()?;
        if mem.read_virt(at, &mut page).is_err() {
            break;
        }
        let (chunks, _) = page.as_chunks::<8>();
        words.extend(chunks.iter().map(|w| u64::from_le_bytes(*w)));
    }
    let end = stack.saturating_add(8 * words.len() as u64);
    let mut tried: Vec<u64> = Vec::new();
    for &word in words.iter().rev() {
        if word < KERNEL_HALF || !word.is_multiple_of(TASK_ALIGN) || (stack..end).contains(&word) {
            continue;
        }
        if let Err(at) = tried.binary_search(&word) {
            if tried.len() == MAX_OWNER_CANDIDATES {
                return None;
            }
            tried.insert(at, word);
            let Ok(task) = GuestVirtAddr::new(word) else {
                continue;
            };
            let points_back = read_pointer(mem, task, r.task_stack)
                .ok()
                .flatten()
                .is_some_and(|s| s.value() == stack);
            if points_back {
                return Some(task);
            }
        }
    }
    None
}

/// The live kernel stacks among `areas` that are not in `known`
/// (ascending): an area of the length of a known stack's area, not itself
/// known, whose lowest word reads as [`STACK_END_MAGIC`]. Ascending (6.12's
/// nodes each list their own areas in order, not all of them).
pub fn orphan_stacks<V: VirtualMemory + ?Sized>(
    mem: &V,
    areas: &[VmapArea],
    known: &[u64],
) -> Vec<u64> {
    let is_known = |a: &&VmapArea| known.binary_search(&a.start).is_ok();
    let mut lengths: Vec<u64> = areas.iter().filter(is_known).map(VmapArea::len).collect();
    crate::sort::heapsort(&mut lengths);
    let mut out: Vec<u64> = areas
        .iter()
        .filter(|a| !is_known(a) && lengths.binary_search(&a.len()).is_ok())
        .filter(|a| {
            GuestVirtAddr::new(a.start)
                .ok()
                .and_then(|at| read_u64(mem, at, 0).ok())
                == Some(STACK_END_MAGIC)
        })
        .map(|a| a.start)
        .collect();
    crate::sort::heapsort(&mut out);
    out.dedup();
    out
}

/// The live kernel stacks the kernel's page tables map, whatever the
/// lists of busy areas say (a rootkit can take a stack's area off them;
/// the stack of a task that is to run again stays mapped): the start of
/// every [`STACK_SIZE`] bytes of present 4 KiB pages, aligned to their
/// size, whose lowest word reads as [`STACK_END_MAGIC`], ascending. Walked
/// where the kernel allocates stacks, the vmalloc range: `VMALLOC_SLOTS`
/// top-level slots from that of the lowest of the `known` stacks in the
/// kernel half (the direct map below it maps every stack's pages a second
/// time; a stack a rootkit moves elsewhere is not found). An error past
/// [`MAX_STACK_TABLES`] tables or [`MAX_VMAP_AREAS`] stacks, or without a
/// known stack in the kernel half.
pub fn mapped_stacks<M: GuestMemory + ?Sized>(
    space: &AddressSpace<'_, M>,
    known: &[u64],
) -> Result<Vec<u64>, CrossViewError> {
    let lowest = known.iter().filter(|&&s| s >= KERNEL_HALF).min();
    let lowest = *lowest.ok_or(CrossViewError::List)?;
    let memory = space.memory();
    let mut out = Vec::new();
    let mut run_end = 0;
    let mut candidate = None;
    let mut too_many = false;
    let first = space.mode().top_slot(lowest);
    let slots = first..(first + VMALLOC_SLOTS).min(IMAGE_SLOT);
    space
        .for_each_small_page(slots, MAX_STACK_TABLES, |va, frame| {
            if va != run_end {
                candidate = None;
            }
            if va.is_multiple_of(STACK_SIZE) {
                candidate = (memory.read_u64(frame).ok() == Some(STACK_END_MAGIC)).then_some(va);
            }
            run_end = va.saturating_add(PAGE);
            if let Some(start) = candidate
                && start.checked_add(STACK_SIZE) == Some(run_end)
            {
                candidate = None;
                too_many |= out.len() == MAX_VMAP_AREAS;
                if !too_many {
                    out.push(start);
                }
            }
        })
        .ok_or(CrossViewError::TooMany)?;
    if too_many {
        return Err(CrossViewError::TooMany);
    }
    Ok(out)
}
