//! Bounded, cycle-safe walks of the kernel's circular doubly linked lists
//! (`struct list_head { next; prev; }`). The guest controls every pointer:
//! a walk stops at a count limit, detects a cycle that does not return to the
//! head (Brent's algorithm: one comparison per step, no memory), and can check
//! that each node's `prev` points back at the node it was reached from.

use core::fmt;

use crate::addr::GuestVirtAddr;
use crate::paging::{VirtualMemory, WalkError};

/// Offset of `prev` in `struct list_head` (`next` is at 0).
pub const LIST_PREV_OFFSET: u64 = 8;

/// Limits of one list walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListOptions {
    /// Most nodes (not counting the head) the walk yields before it fails
    /// with [`ListError::TooLong`].
    pub max: usize,
    /// Check `next->prev == current` at every step, the head included (one
    /// more read per node). A list being changed while it is read may fail
    /// this check spuriously; a forged list usually fails it.
    pub check_prev: bool,
}

impl ListOptions {
    pub const fn new(max: usize) -> Self {
        ListOptions {
            max,
            check_prev: false,
        }
    }

    pub const fn with_prev_check(self) -> Self {
        ListOptions {
            check_prev: true,
            ..self
        }
    }
}

/// Why a list walk stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListError {
    /// A `next` or `prev` field could not be read.
    Read { at: GuestVirtAddr, error: WalkError },
    /// A `next` field holds NULL or a non-canonical value (e.g.
    /// `LIST_POISON1` of a deleted entry).
    BadPointer { at: GuestVirtAddr, value: u64 },
    /// The list comes back to `node`, a node already seen, not to the head.
    Cycle { node: GuestVirtAddr },
    /// More than `max` nodes.
    TooLong { max: usize },
    /// `node->prev` is `found`, not the node it was reached from.
    BrokenBackLink {
        node: GuestVirtAddr,
        found: u64,
        expected: GuestVirtAddr,
    },
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListError::Read { at, error } => write!(f, "list field at {at}: {error}"),
            ListError::BadPointer { at, value } => {
                write!(f, "list field at {at} holds a bad pointer {value:#x}")
            }
            ListError::Cycle { node } => write!(f, "list cycles back to {node}, not its head"),
            ListError::TooLong { max } => write!(f, "list longer than {max} nodes"),
            ListError::BrokenBackLink {
                node,
                found,
                expected,
            } => write!(f, "{node}: prev is {found:#x}, expected {expected}"),
        }
    }
}

/// Walks the list whose head (`struct list_head`) is at `head`, yielding the
/// address of each node's `list_head` (use `checked_sub` of the member offset
/// for its container). Ends after the last node, or after the first error,
/// which it yields.
pub fn walk_list<V: VirtualMemory + ?Sized>(
    memory: &V,
    head: GuestVirtAddr,
    options: ListOptions,
) -> ListWalk<'_, V> {
    walk_list_from(memory, head, head, options)
}

/// As [`walk_list`], from the node at `from` on (not yielded; the head
/// itself starts a whole walk): the nodes after it up to the head. A
/// watcher that took the list up to `from` reads only what was added
/// since (a list the kernel only appends to). `options.max` counts the
/// nodes yielded.
pub fn walk_list_from<V: VirtualMemory + ?Sized>(
    memory: &V,
    head: GuestVirtAddr,
    from: GuestVirtAddr,
    options: ListOptions,
) -> ListWalk<'_, V> {
    ListWalk {
        memory,
        head,
        options,
        current: from,
        count: 0,
        tortoise: None,
        power: 1,
        steps: 0,
        done: false,
    }
}

/// Iterator of [`walk_list`].
#[derive(Debug)]
pub struct ListWalk<'a, V: ?Sized> {
    memory: &'a V,
    head: GuestVirtAddr,
    options: ListOptions,
    current: GuestVirtAddr,
    count: usize,
    // Brent's cycle detection: the hare is `current`; the tortoise jumps to
    // the hare whenever `steps` reaches `power`, which then doubles.
    tortoise: Option<GuestVirtAddr>,
    power: usize,
    steps: usize,
    done: bool,
}

