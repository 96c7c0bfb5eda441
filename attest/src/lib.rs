//! Shared core of the A-VM and its verifier (`no_std` + `alloc`).
//!
//! Everything here is used by both sides: the A-VM builds the messages and
//! evidence, the verifier parses and checks them. Nothing here touches
//! hardware, so the whole crate is tested on the host.
//!
//! - [`wire`]: the framed postcard protocol between verifier and A-VM.
//! - [`eventlog`]: the TCG PC Client crypto-agile event log (parse, emit,
//!   replay, the H-CRTM start value of PCR 0).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod eventlog;
pub mod policy;
mod reader;
pub mod tpm;
pub mod verify;
pub mod wire;
