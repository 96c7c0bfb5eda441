//! Kernel command line: whitespace-separated `key` or `key=value` words.

/// Console verbosity, least verbose last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything, including per-device detail.
    Debug = 0,
    /// Normal progress messages.
    Info = 1,
    /// Only warnings and errors.
    Warn = 2,
    /// Only errors.
    Error = 3,
}

impl LogLevel {
    /// Parses `debug`, `info`, `warn` or `error`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "debug" => Some(Self::Debug),
            "info" => Some(Self::Info),
            "warn" => Some(Self::Warn),
            "error" => Some(Self::Error),
            _ => None,
        }
    }

    /// The level's lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    /// The level stored by [`LogLevel::as_u8`].
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Debug,
            1 => Self::Info,
            2 => Self::Warn,
            _ => Self::Error,
        }
    }

    /// A compact form for an atomic.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// One command-line word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg<'a> {
    /// Text before the first `=` (or the whole word).
    pub key: &'a str,
    /// Text after the first `=`, if there is one.
    pub value: Option<&'a str>,
}

/// The words of a command line, in order.
pub fn args(cmdline: &str) -> impl Iterator<Item = Arg<'_>> {
    cmdline
        .split_ascii_whitespace()
        .map(|word| match word.split_once('=') {
            Some((key, value)) => Arg {
                key,
                value: Some(value),
            },
            None => Arg {
                key: word,
                value: None,
            },
        })
}

/// A word that the kernel did not understand (reported, then ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionProblem<'a> {
    /// A key the kernel does not know.
    UnknownKey(&'a str),
    /// A known key with a missing or bad value.
    BadValue(Arg<'a>),
}

/// A deliberate failure, for tests of the failure paths (`crash=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashKind {
    /// `crash=panic`: a Rust panic.
    Panic,
    /// `crash=page-fault`: a read from an unmapped address.
    PageFault,
}

impl core::fmt::Display for CrashKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Panic => "panic",
            Self::PageFault => "page-fault",
        })
    }
}

impl CrashKind {
    /// Parses `panic` or `page-fault`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "panic" => Some(Self::Panic),
            "page-fault" => Some(Self::PageFault),
            _ => None,
        }
    }
}

/// What the command line asks the kernel to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelOptions {
    /// Shut down with success right after printing the boot report.
    pub exit_after_report: bool,
    /// Console verbosity.
    pub log_level: LogLevel,
    /// Fail on purpose right after the platform is up.
    pub crash: Option<CrashKind>,
    /// TCP port of the attestation server inside the guest (`attest-port=N`).
    pub attest_port: u16,
    /// Whether `ip=` was given (its value is applied by the network stack,
    /// which parses it again with the same checks: `avm_net::NetConfig`).
    pub static_or_dhcp_ip: bool,
    /// `monvm.bench`: after the start-up measurement of the Mon-VM's
    /// kernel text, also time plain SHA-256 over as many bytes in A-VM
    /// memory (for `make bench`).
    pub monvm_bench: bool,
    /// `log-max-records=N`: the measurement log holds at most N records
    /// (tests fill it quickly; the default is the log's own bound).
    pub log_max_records: Option<usize>,
}

impl Default for KernelOptions {
    fn default() -> Self {
        Self {
            exit_after_report: false,
            log_level: LogLevel::Info,
            crash: None,
            attest_port: avm_attest::wire::ATTEST_PORT,
            static_or_dhcp_ip: false,
            monvm_bench: false,
            log_max_records: None,
        }
    }
}

/// Parses a TCP port number 1..=65535 written in plain decimal.
pub fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&port| port != 0)
}

impl KernelOptions {
    /// Parses the options; words it does not understand go to `problem`
    /// (the last one wins for repeated keys).
    pub fn parse<'a>(cmdline: &'a str, mut problem: impl FnMut(OptionProblem<'a>)) -> Self {
        let mut opts = Self::default();
        for arg in args(cmdline) {
            match (arg.key, arg.value) {
                ("exit-after-report", None) => opts.exit_after_report = true,
                ("monvm.bench", None) => opts.monvm_bench = true,
                ("log-max-records", Some(v)) => {
                    match v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (2..=1_000_000).contains(n))
                    {
                        Some(n) => opts.log_max_records = Some(n),
                        None => problem(OptionProblem::BadValue(arg)),
                    }
                }
                ("log", Some(v)) => match LogLevel::parse(v) {
                    Some(level) => opts.log_level = level,
                    None => problem(OptionProblem::BadValue(arg)),
                },
                ("crash", Some(v)) => match CrashKind::parse(v) {
                    Some(kind) => opts.crash = Some(kind),
                    None => problem(OptionProblem::BadValue(arg)),
                },
                ("attest-port", Some(v)) => match parse_port(v) {
                    Some(port) => opts.attest_port = port,
                    None => problem(OptionProblem::BadValue(arg)),
                },
                ("ip", Some(v)) => match avm_net::config::parse_ip_value(v) {
                    Ok(_) => opts.static_or_dhcp_ip = true,
                    Err(_) => problem(OptionProblem::BadValue(arg)),
                },
                // The Mon-VM's RAM layout (docs/monvm.md); used by the
                // Mon-VM view, checked here so a bad one is reported.
                ("monvm.ram", Some(v)) => {
                    if vmi::memory::RamLayout::parse_cmdline(v).is_err() {
                        problem(OptionProblem::BadValue(arg));
                    }
                }
                (
                    "exit-after-report" | "log" | "crash" | "attest-port" | "ip" | "monvm.ram"
                    | "monvm.bench" | "log-max-records",
                    _,
                ) => problem(OptionProblem::BadValue(arg)),
                (key, _) => problem(OptionProblem::UnknownKey(key)),
            }
        }
        opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_crash_kind_reads_as_its_option_value() {
        for kind in [CrashKind::Panic, CrashKind::PageFault] {
            assert_eq!(CrashKind::parse(&kind.to_string()), Some(kind));
        }
    }

