//! Network configuration from the kernel command line.
//!
//! The launcher chooses the A-VM's address: `ip=10.0.2.15/24,gw=10.0.2.2`
//! for a static address, `ip=dhcp` (or no `ip=` word at all) for DHCP. The
//! command line comes from the host, so the parser checks everything and
//! returns an error instead of guessing.

use core::net::Ipv4Addr;
use core::str::FromStr;

/// How the interface gets its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// Ask a DHCP server (QEMU user networking serves 10.0.2.15/24).
    Dhcp,
    /// A fixed address, prefix length and optional default gateway.
    Static(StaticIpv4),
}

/// `DHCP`, or `ADDRESS/PREFIX` and its gateway if any, for logs.
impl core::fmt::Display for Addressing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Dhcp => f.write_str("DHCP"),
            Self::Static(s) => {
                write!(f, "{}/{}", s.address, s.prefix_len)?;
                match s.gateway {
                    Some(gateway) => write!(f, " gateway {gateway}"),
                    None => f.write_str(" no gateway"),
                }
            }
        }
    }
}

/// A static IPv4 configuration, already checked for consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticIpv4 {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

/// Everything the network stack needs besides the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    pub addressing: Addressing,
    /// Seed for smoltcp's TCP initial sequence numbers and ephemeral ports;
    /// it should differ on every boot (the kernel takes it from
    /// TPM2_GetRandom or RDRAND).
    pub random_seed: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            addressing: Addressing::Dhcp,
            random_seed: 0,
        }
    }
}

/// Why the `ip=` word of the command line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// `ip=` appears more than once.
    DuplicateIp,
    /// The address part is not a dotted-quad IPv4 address.
    BadAddress,
    /// The `/N` prefix length is missing or not in 1..=32.
    BadPrefix,
    /// The address is not a usable unicast host address for its prefix.
    NotUnicast,
    /// `gw=` is not an IPv4 address.
    BadGateway,
    /// The gateway is not inside the address's subnet (or is the address).
    GatewayOutsideSubnet,
    /// An option after the address other than `gw=` (or `gw=` twice).
    UnknownOption,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let text = match self {
            ConfigError::DuplicateIp => "ip= given more than once",
            ConfigError::BadAddress => "ip= address is not IPv4",
            ConfigError::BadPrefix => "ip= needs a prefix length /1../32",
            ConfigError::NotUnicast => "ip= address is not a unicast host address",
            ConfigError::BadGateway => "gw= is not an IPv4 address",
            ConfigError::GatewayOutsideSubnet => "gw= is not a host in the ip= subnet",
            ConfigError::UnknownOption => "unknown option after ip= (only gw= is known)",
        };
        f.write_str(text)
    }
}

impl NetConfig {
    /// Reads the `ip=` word of a kernel command line (whitespace-separated
    /// words); other words are ignored. No `ip=` means DHCP.
    pub fn from_cmdline(cmdline: &str) -> Result<Self, ConfigError> {
        let mut addressing = None;
        for word in cmdline.split_ascii_whitespace() {
            if let Some(value) = word.strip_prefix("ip=") {
                if addressing.is_some() {
                    return Err(ConfigError::DuplicateIp);
                }
                addressing = Some(parse_ip_value(value)?);
            }
        }
        Ok(Self {
            addressing: addressing.unwrap_or(Addressing::Dhcp),
            random_seed: 0,
        })
    }
}

