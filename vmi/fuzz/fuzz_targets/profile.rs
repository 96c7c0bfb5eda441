//! The kernel profile decoders on arbitrary bytes: an error, or a profile
//! that validates, re-encodes to exactly the input (one encoding, one
//! digest) and whose digest is the input's; the A-VM's decoder
//! (`decode_measured`, on the profile its boot module carries, without the
//! canonical check) gives the same profile wherever the strict one does,
//! and a valid one wherever it gives one. Never a panic; work bounded by
//! the input size (at most MAX_PROFILE_LEN).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmi::profile::{KernelProfile, digest};

fuzz_target!(|data: &[u8]| {
    let measured = KernelProfile::decode_measured(data);
    if let Ok(profile) = &measured {
        assert_eq!(profile.validate(), Ok(()));
    }
    if let Ok(profile) = KernelProfile::decode(data) {
        assert_eq!(measured.as_ref(), Ok(&profile));
        assert_eq!(profile.validate(), Ok(()));
        let again = profile.encode().expect("a decoded profile encodes");
        assert!(again == data, "decode is not the inverse of encode");
        assert_eq!(profile.digest(), Ok(digest(data)));
        let image = profile.kernel_image();
        assert_eq!(image.banner, profile.kernel.banner.as_bytes());
        assert!(profile.syscall_count() >= 1);
    }
});
