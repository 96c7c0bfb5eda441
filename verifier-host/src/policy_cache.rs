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
use crate::commands::{CommandError, load_stored_policy, policy_text, prepare_policy};
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
            return self.prepare_text(text).map(Some);
        };
        let stored = |revision| Source::Stored {
            database: store.path().to_path_buf(),
            revision,
        };
        let store_error = |e: crate::store::StoreError| CommandError(e.to_string());
        let Some(revision) = store.policy_revision().map_err(store_error)? else {
            return Ok(None);
        };
        // Held while loading: threads that need the same new policy wait
        // for it rather than load it each.
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = held.as_ref().filter(|h| h.source == stored(revision)) {
            return Ok(Some(Arc::clone(&current.policy)));
        }
        *held = None;
        // Its snapshot or its text, read with the revision they are of: a
        // change since `revision` is seen next time.
        let Some((revision, policy)) = load_stored_policy(store)? else {
            return Ok(None);
        };
        let policy = Arc::new(policy);
        *held = Some(Held {
            source: stored(revision),
            policy: Arc::clone(&policy),
        });
        Ok(Some(policy))
    }

    /// The policy of a `--policy` file's `text` prepared, or the one held
    /// if it was prepared from the same text.
    fn prepare_text(&self, text: String) -> Result<Arc<PreparedPolicy<'static>>, CommandError> {
        // Held while parsing, as in `load`.
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let same = |h: &&Held| matches!(&h.source, Source::Text(held) if *held == text);
        if let Some(current) = held.as_ref().filter(same) {
            return Ok(Arc::clone(&current.policy));
        }
        *held = None;
        let policy = Arc::new(prepare_policy(&text)?);
        *held = Some(Held {
            source: Source::Text(text),
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

    /// A command context on the state in `dir`.
    fn context(dir: &Path) -> crate::commands::Context {
        crate::commands::Context {
            state_dir: dir.to_path_buf(),
            timeout: std::time::Duration::from_secs(1),
            policies: Arc::default(),
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

    /// Review finding: a policy row deleted past the verifier and stored
    /// again starts over at revision 1, the revision of the policy held:
    /// the held one must not be taken for it.
    #[test]
    fn a_policy_deleted_and_stored_again_is_prepared_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("store");
        let cache = PolicyCache::default();
        let first = store.set_policy(&policy(&["/bin/evil"])).expect("stored");
        let held = cache
            .load(Some(&store), None)
            .expect("loads")
            .expect("a policy");
        assert!(allows(&held, "/bin/evil"));
        let other = rusqlite::Connection::open(store.path()).expect("second client");
        other
            .execute("DELETE FROM policy", [])
            .expect("deleted by hand");
        let again = store.set_policy(&policy(&["/bin/a"])).expect("stored");
        assert_ne!(again, first, "a new policy row must not reuse a revision");
        let loaded = cache
            .load(Some(&store), None)
            .expect("loads")
            .expect("a policy");
        assert!(allows(&loaded, "/bin/a") && !allows(&loaded, "/bin/evil"));
    }

    /// The stored policy comes from its snapshot while the snapshot is of
    /// its revision, and from its text as soon as the text changed, also
    /// by hand; a snapshot that does not decode is replaced, never used.
    #[test]
    fn the_snapshot_is_used_only_while_the_text_is_unchanged() {
        use crate::policy_snapshot::{self, FORMAT};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("store");
        let revision = store.set_policy(&policy(&["/bin/a"])).expect("stored");
        // Written by the first load of the text.
        assert!(store.policy_snapshot(FORMAT).expect("reads").is_none());
        let (at, first) = load_stored_policy(&store)
            .expect("loads")
            .expect("a policy");
        assert_eq!(at, revision);
        assert!(allows(&first, "/bin/a"));
        let (_, body) = store
            .policy_snapshot(FORMAT)
            .expect("reads")
            .expect("taken");
        assert_eq!(
            policy_snapshot::decode(body)
                .expect("decodes")
                .into_values(),
            *first.values()
        );
        // A snapshot of this revision is what loads (another one planted
        // here, to tell the paths apart).
        let planted = crate::commands::parse_policy(&policy(&["/bin/planted"])).expect("parses");
        let body = policy_snapshot::encode(&planted).expect("encodes");
        assert!(
            store
                .set_policy_snapshot(revision, &policy(&["/bin/a"]), FORMAT, &body)
                .expect("writes")
        );
        let (_, loaded) = load_stored_policy(&store)
            .expect("loads")
            .expect("a policy");
        assert!(allows(&loaded, "/bin/planted") && !allows(&loaded, "/bin/a"));
        // The text changed by hand: the text, not the snapshot.
        let other = rusqlite::Connection::open(store.path()).expect("second client");
        other
            .execute(
                "UPDATE policy SET toml = ?1 WHERE id = 1",
                [policy(&["/bin/b"])],
            )
            .expect("updated by hand");
        let (_, loaded) = load_stored_policy(&store)
            .expect("loads")
            .expect("a policy");
        assert!(allows(&loaded, "/bin/b") && !allows(&loaded, "/bin/planted"));
        // A snapshot that does not decode: the text, and a new snapshot.
        let revision = store.policy_revision().expect("reads").expect("a policy");
        assert!(
            store
                .set_policy_snapshot(revision, &policy(&["/bin/b"]), FORMAT, b"\xff\xff garbage")
                .expect("writes")
        );
        let (_, loaded) = load_stored_policy(&store)
            .expect("loads")
            .expect("a policy");
        assert!(allows(&loaded, "/bin/b"));
        let (_, body) = store
            .policy_snapshot(FORMAT)
            .expect("reads")
            .expect("taken");
        assert!(policy_snapshot::decode(body).is_ok());
        // A snapshot is checked as the text is: an exclude that does not
        // compile is an error, not an allowlist that excludes nothing.
        let mut bad = planted.clone();
        bad.monvm_files.excludes.push("(".into());
        let body = policy_snapshot::encode(&bad).expect("encodes");
        assert!(
            store
                .set_policy_snapshot(revision, &policy(&["/bin/b"]), FORMAT, &body)
                .expect("writes")
        );
        assert!(load_stored_policy(&store).is_err());
    }

    /// `policy show` prints the text: a snapshot planted past the
    /// verifier that says something else is dropped there, so what an
    /// operator reads is what the next `attest` enforces.
    #[test]
    fn policy_show_drops_a_snapshot_that_is_not_its_text() {
        use crate::policy_snapshot::{self, FORMAT};
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let mut store = Store::open(dir.path()).expect("store");
        let revision = store.set_policy(&policy(&["/bin/a"])).expect("stored");
        load_stored_policy(&store).expect("loads");
        // The genuine snapshot is kept.
        crate::commands::policy_show(&ctx).expect("shows");
        assert!(store.policy_snapshot(FORMAT).expect("reads").is_some());
        let planted = crate::commands::parse_policy(&policy(&["/bin/evil"])).expect("parses");
        let body = policy_snapshot::encode(&planted).expect("encodes");
        assert!(
            store
                .set_policy_snapshot(revision, &policy(&["/bin/a"]), FORMAT, &body)
                .expect("writes")
        );
        crate::commands::policy_show(&ctx).expect("shows");
        assert!(store.policy_snapshot(FORMAT).expect("reads").is_none());
        let (_, loaded) = load_stored_policy(&store)
            .expect("loads")
            .expect("a policy");
        assert!(allows(&loaded, "/bin/a") && !allows(&loaded, "/bin/evil"));
    }

    /// The verifier's own policy writes take the snapshot at once.
    #[test]
    fn policy_import_takes_the_snapshot() {
        use crate::policy_snapshot::FORMAT;
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = context(dir.path());
        let image = format!("{:064x}", 1);
        crate::commands::policy_init(&ctx, &[], &[image], &[], &[], Default::default())
            .expect("init");
        let store = Store::open(dir.path()).expect("store");
        let (init, _) = store
            .policy_snapshot(FORMAT)
            .expect("reads")
            .expect("taken");
        let file = dir.path().join("keylime.json");
        let json = format!(
            r#"{{"meta": {{"version": 1}}, "digests": {{"/bin/k": ["{DIGEST}"]}}, "excludes": []}}"#
        );
        std::fs::write(&file, json).expect("written");
        crate::commands::policy_import_keylime(&ctx, &file, false).expect("imports");
        let (imported, body) = store
            .policy_snapshot(FORMAT)
            .expect("reads")
            .expect("taken");
        assert!(imported > init);
        let values = crate::policy_snapshot::decode(body)
            .expect("decodes")
            .into_values();
        assert!(values.monvm_files.digests.contains_key("/bin/k"));
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
