//! The Mon-VM file allowlist on the host: its excludes compiled to regular
//! expressions, and the import of a Keylime runtime policy.
//!
//! Keylime's runtime policy (format version 1, as `keylime-policy create
//! runtime` writes it) is JSON:
//!
//! ```json
//! { "meta": {"version": 1, "generator": 3, "timestamp": "..."},
//!   "release": 0,
//!   "digests": {"/usr/bin/bash": ["<hex>", ...], ...},
//!   "excludes": ["^/tmp/", ...],
//!   "keyrings": {}, "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
//!   "ima-buf": {}, "verification-keys": "" }
//! ```
//!
//! The import takes `digests` (SHA-256 ones: other lengths are counted and
//! skipped) and `excludes`; everything else is read, checked for its type
//! and reported as ignored. The file is untrusted input: its size, the
//! number of paths and digests and the length of every string are bounded,
//! unknown top-level keys are refused, and any malformed part fails the
//! whole import with a message that names it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use avm_attest::policy::{DigestList, FileAllowlist};
use regex::bytes::RegexSet;
use serde::Deserialize;

/// Largest runtime policy file read (a distribution-wide policy of a few
/// hundred thousand files is tens of MiB).
pub const MAX_KEYLIME_POLICY_LEN: u64 = 256 << 20;
/// Most paths and most digests in all accepted.
pub const MAX_PATHS: usize = 2_000_000;
pub const MAX_DIGESTS: usize = 4_000_000;
/// Longest path (Linux PATH_MAX) and most digests per path.
pub const MAX_PATH_LEN: usize = 4096;
pub const MAX_DIGESTS_PER_PATH: usize = 1024;
/// Most excludes, and the longest one.
pub const MAX_EXCLUDES: usize = 4096;
pub const MAX_EXCLUDE_LEN: usize = 4096;
/// Compiled size limit of all excludes together (regex's own guard
/// against patterns that blow up).
const EXCLUDES_SIZE_LIMIT: usize = 64 << 20;

/// Why an allowlist or a Keylime policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    #[error("not a Keylime runtime policy: {0}")]
    Json(String),
    #[error("Keylime runtime policy: {0}")]
    Invalid(String),
    #[error("exclude {index} ({pattern:?}) is not a valid regular expression: {detail}")]
    Exclude {
        index: usize,
        pattern: String,
        detail: String,
    },
}

fn invalid(text: impl Into<String>) -> AllowlistError {
    AllowlistError::Invalid(text.into())
}

/// The compiled excludes of an allowlist: a path is excluded if one of
/// them matches from its start (Keylime uses Python's `re.match`).
#[derive(Debug, Clone)]
pub struct Excludes {
    set: Option<RegexSet>,
}

impl Excludes {
    /// Compiles the excludes of `files`; an invalid one is an error.
    pub fn compile(files: &FileAllowlist) -> Result<Self, AllowlistError> {
        check_excludes(&files.excludes)?;
        if files.excludes.is_empty() {
            return Ok(Self { set: None });
        }
        let anchored = files.excludes.iter().map(|p| format!("^(?:{p})"));
        let set = regex::bytes::RegexSetBuilder::new(anchored)
            .size_limit(EXCLUDES_SIZE_LIMIT)
            .build()
            .map_err(|e| AllowlistError::Exclude {
                index: 0,
                pattern: String::new(),
                detail: e.to_string(),
            })?;
        Ok(Self { set: Some(set) })
    }

    /// No excludes.
    pub fn none() -> Self {
        Self { set: None }
    }

    /// Whether `path` is excluded from appraisal.
    pub fn matches(&self, path: &[u8]) -> bool {
        self.set.as_ref().is_some_and(|set| set.is_match(path))
    }
}

