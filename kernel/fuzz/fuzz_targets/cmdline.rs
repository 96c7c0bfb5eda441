//! Kernel command-line parsing over arbitrary text.
#![no_main]

use avm_kernel::cmdline::KernelOptions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = core::str::from_utf8(data) {
        let mut problems = 0usize;
        let _ = KernelOptions::parse(s, |_| problems += 1);
        assert!(problems <= s.split_ascii_whitespace().count());
    }
});
