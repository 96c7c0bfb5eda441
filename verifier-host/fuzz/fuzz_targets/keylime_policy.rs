//! Keylime runtime policies (`policy import-keylime`): JSON from a user's
//! file, validated strictly; an accepted one compiles its excludes and
//! answers lookups through the hash index exactly as its map does.
#![no_main]

use avm_attest::monvm::FileIndex;
use avm_verifier::allowlist::{Excludes, FileHashIndex, import_keylime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(import) = import_keylime(data) else {
        return;
    };
    let excludes = Excludes::compile(&import.files).expect("validated excludes compile");
    let index = FileHashIndex::new(&import.files);
    for path in import.files.digests.keys().take(64) {
        let _ = excludes.matches(path.as_bytes());
        assert_eq!(
            index.digests_of(path.as_bytes()),
            import.files.digests_of(path.as_bytes())
        );
    }
});
