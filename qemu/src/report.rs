//! The A-VM's boot report and error lines, as printed on its serial console.
//!
//! ```text
//! AVM-REPORT-BEGIN v1
//! tpm.vendor=<4 ascii chars trimmed>
//! tpm.firmware=<hex u64>
//! tpm.startup=started|already-started
//! pcr.sha256.<0..=7>=<64 hex>
//! eventlog.entries=<decimal>
//! eventlog.bytes=<decimal>
//! eventlog.hex=<up to 64 bytes as hex>      (repeated, concatenated in order)
//! ek.alg=ecc-p256
//! ek.name=<hex>
//! ak.alg=ecc-p256
//! ak.name=<hex>
//! boot.us=<decimal>
//! AVM-REPORT-END
//! ```
//! On failure the kernel prints `AVM-ERROR <kind>: <message>` instead.
//!
//! The serial log is untrusted input: parsing is total (errors, never
//! panics), sizes are bounded, each field must appear exactly once and
//! `eventlog.bytes` must match the hex actually received. Keys this version
//! does not know are kept in `extra` rather than rejected, so a newer kernel
//! that adds fields still boots with an older launcher.

use crate::hex;
use crate::measure::Sha256Digest;

pub const BEGIN_MARKER: &str = "AVM-REPORT-BEGIN";
pub const END_MARKER: &str = "AVM-REPORT-END";
pub const ERROR_MARKER: &str = "AVM-ERROR";
/// The only report format version this parser understands.
pub const VERSION: &str = "v1";
/// Number of PCRs in the report (0..=7, the firmware PCRs).
pub const REPORTED_PCRS: usize = 8;
/// Maximum bytes one `eventlog.hex` line may carry.
pub const EVENTLOG_BYTES_PER_LINE: usize = 64;
/// Upper bound on the event log size we accept (SeaBIOS logs are a few KiB).
pub const MAX_EVENTLOG_BYTES: usize = 1 << 20;
/// Upper bound on lines in one report block.
const MAX_REPORT_LINES: usize = MAX_EVENTLOG_BYTES / EVENTLOG_BYTES_PER_LINE + 64;
/// Upper bound on unknown keys kept.
const MAX_EXTRA_FIELDS: usize = 64;
/// Upper bound on a TPM object name (2-byte algorithm + digest up to SHA-512).
const MAX_NAME_BYTES: usize = 2 + 64;

/// How the kernel found the TPM at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TpmStartup {
    /// The kernel's TPM2_Startup succeeded.
    Started,
    /// Firmware (SeaBIOS) had already started the TPM (TPM_RC_INITIALIZE).
    AlreadyStarted,
}

/// Key algorithms the report names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlg {
    EccP256,
}

/// A parsed and validated boot report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BootReport {
    pub tpm_vendor: String,
    pub tpm_firmware: u64,
    pub tpm_startup: TpmStartup,
    /// SHA-256 bank, PCRs 0..=7 as the A-VM read them.
    pub pcrs_sha256: [Sha256Digest; REPORTED_PCRS],
    pub eventlog_entries: u32,
    /// The raw TCG event log the A-VM read (crypto-agile format).
    pub eventlog: Vec<u8>,
    pub ek_alg: KeyAlg,
    pub ek_name: Vec<u8>,
    pub ak_alg: KeyAlg,
    pub ak_name: Vec<u8>,
    /// Microseconds from kernel entry to the report, by the kernel's clock.
    pub boot_us: u64,
    /// Fields this parser does not know, in order.
    pub extra: Vec<(String, String)>,
}

/// Why a report was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("no `{BEGIN_MARKER}` line")]
    MissingBegin,
    #[error("report is not terminated by `{END_MARKER}`")]
    MissingEnd,
    #[error("unsupported report version {0:?}")]
    UnsupportedVersion(String),
    #[error("line {line}: expected `key=value`")]
    MalformedLine { line: usize },
    #[error("field `{0}` appears more than once")]
    DuplicateField(String),
    #[error("field `{0}` is missing")]
    MissingField(&'static str),
    #[error("field `{field}`: invalid value {value:?}")]
    InvalidValue { field: String, value: String },
    #[error("event log larger than {MAX_EVENTLOG_BYTES} bytes")]
    EventLogTooLarge,
    #[error("eventlog.bytes says {declared} but {received} bytes of hex were received")]
    EventLogLengthMismatch { declared: usize, received: usize },
    #[error("report has more than {MAX_REPORT_LINES} lines")]
    TooManyLines,
}

