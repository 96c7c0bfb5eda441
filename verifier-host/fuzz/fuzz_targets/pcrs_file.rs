//! tpm2-tools PCR files from untrusted evidence directories.
#![no_main]

use avm_attest::pcr::PcrMask;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pcrs) = avm_verifier::pcrs_file::parse_serialized(data) {
        // Whatever parses re-emits and re-parses to the same values.
        let again = avm_verifier::pcrs_file::emit_serialized(&pcrs);
        assert_eq!(avm_verifier::pcrs_file::parse_serialized(&again).ok(), Some(pcrs));
    }
    let _ = avm_verifier::pcrs_file::parse_any(data, Some(PcrMask::FIRMWARE));
});