/// Parses the value of `ip=`: `dhcp` or `A.B.C.D/N[,gw=A.B.C.D]`.
pub fn parse_ip_value(value: &str) -> Result<Addressing, ConfigError> {
    if value == "dhcp" {
        return Ok(Addressing::Dhcp);
    }
    let mut parts = value.split(',');
    let cidr = parts.next().unwrap_or("");
    let (address, prefix) = cidr.split_once('/').ok_or(ConfigError::BadPrefix)?;
    let address = Ipv4Addr::from_str(address).map_err(|_| ConfigError::BadAddress)?;
    let prefix_len = parse_prefix_len(prefix)?;
    if !is_unicast_host(address, prefix_len) {
        return Err(ConfigError::NotUnicast);
    }
    let mut gateway = None;
    for option in parts {
        match option.strip_prefix("gw=") {
            Some(gw) if gateway.is_none() => {
                let gw = Ipv4Addr::from_str(gw).map_err(|_| ConfigError::BadGateway)?;
                if gw == address
                    || !is_unicast_host(gw, prefix_len)
                    || !same_subnet(gw, address, prefix_len)
                {
                    return Err(ConfigError::GatewayOutsideSubnet);
                }
                gateway = Some(gw);
            }
            _ => return Err(ConfigError::UnknownOption),
        }
    }
    Ok(Addressing::Static(StaticIpv4 {
        address,
        prefix_len,
        gateway,
    }))
}

fn parse_prefix_len(text: &str) -> Result<u8, ConfigError> {
    // At most two decimal digits: rejects signs, spaces and "032"-style
    // padding beyond two digits before parsing.
    if text.is_empty() || text.len() > 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::BadPrefix);
    }
    match text.parse::<u8>() {
        Ok(len) if (1..=32).contains(&len) => Ok(len),
        _ => Err(ConfigError::BadPrefix),
    }
}

fn netmask(prefix_len: u8) -> u32 {
    // prefix_len is 1..=32 here, so the shift is 0..=31.
    u32::MAX << (32 - u32::from(prefix_len).min(32))
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = netmask(prefix_len);
    u32::from(a) & mask == u32::from(b) & mask
}

/// A host address: not unspecified, loopback, multicast or broadcast, and
/// (for prefixes up to /30) not the subnet's network or broadcast address.
fn is_unicast_host(address: Ipv4Addr, prefix_len: u8) -> bool {
    if address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.is_broadcast()
        || address.octets()[0] >= 240
    {
        return false;
    }
    if prefix_len >= 31 {
        return true;
    }
    let host_bits = u32::from(address) & !netmask(prefix_len);
    host_bits != 0 && host_bits != !netmask(prefix_len)
}

#[cfg(test)]
mod tests {
    #[test]
    fn addressing_reads_as_text() {
        use alloc::string::ToString;
        assert_eq!(Addressing::Dhcp.to_string(), "DHCP");
        let fixed = StaticIpv4 {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
        };
        assert_eq!(
            Addressing::Static(fixed).to_string(),
            "10.0.2.15/24 gateway 10.0.2.2"
        );
        let alone = StaticIpv4 {
            gateway: None,
            ..fixed
        };
        assert_eq!(
            Addressing::Static(alone).to_string(),
            "10.0.2.15/24 no gateway"
        );
    }

    use super::*;
    use proptest::prelude::*;
    use std::format;

    fn static_ip(a: [u8; 4], prefix_len: u8, gw: Option<[u8; 4]>) -> Addressing {
        Addressing::Static(StaticIpv4 {
            address: Ipv4Addr::from(a),
            prefix_len,
            gateway: gw.map(Ipv4Addr::from),
        })
    }

    #[test]
    fn qemu_user_network_static() {
        let config =
            NetConfig::from_cmdline("console=ttyS0 ip=10.0.2.15/24,gw=10.0.2.2 loglevel=info")
                .unwrap();
        assert_eq!(
            config.addressing,
            static_ip([10, 0, 2, 15], 24, Some([10, 0, 2, 2]))
        );
    }

    #[test]
    fn dhcp_is_the_default_and_explicit() {
        assert_eq!(
            NetConfig::from_cmdline("console=ttyS0").unwrap().addressing,
            Addressing::Dhcp
        );
        assert_eq!(
            NetConfig::from_cmdline("ip=dhcp").unwrap().addressing,
            Addressing::Dhcp
        );
        assert_eq!(
            NetConfig::from_cmdline("").unwrap().addressing,
            Addressing::Dhcp
        );
    }

