//! The Mon-VM file allowlist as the appraisal reads it: every path's entry
//! in one arena ([`Arena`]), and a hash index over it ([`FileHashIndex`]).
//!
//! The arena is also what the verifier keeps of a policy's allowlist in
//! its snapshot (`policy_snapshot`): loading a 100,000-path allowlist is
//! then reading one buffer, checking it, and hashing its pairs, with no
//! allocation per path.

use std::collections::BTreeMap;

use avm_attest::monvm::{EntryVisitor, FileIndex};
use avm_attest::policy::{DigestList, FileAllowlist};

/// The entries of an allowlist, one after the other in path order, each a
/// header (u32 number of digests, u32 path length, little-endian), its
/// digests (32 bytes each), then its path (UTF-8), zero-padded to a
/// multiple of 8 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arena {
    bytes: Vec<u8>,
    /// Offsets of the entries, in path order.
    entries: Vec<usize>,
    /// Number of (path, digest) pairs.
    pairs: usize,
}

impl Arena {
    /// The arena of `files`.
    pub fn of(files: &FileAllowlist) -> Self {
        let len: usize = files
            .digests
            .iter()
            .map(|(p, d)| (HEADER + 32 * d.0.len() + p.len()).next_multiple_of(8))
            .sum();
        let mut bytes = Vec::with_capacity(len);
        let mut entries = Vec::with_capacity(files.digests.len());
        let mut pairs = 0;
        for (path, digests) in &files.digests {
            // Bounded far below u32 by the import (4096-byte paths, 1024
            // digests per path); a path beyond it (4 GiB) is left out:
            // refused, never allowed.
            let (Ok(count), Ok(len)) = (u32::try_from(digests.0.len()), u32::try_from(path.len()))
            else {
                continue;
            };
            entries.push(bytes.len());
            pairs += digests.0.len();
            bytes.extend_from_slice(&count.to_le_bytes());
            bytes.extend_from_slice(&len.to_le_bytes());
            for d in &digests.0 {
                bytes.extend_from_slice(d);
            }
            bytes.extend_from_slice(path.as_bytes());
            bytes.resize(bytes.len().next_multiple_of(8), 0);
        }
        Self {
            bytes,
            entries,
            pairs,
        }
    }

    /// The arena in `bytes`, as [`Arena::bytes`] gave it: every entry
    /// within the bytes, its path UTF-8 and after the one before it
    /// (strictly: no path twice), its padding zero. An error names the
    /// first flaw.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, &'static str> {
        let mut entries = Vec::new();
        let mut pairs = 0;
        let mut offset = 0;
        let mut last: Option<&[u8]> = None;
        while offset < bytes.len() {
            let (count, len) = header_at(&bytes, offset).ok_or("entry header cut off")?;
            let (path, _) = entry_at(&bytes, offset, (count, len)).ok_or("entry cut off")?;
            if std::str::from_utf8(path).is_err() {
                return Err("path not UTF-8");
            }
            if last.is_some_and(|last| last >= path) {
                return Err("paths out of order");
            }
            // Within the bytes: the entry fits.
            let end = offset + HEADER + 32 * count + len;
            let padding = bytes
                .get(end..end.next_multiple_of(8))
                .ok_or("padding cut off")?;
            if padding.iter().any(|&b| b != 0) {
                return Err("padding not zero");
            }
            entries.push(offset);
            pairs += count;
            last = Some(path);
            offset = end.next_multiple_of(8);
        }
        Ok(Self {
            bytes,
            entries,
            pairs,
        })
    }

    /// The arena as bytes, for [`Arena::parse`].
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of paths.
    pub fn paths(&self) -> usize {
        self.entries.len()
    }

    /// Number of (path, digest) pairs.
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// The allowlist's paths and digests as the policy holds them.
    pub fn to_digests(&self) -> BTreeMap<String, DigestList> {
        self.iter()
            .filter_map(|(path, digests)| {
                let path = std::str::from_utf8(path).ok()?;
                Some((path.to_owned(), DigestList(digests.to_vec())))
            })
            .collect()
    }

    /// Each path with its digests, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[[u8; 32]])> {
        self.entries.iter().filter_map(|&offset| self.entry(offset))
    }

    /// The path and digests of the entry at `offset`.
    fn entry(&self, offset: usize) -> Option<(&[u8], &[[u8; 32]])> {
        self.entry_with(offset, self.header(offset)?)
    }

    /// [`header_at`] in this arena.
    fn header(&self, offset: usize) -> Option<(usize, usize)> {
        header_at(&self.bytes, offset)
    }

    /// [`Self::entry`] with its header read already.
    fn entry_with(&self, offset: usize, header: (usize, usize)) -> Option<(&[u8], &[[u8; 32]])> {
        entry_at(&self.bytes, offset, header)
    }
}