/// An `AVM-ERROR <kind>: <message>` line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestError {
    pub kind: String,
    pub message: String,
}

impl std::fmt::Display for GuestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Parses one serial line as an error line, if it is one.
pub fn parse_error_line(line: &str) -> Option<GuestError> {
    let rest = line
        .trim_end_matches(['\r', '\n'])
        .strip_prefix(ERROR_MARKER)?;
    let rest = rest.strip_prefix(' ')?;
    let (kind, message) = match rest.split_once(':') {
        Some((kind, message)) => (kind, message.trim()),
        None => (rest, ""),
    };
    let kind = kind.trim();
    let valid_kind = !kind.is_empty()
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    valid_kind.then(|| GuestError {
        kind: kind.to_owned(),
        message: message.to_owned(),
    })
}

/// What a serial log shows so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOutcome {
    /// Neither a complete report nor an error yet.
    Pending,
    Report(Box<BootReport>),
    /// A complete report block that failed validation.
    InvalidReport(ReportError),
    Error(GuestError),
}

/// Scans serial output (possibly with other lines, `\r\n` endings, or a
/// partial last line) for the first error line or complete report.
pub fn scan_serial(serial: &str) -> SerialOutcome {
    // Only complete lines count: a line still being written has no '\n'.
    let complete = match serial.rfind('\n') {
        Some(end) => &serial[..end],
        None => return SerialOutcome::Pending,
    };
    let mut lines = complete.lines();
    while let Some(line) = lines.next() {
        if let Some(error) = parse_error_line(line) {
            return SerialOutcome::Error(error);
        }
        if line.trim_end().starts_with(BEGIN_MARKER) {
            // A report is complete once its END line is there; until then an
            // error line (say, a panic halfway through) still counts.
            let has_end = lines.clone().any(|l| l.trim_end() == END_MARKER);
            if has_end {
                return match BootReport::find(complete) {
                    Ok(report) => SerialOutcome::Report(Box::new(report)),
                    Err(err) => SerialOutcome::InvalidReport(err),
                };
            }
        }
    }
    SerialOutcome::Pending
}

/// Collects fields while enforcing "at most once".
#[derive(Default)]
struct Fields<'a> {
    seen: Vec<(&'a str, &'a str)>,
}

impl<'a> Fields<'a> {
    fn insert(&mut self, key: &'a str, value: &'a str) -> Result<(), ReportError> {
        if self.seen.iter().any(|(k, _)| *k == key) {
            return Err(ReportError::DuplicateField(key.to_owned()));
        }
        self.seen.push((key, value));
        Ok(())
    }

    fn take(&mut self, key: &'static str) -> Result<&'a str, ReportError> {
        let index = self
            .seen
            .iter()
            .position(|(k, _)| *k == key)
            .ok_or(ReportError::MissingField(key))?;
        Ok(self.seen.remove(index).1)
    }
}

fn invalid(field: &str, value: &str) -> ReportError {
    // Bound what we echo back from untrusted input.
    let shown: String = value.chars().take(80).collect();
    ReportError::InvalidValue {
        field: field.to_owned(),
        value: shown,
    }
}

fn parse_decimal<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, ReportError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(field, value));
    }
    value.parse().map_err(|_| invalid(field, value))
}

fn parse_hex_u64(field: &str, value: &str) -> Result<u64, ReportError> {
    let digits = value.strip_prefix("0x").unwrap_or(value);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(field, value));
    }
    u64::from_str_radix(digits, 16).map_err(|_| invalid(field, value))
}

fn parse_key_alg(field: &str, value: &str) -> Result<KeyAlg, ReportError> {
    match value {
        "ecc-p256" => Ok(KeyAlg::EccP256),
        _ => Err(invalid(field, value)),
    }
}

fn parse_name(field: &str, value: &str) -> Result<Vec<u8>, ReportError> {
    let bytes = hex::decode(value).map_err(|_| invalid(field, value))?;
    if bytes.len() < 2 || bytes.len() > MAX_NAME_BYTES {
        return Err(invalid(field, value));
    }
    Ok(bytes)
}