impl<V: VirtualMemory + ?Sized> ListWalk<'_, V> {
    fn step(&mut self) -> Result<Option<GuestVirtAddr>, ListError> {
        let at = self.current;
        let raw = self
            .memory
            .read_virt_u64(at)
            .map_err(|error| ListError::Read { at, error })?;
        let next = match GuestVirtAddr::new(raw) {
            Ok(next) if raw != 0 => next,
            _ => return Err(ListError::BadPointer { at, value: raw }),
        };
        if self.options.check_prev {
            let prev_at = next
                .checked_add(LIST_PREV_OFFSET)
                .ok_or(ListError::BadPointer { at, value: raw })?;
            let found = self
                .memory
                .read_virt_u64(prev_at)
                .map_err(|error| ListError::Read { at: prev_at, error })?;
            if found != at.value() {
                return Err(ListError::BrokenBackLink {
                    node: next,
                    found,
                    expected: at,
                });
            }
        }
        if next == self.head {
            return Ok(None);
        }
        if self.tortoise == Some(next) {
            return Err(ListError::Cycle { node: next });
        }
        self.steps += 1;
        if self.steps >= self.power {
            self.tortoise = Some(next);
            self.power = self.power.saturating_mul(2);
            self.steps = 0;
        }
        if self.count >= self.options.max {
            return Err(ListError::TooLong {
                max: self.options.max,
            });
        }
        self.count += 1;
        self.current = next;
        Ok(Some(next))
    }
}

