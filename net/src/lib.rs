//! The A-VM's network: a virtio-net device under a smoltcp interface, and
//! the attestation server that answers verifiers over TCP.
//!
//! Modules, bottom up:
//! - [`virtio`]: finds the virtio-net PCI function and starts virtio-drivers'
//!   `VirtIONetRaw` over the modern PCI transport; the DMA `Hal` for an
//!   identity-mapped kernel heap, and PCI configuration access through the
//!   kernel's port I/O (the `unsafe` trait [`virtio::PciConfigPorts`]).
//! - [`device`]: smoltcp's `phy::Device` over `VirtIONetRaw` with a fixed
//!   set of receive and transmit buffers, polled (no interrupts).
//!
//! The crate's `unsafe` code is in [`virtio`] (the `Hal`) and [`device`]
//! (virtio-drivers' raw buffer calls); the rest is safe and host-tested.
//! - [`config`]: the `ip=` word of the kernel command line (static or DHCP).
//! - [`stack`]: [`NetStack`], the interface and its sockets, bounded work per poll.
//! - [`session`]: one connection's protocol state (no I/O, fuzzed).
//! - [`server`]: [`AttestationServer`], a pool of TCP sockets with timeouts
//!   and eviction, serving [`AttestationBackend`] (the kernel's TPM).
//!
//! # Wiring it into the kernel
//!
//! The kernel provides:
//! - **Port I/O** for PCI configuration (0xCF8/0xCFC): implement the
//!   `unsafe` trait [`virtio::PciConfigPorts`] (`read`/`write` of one
//!   configuration dword: the address to 0xCF8, then the data at 0xCFC) on
//!   a unit struct, promising that these are the machine's configuration
//!   ports and that nothing interleaves with each address/data pair.
//! - **BAR mapping**: the `map_mmio(phys, len) -> bool` callback of
//!   [`virtio::open_virtio_net`] identity-maps each memory BAR uncached
//!   (SeaBIOS may place the 64-bit virtio BAR above 4 GiB).
//! - **DMA memory**: [`virtio::IdentityMapHal`] allocates from the global
//!   allocator and hands the device *virtual* addresses as *physical*
//!   ones, which is correct only because the kernel identity-maps RAM
//!   (heap, stacks, statics). Heap use: about 100 KiB for the queues and
//!   buffers, [`ServerLimits::buffer_memory`] for the server's sockets
//!   (`connections * (rx_buffer_len + tx_buffer_len)`: 128 x 24 KiB = 3 MiB
//!   with the defaults, plus about half a KiB of state per socket), and
//!   per connection a partial request (up to 4 KiB) or the encoded answer
//!   being sent.
//! - **A clock**: milliseconds since boot (monotonic `u64`).
//! - **Randomness** for [`NetConfig::random_seed`] (TPM2_GetRandom).
//! - **The TPM**: an implementation of [`AttestationBackend`].
//! - No `alloc::format!` is used here: liballoc's precompiled `format`
//!   needs `_Unwind_Resume`, which the freestanding image lacks.
//!
//! ```ignore
//! #[derive(Clone)]
//! struct KernelPorts;
//! // SAFETY: 0xCF8/0xCFC are this machine's PCI configuration ports; one CPU,
//! // and no interrupt handler touches PCI.
//! unsafe impl avm_net::virtio::PciConfigPorts for KernelPorts { /* outl, then inl or outl */ }
//!
//! let mut config = avm_net::NetConfig::from_cmdline(cmdline)?;   // ip=... or DHCP
//! config.random_seed = tpm_random_u64;
//! let device = avm_net::virtio::open_virtio_net::<avm_net::virtio::IdentityMapHal, _>(
//!     avm_net::virtio::PortConfigAccess::new(KernelPorts),
//!     |phys, len| paging::map_mmio(phys, len).is_ok(),
//! )?;
//! let mut stack = avm_net::NetStack::new(device, config, time::now_us() / 1000)?;
//! let mut server = avm_net::AttestationServer::new(PORT, avm_net::ServerLimits::default());
//! loop {
//!     let now = time::now_us() / 1000;
//!     let mut busy = stack.poll(now);
//!     busy |= server.poll(&mut stack, &mut tpm_backend, now);
//!     busy |= stack.poll(now);            // send what the server queued at once
//!     if !busy {
//!         cpu::idle_until_interrupt();    // hlt until the next timer tick
//!     }
//! }
//! ```
//! The device is polled; it raises no interrupts. Do not spin instead of
//! `hlt` under TCG: a guest that never exits holds QEMU's big lock and
//! starves slirp (tested: 200 connections took 45 s to open while the
//! guest spun, 20 s with `hlt` at 100 Hz). A faster timer (e.g. 1 kHz)
//! shortens the per-packet wait; `stack.poll_delay(now, max)` says how soon
//! smoltcp needs the next poll.
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
