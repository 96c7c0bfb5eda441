//! The network service: the virtio-net device under smoltcp, and the
//! attestation server on it (see `avm_net`'s crate docs for the contract).
//!
//! Serial lines for the launcher (stable, one per boot):
//! - `AVM-NET-UP ip=A.B.C.D port=N` once the interface has an address
//!   (at once for `ip=` static, after the DHCP lease otherwise);
//! - `AVM-NET-DOWN reason=...` when the network cannot start (no NIC, bad
//!   `ip=`, device failure); the A-VM keeps running without it.

use crate::arch::x86_64::paging;
use crate::attestation::TpmBackend;
use crate::pci;
use avm_net::virtio::{
    IdentityMapHal, PciConfigPorts, PciVirtioNet, PortConfigAccess, VirtioInitError,
};
use avm_net::{AttestationServer, NetConfig, NetStack, ServerLimits};

/// PCI configuration access through ports 0xCF8/0xCFC.
#[derive(Clone)]
struct KernelPorts;

// SAFETY: `pci::read_dword`/`pci::write_dword` write the address to 0xCF8
// and then access 0xCFC, the configuration mechanism #1 ports of QEMU's
// q35 and pc machines, and no other port or memory; the kernel runs in ring
// 0 on one CPU and no interrupt handler touches PCI, so nothing comes
// between an address and its data access (the kernel's own PCI code runs
// before the network starts and uses the same functions).
unsafe impl PciConfigPorts for KernelPorts {
    fn read(&self, address: u32) -> u32 {
        pci::read_dword(address)
    }

    fn write(&self, address: u32, value: u32) {
        pci::write_dword(address, value);
    }
}

type Device = PciVirtioNet<IdentityMapHal>;

/// The running network: stack, server, and whether the launcher was told.
pub struct Network {
    stack: NetStack<Device>,
    server: AttestationServer,
    announced: bool,
    /// Full polls since the last heartbeat and their time (debug level).
    full_polls: u64,
    full_poll_us: u64,
}

/// Why the network is not running, for the `AVM-NET-DOWN` line.
fn announce_down(reason: &str, detail: core::fmt::Arguments<'_>) {
    warn!("net: {}", detail);
    println!("AVM-NET-DOWN reason={}", reason);
}

/// Starts the network from the kernel command line (`ip=`), or returns
/// `None` (after saying why) if there is no usable NIC or configuration.
pub fn start(cmdline: &str, attest_port: u16, backend: &mut TpmBackend) -> Option<Network> {
    let mut config = match NetConfig::from_cmdline(cmdline) {
        Ok(config) => config,
        Err(e) => {
            announce_down("bad-ip", format_args!("ip= refused: {}", e));
            return None;
        }
    };
    config.random_seed = match backend.random_u64() {
        Ok(seed) => seed,
        Err(e) => {
            // Predictable sequence numbers weaken TCP, not attestation
            // (quotes are signed and nonce-bound); keep serving.
            warn!("net: TPM2_GetRandom failed ({}); TSC as TCP seed", e);
            crate::arch::x86_64::cpu::rdtsc()
        }
    };
    let device = match avm_net::virtio::open_virtio_net::<IdentityMapHal, _>(
        PortConfigAccess::new(KernelPorts),
        |phys, len| paging::map_mmio(phys, len).is_ok(),
    ) {
        Ok(device) => device,
        Err(VirtioInitError::NotFound) => {
            announce_down("no-nic", format_args!("no virtio-net device: no network"));
            return None;
        }
        Err(e) => {
            announce_down("device", format_args!("virtio-net: {}", e));
            return None;
        }
    };
    let mac = avm_net::EthernetDevice::mac_address(&device);
    let stack = match NetStack::new(device, config, now_ms()) {
        Ok(stack) => stack,
        Err(e) => {
            announce_down("device", format_args!("interface: {}", e));
            return None;
        }
    };
    info!(
        "net: virtio-net {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, {}, attestation port {}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], config.addressing, attest_port
    );
    let server = AttestationServer::new(attest_port, ServerLimits::default());
    let limits = server.limits();
    info!(
        "net: attestation server: {} sockets ({} kept listening), {} KiB of socket buffers",
        limits.connections,
        limits.min_listening,
        limits.buffer_memory() / 1024
    );
    Some(Network {
        stack,
        server,
        announced: false,
        full_polls: 0,
        full_poll_us: 0,
    })
}

/// Milliseconds since boot, the network's clock.
pub fn now_ms() -> u64 {
    crate::time::now_us() / 1000
}

impl Network {
    /// One round of network work (bounded); true if anything happened, so
    /// the caller polls again before halting.
    pub fn poll(&mut self, backend: &mut TpmBackend) -> bool {
        let now = now_ms();
        // Most timer ticks bring nothing: a full poll of the stack and the
        // server costs tens of microseconds under TCG, 200 times a second.
        if !self.server.needs_poll(&self.stack, now) {
            return false;
        }
        let started = crate::time::now_us();
        let mut busy = self.stack.poll(now);
        busy |= self.server.poll(&mut self.stack, backend, now);
        // Send what the server just queued without waiting for a tick.
        busy |= self.stack.poll(now);
        self.full_polls += 1;
        self.full_poll_us += crate::time::now_us().saturating_sub(started);
        if !self.announced
            && let Some(ip) = self.stack.ipv4()
        {
            self.announced = true;
            match ip.gateway {
                Some(gateway) => info!("net: {}/{} gateway {}", ip.address, ip.prefix_len, gateway),
                None => info!("net: {}/{} no gateway", ip.address, ip.prefix_len),
            }
            println!("AVM-NET-UP ip={} port={}", ip.address, self.server.port());
        }
        busy
    }

    /// Pushes `events` to every subscribed verifier and sends them at once
    /// (a subscriber that fell too far behind is dropped, never waited for).
    pub fn publish(&mut self, events: &[avm_attest::wire::PushedEvent]) {
        let now = now_ms();
        for event in events {
            let delivered = self.server.publish(&mut self.stack, event, now);
            debug!(
                "net: event {} pushed to {} subscribers",
                event.index, delivered
            );
        }
        self.stack.poll(now);
    }

    /// Counters for the debug heartbeat.
    pub fn log_stats(&mut self) {
        let s = self.server.stats();
        debug!(
            "net: {} accepted, {} requests, {} timeouts, {} evictions, {} aborted closing, {} pushed, {} subscribers dropped, {} active connections, {} full polls ({} us)",
            s.accepted,
            s.requests,
            s.timeouts,
            s.evictions,
            s.aborted_closing,
            s.pushed,
            s.dropped_subscribers,
            self.server.active_connections(),
            self.full_polls,
            self.full_poll_us
        );
        self.full_polls = 0;
        self.full_poll_us = 0;
    }
}
