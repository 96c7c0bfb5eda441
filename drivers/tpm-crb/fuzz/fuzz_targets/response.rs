//! Arbitrary TPM response frames through the response parsers.
//!
//! The first input byte picks the parser (`shared::PARSERS`, one per
//! command the driver sends); the rest is the response frame. Unless the
//! selector has bit 0x80 set, the frame's header size field is first made
//! equal to its length, as every transport guarantees: otherwise nearly
//! every mutation (any that adds or removes a byte) is rejected by the size
//! check in `response_code` and the fuzzer never reaches the bodies. See
//! docs/fuzzing.md. Nothing may panic.
#![no_main]

#[path = "../shared/mod.rs"]
#[allow(dead_code)]
mod shared;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let parser = shared::parser(selector);
    if selector & shared::RAW != 0 {
        (parser.parse)(frame);
    } else {
        let mut frame = frame.to_vec();
        shared::fix_size(&mut frame);
        (parser.parse)(&frame);
    }
});