    #[test]
    fn static_without_gateway() {
        assert_eq!(
            parse_ip_value("192.168.7.2/30"),
            Ok(static_ip([192, 168, 7, 2], 30, None))
        );
        assert_eq!(
            parse_ip_value("172.16.0.1/32"),
            Ok(static_ip([172, 16, 0, 1], 32, None))
        );
    }

    #[test]
    fn rejects_bad_values() {
        use ConfigError::*;
        let cases = [
            ("10.0.2.15", BadPrefix),
            ("10.0.2.15/", BadPrefix),
            ("10.0.2.15/0", BadPrefix),
            ("10.0.2.15/33", BadPrefix),
            ("10.0.2.15/+8", BadPrefix),
            ("10.0.2.15/024", BadPrefix),
            ("10.0.2/24", BadAddress),
            ("10.0.2.256/24", BadAddress),
            ("/24", BadAddress),
            ("10.0.2.0/24", NotUnicast),
            ("10.0.2.255/24", NotUnicast),
            ("0.0.0.0/8", NotUnicast),
            ("127.0.0.1/8", NotUnicast),
            ("224.0.0.1/24", NotUnicast),
            ("10.0.2.15/24,gw=10.0.3.2", GatewayOutsideSubnet),
            ("10.0.2.15/24,gw=10.0.2.15", GatewayOutsideSubnet),
            ("10.0.2.15/24,gw=10.0.2.255", GatewayOutsideSubnet),
            ("10.0.2.15/24,gw=x", BadGateway),
            ("10.0.2.15/24,gw=10.0.2.2,gw=10.0.2.3", UnknownOption),
            ("10.0.2.15/24,dns=10.0.2.3", UnknownOption),
            ("10.0.2.15/24,", UnknownOption),
            ("DHCP", BadPrefix),
        ];
        for (value, error) in cases {
            assert_eq!(parse_ip_value(value), Err(error), "{value}");
        }
        assert_eq!(
            NetConfig::from_cmdline("ip=dhcp ip=dhcp"),
            Err(ConfigError::DuplicateIp)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_command_lines_never_panic(line in ".{0,200}") {
            let _ = NetConfig::from_cmdline(&line);
        }

        #[test]
        fn arbitrary_ip_values_never_panic(value in "[0-9./,=gwdhcp]{0,40}") {
            let _ = parse_ip_value(&value);
        }

        #[test]
        fn well_formed_static_round_trips(
            a in any::<[u8; 4]>(),
            prefix_len in 1u8..=32,
            gw_host in any::<u32>(),
        ) {
            let address = Ipv4Addr::from(a);
            let mask = netmask(prefix_len);
            let gateway = Ipv4Addr::from((u32::from(address) & mask) | (gw_host & !mask));
            let line = format!("quiet ip={address}/{prefix_len},gw={gateway} x=y");
            match NetConfig::from_cmdline(&line) {
                Ok(config) => {
                    // Whatever is accepted is exactly what was written, and consistent.
                    prop_assert_eq!(
                        config.addressing,
                        Addressing::Static(StaticIpv4 { address, prefix_len, gateway: Some(gateway) })
                    );
                    prop_assert!(is_unicast_host(address, prefix_len));
                    prop_assert!(is_unicast_host(gateway, prefix_len));
                    prop_assert!(gateway != address);
                }
                Err(ConfigError::NotUnicast) => prop_assert!(!is_unicast_host(address, prefix_len)),
                Err(ConfigError::GatewayOutsideSubnet) => {
                    prop_assert!(gateway == address || !is_unicast_host(gateway, prefix_len));
                }
                Err(other) => prop_assert!(false, "unexpected error {:?} for {}", other, line),
            }
        }
    }
}
