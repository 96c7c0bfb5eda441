//! The stored policy, compiled: what `attest`, `verify` and `monitor` load
//! instead of parsing the policy's TOML text, as long as the text has not
//! changed since the snapshot was taken.
//!
//! The TOML text stays the policy: operators read it (`policy show`) and
//! may edit it. But parsing it costs time in proportion to its allowlist:
//! 0.3-0.5 s for a 100,000-path Keylime allowlist (12 MB of TOML), ten
//! times what appraising a 100,000-entry IMA list against it takes, paid
//! by every `attest` process. A snapshot holds the allowlist as the
//! appraisal reads it, its [`Arena`], so loading it is checking one buffer
//! and hashing its pairs, with no allocation per path; the rest of the
//! policy, which is small, follows as its TOML:
//!
//! ```text
//! arena | table | postcard(Tail { rest, arena_len, table_len }) | u32 LE: the tail's length
//! ```
//!
//! The arena comes first so that it stays where it was read: the snapshot
//! buffer, cut after it, is the arena. The table is the hash index of a
//! large allowlist ([`crate::file_index::FileHashIndex::table`]; empty for
//! a small one), kept so that a load need not hash 100,000 pairs again;
//! one that does not fit its arena is built anew, and none can change an
//! answer.
//!
//! The verifier writes a snapshot with every policy it stores, and the
//! first load after a change made past it (another SQLite client) writes
//! one. The state deletes the snapshot whenever the policy row changes
//! (triggers, see `store`) and hands it out only for the revision it was
//! taken of, so a snapshot is never older than the text. One that does not
//! decode is ignored: the text is parsed, and the snapshot written anew.

use avm_attest::policy::ReferenceValues;
use serde::{Deserialize, Serialize};

use crate::file_index::Arena;

/// The encoding below; a snapshot of another format is not used.
pub const FORMAT: i64 = 3;

/// Why a snapshot was not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("snapshot: the rest of the policy: {0}")]
    Rest(#[from] toml::de::Error),
    #[error("snapshot: {0}")]
    Malformed(&'static str),
}

#[derive(Serialize, Deserialize)]
struct Tail<'a> {
    /// The policy without its allowlist's digests, as TOML.
    rest: &'a str,
    /// Bytes of the arena before the table.
    arena_len: u64,
    /// Bytes of the table before the tail.
    table_len: u64,
}

/// A snapshot's contents.
#[derive(Debug)]
pub struct Snapshot {
    /// The policy without its allowlist's digests.
    pub rest: ReferenceValues,
    /// The allowlist's digests.
    pub arena: Arena,
    /// Their hash index's table, if one was kept (else empty).
    pub table: Vec<u8>,
}

impl Snapshot {
    /// The policy whole.
    pub fn into_values(self) -> ReferenceValues {
        let mut values = self.rest;
        values.monvm_files.digests = self.arena.to_digests();
        values
    }
}

/// The snapshot of the policy `values` (any allowlist digests there are
/// left out) with its allowlist in `arena` and that allowlist's hash index
/// `table` (empty: none).
pub fn encode_parts(
    values: &ReferenceValues,
    arena: &Arena,
    table: &[u8],
) -> Result<Vec<u8>, SnapshotError> {
    let rest = if values.monvm_files.digests.is_empty() {
        toml::to_string(values)
    } else {
        let mut rest = values.clone();
        rest.monvm_files.digests.clear();
        toml::to_string(&rest)
    }
    .map_err(|_| SnapshotError::Malformed("unencodable"))?;
    let mut bytes = Vec::with_capacity(arena.bytes().len() + table.len() + rest.len() + 32);
    bytes.extend_from_slice(arena.bytes());
    bytes.extend_from_slice(table);
    let tail = postcard::to_allocvec(&Tail {
        rest: &rest,
        arena_len: arena.bytes().len() as u64,
        table_len: table.len() as u64,
    })?;
    let tail_len = u32::try_from(tail.len()).map_err(|_| SnapshotError::Malformed("tail"))?;
    bytes.extend_from_slice(&tail);
    bytes.extend_from_slice(&tail_len.to_le_bytes());
    Ok(bytes)
}

