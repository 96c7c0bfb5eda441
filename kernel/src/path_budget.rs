//! Paths read out of the Mon-VM, kept within a byte budget.
//!
//! The Mon-VM decides how many paths the A-VM reads and how long they are:
//! 32,768 tasks whose executables each have a 4 KiB path are 128 MiB, more
//! than the A-VM's whole heap, and so are the paths of a million IMA
//! entries. A failed allocation ends the A-VM (it panics), so every store
//! of such paths counts what it keeps and refuses what does not fit. The
//! caller treats a refused path as unknown (a process whose executable was
//! not kept is unjudged, a file not kept has no digest): a violation, never
//! a pass.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::vec::Vec;

/// Heap counted for each path kept besides its bytes: its allocation's
/// header and rounding, and its slot in the tree (a generous estimate, so
/// that the budget bounds what the heap really gives).
pub const ENTRY_COST: usize = 64;

/// What keeping `path` costs.
fn cost(path: &[u8]) -> usize {
    path.len().saturating_add(ENTRY_COST)
}

/// Distinct paths, each kept once and shared: a round's executables, where
/// many processes run one file.
#[derive(Debug)]
pub struct PathInterner {
    paths: BTreeSet<Rc<[u8]>>,
    bytes: usize,
    max_bytes: usize,
}

impl PathInterner {
    /// An empty store that keeps at most `max_bytes` (paths and
    /// [`ENTRY_COST`] each).
    pub const fn new(max_bytes: usize) -> Self {
        PathInterner {
            paths: BTreeSet::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// The kept copy of `path` (the same one for equal paths); `None` if
    /// keeping a new path would pass the budget.
    pub fn intern(&mut self, path: &[u8]) -> Option<Rc<[u8]>> {
        if let Some(kept) = self.paths.get(path) {
            return Some(Rc::clone(kept));
        }
        let bytes = self
            .bytes
            .checked_add(cost(path))
            .filter(|&b| b <= self.max_bytes)?;
        let kept: Rc<[u8]> = Rc::from(path);
        self.paths.insert(Rc::clone(&kept));
        self.bytes = bytes;
        Some(kept)
    }

    /// Bytes counted so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Distinct paths kept.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// Values by path, within a byte budget: the Mon-VM's measured files.
#[derive(Debug)]
pub struct PathMap<V> {
    map: BTreeMap<Vec<u8>, V>,
    bytes: usize,
    max_bytes: usize,
    refused: u64,
}

impl<V> PathMap<V> {
    /// An empty map that keeps at most `max_bytes` (paths and
    /// [`ENTRY_COST`] each).
    pub const fn new(max_bytes: usize) -> Self {
        PathMap {
            map: BTreeMap::new(),
            bytes: 0,
            max_bytes,
            refused: 0,
        }
    }

    /// Sets the value of `path`. A path already kept takes the new value
    /// at no cost; a new one that would pass the budget is refused (`false`,
    /// the map unchanged but for the count of refusals).
    pub fn insert(&mut self, path: &[u8], value: V) -> bool {
        use alloc::collections::btree_map::Entry;
        match self.map.entry(path.to_vec()) {
            Entry::Occupied(mut kept) => {
                kept.insert(value);
                true
            }
            Entry::Vacant(slot) => match self
                .bytes
                .checked_add(cost(path))
                .filter(|&b| b <= self.max_bytes)
            {
                Some(bytes) => {
                    slot.insert(value);
                    self.bytes = bytes;
                    true
                }
                None => {
                    self.refused = self.refused.saturating_add(1);
                    false
                }
            },
        }
    }

    pub fn get(&self, path: &[u8]) -> Option<&V> {
        self.map.get(path)
    }

    /// New paths refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Bytes counted so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Model;

    #[test]
    fn equal_paths_are_kept_once_and_shared() {
        let mut paths = PathInterner::new(1 << 20);
        let a = paths.intern(b"/usr/bin/sleep").unwrap();
        let b = paths.intern(b"/usr/bin/sleep").unwrap();
        assert!(Rc::ptr_eq(&a, &b));
        assert_eq!(paths.len(), 1);
        assert_eq!(paths.bytes(), 14 + ENTRY_COST);
    }

    #[test]
    fn the_interner_refuses_a_new_path_past_its_budget_but_not_a_kept_one() {
        // Room for one 4 KiB path, as a forged task's would be.
        let long = vec![b'a'; 4096];
        let mut paths = PathInterner::new(4096 + ENTRY_COST);
        assert!(paths.intern(&long).is_some());
        assert!(paths.intern(b"/bin/sh").is_none());
        assert!(paths.intern(&long).is_some());
        assert_eq!(paths.len(), 1);
        // Thousands of processes running that one file cost nothing more.
        for _ in 0..10_000 {
            assert!(paths.intern(&long).is_some());
        }
        assert_eq!(paths.bytes(), 4096 + ENTRY_COST);
    }

    #[test]
    fn a_kept_path_takes_a_new_value_when_the_budget_is_spent() {
        let mut files = PathMap::new(2 * (8 + ENTRY_COST));
        assert!(files.insert(b"/bin/aaa", 1));
        assert!(files.insert(b"/bin/bbb", 2));
        assert!(!files.insert(b"/bin/ccc", 3));
        assert!(files.insert(b"/bin/aaa", 4));
        assert_eq!(files.get(b"/bin/aaa"), Some(&4));
        assert_eq!(files.get(b"/bin/ccc"), None);
        assert_eq!(files.refused(), 1);
        assert_eq!(files.len(), 2);
    }

    #[test]
    fn an_empty_budget_keeps_nothing() {
        let mut files = PathMap::new(0);
        assert!(!files.insert(b"", 1));
        assert!(files.is_empty());
        let mut paths = PathInterner::new(ENTRY_COST - 1);
        assert!(paths.intern(b"").is_none());
        assert!(paths.is_empty());
    }

    proptest! {
        /// Against a model: a map with every path accepted while the sum of
        /// the costs of distinct paths stays within the budget.
        #[test]
        fn the_map_agrees_with_a_model_and_keeps_its_budget(
            budget in 0usize..2048,
            ops in proptest::collection::vec(
                (proptest::collection::vec(0u8..4, 0..40), any::<u16>()),
                0..200,
            ),
        ) {
            let mut map = PathMap::new(budget);
            let mut model: Model<Vec<u8>, u16> = Model::new();
            let mut used = 0usize;
            for (path, value) in ops {
                let fits = model.contains_key(&path) || used + path.len() + ENTRY_COST <= budget;
                prop_assert_eq!(map.insert(&path, value), fits);
                if fits && model.insert(path.clone(), value).is_none() {
                    used += path.len() + ENTRY_COST;
                }
                prop_assert_eq!(map.bytes(), used);
                prop_assert!(map.bytes() <= budget);
                prop_assert_eq!(map.get(&path), model.get(&path));
            }
            prop_assert_eq!(map.len(), model.len());
        }

        #[test]
        fn the_interner_keeps_its_budget_and_gives_back_what_it_was_given(
            budget in 0usize..2048,
            paths in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..100),
        ) {
            let mut interner = PathInterner::new(budget);
            for path in &paths {
                if let Some(kept) = interner.intern(path) {
                    prop_assert_eq!(&kept[..], &path[..]);
                }
                prop_assert!(interner.bytes() <= budget);
            }
        }
    }
}