impl<V: VirtualMemory + ?Sized> Iterator for ListWalk<'_, V> {
    type Item = Result<GuestVirtAddr, ListError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(node)) => Some(Ok(node)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<V: VirtualMemory + ?Sized> core::iter::FusedIterator for ListWalk<'_, V> {}

/// Number of nodes in a list, or the error that ended the walk.
pub fn list_len<V: VirtualMemory + ?Sized>(
    memory: &V,
    head: GuestVirtAddr,
    options: ListOptions,
) -> Result<usize, ListError> {
    let mut n = 0;
    for node in walk_list(memory, head, options) {
        node?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// Virtual memory that is one flat buffer at a fixed virtual base.
    struct Flat {
        base: u64,
        bytes: Vec<u8>,
    }

    impl VirtualMemory for Flat {
        fn read_virt(&self, va: GuestVirtAddr, buf: &mut [u8]) -> Result<(), WalkError> {
            let off = va
                .value()
                .checked_sub(self.base)
                .and_then(|o| usize::try_from(o).ok());
            let src = off.and_then(|o| self.bytes.get(o..o.checked_add(buf.len())?));
            match src {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(WalkError::NotPresent { va, level: 1 }),
            }
        }
    }

    const BASE: u64 = 0xffff_8880_0000_0000;

    fn va(v: u64) -> GuestVirtAddr {
        GuestVirtAddr::new(v).expect("canonical")
    }

    /// Nodes at BASE + 0x100 * i; `links[i] = (next, prev)` as node indices.
    fn image(links: &[(u64, u64)]) -> Flat {
        let mut bytes = vec![0u8; 0x100 * links.len().max(1)];
        for (i, (next, prev)) in links.iter().enumerate() {
            let at = 0x100 * i;
            bytes[at..at + 8].copy_from_slice(&(BASE + 0x100 * next).to_le_bytes());
            bytes[at + 8..at + 16].copy_from_slice(&(BASE + 0x100 * prev).to_le_bytes());
        }
        Flat { base: BASE, bytes }
    }

    fn collect(mem: &Flat, options: ListOptions) -> (Vec<u64>, Option<ListError>) {
        let mut nodes = Vec::new();
        for n in walk_list(mem, va(BASE), options) {
            match n {
                Ok(n) => nodes.push((n.value() - BASE) / 0x100),
                Err(e) => return (nodes, Some(e)),
            }
        }
        (nodes, None)
    }

    #[test]
    fn well_formed_lists() {
        let empty = image(&[(0, 0)]);
        assert_eq!(
            collect(&empty, ListOptions::new(10).with_prev_check()),
            (vec![], None)
        );
        let three = image(&[(1, 3), (2, 0), (3, 1), (0, 2)]);
        assert_eq!(
            collect(&three, ListOptions::new(10).with_prev_check()),
            (vec![1, 2, 3], None)
        );
        assert_eq!(list_len(&three, va(BASE), ListOptions::new(3)), Ok(3));
        assert_eq!(
            list_len(&three, va(BASE), ListOptions::new(2)),
            Err(ListError::TooLong { max: 2 })
        );
    }

    #[test]
    fn cycles_that_miss_the_head_are_found() {
        // head -> 1 -> 2 -> 3 -> 1 ...
        let lasso = image(&[(1, 0), (2, 0), (3, 1), (1, 2)]);
        let (nodes, err) = collect(&lasso, ListOptions::new(1_000_000));
        assert!(matches!(err, Some(ListError::Cycle { .. })), "{err:?}");
        assert!(nodes.len() < 16, "found after {} nodes", nodes.len());
        // A node pointing at itself.
        let selfie = image(&[(1, 0), (1, 1)]);
        let (nodes, err) = collect(&selfie, ListOptions::new(1_000_000));
        assert_eq!(nodes, vec![1]);
        assert_eq!(
            err,
            Some(ListError::Cycle {
                node: va(BASE + 0x100)
            })
        );
    }

    #[test]
    fn long_cycles_are_found_in_linear_time() {
        // head -> 1 -> ... -> 999 -> 500 -> ...
        let n = 1000u64;
        let links: Vec<(u64, u64)> = (0..n)
            .map(|i| (if i + 1 == n { 500 } else { i + 1 }, 0))
            .collect();
        let mem = image(&links);
        let (nodes, err) = collect(&mem, ListOptions::new(1_000_000));
        assert!(matches!(err, Some(ListError::Cycle { .. })));
        assert!(nodes.len() < 4 * n as usize);
    }

    #[test]
    fn bad_pointers_and_back_links() {
        let mut poisoned = image(&[(1, 0), (0, 0)]);
        poisoned.bytes[0x100..0x108].copy_from_slice(&0xdead_0000_0000_0100u64.to_le_bytes());
        let (nodes, err) = collect(&poisoned, ListOptions::new(10));
        assert_eq!(nodes, vec![1]);
        assert_eq!(
            err,
            Some(ListError::BadPointer {
                at: va(BASE + 0x100),
                value: 0xdead_0000_0000_0100
            })
        );
        let mut null = image(&[(1, 0), (0, 0)]);
        null.bytes[0x100..0x108].fill(0);
        assert!(matches!(
            collect(&null, ListOptions::new(10)).1,
            Some(ListError::BadPointer { value: 0, .. })
        ));
        // Points outside the readable memory.
        let mut lost = image(&[(1, 0), (0, 0)]);
        lost.bytes[0x100..0x108].copy_from_slice(&(BASE + 0x10_0000).to_le_bytes());
        assert!(matches!(
            collect(&lost, ListOptions::new(10)).1,
            Some(ListError::Read { .. })
        ));
        // 1's prev is wrong: only the checked walk notices.
        let forged = image(&[(1, 1), (0, 1)]);
        assert_eq!(collect(&forged, ListOptions::new(10)), (vec![1], None));
        assert_eq!(
            collect(&forged, ListOptions::new(10).with_prev_check()).1,
            Some(ListError::BrokenBackLink {
                node: va(BASE + 0x100),
                found: BASE + 0x100,
                expected: va(BASE)
            })
        );
    }

    #[test]
    fn the_walk_ends_after_an_error() {
        let selfie = image(&[(1, 0), (1, 1)]);
        let mut walk = walk_list(&selfie, va(BASE), ListOptions::new(10));
        assert!(matches!(walk.next(), Some(Ok(_))));
        assert!(matches!(walk.next(), Some(Err(ListError::Cycle { .. }))));
        assert_eq!(walk.next(), None);
        assert_eq!(walk.next(), None);
    }
}
