//! IMA binary measurement lists (the A-VM's log, the Mon-VM's entries):
//! parse, field split, template-hash check, replay, and exact re-emission.
#![no_main]

use avm_attest::ima;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = ima::parse_list(data, 4096) {
        let mut emitted = Vec::new();
        for r in &records {
            let _ = r.ng_fields();
            let _ = r.template_hash_matches();
            r.emit(&mut emitted);
        }
        assert_eq!(emitted.as_slice(), data);
        let _ = ima::replay_sha256(&records, &[[0; 32]; 24]);
    }
});
