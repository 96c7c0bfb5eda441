//! `avm-verifier`: the host side of A-VM attestation.
//!
//! The checks on evidence live in the shared `no_std` core
//! (`avm_attest::verify`); this crate adds what only a host verifier does:
//! OpenSSL signature arithmetic ([`crypto`]), EK certificate validation
//! ([`ek`]), MakeCredential for AK activation ([`credential`]), the network
//! client ([`client`]), the state database ([`store`]), and evidence
//! directories in tpm2-tools formats ([`evidence_dir`], [`pcrs_file`]).
#![forbid(unsafe_code)]

pub mod allowlist;
pub mod appraise;
pub mod bench;
pub mod client;
pub mod commands;
pub mod credential;
pub mod crypto;
pub mod ek;
pub mod evidence_dir;
pub mod file_index;
pub mod files;
pub mod monitor;
/// Hex, shared with the A-VM and the launcher.
pub use avm_attest::hex;
pub mod pcrs_file;
pub mod policy_cache;
pub mod policy_snapshot;
pub mod profile;
pub mod report;
pub mod sanitize;
pub mod store;
pub mod tpm_public;