const PCR_KEYS: [&str; REPORTED_PCRS] = [
    "pcr.sha256.0",
    "pcr.sha256.1",
    "pcr.sha256.2",
    "pcr.sha256.3",
    "pcr.sha256.4",
    "pcr.sha256.5",
    "pcr.sha256.6",
    "pcr.sha256.7",
];

impl BootReport {
    /// Finds the first report block in `text` and parses it.
    pub fn find(text: &str) -> Result<Self, ReportError> {
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let begin = lines
            .by_ref()
            .find(|l| l.starts_with(BEGIN_MARKER))
            .ok_or(ReportError::MissingBegin)?;
        let version = begin[BEGIN_MARKER.len()..].trim();
        if version != VERSION {
            return Err(ReportError::UnsupportedVersion(
                version.chars().take(16).collect(),
            ));
        }
        let mut body = Vec::new();
        for line in lines {
            if line.trim_end() == END_MARKER {
                return Self::parse_body(&body);
            }
            if body.len() >= MAX_REPORT_LINES {
                return Err(ReportError::TooManyLines);
            }
            body.push(line);
        }
        Err(ReportError::MissingEnd)
    }

    /// Parses the `key=value` lines between the markers.
    fn parse_body(body: &[&str]) -> Result<Self, ReportError> {
        let mut fields = Fields::default();
        let mut eventlog = Vec::new();
        for (index, line) in body.iter().enumerate() {
            let (key, value) = line
                .split_once('=')
                .ok_or(ReportError::MalformedLine { line: index + 2 })?;
            let (key, value) = (key.trim(), value.trim());
            if key == "eventlog.hex" {
                let chunk = hex::decode(value).map_err(|_| invalid(key, value))?;
                if chunk.len() > EVENTLOG_BYTES_PER_LINE {
                    return Err(invalid(key, value));
                }
                if eventlog.len() + chunk.len() > MAX_EVENTLOG_BYTES {
                    return Err(ReportError::EventLogTooLarge);
                }
                eventlog.extend_from_slice(&chunk);
            } else {
                fields.insert(key, value)?;
            }
        }

        let tpm_vendor = {
            let value = fields.take("tpm.vendor")?;
            let ok = !value.is_empty()
                && value.len() <= 4
                && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
            if !ok {
                return Err(invalid("tpm.vendor", value));
            }
            value.to_owned()
        };
        let tpm_firmware = parse_hex_u64("tpm.firmware", fields.take("tpm.firmware")?)?;
        let tpm_startup = match fields.take("tpm.startup")? {
            "started" => TpmStartup::Started,
            "already-started" => TpmStartup::AlreadyStarted,
            other => return Err(invalid("tpm.startup", other)),
        };
        let mut pcrs_sha256 = [[0u8; 32]; REPORTED_PCRS];
        for (pcr, key) in pcrs_sha256.iter_mut().zip(PCR_KEYS) {
            let value = fields.take(key)?;
            *pcr = hex::decode_array(value).map_err(|_| invalid(key, value))?;
        }
        let eventlog_entries = parse_decimal("eventlog.entries", fields.take("eventlog.entries")?)?;
        let declared: usize = parse_decimal("eventlog.bytes", fields.take("eventlog.bytes")?)?;
        if declared != eventlog.len() {
            return Err(ReportError::EventLogLengthMismatch {
                declared,
                received: eventlog.len(),
            });
        }
        let ek_alg = parse_key_alg("ek.alg", fields.take("ek.alg")?)?;
        let ek_name = parse_name("ek.name", fields.take("ek.name")?)?;
        let ak_alg = parse_key_alg("ak.alg", fields.take("ak.alg")?)?;
        let ak_name = parse_name("ak.name", fields.take("ak.name")?)?;
        let boot_us = parse_decimal("boot.us", fields.take("boot.us")?)?;

        if fields.seen.len() > MAX_EXTRA_FIELDS {
            return Err(ReportError::TooManyLines);
        }
        let extra = fields
            .seen
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(Self {
            tpm_vendor,
            tpm_firmware,
            tpm_startup,
            pcrs_sha256,
            eventlog_entries,
            eventlog,
            ek_alg,
            ek_name,
            ak_alg,
            ak_name,
            boot_us,
            extra,
        })
    }

