//! The stored policy's compiled snapshot (`policy_snapshot`), read back
//! from the state database on every `attest`: bytes that do not decode
//! are refused without a panic; what decodes encodes and decodes again to
//! the same values (and to the same bytes from then on: the rest's TOML
//! of a snapshot read may be any text that parses), and prepares (or is
//! refused) as the parsed values would, with its allowlist indexed as it
//! is. Whatever table a snapshot holds, its index answers every question
//! as an index built from the arena does.
#![no_main]

use avm_attest::monvm::FileIndex;
use avm_verifier::appraise::PreparedPolicy;
use avm_verifier::file_index::FileHashIndex;
use avm_verifier::policy_snapshot::{decode, encode, encode_parts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = decode(data.to_vec()) else {
        return;
    };
    let kept = encode_parts(&snapshot.rest, &snapshot.arena, &snapshot.table).expect("encodes");
    assert_eq!(decode(kept).expect("decodes").table, snapshot.table);
    let stored = FileHashIndex::with_table(snapshot.arena.clone(), &snapshot.table);
    let built = FileHashIndex::of_arena(snapshot.arena.clone());
    for (path, digests) in snapshot.arena.iter() {
        for digest in digests.iter().chain([&[0x5a; 32]]) {
            assert_eq!(stored.allows(path, digest), built.allows(path, digest));
            let mut answers = [None];
            stored.allows_many(&[(path, *digest)], &mut answers);
            assert_eq!(answers[0], built.allows(path, digest));
        }
    }
    assert_eq!(stored.allows(b"/not/listed", &[0; 32]), built.allows(b"/not/listed", &[0; 32]));
    let parts = encode_parts(&snapshot.rest, &snapshot.arena, &[]).expect("decoded parts encode");
    let values = snapshot.into_values();
    let again = encode(&values).expect("decoded values encode");
    assert_eq!(parts, again, "the parts encode as the values whole");
    let back = decode(again.clone()).expect("re-encoded values decode");
    assert_eq!(back.arena.bytes(), &data[..back.arena.bytes().len()]);
    let back = back.into_values();
    assert_eq!(back, values);
    assert_eq!(encode(&back).expect("encodes"), again);
    let whole = PreparedPolicy::checked(values.clone());
    let rest = decode(data.to_vec()).expect("decodes again");
    let parts = PreparedPolicy::from_parts(rest.rest, rest.arena, &rest.table);
    assert_eq!(whole.is_ok(), parts.is_ok());
    if let Ok(parts) = parts {
        assert_eq!(*parts.values(), values);
    }
});
