//! The command layer (`tpm_crb::Tpm`) talking to a TPM that replays the
//! fuzz input: the first byte picks the call (`shared::CALLS`), the rest is
//! the TPM's side of the conversation, one response frame after another
//! (each as long as its header says; the transport makes the size field
//! match, as real transports do). Covers what the parsers alone do not:
//! transient-error retries, multi-command loops (PCR reads, random bytes,
//! NV reads in chunks, credential activation in a policy session with its
//! cleanup) and the cross-checks between request and response. Nothing may
//! panic.
#![no_main]

#[path = "../shared/mod.rs"]
#[allow(dead_code)]
mod shared;

use libfuzzer_sys::fuzz_target;
use tpm_crb::Tpm;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, conversation)) = data.split_first() else {
        return;
    };
    let mut tpm = Tpm::new(shared::Replay { rest: conversation });
    shared::call(&mut tpm, selector, &shared::Context::default());
});
