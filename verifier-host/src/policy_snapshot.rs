//! The stored policy, compiled: what `attest`, `verify` and `monitor` load
//! instead of parsing the policy's TOML text, as long as the text has not
//! changed since the snapshot was taken.
//!
//! The TOML text stays the policy: operators read it (`policy show`) and
//! may edit it. But parsing it costs time in proportion to its allowlist:
//! 0.3-0.5 s for a 100,000-path Keylime allowlist (12 MB of TOML), ten
//! times what appraising a 100,000-entry IMA list against it takes, paid
//! by every `attest` process. A snapshot holds the same values in
//! postcard: the allowlist's paths and their raw digests in two flat runs
//! (copied out, never parsed), and the rest of the policy, which is small,
//! as its TOML.
//!
//! The verifier writes a snapshot with every policy it stores, and the
//! first load after a change made past it (another SQLite client) writes
//! one. The state deletes the snapshot whenever the policy row changes
//! (triggers, see `store`) and hands it out only for the revision it was
//! taken of, so a snapshot is never older than the text. One that does not
//! decode is ignored: the text is parsed, and the snapshot written anew.

use std::collections::BTreeMap;

use avm_attest::policy::{DigestList, ReferenceValues};
use serde::{Deserialize, Serialize};

/// The encoding below; a snapshot of another format is not used.
pub const FORMAT: i64 = 1;

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
struct Snapshot<'a> {
    /// The policy without its allowlist's digests, as TOML.
    rest: &'a str,
    /// The allowlist's paths in order, each with its number of digests.
    #[serde(borrow)]
    paths: Vec<(&'a str, u32)>,
    /// Their digests, 32 bytes each, in the order of `paths`.
    #[serde(with = "raw_bytes")]
    digests: &'a [u8],
}

/// The snapshot of `values`.
pub fn encode(values: &ReferenceValues) -> Result<Vec<u8>, SnapshotError> {
    let mut rest = values.clone();
    rest.monvm_files.digests = BTreeMap::new();
    let rest = toml::to_string(&rest).map_err(|_| SnapshotError::Malformed("unencodable"))?;
    let files = &values.monvm_files.digests;
    let mut paths = Vec::with_capacity(files.len());
    let mut digests = Vec::with_capacity(32 * values.monvm_files.len());
    for (path, list) in files {
        let count = u32::try_from(list.0.len()).map_err(|_| SnapshotError::Malformed("count"))?;
        paths.push((path.as_str(), count));
        digests.extend(list.0.iter().flatten());
    }
    Ok(postcard::to_allocvec(&Snapshot {
        rest: &rest,
        paths,
        digests: &digests,
    })?)
}

/// The values of a snapshot; an error if it is not one [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<ReferenceValues, SnapshotError> {
    let snapshot: Snapshot<'_> = postcard::from_bytes(bytes)?;
    let mut values: ReferenceValues = toml::from_str(snapshot.rest)?;
    if !values.monvm_files.digests.is_empty() {
        return Err(SnapshotError::Malformed("digests in the rest"));
    }
    let mut digests = snapshot.digests.as_chunks::<32>();
    if !digests.1.is_empty() {
        return Err(SnapshotError::Malformed("digest run"));
    }
    let mut files = Vec::with_capacity(snapshot.paths.len());
    for (path, count) in snapshot.paths {
        let Some((mine, others)) = digests.0.split_at_checked(count as usize) else {
            return Err(SnapshotError::Malformed("fewer digests than counted"));
        };
        digests.0 = others;
        // In the order a BTreeMap yields: strictly ascending, no path twice.
        if files
            .last()
            .is_some_and(|(last, _): &(String, _)| last.as_str() >= path)
        {
            return Err(SnapshotError::Malformed("paths out of order"));
        }
        files.push((path.to_owned(), DigestList(mine.to_vec())));
    }
    if !digests.0.is_empty() {
        return Err(SnapshotError::Malformed("more digests than counted"));
    }
    values.monvm_files.digests = files.into_iter().collect();
    Ok(values)
}

/// A byte slice as postcard bytes (a length, then the bytes), borrowed
/// when decoded.
mod raw_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'de [u8], D::Error> {
        <&[u8]>::deserialize(d)
    }
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

    #[test]
    fn a_policy_comes_back_as_it_went_in() {
        let values = policy(&[
            ("/bin/a", &[1, 2]),
            ("/bin/b", &[3]),
            ("/lib/c.so", &[4, 5, 6]),
        ]);
        let back = decode(&encode(&values).expect("encodes")).expect("decodes");
        assert_eq!(back, values);
        assert_eq!(back.monvm_files.excludes, ["/tmp/.*"]);
    }

    #[test]
    fn a_policy_without_files_comes_back_too() {
        let mut values = policy(&[]);
        values.monvm_files = FileAllowlist::default();
        assert_eq!(decode(&encode(&values).unwrap()).unwrap(), values);
    }

    #[test]
    fn counts_that_do_not_match_the_digests_are_refused() {
        let values = policy(&[("/bin/a", &[1, 2]), ("/bin/b", &[3])]);
        let rest = {
            let mut r = values.clone();
            r.monvm_files.digests.clear();
            toml::to_string(&r).unwrap()
        };
        let digests = [7u8; 96];
        for (paths, run, why) in [
            (vec![("/bin/a", 2), ("/bin/b", 2)], &digests[..], "fewer"),
            (vec![("/bin/a", 1), ("/bin/b", 1)], &digests[..], "more"),
            (
                vec![("/bin/a", 1), ("/bin/b", 1)],
                &digests[..63],
                "digest run",
            ),
            (vec![("/bin/b", 1), ("/bin/a", 2)], &digests[..], "order"),
            (vec![("/bin/a", 1), ("/bin/a", 2)], &digests[..], "order"),
        ] {
            let bytes = postcard::to_allocvec(&Snapshot {
                rest: &rest,
                paths,
                digests: run,
            })
            .unwrap();
            let err = decode(&bytes).expect_err(why).to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn a_rest_with_digests_is_refused() {
        let values = policy(&[("/bin/a", &[1])]);
        let rest = toml::to_string(&values).unwrap();
        let bytes = postcard::to_allocvec(&Snapshot {
            rest: &rest,
            paths: vec![],
            digests: &[],
        })
        .unwrap();
        assert!(decode(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn any_allowlist_round_trips(
            files in proptest::collection::btree_map(
                "/[a-z./]{1,24}",
                proptest::collection::vec(any::<u8>(), 1..4),
                0..40,
            )
        ) {
            let list: Vec<(&str, &[u8])> =
                files.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
            let values = policy(&list);
            prop_assert_eq!(decode(&encode(&values).unwrap()).unwrap(), values);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
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
            let _ = decode(&bytes);
        }
    }
}
