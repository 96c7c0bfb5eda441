//! Keylime runtime policies (`policy import-keylime`): JSON from a user's
//! file, validated strictly; an accepted one compiles its excludes and
//! answers lookups through the hash index (one at a time and in batches)
//! exactly as its map does.
#![no_main]

use avm_attest::monvm::FileIndex;
use avm_verifier::allowlist::{Excludes, import_keylime};
use avm_verifier::file_index::FileHashIndex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(import) = import_keylime(data) else {
        return;
    };
    let excludes = Excludes::compile(&import.files).expect("validated excludes compile");
    let index = FileHashIndex::new(&import.files);
    let mut queries = Vec::new();
    for (path, digests) in import.files.digests.iter().take(64) {
        let _ = excludes.matches(path.as_bytes());
        assert_eq!(
            index.digests_of(path.as_bytes()),
            import.files.digests_of(path.as_bytes())
        );
        for digest in &digests.0 {
            let mut other = *digest;
            other[31] ^= 1;
            queries.extend([(path.as_bytes(), *digest), (path.as_bytes(), other)]);
            queries.push((&path.as_bytes()[..path.len() - 1], *digest));
        }
    }
    // Batched lookups answer what the map answers.
    let mut answers = vec![None; queries.len()];
    index.allows_many(&queries, &mut answers);
    for ((path, digest), answer) in queries.iter().zip(answers) {
        let want = import.files.digests_of(path).map(|d| d.contains(digest));
        assert_eq!(answer, want);
    }
});