    /// Writes the report in its serial format (what the kernel prints);
    /// used by tests and to show a report back to a user.
    pub fn to_serial_text(&self) -> String {
        let alg = |a: KeyAlg| match a {
            KeyAlg::EccP256 => "ecc-p256",
        };
        let mut out = format!("{BEGIN_MARKER} {VERSION}\n");
        out += &format!("tpm.vendor={}\n", self.tpm_vendor);
        out += &format!("tpm.firmware={:x}\n", self.tpm_firmware);
        out += &format!(
            "tpm.startup={}\n",
            match self.tpm_startup {
                TpmStartup::Started => "started",
                TpmStartup::AlreadyStarted => "already-started",
            }
        );
        for (index, pcr) in self.pcrs_sha256.iter().enumerate() {
            out += &format!("pcr.sha256.{index}={}\n", hex::encode(pcr));
        }
        out += &format!("eventlog.entries={}\n", self.eventlog_entries);
        out += &format!("eventlog.bytes={}\n", self.eventlog.len());
        for chunk in self.eventlog.chunks(EVENTLOG_BYTES_PER_LINE) {
            out += &format!("eventlog.hex={}\n", hex::encode(chunk));
        }
        out += &format!("ek.alg={}\n", alg(self.ek_alg));
        out += &format!("ek.name={}\n", hex::encode(&self.ek_name));
        out += &format!("ak.alg={}\n", alg(self.ak_alg));
        out += &format!("ak.name={}\n", hex::encode(&self.ak_name));
        out += &format!("boot.us={}\n", self.boot_us);
        for (key, value) in &self.extra {
            out += &format!("{key}={value}\n");
        }
        out += END_MARKER;
        out += "\n";
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> BootReport {
        BootReport {
            tpm_vendor: "IBM".to_owned(),
            tpm_firmware: 0x2019_1023_0016_3636,
            tpm_startup: TpmStartup::AlreadyStarted,
            pcrs_sha256: core::array::from_fn(|i| [i as u8; 32]),
            eventlog_entries: 3,
            eventlog: (0..150u8).collect(),
            ek_alg: KeyAlg::EccP256,
            ek_name: vec![0x00, 0x0b, 1, 2, 3],
            ak_alg: KeyAlg::EccP256,
            ak_name: vec![0x00, 0x0b, 4, 5, 6],
            boot_us: 123_456,
            extra: vec![],
        }
    }

    #[test]
    fn roundtrip_with_surrounding_noise_and_crlf() {
        let report = sample();
        let text = format!(
            "SeaBIOS (version 1.16)\r\nBooting from ROM..\r\n{}after\n",
            report.to_serial_text().replace('\n', "\r\n")
        );
        assert_eq!(BootReport::find(&text).unwrap(), report);
        assert_eq!(scan_serial(&text), SerialOutcome::Report(Box::new(report)));
    }

    #[test]
    fn eventlog_lines_are_concatenated_in_order() {
        let report = sample();
        let text = report.to_serial_text();
        assert_eq!(text.matches("eventlog.hex=").count(), 3);
        assert_eq!(BootReport::find(&text).unwrap().eventlog, report.eventlog);
    }

    #[test]
    fn field_value_checks() {
        let good = sample().to_serial_text();
        let cases = [
            ("eventlog.bytes=150", "eventlog.bytes=149"),
            ("tpm.startup=already-started", "tpm.startup=maybe"),
            ("ek.alg=ecc-p256", "ek.alg=rsa-2048"),
            ("boot.us=123456", "boot.us=-1"),
            ("tpm.vendor=IBM", "tpm.vendor=TOOLONG"),
            (
                "pcr.sha256.3=0303030303030303030303030303030303030303030303030303030303030303",
                "pcr.sha256.3=03",
            ),
        ];
        for (from, to) in cases {
            assert!(good.contains(from), "{from}");
            let bad = good.replace(from, to);
            assert!(BootReport::find(&bad).is_err(), "accepted {to}");
        }
    }

    #[test]
    fn structural_errors() {
        let good = sample().to_serial_text();
        assert_eq!(BootReport::find("hello\n"), Err(ReportError::MissingBegin));
        let no_end = good.replace(END_MARKER, "");
        assert_eq!(BootReport::find(&no_end), Err(ReportError::MissingEnd));
        let v2 = good.replace("BEGIN v1", "BEGIN v2");
        assert!(matches!(
            BootReport::find(&v2),
            Err(ReportError::UnsupportedVersion(_))
        ));
        let dup = good.replace("boot.us=123456\n", "boot.us=1\nboot.us=2\n");
        assert_eq!(
            BootReport::find(&dup),
            Err(ReportError::DuplicateField("boot.us".into()))
        );
        let missing = good.replace("ak.name=000b040506\n", "");
        assert_eq!(
            BootReport::find(&missing),
            Err(ReportError::MissingField("ak.name"))
        );
        let malformed = good.replace("boot.us=123456", "garbage");
        assert!(matches!(
            BootReport::find(&malformed),
            Err(ReportError::MalformedLine { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_kept() {
        let text = sample()
            .to_serial_text()
            .replace("boot.us=", "net.mac=52:54:00:12:34:56\nboot.us=");
        let report = BootReport::find(&text).unwrap();
        assert_eq!(
            report.extra,
            vec![("net.mac".to_owned(), "52:54:00:12:34:56".to_owned())]
        );
    }

    #[test]
    fn error_lines() {
        assert_eq!(
            parse_error_line("AVM-ERROR no-tpm: no TPM CRB interface at 0xfed40000\r"),
            Some(GuestError {
                kind: "no-tpm".into(),
                message: "no TPM CRB interface at 0xfed40000".into()
            })
        );
        assert_eq!(parse_error_line("AVM-ERRORno-tpm: x"), None);
        assert_eq!(parse_error_line("AVM-ERROR : x"), None);
        assert_eq!(parse_error_line("log AVM-ERROR x: y"), None);
        let serial = "SeaBIOS\nAVM-ERROR tpm-failure: startup rc=0x101\n";
        assert!(matches!(scan_serial(serial), SerialOutcome::Error(e) if e.kind == "tpm-failure"));
    }

    #[test]
    fn scan_waits_for_complete_report() {
        let text = sample().to_serial_text();
        let partial = &text[..text.len() / 2];
        assert_eq!(scan_serial(partial), SerialOutcome::Pending);
        // END marker without its newline is not complete yet.
        assert_eq!(scan_serial(&text[..text.len() - 1]), SerialOutcome::Pending);
        assert_eq!(scan_serial("SeaBIOS\n"), SerialOutcome::Pending);
        let bad = text.replace("boot.us=123456", "boot.us=x");
        assert!(matches!(scan_serial(&bad), SerialOutcome::InvalidReport(_)));
        // A panic in the middle of the report is an error, not "pending".
        let interrupted = format!("{partial}\nAVM-ERROR panic: at report.rs:1\n");
        assert!(matches!(scan_serial(&interrupted), SerialOutcome::Error(e) if e.kind == "panic"));
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in "(AVM-REPORT-BEGIN v1\n)?([a-z.0-9]{0,12}=?[0-9a-f]{0,70}\n){0,30}(AVM-REPORT-END\n)?") {
            let _ = BootReport::find(&text);
            let _ = scan_serial(&text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = scan_serial(&text);
            for line in text.lines() {
                let _ = parse_error_line(line);
            }
        }

        #[test]
        fn roundtrip_any_eventlog(log in proptest::collection::vec(any::<u8>(), 0..600),
                                  boot_us in any::<u64>(), firmware in any::<u64>()) {
            let mut report = sample();
            report.eventlog = log;
            report.boot_us = boot_us;
            report.tpm_firmware = firmware;
            prop_assert_eq!(BootReport::find(&report.to_serial_text()).unwrap(), report);
        }

        #[test]
        fn mutated_report_never_panics(index in 0usize..2000, byte in any::<u8>()) {
            let mut text = sample().to_serial_text().into_bytes();
            if let Some(slot) = text.get_mut(index) {
                *slot = byte;
            }
            let text = String::from_utf8_lossy(&text);
            let _ = BootReport::find(&text);
        }
    }
}