    #[test]
    fn parses_known_options() {
        let mut problems = vec![];
        let o = KernelOptions::parse("  exit-after-report\tlog=debug crash=page-fault", |p| {
            problems.push(p)
        });
        assert!(o.exit_after_report);
        assert_eq!(o.log_level, LogLevel::Debug);
        assert_eq!(o.crash, Some(CrashKind::PageFault));
        assert!(problems.is_empty());
    }

    #[test]
    fn the_mon_vm_layout_is_understood_and_checked() {
        let mut problems = vec![];
        KernelOptions::parse(
            "monvm.ram=0x0-0xc0000000@0x0,0x100000000-0x140000000@0xc0000000",
            |p| problems.push(p),
        );
        assert!(problems.is_empty(), "{problems:?}");
        KernelOptions::parse("monvm.ram=0x10-0x0@0x0 monvm.ram", |p| problems.push(p));
        assert_eq!(
            problems,
            vec![
                OptionProblem::BadValue(Arg {
                    key: "monvm.ram",
                    value: Some("0x10-0x0@0x0")
                }),
                OptionProblem::BadValue(Arg {
                    key: "monvm.ram",
                    value: None
                }),
            ]
        );
    }

    #[test]
    fn defaults_and_reports_problems() {
        let mut problems = vec![];
        let o = KernelOptions::parse("log=loud foo=1=2 exit-after-report=yes bar crash=x", |p| {
            problems.push(p)
        });
        assert_eq!(o, KernelOptions::default());
        assert_eq!(
            problems,
            vec![
                OptionProblem::BadValue(Arg {
                    key: "log",
                    value: Some("loud")
                }),
                OptionProblem::UnknownKey("foo"),
                OptionProblem::BadValue(Arg {
                    key: "exit-after-report",
                    value: Some("yes")
                }),
                OptionProblem::UnknownKey("bar"),
                OptionProblem::BadValue(Arg {
                    key: "crash",
                    value: Some("x")
                }),
            ]
        );
    }

    #[test]
    fn network_options() {
        let mut problems = vec![];
        let o = KernelOptions::parse("ip=10.0.2.15/24,gw=10.0.2.2 attest-port=7000", |p| {
            problems.push(p)
        });
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(o.attest_port, 7000);
        assert!(o.static_or_dhcp_ip);
        let o = KernelOptions::parse("", |_| {});
        assert_eq!(o.attest_port, avm_attest::wire::ATTEST_PORT);
        assert!(!o.static_or_dhcp_ip);

        let mut problems = vec![];
        let o = KernelOptions::parse(
            "attest-port=0 attest-port=65536 attest-port=+1 attest-port ip=10.0.2.15 ip",
            |p| problems.push(p),
        );
        assert_eq!(o.attest_port, avm_attest::wire::ATTEST_PORT);
        assert!(!o.static_or_dhcp_ip);
        assert_eq!(problems.len(), 6);
        assert!(
            problems
                .iter()
                .all(|p| matches!(p, OptionProblem::BadValue(_)))
        );
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("1"), Some(1));
        assert_eq!(parse_port("65535"), Some(65535));
        assert_eq!(parse_port("07140"), Some(7140));
        for bad in ["", "0", "65536", "-1", " 1", "1x", "999999"] {
            assert_eq!(parse_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn value_keeps_later_equals_signs() {
        let a: Vec<_> = args("a=b=c d=").collect();
        assert_eq!(
            a[0],
            Arg {
                key: "a",
                value: Some("b=c")
            }
        );
        assert_eq!(
            a[1],
            Arg {
                key: "d",
                value: Some("")
            }
        );
    }

    #[test]
    fn log_level_round_trips() {
        for l in [
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ] {
            assert_eq!(LogLevel::from_u8(l.as_u8()), l);
            assert_eq!(LogLevel::parse(l.name()), Some(l));
        }
    }

    proptest! {
        #[test]
        fn every_word_is_either_understood_or_reported(s in "(log|crash|exit-after-report|panic|debug|[a-z]{1,3}|[=\\- ]){0,16}") {
            let mut problems = 0usize;
            let _ = KernelOptions::parse(&s, |_| problems += 1);
            let known = args(&s)
                .filter(|a| matches!((a.key, a.value), ("exit-after-report", None))
                    || (a.key == "log" && a.value.and_then(LogLevel::parse).is_some())
                    || (a.key == "crash" && a.value.and_then(CrashKind::parse).is_some())
                    || (a.key == "attest-port" && a.value.and_then(parse_port).is_some())
                    || (a.key == "ip" && a.value.is_some_and(|v| avm_net::config::parse_ip_value(v).is_ok())))
                .count();
            prop_assert_eq!(known + problems, s.split_ascii_whitespace().count());
        }
    }
}
