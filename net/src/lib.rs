//! The A-VM's network: a virtio-net device under a smoltcp interface, and
//! the attestation server that answers verifiers over TCP.
//!
//! Modules, bottom up:
//! - [`virtio`]: finds the virtio-net PCI function and starts virtio-drivers'
//!   `VirtIONetRaw` over the modern PCI transport; the DMA `Hal` for an
//!   identity-mapped kernel heap and PCI configuration access through port
//!   I/O (the only `unsafe` code of the crate).
//! - [`device`]: smoltcp's `phy::Device` over `VirtIONetRaw` with a fixed
//!   set of receive and transmit buffers, polled (no interrupts).
//! - [`config`]: the `ip=` word of the kernel command line (static or DHCP).
//! - [`stack`]: [`NetStack`], the interface and its sockets, bounded work per poll.
//! - [`session`]: one connection's protocol state (no I/O, fuzzed).
//! - [`server`]: [`AttestationServer`], a pool of TCP sockets with timeouts
//!   and eviction, serving [`AttestationBackend`] (the kernel's TPM).
//!
//! # Wiring it into the kernel
//!
//! The kernel provides:
//! - **Port I/O** for PCI configuration (0xCF8/0xCFC): implement
//!   [`virtio::PortIo`] (`inl`/`outl`).
//! - **DMA memory**: [`virtio::IdentityMapHal`] allocates from the global
//!   allocator and hands the device *virtual* addresses as *physical*
//!   ones. That is correct only if the kernel identity-maps all of RAM
//!   (heap, stacks, statics) and the virtio BARs (which SeaBIOS assigns,
//!   possibly above 4 GiB for 64-bit BARs; map them uncached). The heap
//!   needs about 150 KiB for the device's queues and buffers plus
//!   `connections * (rx_buffer_len + tx_buffer_len)` (192 KiB by default)
//!   plus one evidence frame per answering connection.
//! - **A clock**: milliseconds since boot (monotonic, `u64`).
//! - **Randomness** for [`NetConfig::random_seed`] (TPM2_GetRandom).
//! - **The TPM**: an implementation of [`AttestationBackend`].
//!
//! ```ignore
//! let mut config = avm_net::NetConfig::from_cmdline(cmdline)?;   // ip=... or DHCP
//! config.random_seed = tpm.get_random_u64()?;
//! let device = avm_net::virtio::open_virtio_net::<avm_net::virtio::IdentityMapHal, _>(
//!     avm_net::virtio::PortConfigAccess::new(KernelPorts),
//! )?;
//! let mut stack = avm_net::NetStack::new(device, config, clock.now_ms())?;
//! let mut server = avm_net::AttestationServer::new(PORT, avm_net::ServerLimits::default());
//! loop {
//!     let now = clock.now_ms();
//!     let mut busy = stack.poll(now);
//!     busy |= server.poll(&mut stack, &mut tpm_backend, now);
//!     busy |= stack.poll(now);            // send what the server queued
//!     if !busy {
//!         // run the monitors, then sleep (hlt with a timer, or spin) for
//!         let _ms = stack.poll_delay(clock.now_ms(), 10);
//!     }
//! }
//! ```
//! The device is polled: it raises no interrupts the kernel must handle.
//! With interrupts disabled, `hlt` never wakes, so sleep by spinning on the
//! clock (or arm a timer) for at most the `poll_delay` (cap it at ~10 ms so
//! new packets are seen promptly).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod backend;
pub mod config;
pub mod device;
pub mod server;
pub mod session;
pub mod stack;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod virtio;

pub use backend::{AttestationBackend, BackendError};
pub use config::{Addressing, ConfigError, NetConfig, StaticIpv4};
pub use server::{AttestationServer, ServerLimits, ServerStats};
pub use session::Session;
pub use stack::{EthernetDevice, Ipv4Status, NetStack, StackError};

#[cfg(test)]
mod server_tests;