/// The snapshot of `values`.
pub fn encode(values: &ReferenceValues) -> Result<Vec<u8>, SnapshotError> {
    encode_parts(values, &Arena::of(&values.monvm_files), &[])
}

/// The contents of a snapshot; an error if it is not one [`encode_parts`]
/// wrote.
pub fn decode(mut bytes: Vec<u8>) -> Result<Snapshot, SnapshotError> {
    let tail_at = bytes
        .len()
        .checked_sub(4)
        .ok_or(SnapshotError::Malformed("too short"))?;
    let mut tail_len = [0; 4];
    tail_len.copy_from_slice(&bytes[tail_at..]);
    let tail_len = u32::from_le_bytes(tail_len) as usize;
    let table_end = tail_at
        .checked_sub(tail_len)
        .ok_or(SnapshotError::Malformed("tail length"))?;
    let tail: Tail<'_> = postcard::from_bytes(&bytes[table_end..tail_at])?;
    let arena_len = usize::try_from(tail.arena_len)
        .ok()
        .filter(|&len| len <= table_end)
        .ok_or(SnapshotError::Malformed("arena length"))?;
    if tail.table_len != (table_end - arena_len) as u64 {
        return Err(SnapshotError::Malformed("table length"));
    }
    let rest: ReferenceValues = toml::from_str(tail.rest)?;
    if !rest.monvm_files.digests.is_empty() {
        return Err(SnapshotError::Malformed("digests in the rest"));
    }
    let table = bytes[arena_len..table_end].to_vec();
    bytes.truncate(arena_len);
    let arena = Arena::parse(bytes).map_err(SnapshotError::Malformed)?;
    Ok(Snapshot { rest, arena, table })
}

#[cfg(test)]
mod tests {
    use super::*;
    use avm_attest::policy::FileAllowlist;
    use proptest::prelude::*;

    fn policy(files: &[(&str, &[u8])]) -> ReferenceValues {
        let mut values: ReferenceValues = toml::from_str(
            "version = 1\navm_image_sha256 = [\"00000000000000000000000000000000000000000000000000000000000000aa\"]\n\
             [monvm_files]\nexcludes = [\"/tmp/.*\"]\n",
        )
        .expect("parses");
        for (path, digests) in files {
            for d in *digests {
                values.monvm_files.allow(path, [*d; 32]);
            }
        }
        values
    }

    fn round_trip(values: &ReferenceValues) -> ReferenceValues {
        decode(encode(values).expect("encodes"))
            .expect("decodes")
            .into_values()
    }

    /// A snapshot of `rest` (TOML) and the raw arena `arena`.
    fn snapshot_of(rest: &str, arena: &[u8]) -> Vec<u8> {
        snapshot_claiming(rest, arena, arena.len() as u64, 0)
    }

    /// [`snapshot_of`] whose tail says the arena is `arena_len` bytes and
    /// the table after it `table_len`.
    fn snapshot_claiming(rest: &str, arena: &[u8], arena_len: u64, table_len: u64) -> Vec<u8> {
        let mut bytes = arena.to_vec();
        let tail = postcard::to_allocvec(&Tail {
            rest,
            arena_len,
            table_len,
        })
        .unwrap();
        bytes.extend_from_slice(&tail);
        bytes.extend_from_slice(&(tail.len() as u32).to_le_bytes());
        bytes
    }

    /// One arena entry: header, digests, path, padding.
    fn entry(path: &[u8], digests: &[[u8; 32]]) -> Vec<u8> {
        let mut e = (digests.len() as u32).to_le_bytes().to_vec();
        e.extend_from_slice(&(path.len() as u32).to_le_bytes());
        digests.iter().for_each(|d| e.extend_from_slice(d));
        e.extend_from_slice(path);
        e.resize(e.len().next_multiple_of(8), 0);
        e
    }

    #[test]
    fn a_policy_comes_back_as_it_went_in() {
        let values = policy(&[
            ("/bin/a", &[1, 2]),
            ("/bin/b", &[3]),
            ("/lib/c.so", &[4, 5, 6]),
        ]);
        let back = round_trip(&values);
        assert_eq!(back, values);
        assert_eq!(back.monvm_files.excludes, ["/tmp/.*"]);
    }

