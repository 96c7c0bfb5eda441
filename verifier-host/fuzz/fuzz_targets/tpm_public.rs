//! EK/AK public areas from a node's Hello, and their OpenSSL conversion.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(public) = avm_verifier::tpm_public::TpmPublic::parse(data) {
        let _ = public.to_pkey();
        let _ = public.name();
    }
});
