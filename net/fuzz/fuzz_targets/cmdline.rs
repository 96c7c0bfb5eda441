//! Arbitrary kernel command lines through the network configuration parser.
#![no_main]

use avm_net::{Addressing, NetConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(NetConfig {
        addressing: Addressing::Static(ip),
        ..
    }) = NetConfig::from_cmdline(line)
    {
        // Whatever is accepted is a consistent configuration.
        assert!((1..=32).contains(&ip.prefix_len));
        assert!(!ip.address.is_unspecified());
        if let Some(gateway) = ip.gateway {
            assert_ne!(gateway, ip.address);
        }
    }
});