/// The header of the entry at `offset` of an arena's `bytes`: its number
/// of digests and its path's length; `None` if it is cut off.
fn header_at(bytes: &[u8], offset: usize) -> Option<(usize, usize)> {
    let header = bytes.get(offset..offset.checked_add(HEADER)?)?;
    let count = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let len = u32::from_le_bytes(header[4..].try_into().ok()?) as usize;
    Some((count, len))
}

/// The path and digests of the entry at `offset` of an arena's `bytes`,
/// whose header says `(count, len)`; `None` if they do not fit.
fn entry_at(
    bytes: &[u8],
    offset: usize,
    (count, len): (usize, usize),
) -> Option<(&[u8], &[[u8; 32]])> {
    let digests_at = offset.checked_add(HEADER)?;
    let digests_end = count.checked_mul(32)?.checked_add(digests_at)?;
    let digests = bytes.get(digests_at..digests_end)?;
    let path = bytes.get(digests_end..digests_end.checked_add(len)?)?;
    Some((path, digests.as_chunks::<32>().0))
}

/// An index of a large allowlist (the policy keeps it in a sorted map of
/// separately allocated strings, slow to search 100,000 times: every
/// lookup misses the cache several times).
///
/// The paths' entries are in an [`Arena`]. The appraisal's question, "is this (path, digest) pair allowed?", is
/// answered by an open-addressing table with one slot per allowed pair,
/// keyed by a hash of both: a slot holds 32 bits of that hash and where
/// the path's entry is, so an allowed pair costs one table read and one
/// arena read (path and digests are compared exactly there). A pair not
/// in that table is looked up by path alone ([`FileIndex::digests_of`],
/// a second table over the same arena, built on first use: a good list
/// never needs it), which tells an unknown path from an unknown digest.
///
/// The hash is keyed with a random seed per index and mixes the path
/// into the digest's bits, so paths that share a digest (empty files)
/// do not pile up in one probe sequence. Only the policy's pairs are
/// stored, so the node's entries cannot lengthen probe sequences.
#[derive(Debug)]
pub struct FileHashIndex {
    seed: [u64; 2],
    /// Per allowed pair: (upper 32 bits of its hash, its path's entry
    /// offset in `arena` / 8 + 1); 0 marks a free slot.
    pairs: Slots,
    arena: Arena,
    /// Whether every pair is in `pairs` (an arena beyond 32 GiB is not:
    /// then every lookup goes by path).
    complete: bool,
    /// The table by path, built on first use.
    by_path: std::sync::OnceLock<Slots>,
}

/// Hash table slots: (32 bits of the key's hash, the value; 0: free).
type Slots = Vec<(u32, u32)>;

const HEADER: usize = 8;
/// Queries of [`avm_attest::monvm::FileIndex::allows_many`] looked up
/// together.
const BATCH: usize = 32;
const MUL0: u64 = 0x9e37_79b9_7f4a_7c15;
const MUL1: u64 = 0xa076_1d64_78bd_642f;

