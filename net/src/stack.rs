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
/// Longest time [`NetStack::needs_poll`] stays false without a frame or a
/// stack timer: the server's own timeouts (idle connections, closing
/// grace) are checked in its poll, and they run in seconds.
pub const MAX_QUIET_MS: u64 = 50;

/// A network device that knows its MAC address.
pub trait EthernetDevice: Device {
    fn mac_address(&self) -> [u8; 6];

    /// Whether a received frame may be waiting. Without a cheap way to
    /// tell, a device says yes, and every [`NetStack::needs_poll`] is true.
    fn frames_waiting(&self) -> bool {
        true
    }
}

/// Why the stack could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackError {
    /// The device's MAC address is not a unicast address (smoltcp refuses it).
    MacNotUnicast([u8; 6]),
}

impl core::fmt::Display for StackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::MacNotUnicast(m) => write!(
                f,
                "MAC address {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} is not unicast",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
        }
    }
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
    /// When the stack next needs a poll without a received frame (0:
    /// at once; set by [`Self::poll`], reset by any access to the sockets).
    next_poll_ms: u64,
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
            next_poll_ms: 0,
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
        self.next_poll_ms = if progress {
            now_ms
        } else {
            now_ms.saturating_add(self.poll_delay(now_ms, MAX_QUIET_MS))
        };
        progress
    }

    /// Whether [`Self::poll`] has work: a frame may have arrived, a timer
    /// of the stack (retransmission, delayed ACK, DHCP) or
    /// [`MAX_QUIET_MS`] is due, or the sockets were handed out since the
    /// last poll (a server may have queued data). Cheap, so an idle loop
    /// woken by its timer can skip the network's full poll.
    pub fn needs_poll(&self, now_ms: u64) -> bool {
        now_ms >= self.next_poll_ms || self.device.frames_waiting()
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
        self.next_poll_ms = 0;
        &mut self.sockets
    }

    /// The interface and the socket set together, e.g. to open a client
    /// connection (`tcp::Socket::connect` needs the interface's context).
    pub fn parts_mut(&mut self) -> (&mut Interface, &mut SocketSet<'static>) {
        self.next_poll_ms = 0;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaticIpv4;
    use crate::server::{AttestationServer, ServerLimits};
    use crate::testing::{DeterministicBackend, LinkEnd, link_pair};
    use avm_attest::wire::{self, FrameAssembler, MAX_FRAME_LEN, Request, Response};
    use smoltcp::socket::{tcp, udp};
    use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr};
    use std::vec;

    const LEASED: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

    /// Answers one DHCP message the way QEMU's slirp would, if one arrived.
    fn serve_dhcp(sockets: &mut SocketSet<'static>, handle: SocketHandle) -> bool {
        let socket = sockets.get_mut::<udp::Socket>(handle);
        let mut buffer = [0u8; 1500];
        let Ok((len, _)) = socket.recv_slice(&mut buffer) else {
            return false;
        };
        let packet = DhcpPacket::new_checked(&buffer[..len]).unwrap();
        let request = DhcpRepr::parse(&packet).unwrap();
        let message_type = match request.message_type {
            DhcpMessageType::Discover => DhcpMessageType::Offer,
            DhcpMessageType::Request => DhcpMessageType::Ack,
            _ => return false,
        };
        let reply = DhcpRepr {
            message_type,
            transaction_id: request.transaction_id,
            secs: 0,
            client_hardware_address: request.client_hardware_address,
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: LEASED,
            server_ip: ROUTER,
            router: Some(ROUTER),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(ROUTER),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: Some(86_400),
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut out = vec![0; reply.buffer_len()];
        reply
            .emit(&mut DhcpPacket::new_unchecked(&mut out[..]))
            .unwrap();
        socket.send_slice(&out, (Ipv4Addr::BROADCAST, 68)).unwrap();
        true
    }

    fn router_stack(link: LinkEnd) -> NetStack<LinkEnd> {
        let config = NetConfig {
            addressing: Addressing::Static(StaticIpv4 {
                address: ROUTER,
                prefix_len: 24,
                gateway: None,
            }),
            random_seed: 7,
        };
        NetStack::new(link, config, 0).unwrap()
    }

    /// A client on the router's stack that sends Hello to the A-VM's
    /// attestation server at [`LEASED`] and reads the answer.
    struct HelloClient {
        handle: SocketHandle,
        hello: Vec<u8>,
        sent: bool,
        assembler: FrameAssembler,
    }

    impl HelloClient {
        fn connect(router: &mut NetStack<LinkEnd>) -> Self {
            let client = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 8192]),
                tcp::SocketBuffer::new(vec![0; 8192]),
            );
            let (iface, sockets) = router.parts_mut();
            let handle = sockets.add(client);
            sockets
                .get_mut::<tcp::Socket>(handle)
                .connect(iface.context(), (LEASED, 4700), 50_000)
                .unwrap();
            Self {
                handle,
                hello: wire::encode_frame(&Request::Hello { version: 1 }).unwrap(),
                sent: false,
                assembler: FrameAssembler::new(MAX_FRAME_LEN),
            }
        }

        /// Runs the link a millisecond at a time (`avm_side(now)` is the
        /// A-VM's part of each) until the answer is whole; `None` after 5 s.
        fn exchange(
            &mut self,
            router: &mut NetStack<LinkEnd>,
            now: &mut u64,
            mut avm_side: impl FnMut(u64),
        ) -> Option<Response> {
            for _ in 0..5_000 {
                router.poll(*now);
                avm_side(*now);
                if let Some(answer) = self.step(router) {
                    return Some(answer);
                }
                *now += 1;
            }
            None
        }

        /// Sends Hello once the connection takes it; the answer once whole.
        fn step(&mut self, router: &mut NetStack<LinkEnd>) -> Option<Response> {
            let socket = router.sockets_mut().get_mut::<tcp::Socket>(self.handle);
            if !self.sent && socket.may_send() {
                self.sent = socket.send_slice(&self.hello).unwrap() == self.hello.len();
            }
            if !socket.can_recv() {
                return None;
            }
            let assembler = &mut self.assembler;
            socket.recv(|data| (assembler.push(data), ())).unwrap();
            let body = assembler.next_body().unwrap()?;
            Some(wire::decode_body::<Response>(&body).unwrap())
        }
    }

    #[test]
    fn dhcp_configures_the_interface_and_the_server_is_reachable() {
        let (a, b) = link_pair([2, 0, 0, 0, 0, 0x15], [2, 0, 0, 0, 0, 2]);
        let mut avm = NetStack::new(a, NetConfig::default(), 0).unwrap();
        assert_eq!(avm.ipv4(), None);
        let mut router = router_stack(b);
        let mut dhcp_server = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        );
        dhcp_server.bind(67).unwrap();
        let dhcp_handle = router.sockets_mut().add(dhcp_server);

        let mut now = 0;
        let mut answered = 0;
        while avm.ipv4().is_none() && now < 60_000 {
            avm.poll(now);
            router.poll(now);
            if serve_dhcp(router.sockets_mut(), dhcp_handle) {
                answered += 1;
            }
            router.poll(now);
            now += 10;
        }
        assert_eq!(answered, 2, "DISCOVER and REQUEST");
        assert_eq!(
            avm.ipv4(),
            Some(Ipv4Status {
                address: LEASED,
                prefix_len: 24,
                gateway: Some(ROUTER),
            })
        );

        // The leased address serves attestation.
        let mut server = AttestationServer::new(4700, ServerLimits::default());
        let mut backend = DeterministicBackend::new(8);
        let mut client = HelloClient::connect(&mut router);
        let answer = client.exchange(&mut router, &mut now, |now| {
            avm.poll(now);
            server.poll(&mut avm, &mut backend, now);
            avm.poll(now);
        });
        assert_eq!(
            answer,
            Some(Response::Hello(DeterministicBackend::hello_info()))
        );
    }

    #[test]
    fn an_idle_stack_needs_a_poll_only_for_a_frame_a_timer_or_its_sockets() {
        let (a, b) = link_pair([2, 0, 0, 0, 0, 0x15], [2, 0, 0, 0, 0, 2]);
        let config = NetConfig {
            addressing: Addressing::Static(StaticIpv4 {
                address: LEASED,
                prefix_len: 24,
                gateway: None,
            }),
            random_seed: 3,
        };
        let mut avm = NetStack::new(a, config, 0).unwrap();
        let mut router = router_stack(b);
        let mut server = AttestationServer::new(4700, ServerLimits::default());
        let mut backend = DeterministicBackend::new(8);
        // The main loop's round: the stack, the server, the stack again.
        let mut round = |avm: &mut NetStack<LinkEnd>, now: u64| {
            avm.poll(now);
            server.poll(avm, &mut backend, now);
            avm.poll(now);
        };
        assert!(avm.needs_poll(0), "a new stack");
        round(&mut avm, 0);
        assert!(!avm.needs_poll(1), "nothing to do");
        assert!(avm.needs_poll(MAX_QUIET_MS), "the quiet limit");
        round(&mut avm, MAX_QUIET_MS);
        let _ = avm.sockets_mut();
        assert!(avm.needs_poll(MAX_QUIET_MS + 1), "sockets handed out");
        avm.poll(MAX_QUIET_MS + 1);
        assert!(!avm.needs_poll(MAX_QUIET_MS + 2));

        // A client connects: its first frame makes a poll due, and an
        // exchange where the A-VM polls only when told to completes.
        let mut now = MAX_QUIET_MS + 2;
        let mut client = HelloClient::connect(&mut router);
        router.poll(now);
        assert!(avm.needs_poll(now), "a frame arrived");
        let answer = client.exchange(&mut router, &mut now, |now| {
            if avm.needs_poll(now) {
                round(&mut avm, now);
            }
        });
        assert_eq!(
            answer,
            Some(Response::Hello(DeterministicBackend::hello_info()))
        );
        // The connection stays open, idle: a few polls in 500 ticks (the
        // last ACKs, the quiet limit), not one per tick.
        let mut polled = 0;
        for _ in 0..500 {
            now += 1;
            router.poll(now);
            if avm.needs_poll(now) {
                round(&mut avm, now);
                polled += 1;
            }
        }
        assert!(polled <= 500 / MAX_QUIET_MS + 5, "{polled} polls");
        assert!(polled >= 500 / MAX_QUIET_MS, "{polled} polls");
    }

    #[test]
    fn static_address_is_applied_at_once() {
        let (a, _b) = link_pair([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let stack = router_stack(a);
        assert_eq!(
            stack.ipv4(),
            Some(Ipv4Status {
                address: ROUTER,
                prefix_len: 24,
                gateway: None
            })
        );
    }

    #[test]
    fn multicast_mac_is_refused() {
        let (a, _b) = link_pair([1, 0, 0x5e, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        assert_eq!(
            NetStack::new(a, NetConfig::default(), 0).err(),
            Some(StackError::MacNotUnicast([1, 0, 0x5e, 0, 0, 1]))
        );
    }
}
