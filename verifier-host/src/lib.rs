//! `avm-verifier`: the host side of A-VM attestation.
#![forbid(unsafe_code)]

pub mod credential;
pub mod ek;
pub mod tpm_public;
