//! Event-log parsing, emission and replay on arbitrary bytes.
#![no_main]

use avm_attest::eventlog::{EventLog, hcrtm_pcr0_start, initial_pcrs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = EventLog::parse(data) {
        assert!(log.used_len() <= data.len());
        // Emission reproduces the used part exactly.
        let emitted = log.emit();
        assert_eq!(emitted.as_slice(), &data[..log.used_len()]);
        let _ = log.replay_sha256(&initial_pcrs(hcrtm_pcr0_start(&[0; 32])));
    }
});