/// Each exclude on its own: bounded, and a valid expression (so an error
/// names the one at fault).
fn check_excludes(excludes: &[String]) -> Result<(), AllowlistError> {
    if excludes.len() > MAX_EXCLUDES {
        return Err(invalid(format!(
            "{} excludes (at most {MAX_EXCLUDES})",
            excludes.len()
        )));
    }
    for (index, pattern) in excludes.iter().enumerate() {
        let fail = |detail: String| AllowlistError::Exclude {
            index,
            pattern: pattern.chars().take(80).collect(),
            detail,
        };
        if pattern.len() > MAX_EXCLUDE_LEN {
            return Err(fail(format!("longer than {MAX_EXCLUDE_LEN} bytes")));
        }
        regex::bytes::RegexBuilder::new(&format!("^(?:{pattern})"))
            .size_limit(EXCLUDES_SIZE_LIMIT)
            .build()
            .map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}

/// The top level of a Keylime runtime policy (unknown keys refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeylimePolicy<'a> {
    meta: KeylimeMeta,
    #[serde(default)]
    release: Option<serde_json::Number>,
    #[serde(default, borrow, deserialize_with = "digests_in_key_order")]
    digests: Vec<(String, Vec<Text<'a>>)>,
    #[serde(default)]
    excludes: Vec<String>,
    #[serde(default)]
    keyrings: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    ima: Option<KeylimeIma>,
    #[serde(default, rename = "ima-buf")]
    ima_buf: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "verification-keys")]
    verification_keys: Option<String>,
}

/// A string borrowed from the file where it holds no escapes (hex digests
/// never do: 100,000 of them are not copied one by one).
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(Visitor).map(Text)
    }
}

/// The `digests` map as a list in key order, the last of equal keys kept
/// (what a `BTreeMap` holds), collected without a search per key.
fn digests_in_key_order<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, Vec<Text<'de>>)>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<(String, Vec<Text<'de>>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
            while let Some(entry) = map.next_entry::<String, Vec<Text<'de>>>()? {
                entries.push(entry);
            }
            // Stable: equal keys stay in file order, and the last is kept.
            entries.sort_by(|a: &(String, _), b: &(String, _)| a.0.cmp(&b.0));
            let mut kept: Vec<(String, Vec<Text<'de>>)> = Vec::with_capacity(entries.len());
            for entry in entries {
                match kept.last_mut() {
                    Some(last) if last.0 == entry.0 => *last = entry,
                    _ => kept.push(entry),
                }
            }
            Ok(kept)
        }
    }
    d.deserialize_map(Visitor)
}

