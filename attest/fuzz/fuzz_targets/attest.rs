//! TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC and TPML_PCR_SELECTION parsing.
#![no_main]

use avm_attest::tpm::{Attest, PcrSelection, Public, Signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Attest::parse(data) {
        let emitted = a.emit();
        let again = Attest::parse(&emitted).expect("emitted attest parses");
        assert_eq!(again.quote, a.quote);
        let _ = a.is_quote();
    }
    if let Ok(s) = Signature::parse(data) {
        assert_eq!(s.emit(), data);
    }
    if let Ok(p) = Public::parse(data) {
        let _ = p.name();
        let _ = p.verifying_key();
    }
    let _ = Public::parse_tpm2b(data);
    if let Ok(sel) = PcrSelection::parse(data) {
        let _ = sel.sha256_mask();
        assert_eq!(PcrSelection::parse(&sel.emit()), Ok(sel));
    }
});
