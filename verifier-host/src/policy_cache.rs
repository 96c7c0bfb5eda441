//! The policy a verifier holds from one attestation to the next.
//!
//! Parsing a policy and preparing its allowlist costs time in proportion
//! to its size: a policy with a 100,000-path Keylime allowlist is a 12 MB
//! TOML text that takes about a quarter of a second to parse, ten times
//! what appraising a 100,000-entry IMA list against it takes. `monitor`
//! re-attests a node on every event the node pushes, so it keeps the
//! prepared policy and prepares it again only when its text changed.
//!
//! Whether the policy held is still the one in force is asked on every
//! attestation: of the state database, by the policy's revision (every
//! change of the text bumps it, also one made past the verifier: a
//! trigger, see `store`), without reading the 12 MB again; of a `--policy`
//! file, by reading it and comparing the text whole. A policy that `policy
//! learn`, `policy import-keylime` or an operator changed is used from the
//! next attestation on, and a changed policy that does not parse is an
//! error, never a reason to keep using the old one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::appraise::PreparedPolicy;
use crate::commands::{CommandError, policy_text, prepare_policy};
use crate::store::Store;

/// The last policy prepared, with the text it was prepared from.
#[derive(Default)]
pub struct PolicyCache {
    held: Mutex<Option<Held>>,
}

struct Held {
    source: Source,
    policy: Arc<PreparedPolicy<'static>>,
}

/// What a policy was prepared from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The policy of this state database at this revision.
    Stored { database: PathBuf, revision: i64 },
    /// This text (of a `--policy` file).
    Text(String),
}

impl std::fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("PolicyCache")
            .field(
                "held",
                &held.as_ref().map(|h| match &h.source {
                    Source::Stored { revision, .. } => format!("stored revision {revision}"),
                    Source::Text(text) => format!("{} bytes of text", text.len()),
                }),
            )
            .finish()
    }
}

