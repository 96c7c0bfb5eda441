//! The kernel profile decoder (what the A-VM runs on the profile its boot
//! module carries) on arbitrary bytes: an error, or a profile that
//! validates, re-encodes to exactly the input (one encoding, one digest)
//! and whose digest is the input's. Never a panic; work bounded by the
//! input size (at most MAX_PROFILE_LEN).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmi::profile::{KernelProfile, digest};

fuzz_target!(|data: &[u8]| {
    if let Ok(profile) = KernelProfile::decode(data) {
        assert_eq!(profile.validate(), Ok(()));
        let again = profile.encode().expect("a decoded profile encodes");
        assert!(again == data, "decode is not the inverse of encode");
        assert_eq!(profile.digest(), Ok(digest(data)));
        let image = profile.kernel_image();
        assert_eq!(image.banner, profile.kernel.banner.as_bytes());
        assert!(profile.syscall_count() >= 1);
    }
});
