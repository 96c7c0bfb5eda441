//! avm-qemu: brings an A-VM node up under QEMU with a software TPM.
//!
//! A node lives in one state directory ([`layout`]). Bringing it up means:
//! provision a fresh TPM with EK certificates from a node-local CA
//! ([`provision`]), measure the A-VM image into PCR0 as H-CRTM through
//! swtpm's control channel ([`swtpm`], expected values in [`measure`]),
//! start QEMU ([`qemu`]) and wait for the kernel's boot report on the serial
//! console ([`report`], [`serial`]), then, for a node with a network, for
//! the line saying its attestation server is up ([`netline`]). A node may
//! also run the Mon-VM, a stock Debian kernel the A-VM watches through its
//! RAM file ([`monvm`]). [`node`] ties these together and is what the CLI
//! and the integration tests use.
#![forbid(unsafe_code)]

/// Hex, shared with the A-VM and the verifier.
pub use avm_attest::hex;
pub mod kvm;
pub mod layout;
pub mod measure;
pub mod monvm;
pub mod netline;
pub mod node;
pub mod placement;
pub mod process;
pub mod provision;
pub mod qemu;
pub mod ram_patch;
pub mod report;
pub mod serial;
pub mod stats;
pub mod swtpm;
pub mod testing;

pub use node::{Node, NodeConfig, NodeError, NodeRecord, NodeStatus};
pub use report::BootReport;
pub mod bench;
pub mod demo;
pub mod verify;