#[derive(Debug, Deserialize)]
struct KeylimeMeta {
    version: u64,
    #[serde(default)]
    generator: Option<u64>,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeylimeIma {
    #[serde(default)]
    ignored_keyrings: Vec<String>,
    #[serde(default)]
    log_hash_alg: Option<String>,
    #[serde(default)]
    dm_policy: Option<serde_json::Value>,
}

/// What an import produced and what it left out.
#[derive(Debug, Clone, Default)]
pub struct KeylimeImport {
    pub files: FileAllowlist,
    /// (path, digest) pairs taken.
    pub digests: usize,
    /// Digests of other algorithms (SHA-1, SHA-384, SHA-512) skipped.
    pub other_algorithms: usize,
    /// Paths left with no SHA-256 digest (so not allowed).
    pub paths_without_sha256: usize,
    /// The parts of the policy this verifier does not use, for the user.
    pub ignored: Vec<String>,
}

/// Parses and validates a Keylime runtime policy (JSON, `meta.version` 1).
pub fn import_keylime(json: &[u8]) -> Result<KeylimeImport, AllowlistError> {
    let policy: KeylimePolicy =
        serde_json::from_slice(json).map_err(|e| AllowlistError::Json(e.to_string()))?;
    if policy.meta.version != 1 {
        return Err(invalid(format!(
            "meta.version is {}, only version 1 is known",
            policy.meta.version
        )));
    }
    if policy.digests.len() > MAX_PATHS {
        return Err(invalid(format!(
            "{} paths (at most {MAX_PATHS})",
            policy.digests.len()
        )));
    }
    let mut out = KeylimeImport::default();
    let mut total = 0usize;
    let mut taken = Vec::with_capacity(policy.digests.len());
    for (path, digests) in policy.digests {
        let shown = || -> String { path.chars().take(80).collect() };
        if path.is_empty() || path.len() > MAX_PATH_LEN || path.contains('\0') {
            let shown = shown();
            return Err(invalid(format!(
                "digests: path {shown:?} is empty, longer than {MAX_PATH_LEN} bytes or holds a NUL"
            )));
        }
        if digests.len() > MAX_DIGESTS_PER_PATH {
            let shown = shown();
            return Err(invalid(format!(
                "digests: {shown:?} has {} digests (at most {MAX_DIGESTS_PER_PATH})",
                digests.len()
            )));
        }
        total += digests.len();
        if total > MAX_DIGESTS {
            return Err(invalid(format!("more than {MAX_DIGESTS} digests")));
        }
        let mut sha256 = Vec::with_capacity(digests.len());
        for Text(digest) in &digests {
            if let Some(d) = sha256_hex(digest) {
                if !sha256.contains(&d) {
                    sha256.push(d);
                }
                continue;
            }
            let bytes = avm_attest::hex::decode(digest).map_err(|e| {
                invalid(format!(
                    "digests: {:?}: {:?} is not hex ({e})",
                    shown(),
                    short(digest)
                ))
            })?;
            match bytes.len() {
                32 => {
                    let mut d = [0u8; 32];
                    d.copy_from_slice(&bytes);
                    if !sha256.contains(&d) {
                        sha256.push(d);
                    }
                }
                20 | 48 | 64 => out.other_algorithms += 1,
                n => {
                    return Err(invalid(format!(
                        "digests: {:?}: a digest of {n} bytes is no SHA-1, SHA-256, SHA-384 or SHA-512",
                        shown()
                    )));
                }
            }
        }
        if sha256.is_empty() {
            out.paths_without_sha256 += 1;
            continue;
        }
        out.digests += sha256.len();
        taken.push((path, DigestList(sha256)));
    }
    // In key order already: built in one pass.
    out.files.digests = taken.into_iter().collect();
    out.files.excludes = policy.excludes;
    check_excludes(&out.files.excludes)?;

    let mut ignore = |what: &str, present: bool| {
        if present {
            out.ignored.push(what.to_string());
        }
    };
    ignore(
        "keyrings (ima-buf keyring measurements are not appraised)",
        !policy.keyrings.is_empty(),
    );
    ignore(
        "ima-buf (buffer measurements are not appraised)",
        !policy.ima_buf.is_empty(),
    );
    ignore(
        "verification-keys (IMA signatures are not checked: a signed file not listed by digest is refused)",
        policy
            .verification_keys
            .as_deref()
            .is_some_and(|k| !k.is_empty()),
    );
    if let Some(ima) = &policy.ima {
        ignore("ima.ignored_keyrings", !ima.ignored_keyrings.is_empty());
        ignore(
            "ima.dm_policy (device-mapper measurements are not appraised)",
            ima.dm_policy.as_ref().is_some_and(|v| !v.is_null()),
        );
        if let Some(alg) = &ima.log_hash_alg
            && !matches!(alg.as_str(), "sha1" | "sha256" | "sha384" | "sha512")
        {
            return Err(invalid(format!(
                "ima.log_hash_alg {:?} is unknown",
                short(alg)
            )));
        }
    }
    let _ = (policy.release, policy.meta.generator, policy.meta.timestamp);
    Ok(out)
}

/// 64 hex digits as 32 bytes (either case), without the general
/// decoder's allocation; `None` for anything else (the caller decodes it
/// with [`avm_attest::hex::decode`], which says what is wrong).
fn sha256_hex(text: &str) -> Option<[u8; 32]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn short(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Merges `from` into `into` (digests added per path without duplicates,
/// excludes appended without duplicates); returns the new pairs.
pub fn merge(into: &mut FileAllowlist, from: FileAllowlist) -> usize {
    let mut added = 0;
    for (path, digests) in from.digests {
        for digest in digests.0 {
            added += usize::from(into.allow(&path, digest));
        }
    }
    for exclude in from.excludes {
        if !into.excludes.contains(&exclude) {
            into.excludes.push(exclude);
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D1: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    fn policy(body: &str) -> Vec<u8> {
        format!(r#"{{"meta": {{"version": 1, "generator": 3}}, {body}}}"#).into_bytes()
    }

    #[test]
    fn a_keylime_policy_is_imported_with_what_it_ignores() {
        let json = policy(&format!(
            r#""release": 0, "digests": {{"/usr/bin/a": ["{D1}", "{}", "{D1}"], "/old": ["{}"]}},
               "excludes": ["/tmp/.*"], "keyrings": {{"ring": ["{D1}"]}},
               "ima": {{"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null}},
               "ima-buf": {{}}, "verification-keys": """#,
            "AB".repeat(32),
            "cd".repeat(20)
        ));
        let import = import_keylime(&json).unwrap();
        assert_eq!(import.digests, 2);
        assert_eq!(import.other_algorithms, 1);
        assert_eq!(import.paths_without_sha256, 1);
        assert_eq!(
            import.files.digests_of(b"/usr/bin/a"),
            Some(&[[1; 32], [0xab; 32]][..])
        );
        assert_eq!(import.files.digests_of(b"/old"), None);
        assert_eq!(import.ignored.len(), 1, "{:?}", import.ignored);
        let excludes = Excludes::compile(&import.files).unwrap();
        assert!(excludes.matches(b"/tmp/x"));
        // Matched from the start, as Python's re.match.
        assert!(!excludes.matches(b"/var/tmp/x"));
    }

    #[test]
    fn a_path_listed_twice_keeps_its_last_digests_as_a_map_would() {
        let d2 = "02".repeat(32);
        let json = policy(&format!(
            r#""digests": {{"/b": ["{D1}"], "/a": ["{D1}"], "/b": ["{d2}"], "/c": ["\u0030{}"]}}"#,
            "3".repeat(63)
        ));
        let import = import_keylime(&json).unwrap();
        let paths: Vec<&str> = import.files.digests.keys().map(String::as_str).collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert_eq!(import.files.digests_of(b"/b"), Some(&[[2; 32]][..]));
        let mut c = [0x33; 32];
        c[0] = 0x03;
        assert_eq!(import.files.digests_of(b"/c"), Some(&[c][..]));
        assert_eq!(import.digests, 3);
    }

    #[test]
    fn malformed_policies_are_refused_with_a_reason() {
        for (body, needle) in [
            (r#""digests": {"/a": ["xyz"]}"#.to_string(), "not hex"),
            (r#""digests": {"/a": ["abcd"]}"#.into(), "2 bytes"),
            (r#""digests": {"": []}"#.into(), "empty"),
            (r#""digests": {"/a": "abcd"}"#.into(), "invalid type"),
            (r#""excludes": ["(unclosed"]"#.into(), "regular expression"),
            (r#""surprise": 1"#.into(), "unknown field"),
            (r#""ima": {"log_hash_alg": "md5"}"#.into(), "unknown"),
        ] {
            let err = import_keylime(&policy(&body)).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let err = import_keylime(br#"{"meta": {"version": 2}}"#).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        assert!(import_keylime(b"[]").is_err());
        assert!(import_keylime(b"").is_err());
    }

    #[test]
    fn sha256_hex_agrees_with_the_general_decoder() {
        for text in [
            "AB".repeat(32),
            "0f".repeat(32),
            "0g".repeat(32),
            "ab".repeat(31),
            "é".repeat(32),
            String::new(),
        ] {
            let general = avm_attest::hex::decode(&text)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok());
            assert_eq!(sha256_hex(&text), general, "{text:?}");
        }
    }

    #[test]
    fn merge_adds_without_duplicates() {
        let mut a = FileAllowlist::default();
        a.allow("/x", [1; 32]);
        let mut b = FileAllowlist::default();
        b.allow("/x", [1; 32]);
        b.allow("/x", [2; 32]);
        b.excludes.push("^/tmp".into());
        assert_eq!(merge(&mut a, b.clone()), 1);
        assert_eq!(merge(&mut a, b), 0);
        assert_eq!(a.excludes, ["^/tmp"]);
    }

    proptest! {
        #[test]
        fn arbitrary_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = import_keylime(&bytes);
        }
        #[test]
        fn arbitrary_excludes_never_panic(patterns in proptest::collection::vec(".{0,12}", 0..4), path in proptest::collection::vec(any::<u8>(), 0..40)) {
            let files = FileAllowlist { digests: BTreeMap::new(), excludes: patterns };
            if let Ok(excludes) = Excludes::compile(&files) {
                let _ = excludes.matches(&path);
            }
        }
    }
}
