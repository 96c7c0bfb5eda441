//! The smoltcp interface over one Ethernet device, polled from the main loop.
//!
//! [`NetStack`] owns the device, the interface and the socket set. It
//! applies the static address from [`NetConfig`] or runs a DHCP client, and
//! does a bounded amount of work per [`NetStack::poll`] so the A-VM's main
//! loop (which also runs the monitors) is never starved by a packet flood.

use alloc::vec::Vec;
use core::net::Ipv4Addr;
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::phy::Device;
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Cidr};

use crate::config::{Addressing, NetConfig};

/// Ingress packets processed per [`NetStack::poll`] at most.
pub const MAX_INGRESS_PER_POLL: usize = 64;
/// Egress rounds (each may send several packets) per [`NetStack::poll`] at most.
pub const MAX_EGRESS_PER_POLL: usize = 64;

/// A network device that knows its MAC address.
pub trait EthernetDevice: Device {
    fn mac_address(&self) -> [u8; 6];
}

/// Why the stack could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackError {
    /// The device's MAC address is not a unicast address (smoltcp refuses it).
    MacNotUnicast([u8; 6]),
}

/// The interface's current IPv4 configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Status {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

/// Device + smoltcp interface + sockets.
pub struct NetStack<D: EthernetDevice> {
    device: D,
    iface: Interface,
    sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    ipv4: Option<Ipv4Status>,
}

impl<D: EthernetDevice> NetStack<D> {
    /// Brings the interface up: a static address at once, or a DHCP client
    /// that configures it during later polls.
    pub fn new(mut device: D, config: NetConfig, now_ms: u64) -> Result<Self, StackError> {
        let mac = EthernetAddress(device.mac_address());
        if !mac.is_unicast() {
            return Err(StackError::MacNotUnicast(mac.0));
        }
        let mut iface_config = Config::new(HardwareAddress::Ethernet(mac));
        iface_config.random_seed = config.random_seed;
        let iface = Interface::new(iface_config, &mut device, instant(now_ms));
        let mut stack = Self {
            device,
            iface,
            sockets: SocketSet::new(Vec::new()),
            dhcp: None,
            ipv4: None,
        };
        match config.addressing {
            Addressing::Static(ip) => stack.set_ipv4(Some(Ipv4Status {
                address: ip.address,
                prefix_len: ip.prefix_len,
                gateway: ip.gateway,
            })),
            Addressing::Dhcp => {
                let handle = stack.sockets.add(dhcpv4::Socket::new());
                stack.dhcp = Some(handle);
            }
        }
        Ok(stack)
    }

    /// Processes received packets, timers and queued transmissions (bounded
    /// work). Returns true if anything happened, so the caller polls again
    /// before idling.
    pub fn poll(&mut self, now_ms: u64) -> bool {
        let now = instant(now_ms);
        let mut progress = false;
        self.iface.poll_maintenance(now);
        for _ in 0..MAX_INGRESS_PER_POLL {
            match self
                .iface
                .poll_ingress_single(now, &mut self.device, &mut self.sockets)
            {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed
                | PollIngressSingleResult::SocketStateChanged => progress = true,
            }
        }
        for _ in 0..MAX_EGRESS_PER_POLL {
            match self
                .iface
                .poll_egress(now, &mut self.device, &mut self.sockets)
            {
                PollResult::None => break,
                PollResult::SocketStateChanged => progress = true,
            }
        }
        if self.poll_dhcp() {
            progress = true;
        }
        progress
    }

    /// How long the caller may sleep before the stack needs [`Self::poll`]
    /// again (`None`: until a packet arrives). Capped at `max_ms`.
    pub fn poll_delay(&mut self, now_ms: u64, max_ms: u64) -> u64 {
        match self.iface.poll_delay(instant(now_ms), &self.sockets) {
            Some(delay) => delay.total_millis().min(max_ms),
            None => max_ms,
        }
    }

    /// The current address, or `None` while DHCP has not configured one.
    pub fn ipv4(&self) -> Option<Ipv4Status> {
        self.ipv4
    }

    /// The interface's MAC address.
    pub fn mac_address(&self) -> [u8; 6] {
        self.device.mac_address()
    }

    /// The socket set, for servers and clients running on this stack.
    pub fn sockets_mut(&mut self) -> &mut SocketSet<'static> {
        &mut self.sockets
    }

    /// The interface and the socket set together, e.g. to open a client
    /// connection (`tcp::Socket::connect` needs the interface's context).
    pub fn parts_mut(&mut self) -> (&mut Interface, &mut SocketSet<'static>) {
        (&mut self.iface, &mut self.sockets)
    }

    /// The device (e.g. for statistics).
    pub fn device(&self) -> &D {
        &self.device
    }

    fn poll_dhcp(&mut self) -> bool {
        let Some(handle) = self.dhcp else {
            return false;
        };
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
            None => return false,
            Some(dhcpv4::Event::Configured(lease)) => Some(Ipv4Status {
                address: lease.address.address(),
                prefix_len: lease.address.prefix_len(),
                gateway: lease.router,
            }),
            Some(dhcpv4::Event::Deconfigured) => None,
        };
        self.set_ipv4(event);
        true
    }

    fn set_ipv4(&mut self, status: Option<Ipv4Status>) {
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            if let Some(status) = status {
                // Capacity is at least one address; a full vector cannot
                // happen right after clear().
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(
                    status.address,
                    status.prefix_len,
                )));
            }
        });
        let routes = self.iface.routes_mut();
        routes.remove_default_ipv4_route();
        if let Some(gateway) = status.and_then(|s| s.gateway) {
            // Fails only when the route table is full; it was just emptied.
            let _ = routes.add_default_ipv4_route(gateway);
        }
        self.ipv4 = status;
    }
}

/// smoltcp's clock from the kernel's milliseconds since boot.
pub fn instant(now_ms: u64) -> Instant {
    Instant::from_millis(i64::try_from(now_ms).unwrap_or(i64::MAX))
}

/// A smoltcp duration from milliseconds.
pub fn duration(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