impl PolicyCache {
    /// The policy in force: `override_file` if given, else the one stored
    /// in `store`, prepared (parsed, excludes compiled, allowlist indexed)
    /// unless it is the very policy prepared last time (the same stored
    /// revision, or the same file text). `None`: no policy.
    pub fn load(
        &self,
        store: Option<&Store>,
        override_file: Option<&Path>,
    ) -> Result<Option<Arc<PreparedPolicy<'static>>>, CommandError> {
        let (Some(store), None) = (store, override_file) else {
            let Some(text) = policy_text(store, override_file)? else {
                return Ok(None);
            };
            return self.prepare(Source::Text(text), "").map(Some);
        };
        let stored = |revision| Source::Stored {
            database: store.path().to_path_buf(),
            revision,
        };
        let store_error = |e: crate::store::StoreError| CommandError(e.to_string());
        let Some(revision) = store.policy_revision().map_err(store_error)? else {
            return Ok(None);
        };
        if let Some(policy) = self.held_for(&stored(revision)) {
            return Ok(Some(policy));
        }
        // Text and revision read together: a change in between is seen
        // next time.
        let Some(policy) = store.policy_with_revision().map_err(store_error)? else {
            return Ok(None);
        };
        self.prepare(stored(policy.revision), &policy.toml)
            .map(Some)
    }

    /// The policy held if it was prepared from `source`.
    fn held_for(&self, source: &Source) -> Option<Arc<PreparedPolicy<'static>>> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.as_ref()
            .filter(|h| h.source == *source)
            .map(|h| Arc::clone(&h.policy))
    }

    /// The policy of `source` prepared, or the one held if it was prepared
    /// from the same `source`; `stored_text` is the text of a
    /// [`Source::Stored`] (a [`Source::Text`] holds its own).
    fn prepare(
        &self,
        source: Source,
        stored_text: &str,
    ) -> Result<Arc<PreparedPolicy<'static>>, CommandError> {
        // Held while parsing: threads that need the same new policy wait
        // for it rather than parse it each.
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = held.as_ref().filter(|h| h.source == source) {
            return Ok(Arc::clone(&current.policy));
        }
        *held = None;
        let text = match &source {
            Source::Text(text) => text.as_str(),
            Source::Stored { .. } => stored_text,
        };
        let policy = Arc::new(prepare_policy(text)?);
        *held = Some(Held {
            source,
            policy: Arc::clone(&policy),
        });
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "4afa1bb626895a1c7239b73a777bec5caa0aa8d12f06b9f44e115bbd2fe9193e";

    fn policy(paths: &[&str]) -> String {
        let mut text = String::from("version = 1\n[monvm_files.digests]\n");
        for path in paths {
            text.push_str(&format!("\"{path}\" = [\"{DIGEST}\"]\n"));
        }
        text
    }

    impl PolicyCache {
        fn prepare_text(&self, text: String) -> Result<Arc<PreparedPolicy<'static>>, CommandError> {
            self.prepare(Source::Text(text), "")
        }
    }

    fn allows(policy: &PreparedPolicy<'_>, path: &str) -> bool {
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&DIGEST[2 * i..2 * i + 2], 16).expect("hex");
        }
        policy.values().monvm_files.digests_of(path.as_bytes()) == Some(&[digest][..])
    }

    #[test]
    fn the_same_text_is_prepared_once() {
        let cache = PolicyCache::default();
        let first = cache.prepare_text(policy(&["/bin/sh"])).expect("parses");
        let again = cache.prepare_text(policy(&["/bin/sh"])).expect("parses");
        assert!(Arc::ptr_eq(&first, &again));
        assert!(allows(&again, "/bin/sh"));
    }

    /// Whatever changed in the text, the next load is the new policy: an
    /// allowlist entry removed is no longer allowed.
    #[test]
    fn a_changed_text_is_prepared_again() {
        let cache = PolicyCache::default();
        let wide = cache
            .prepare_text(policy(&["/bin/sh", "/bin/evil"]))
            .expect("parses");
        assert!(allows(&wide, "/bin/evil"));
        let narrow = cache.prepare_text(policy(&["/bin/sh"])).expect("parses");
        assert!(!Arc::ptr_eq(&wide, &narrow));
        assert!(!allows(&narrow, "/bin/evil") && allows(&narrow, "/bin/sh"));
        // One byte differs (same length): prepared again, too.
        let other = cache.prepare_text(policy(&["/bin/sH"])).expect("parses");
        assert!(!allows(&other, "/bin/sh") && allows(&other, "/bin/sH"));
    }

    /// A new policy that does not parse is an error, even though a good
    /// one is held; and it is not held instead.
    #[test]
    fn a_broken_new_policy_is_an_error_not_the_old_one() {
        let cache = PolicyCache::default();
        cache.prepare_text(policy(&["/bin/sh"])).expect("parses");
        let broken = format!("{}\"/bin/x\" = [\"not hex\"]\n", policy(&["/bin/sh"]));
        assert!(cache.prepare_text(broken.clone()).is_err());
        assert!(cache.prepare_text(broken).is_err());
        let bad_exclude = format!("{}excludes = [\"(\"]\n", "version = 1\n[monvm_files]\n");
        assert!(cache.prepare_text(bad_exclude).is_err());
        assert!(cache.prepare_text(policy(&["/bin/sh"])).is_ok());
    }

    /// The stored policy is prepared once per revision, whoever changed
    /// it: the verifier, or an UPDATE past it (the revision trigger).
    #[test]
    fn the_stored_policy_is_prepared_again_only_when_its_revision_moves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("store");
        let cache = PolicyCache::default();
        store.set_policy(&policy(&["/bin/a"])).expect("stored");
        let load = |store: &Store| {
            cache
                .load(Some(store), None)
                .expect("loads")
                .expect("a policy")
        };
        let first = load(&store);
        assert!(Arc::ptr_eq(&first, &load(&store)));
        let other = rusqlite::Connection::open(store.path()).expect("second client");
        other
            .execute(
                "UPDATE policy SET toml = ?1 WHERE id = 1",
                [policy(&["/bin/evil"])],
            )
            .expect("updated by hand");
        let by_hand = load(&store);
        assert!(allows(&by_hand, "/bin/evil") && !allows(&by_hand, "/bin/a"));
        assert!(Arc::ptr_eq(&by_hand, &load(&store)));
        // A broken text by hand is an error, not the policy held.
        other
            .execute("UPDATE policy SET toml = 'not = [toml' WHERE id = 1", [])
            .expect("updated by hand");
        assert!(cache.load(Some(&store), None).is_err());
        // A file given instead is its text, whatever the store holds.
        let file = dir.path().join("policy.toml");
        std::fs::write(&file, policy(&["/bin/f"])).expect("written");
        let from_file = cache.load(Some(&store), Some(&file)).expect("loads");
        assert!(from_file.is_some_and(|p| allows(&p, "/bin/f")));
    }

    /// The stored policy and a `--policy` file are read on every load.
    #[test]
    fn loads_follow_the_store_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("store");
        let cache = PolicyCache::default();
        assert!(cache.load(Some(&store), None).expect("no policy").is_none());
        store.set_policy(&policy(&["/bin/a"])).expect("stored");
        let first = cache
            .load(Some(&store), None)
            .expect("loads")
            .expect("a policy");
        assert!(allows(&first, "/bin/a"));
        store.set_policy(&policy(&["/bin/b"])).expect("stored");
        let second = cache
            .load(Some(&store), None)
            .expect("loads")
            .expect("a policy");
        assert!(allows(&second, "/bin/b") && !allows(&second, "/bin/a"));

        let file = dir.path().join("policy.toml");
        std::fs::write(&file, policy(&["/bin/c"])).expect("written");
        let from_file = cache.load(Some(&store), Some(&file)).expect("loads");
        assert!(from_file.is_some_and(|p| allows(&p, "/bin/c") && !allows(&p, "/bin/b")));
        std::fs::write(&file, "not = [toml").expect("written");
        assert!(cache.load(Some(&store), Some(&file)).is_err());
    }
}