/// Slots of the pair table for `pairs` pairs: at most 80% full, and
/// always a free slot, where a probe for a pair not stored ends.
fn table_capacity(pairs: usize) -> usize {
    (pairs + pairs / 4 + 1).next_power_of_two()
}

/// The folded 128-bit product (wyhash's mixing step).
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Hash of a (path, digest) pair from its path's keyed hash.
fn pair_hash(path_hash: u64, digest: &[u8; 32]) -> u64 {
    fold(path_hash ^ word(&digest[..8]), word(&digest[8..16]) ^ MUL0)
}

fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
    u64::from_le_bytes(w)
}

impl FileHashIndex {
    /// The index of `files`.
    pub fn new(files: &FileAllowlist) -> Self {
        Self::of_arena(Arena::of(files))
    }

    /// The index of the allowlist in `arena`.
    pub fn of_arena(arena: Arena) -> Self {
        use std::hash::BuildHasher;
        let random = std::hash::RandomState::new();
        let seed = [random.hash_one(0u8) | 1, random.hash_one(1u8) | 1];
        let pairs = arena.pairs;
        let capacity = table_capacity(pairs);
        let mut index = Self {
            seed,
            pairs: vec![(0, 0); capacity],
            arena,
            complete: true,
            by_path: std::sync::OnceLock::new(),
        };
        let mask = capacity - 1;
        for &offset in &index.arena.entries {
            let Some((path, digests)) = index.arena.entry(offset) else {
                continue;
            };
            let Ok(value) = u32::try_from(offset / 8 + 1) else {
                index.complete = false;
                continue;
            };
            let path_hash = index.path_hash(path);
            for d in digests {
                let hash = pair_hash(path_hash, d);
                let mut slot = (hash as usize) & mask;
                while index.pairs[slot].1 != 0 {
                    slot = (slot + 1) & mask;
                }
                index.pairs[slot] = ((hash >> 32) as u32, value);
            }
        }
        index
    }

