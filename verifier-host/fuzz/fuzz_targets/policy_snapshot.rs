//! The stored policy's compiled snapshot (`policy_snapshot`), read back
//! from the state database on every `attest`: bytes that do not decode
//! are refused without a panic; what decodes encodes and decodes again to
//! the same values, and prepares (or is refused) as a parsed text would.
#![no_main]

use avm_verifier::appraise::PreparedPolicy;
use avm_verifier::policy_snapshot::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(values) = decode(data) else {
        return;
    };
    let again = encode(&values).expect("decoded values encode");
    assert_eq!(decode(&again).expect("re-encoded values decode"), values);
    let _ = PreparedPolicy::checked(values);
});
