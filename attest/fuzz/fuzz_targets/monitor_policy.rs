//! The monitor policy's text form (`opt/avm/monitor-policy`, read by the
//! A-VM before it watches the Mon-VM): strict parse, and a policy that
//! parses writes a canonical text that parses back to it.
#![no_main]

use avm_attest::monitor_policy::MonitorPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = MonitorPolicy::parse(data) {
        let text = policy.to_string();
        assert!(policy.shortest_ms() >= 1);
        assert!(policy.setuid.len() <= avm_attest::monitor_policy::MAX_SETUID_PROGRAMS);
        for path in &policy.setuid {
            assert!(path.starts_with('/') && policy.allows_setuid(path.as_bytes()));
        }
        assert_eq!(MonitorPolicy::parse(text.as_bytes()), Ok(policy));
    }
});