    /// The table as a policy snapshot keeps it (`policy_snapshot`), for
    /// [`FileHashIndex::with_table`]: the seed (two u64), then every slot
    /// (u32 tag, u32 value), little-endian. Empty if the table does not
    /// hold every pair (an arena beyond 32 GiB).
    pub fn table(&self) -> Vec<u8> {
        if !self.complete {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(16 + 8 * self.pairs.len());
        for seed in self.seed {
            out.extend_from_slice(&seed.to_le_bytes());
        }
        for &(tag, value) in &self.pairs {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// The index of `arena` with the table [`FileHashIndex::table`] gave
    /// for it, kept so that loading a large allowlist need not hash every
    /// pair again; built anew ([`FileHashIndex::of_arena`]) if `table`
    /// cannot be that: its size is not the one for this arena's pairs, a
    /// slot names no entry's start, or it holds another number of pairs.
    /// A table that passes yet is wrong (a slot misplaced, a tag changed)
    /// cannot change an answer: every candidate is compared exactly, and
    /// a pair not found in the table is looked up by path in a table built
    /// from the arena ([`FileIndex::allows`]). Its free slot ends every
    /// probe.
    pub fn with_table(arena: Arena, table: &[u8]) -> Self {
        match Self::stored_table(&arena, table) {
            Some((seed, pairs)) => Self {
                seed,
                pairs,
                arena,
                complete: true,
                by_path: std::sync::OnceLock::new(),
            },
            None => Self::of_arena(arena),
        }
    }

    /// The seed and slots of `table` if they pass [`Self::with_table`]'s
    /// checks for `arena`.
    fn stored_table(arena: &Arena, table: &[u8]) -> Option<([u64; 2], Slots)> {
        let (seed, slots) = table.split_first_chunk::<16>()?;
        let (seed0, seed1) = seed.split_at(8);
        let seed = [word(seed0), word(seed1)];
        let (slots, rest) = slots.as_chunks::<8>();
        let pairs = arena.pairs;
        if !rest.is_empty() || slots.len() != table_capacity(pairs) {
            return None;
        }
        // Entry starts, by offset / 8 (entries are 8-byte aligned).
        let mut starts = vec![0u64; (arena.bytes.len() / 8).div_ceil(64) + 1];
        for &offset in &arena.entries {
            let at = offset / 8;
            starts[at / 64] |= 1 << (at % 64);
        }
        let mut used = 0;
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            let (tag, value) = slot.split_at(4);
            let (tag, value) = (word(tag) as u32, word(value) as u32);
            if let Some(at) = (value as usize).checked_sub(1) {
                if starts
                    .get(at / 64)
                    .is_none_or(|bits| bits & (1 << (at % 64)) == 0)
                {
                    return None;
                }
                used += 1;
            }
            out.push((tag, value));
        }
        (used == pairs).then_some((seed, out))
    }

    /// The allowlist indexed.
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// Keyed hash of a path (8 bytes at a time).
    fn path_hash(&self, path: &[u8]) -> u64 {
        let mut h = self.seed[0] ^ (path.len() as u64).wrapping_mul(MUL0);
        let mut chunks = path.chunks_exact(16);
        for c in &mut chunks {
            h = fold(word(&c[..8]) ^ h, word(&c[8..]) ^ self.seed[1]);
        }
        let rest = chunks.remainder();
        let (a, b) = rest.split_at(rest.len().min(8));
        fold(word(a) ^ h ^ MUL1, word(b) ^ self.seed[1])
    }

    /// Keyed hash of a (path, digest) pair.
    fn pair_hash(&self, path: &[u8], digest: &[u8; 32]) -> u64 {
        pair_hash(self.path_hash(path), digest)
    }

    /// The arena offset of the entry in the first slot of `hash`'s probe
    /// sequence that holds its tag (the entry of its pair, unless another
    /// pair has the same 32 bits of hash).
    fn candidate(&self, hash: u64, mask: usize) -> Option<usize> {
        let mut slot = (hash as usize) & mask;
        loop {
            let &(tag, value) = self.pairs.get(slot)?;
            let offset = (value as usize).checked_sub(1)?;
            if tag == (hash >> 32) as u32 {
                return Some(offset * 8);
            }
            slot = (slot + 1) & mask;
        }
    }

    fn by_path(&self) -> &[(u32, u32)] {
        self.by_path.get_or_init(|| {
            let capacity = (self.arena.entries.len().max(1) * 2).next_power_of_two();
            let mask = capacity - 1;
            let mut slots = vec![(0u32, 0u32); capacity];
            for (n, &offset) in self.arena.entries.iter().enumerate() {
                let (Some((path, _)), Ok(value)) = (self.arena.entry(offset), u32::try_from(n + 1))
                else {
                    continue;
                };
                let hash = self.path_hash(path);
                let mut slot = (hash as usize) & mask;
                while slots[slot].1 != 0 {
                    slot = (slot + 1) & mask;
                }
                slots[slot] = ((hash >> 32) as u32, value);
            }
            slots
        })
    }
}

impl FileIndex for FileHashIndex {
    fn digests_of(&self, path: &[u8]) -> Option<&[[u8; 32]]> {
        let slots = self.by_path();
        let hash = self.path_hash(path);
        let mask = slots.len() - 1;
        let mut slot = (hash as usize) & mask;
        loop {
            let (tag, entry) = *slots.get(slot)?;
            let entry = (entry as usize).checked_sub(1)?;
            if tag == (hash >> 32) as u32 {
                let (key, digests) = self.arena.entry(*self.arena.entries.get(entry)?)?;
                if key == path {
                    return Some(digests);
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    fn allows(&self, path: &[u8], digest: &[u8; 32]) -> Option<bool> {
        if self.complete {
            let hash = self.pair_hash(path, digest);
            let mask = self.pairs.len() - 1;
            let mut slot = (hash as usize) & mask;
            while let Some(&(tag, value)) = self.pairs.get(slot) {
                let Some(offset) = (value as usize).checked_sub(1) else {
                    break;
                };
                if tag == (hash >> 32) as u32
                    && let Some((key, digests)) = self.arena.entry(offset * 8)
                    && key == path
                    && digests.contains(digest)
                {
                    return Some(true);
                }
                slot = (slot + 1) & mask;
            }
        }
        // Not an allowed pair: is the path listed at all?
        self.digests_of(path)
            .map(|allowed| allowed.contains(digest))
    }

    /// The lookups of a batch in steps, each done for every query before
    /// the next step uses what it read (hash; table slot; the entry's
    /// header and its last byte; the comparison): the table and the arena
    /// are far larger than the caches, and one query's reads each wait
    /// for memory, where the batch's reads are in flight together. A
    /// query whose candidate entry is not its allowed pair, exactly, gets
    /// [`FileIndex::allows`].
    fn allows_many(&self, queries: &[(&[u8], [u8; 32])], answers: &mut [Option<bool>]) {
        let mask = self.pairs.len() - 1;
        for (queries, answers) in queries.chunks(BATCH).zip(answers.chunks_mut(BATCH)) {
            let mut hashes = [0u64; BATCH];
            for (hash, (path, digest)) in hashes.iter_mut().zip(queries) {
                *hash = self.pair_hash(path, digest);
            }
            let mut offsets = [None; BATCH];
            if self.complete {
                for (offset, &hash) in offsets.iter_mut().zip(&hashes) {
                    *offset = self.candidate(hash, mask);
                }
            }
            let mut headers = [None; BATCH];
            for (header, offset) in headers.iter_mut().zip(offsets) {
                *header = offset.and_then(|offset| Some((offset, self.arena.header(offset)?)));
            }
            let mut found = [None; BATCH];
            for ((found, header), (path, _)) in found.iter_mut().zip(headers).zip(queries) {
                *found = header
                    .and_then(|(offset, header)| self.arena.entry_with(offset, header))
                    .filter(|(key, _)| key.len() == path.len() && key.last() == path.last());
            }
            for ((answer, found), (path, digest)) in answers.iter_mut().zip(found).zip(queries) {
                *answer = match found {
                    Some((key, digests)) if key == *path && digests.contains(digest) => Some(true),
                    _ => self.allows(path, digest),
                };
            }
        }
    }

    fn any_entry(&self, visit: &mut EntryVisitor<'_>) -> bool {
        self.arena
            .iter()
            .any(|(path, digests)| visit(path, digests))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_index_tells_unknown_paths_from_unknown_digests() {
        let mut files = FileAllowlist::default();
        // Many paths with one digest (empty files) and a path with several.
        for n in 0..2000 {
            files.allow(
                &format!("/usr/lib/python3/dist-packages/p{n}/__init__.py"),
                [7; 32],
            );
        }
        files.allow("/usr/bin/a", [1; 32]);
        files.allow("/usr/bin/a", [2; 32]);
        let index = FileHashIndex::new(&files);
        assert_eq!(
            index.allows(
                b"/usr/lib/python3/dist-packages/p1999/__init__.py",
                &[7; 32]
            ),
            Some(true)
        );
        assert_eq!(index.allows(b"/usr/bin/a", &[2; 32]), Some(true));
        assert_eq!(index.allows(b"/usr/bin/a", &[1; 32]), Some(true));
        assert!(
            index.by_path.get().is_none(),
            "allowed pairs need no search by path"
        );
        assert_eq!(index.allows(b"/usr/bin/a", &[7; 32]), Some(false));
        assert_eq!(index.allows(b"/usr/bin/b", &[1; 32]), None);
        assert_eq!(index.allows(b"/usr/bin/a\xff", &[1; 32]), None);
        assert_eq!(
            index.digests_of(b"/usr/bin/a"),
            Some(&[[1; 32], [2; 32]][..])
        );
        assert_eq!(index.digests_of(b""), None);
        let empty = FileHashIndex::new(&FileAllowlist::default());
        assert_eq!(empty.allows(b"/x", &[0; 32]), None);
    }

    /// A kept table is used as it is (same seed, same slots) for its
    /// arena; one that cannot be its arena's is built anew; one that
    /// passes yet is wrong answers as the arena says.
    #[test]
    fn a_kept_table_is_used_only_if_it_fits_its_arena() {
        let mut files = FileAllowlist::default();
        for n in 0..300u32 {
            files.allow(&format!("/usr/bin/p{n}"), [n as u8; 32]);
            if n % 7 == 0 {
                files.allow(&format!("/usr/bin/p{n}"), [0xee; 32]);
            }
        }
        let index = FileHashIndex::new(&files);
        let table = index.table();
        let arena = index.arena().clone();
        let answers = |index: &FileHashIndex| {
            let mut out = Vec::new();
            for (path, digests) in files.digests.iter() {
                for d in digests.0.iter().chain([&[0xee; 32], &[0x11; 32]]) {
                    out.push(index.allows(path.as_bytes(), d));
                }
            }
            out.push(index.allows(b"/usr/bin/none", &[0; 32]));
            out
        };
        let want = answers(&index);

        let kept = FileHashIndex::with_table(arena.clone(), &table);
        assert_eq!(kept.table(), table, "used as kept, not built anew");
        assert_eq!(answers(&kept), want);

        // A fresh index has a fresh seed: a table built anew differs.
        let rebuilt = |bad: &[u8]| {
            let index = FileHashIndex::with_table(arena.clone(), bad);
            assert_ne!(index.table(), table);
            assert_eq!(answers(&index), want);
        };
        rebuilt(&[]);
        rebuilt(&table[..table.len() - 8]);
        rebuilt(&[table.as_slice(), &[0; 8]].concat());
        let used = |t: &[u8]| {
            (16..t.len())
                .step_by(8)
                .filter(|&at| t[at + 4..at + 8] != [0; 4])
                .collect::<Vec<_>>()
        };
        let slots = used(&table);
        // A slot naming no entry's start (one byte into an entry).
        let mut bad = table.clone();
        let value = u32::from_le_bytes(bad[slots[0] + 4..slots[0] + 8].try_into().unwrap());
        bad[slots[0] + 4..slots[0] + 8].copy_from_slice(&(value + 1).to_le_bytes());
        if !arena.entries.contains(&(value as usize * 8)) {
            rebuilt(&bad);
        }
        // A slot naming a point past the arena.
        let mut bad = table.clone();
        bad[slots[0] + 4..slots[0] + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        rebuilt(&bad);
        // A pair missing (its slot freed), so every probe still ends.
        let mut bad = table.clone();
        bad[slots[1] + 4..slots[1] + 8].fill(0);
        rebuilt(&bad);

        // Passing yet wrong: every tag changed, two entries swapped.
        let mut wrong = table.clone();
        for &at in &slots {
            wrong[at] ^= 0x5a;
        }
        let (a, b) = (slots[2], slots[3]);
        let (va, vb) = (wrong[a + 4..a + 8].to_vec(), wrong[b + 4..b + 8].to_vec());
        wrong[a + 4..a + 8].copy_from_slice(&vb);
        wrong[b + 4..b + 8].copy_from_slice(&va);
        let index = FileHashIndex::with_table(arena.clone(), &wrong);
        assert_eq!(index.table(), wrong, "it passes the checks");
        assert_eq!(answers(&index), want);
        let queries: Vec<(&[u8], [u8; 32])> = files
            .digests
            .iter()
            .map(|(p, d)| (p.as_bytes(), d.0[0]))
            .collect();
        let mut many = vec![None; queries.len()];
        index.allows_many(&queries, &mut many);
        assert!(many.iter().all(|a| *a == Some(true)));
    }

    proptest! {
        /// The hash index answers exactly what the policy's map answers.
        #[test]
        fn the_hash_index_agrees_with_the_map(
            entries in proptest::collection::vec(("/[a-c]{0,6}", any::<u8>()), 0..60),
            probes in proptest::collection::vec("/[a-c]{0,6}", 0..30),
        ) {
            let mut files = FileAllowlist::default();
            for (path, byte) in &entries {
                files.allow(path, [*byte; 32]);
            }
            let index = FileHashIndex::new(&files);
            // Every allowed pair is found by its (path, digest) key alone,
            // one at a time and in batches.
            for (path, byte) in &entries {
                prop_assert_eq!(index.allows(path.as_bytes(), &[*byte; 32]), Some(true));
            }
            let allowed: Vec<(&[u8], [u8; 32])> =
                entries.iter().map(|(p, b)| (p.as_bytes(), [*b; 32])).collect();
            let mut answers = vec![None; allowed.len()];
            index.allows_many(&allowed, &mut answers);
            prop_assert!(answers.iter().all(|a| *a == Some(true)));
            prop_assert!(index.by_path.get().is_none());
            // Batches of anything answer what the map answers.
            let queries: Vec<(&[u8], [u8; 32])> = entries
                .iter()
                .map(|(p, _)| p)
                .chain(&probes)
                .flat_map(|p| entries.iter().take(8).map(move |(_, b)| (p.as_bytes(), [*b; 32])))
                .chain(entries.iter().map(|(p, b)| (p.as_bytes(), [b.wrapping_add(1); 32])))
                .collect();
            let mut answers = vec![None; queries.len()];
            index.allows_many(&queries, &mut answers);
            for ((path, digest), answer) in queries.iter().zip(&answers) {
                prop_assert_eq!(*answer, files.digests_of(path).map(|d| d.contains(digest)));
            }
            for path in entries.iter().map(|(p, _)| p).chain(&probes) {
                prop_assert_eq!(
                    index.digests_of(path.as_bytes()),
                    files.digests_of(path.as_bytes())
                );
                for (_, byte) in entries.iter().take(8) {
                    let digest = [byte.wrapping_add(1); 32];
                    prop_assert_eq!(
                        index.allows(path.as_bytes(), &digest),
                        files.digests_of(path.as_bytes()).map(|d| d.contains(&digest))
                    );
                }
            }
        }


        /// An arena read back from its bytes is the same allowlist, and
        /// so is what its index visits: module files are found through
        /// it as through the map.
        #[test]
        fn an_arena_read_back_is_the_same_allowlist(
            entries in proptest::collection::vec(("/[a-c]{0,3}(/[a-c_-]{1,4}\\.ko(\\.xz)?)?", 0u8..4), 0..40),
            module in "[a-c_-]{1,4}",
            byte in 0u8..4,
        ) {
            let mut files = FileAllowlist::default();
            for (path, byte) in &entries {
                files.allow(path, [*byte; 32]);
            }
            let arena = Arena::parse(Arena::of(&files).bytes().to_vec()).expect("parses");
            prop_assert_eq!(&arena, &Arena::of(&files));
            prop_assert_eq!(&arena.to_digests(), &files.digests);
            prop_assert_eq!(arena.pairs(), files.len());
            let index = FileHashIndex::of_arena(arena);
            let mut visited = Vec::new();
            index.any_entry(&mut |path, digests| {
                visited.push((path.to_vec(), digests.to_vec()));
                false
            });
            let want: Vec<_> = files
                .digests
                .iter()
                .map(|(p, d)| (p.as_bytes().to_vec(), d.0.clone()))
                .collect();
            prop_assert_eq!(visited, want);
            prop_assert_eq!(
                avm_attest::monvm::module_file_allowed(&index, module.as_bytes(), &[byte; 32]),
                avm_attest::monvm::module_file_allowed(&files, module.as_bytes(), &[byte; 32])
            );
        }

        #[test]
        fn arbitrary_arenas_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(arena) = Arena::parse(bytes) {
                let index = FileHashIndex::of_arena(arena);
                let _ = index.allows(b"/a", &[0; 32]);
                let _ = index.arena().to_digests();
            }
        }
    }
}
