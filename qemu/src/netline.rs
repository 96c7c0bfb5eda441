//! The A-VM's network status lines on its serial console.
//!
//! ```text
//! AVM-NET-UP ip=10.0.2.15 port=7140
//! AVM-NET-DOWN reason=no-nic|bad-ip|device
//! ```
//! Printed once, after the boot report, when the interface has an address
//! (after the DHCP lease) or when the network cannot start. The serial log
//! is untrusted: only complete lines count, and each field is checked.

use std::net::Ipv4Addr;

pub const UP_MARKER: &str = "AVM-NET-UP";
pub const DOWN_MARKER: &str = "AVM-NET-DOWN";
/// Longest `reason=` value kept.
const MAX_REASON_LEN: usize = 64;

/// What the serial log says about the A-VM's network so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkOutcome {
    /// No complete network line yet.
    Pending,
    /// The attestation server listens on `ip:port` inside the guest.
    Up { ip: Ipv4Addr, port: u16 },
    /// The network did not start.
    Down { reason: String },
    /// A network line that does not parse.
    Invalid { line: String },
}

/// Scans the complete lines of `serial` for the first network line.
pub fn scan_network(serial: &str) -> NetworkOutcome {
    // Only lines followed by a newline are complete.
    let complete = match serial.rfind('\n') {
        Some(end) => &serial[..end],
        None => return NetworkOutcome::Pending,
    };
    for line in complete.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix(UP_MARKER) {
            return parse_up(rest).unwrap_or_else(|| invalid(line));
        }
        if let Some(rest) = line.strip_prefix(DOWN_MARKER) {
            return parse_down(rest).unwrap_or_else(|| invalid(line));
        }
    }
    NetworkOutcome::Pending
}

fn invalid(line: &str) -> NetworkOutcome {
    NetworkOutcome::Invalid {
        line: line.chars().take(200).collect(),
    }
}

fn parse_up(rest: &str) -> Option<NetworkOutcome> {
    let mut ip = None;
    let mut port = None;
    for word in rest.split_ascii_whitespace() {
        match word.split_once('=')? {
            ("ip", value) if ip.is_none() => ip = Some(value.parse::<Ipv4Addr>().ok()?),
            ("port", value) if port.is_none() => {
                port = Some(value.parse::<u16>().ok().filter(|&p| p != 0)?);
            }
            // Fields a newer kernel may add.
            (key, _) if key != "ip" && key != "port" => {}
            _ => return None,
        }
    }
    Some(NetworkOutcome::Up {
        ip: ip?,
        port: port?,
    })
}

fn parse_down(rest: &str) -> Option<NetworkOutcome> {
    let reason = rest
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix("reason="))?;
    let valid = !reason.is_empty()
        && reason.len() <= MAX_REASON_LEN
        && reason
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| NetworkOutcome::Down {
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn up_line() {
        let serial = "AVM-REPORT-END\n[ 1.0] info: net\nAVM-NET-UP ip=10.0.2.15 port=7140\n";
        assert_eq!(
            scan_network(serial),
            NetworkOutcome::Up {
                ip: Ipv4Addr::new(10, 0, 2, 15),
                port: 7140
            }
        );
        // Unknown extra fields are tolerated.
        assert_eq!(
            scan_network("AVM-NET-UP port=1 ip=1.2.3.4 mac=x\n"),
            NetworkOutcome::Up {
                ip: Ipv4Addr::new(1, 2, 3, 4),
                port: 1
            }
        );
    }

    #[test]
    fn incomplete_lines_are_pending() {
        assert_eq!(scan_network(""), NetworkOutcome::Pending);
        assert_eq!(
            scan_network("AVM-NET-UP ip=10.0.2.15 po"),
            NetworkOutcome::Pending
        );
        assert_eq!(
            scan_network("booting\nAVM-NET-UP ip=10.0.2.15"),
            NetworkOutcome::Pending
        );
    }

    #[test]
    fn down_and_invalid_lines() {
        assert_eq!(
            scan_network("AVM-NET-DOWN reason=no-nic\n"),
            NetworkOutcome::Down {
                reason: "no-nic".into()
            }
        );
        for bad in [
            "AVM-NET-UP ip=10.0.2 port=7140\n",
            "AVM-NET-UP ip=10.0.2.15 port=0\n",
            "AVM-NET-UP ip=10.0.2.15 port=70000\n",
            "AVM-NET-UP ip=10.0.2.15\n",
            "AVM-NET-UP ip=10.0.2.15 ip=10.0.2.16 port=1\n",
            "AVM-NET-UP garbage\n",
            "AVM-NET-DOWN\n",
            "AVM-NET-DOWN reason=a;b\n",
        ] {
            assert!(
                matches!(scan_network(bad), NetworkOutcome::Invalid { .. }),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_serial_never_panics(text in "(AVM-NET-(UP|DOWN)|ip=|port=|reason=|[0-9.]{0,6}|[ \\n\\r]|.){0,40}") {
            let _ = scan_network(&text);
        }
    }
}
