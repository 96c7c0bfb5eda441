//! Shared core of the A-VM and its verifier (`no_std` + `alloc`).
//!
//! Everything here is used by both sides: the A-VM builds the messages and
//! evidence, the verifier parses and checks them. Nothing here touches
//! hardware, so the whole crate is tested on the host.
//!
//! - [`wire`]: the framed postcard protocol between verifier and A-VM.
//! - [`eventlog`]: the TCG PC Client crypto-agile event log (parse, emit,
//!   replay, the H-CRTM start value of PCR 0).
//! - [`tpm`]: checked views of TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC,
//!   TPM names and PCR selections.
//! - [`verify`]: the verification core (`verify_evidence`, reason codes),
//!   with signature arithmetic behind the `SignatureVerifier` trait.
//! - [`hex`]: hex encoding and checked decoding, shared by every crate.
//! - [`ima`]: the IMA binary measurement list (ima-ng / ima-sig records,
//!   replay), the format of the A-VM's own measurement log.
//! - [`monvm`]: the A-VM's records about the Mon-VM (start-up records,
//!   events) and their appraisal against the policy's allowlists.
//! - [`monitor_policy`]: how often the A-VM checks the Mon-VM (the
//!   measured monitor policy, its text form and parser).
//! - [`pcr`]: `PcrMask`, the set of PCRs from challenge to verdict.
//! - [`policy`]: reference values (allowed images, firmware events) with
//!   their serde (TOML) form and learning from a known-good log.
//!
//! The protocol and the verification steps are described in
//! `docs/protocol.md`, the policy format in `docs/policy.md`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod eventlog;
pub mod hex;
pub mod ima;
pub mod monitor_policy;
pub mod monvm;
pub mod pcr;
pub mod policy;
mod reader;
pub mod tpm;
pub mod verify;
pub mod wire;