    #[test]
    fn a_policy_without_files_comes_back_too() {
        let mut values = policy(&[]);
        values.monvm_files = FileAllowlist::default();
        assert_eq!(round_trip(&values), values);
    }

    #[test]
    fn a_malformed_arena_is_refused_with_its_flaw() {
        let rest = toml::to_string(&policy(&[])).unwrap();
        let a = entry(b"/bin/a", &[[1; 32], [2; 32]]);
        let b = entry(b"/bin/b", &[[3; 32]]);
        let mut padded = entry(b"/bin/c", &[]);
        *padded.last_mut().unwrap() = 1;
        let mut long = entry(b"/bin/d", &[[4; 32]]);
        long[4] = 200;
        let mut many = entry(b"/bin/e", &[]);
        many[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        for (arena, why) in [
            ([b.clone(), a.clone()].concat(), "out of order"),
            ([a.clone(), a.clone()].concat(), "out of order"),
            (entry(b"/bin/\xff", &[]), "UTF-8"),
            (padded, "padding"),
            (long, "cut off"),
            (many, "cut off"),
            (a[..a.len() - 9].to_vec(), "cut off"),
            (a[..5].to_vec(), "header"),
        ] {
            let err = decode(snapshot_of(&rest, &arena))
                .expect_err(why)
                .to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
        // The good ones, in order.
        let good = decode(snapshot_of(&rest, &[a, b].concat())).expect("decodes");
        assert_eq!(good.arena.paths(), 2);
    }

    #[test]
    fn a_tail_that_does_not_fit_is_refused() {
        let values = policy(&[("/bin/a", &[1])]);
        let good = encode(&values).unwrap();
        let mut long = good.clone();
        let at = long.len() - 4;
        long[at..].copy_from_slice(&(good.len() as u32).to_le_bytes());
        assert!(decode(long).is_err());
        // The arena's length in the tail is checked against its place.
        let rest = toml::to_string(&policy(&[])).unwrap();
        let a = entry(b"/bin/a", &[[1; 32]]);
        let bytes = snapshot_claiming(&rest, &a, a.len() as u64 + 8, 0);
        let err = decode(bytes).unwrap_err().to_string();
        assert!(err.contains("arena length"), "{err}");
        let bytes = snapshot_claiming(&rest, &a, 8, 0);
        let err = decode(bytes).unwrap_err().to_string();
        assert!(err.contains("table length"), "{err}");
        let bytes = snapshot_claiming(&rest, &a, 8, a.len() as u64);
        let err = decode(bytes).unwrap_err().to_string();
        assert!(err.contains("table length"), "{err}");
        assert!(decode(vec![1, 2, 3]).is_err());
    }

    #[test]
    fn a_rest_with_digests_is_refused() {
        let values = policy(&[("/bin/a", &[1])]);
        let rest = toml::to_string(&values).unwrap();
        assert!(decode(snapshot_of(&rest, &[])).is_err());
    }

    proptest! {
        #[test]
        fn any_allowlist_round_trips(
            files in proptest::collection::btree_map(
                "/[a-z./]{0,24}",
                proptest::collection::vec(any::<u8>(), 0..4),
                0..40,
            )
        ) {
            let mut values = policy(&[]);
            for (path, digests) in &files {
                values.monvm_files.digests.insert(
                    path.clone(),
                    avm_attest::policy::DigestList(digests.iter().map(|d| [*d; 32]).collect()),
                );
            }
            let bytes = encode(&values).unwrap();
            let snapshot = decode(bytes.clone()).unwrap();
            // The same bytes again: one encoding per policy.
            prop_assert_eq!(
                &encode_parts(&snapshot.rest, &snapshot.arena, &snapshot.table).unwrap(),
                &bytes
            );
            prop_assert_eq!(snapshot.into_values(), values);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(bytes);
        }

        #[test]
        fn a_cut_or_flipped_snapshot_never_panics(
            cut in 0usize..400,
            flip in 0usize..400,
        ) {
            let values = policy(&[("/bin/a", &[1, 2]), ("/usr/lib/x.so", &[3])]);
            let mut bytes = encode(&values).unwrap();
            if let Some(b) = bytes.get_mut(flip) {
                *b ^= 0x41;
            }
            bytes.truncate(cut);
            let _ = decode(bytes);
        }
    }
}
