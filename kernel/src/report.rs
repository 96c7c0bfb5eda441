//! The machine-readable boot report printed on the serial console. The
//! launcher and the integration tests parse it: keep the format stable
//! (`key=value` lines between the markers, binary values as lowercase hex).

use avm_attest::hex::Hex;
use core::fmt;

/// First line of the report.
pub const BEGIN: &str = "AVM-REPORT-BEGIN v1";
/// Last line of the report.
pub const END: &str = "AVM-REPORT-END";
/// Event-log bytes per `eventlog.hex` line.
pub const EVENTLOG_HEX_CHUNK: usize = 64;

/// Result of the kernel's TPM2_Startup(CLEAR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupOutcome {
    /// The kernel started the TPM.
    Started,
    /// Firmware had already started it (TPM_RC_INITIALIZE).
    AlreadyStarted,
}

impl StartupOutcome {
    /// The report value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::AlreadyStarted => "already-started",
        }
    }
}

/// The TPM manufacturer as four ASCII characters from
/// `TPM_PT_MANUFACTURER` (big-endian), trailing NULs and spaces trimmed,
/// anything unprintable replaced by `?`.
pub fn vendor_string(manufacturer: u32) -> heapless::String<4> {
    let mut s = heapless::String::new();
    for b in manufacturer.to_be_bytes() {
        let c = if b.is_ascii_graphic() || b == b' ' {
            b as char
        } else if b == 0 {
            ' '
        } else {
            '?'
        };
        let _ = s.push(c);
    }
    let trimmed_len = s.trim_end().len();
    s.truncate(trimmed_len);
    s
}

/// Everything in the boot report.
#[derive(Debug, Clone, Copy)]
pub struct BootReport<'a> {
    /// TPM vendor, see [`vendor_string`].
    pub tpm_vendor: &'a str,
    /// `TPM_PT_FIRMWARE_VERSION_1 << 32 | TPM_PT_FIRMWARE_VERSION_2`.
    pub tpm_firmware: u64,
    /// What the kernel's Startup did.
    pub tpm_startup: StartupOutcome,
    /// PCR 0..=7 of the SHA-256 bank.
    pub pcrs_sha256: &'a [[u8; 32]; 8],
    /// Records in the event log after its Spec ID header.
    pub eventlog_entries: usize,
    /// The used part of the event log.
    pub eventlog: &'a [u8],
    /// TPM name of the EK (ECC P-256).
    pub ek_name: &'a [u8],
    /// TPM name of the AK (ECC P-256).
    pub ak_name: &'a [u8],
    /// Microseconds since kernel entry when the report was made.
    pub boot_us: u64,
}

impl BootReport<'_> {
    /// Writes the whole report, markers included, one line per field.
    pub fn write(&self, out: &mut impl fmt::Write) -> fmt::Result {
        writeln!(out, "{BEGIN}")?;
        writeln!(out, "tpm.vendor={}", self.tpm_vendor)?;
        writeln!(out, "tpm.firmware={:x}", self.tpm_firmware)?;
        writeln!(out, "tpm.startup={}", self.tpm_startup.as_str())?;
        for (i, pcr) in self.pcrs_sha256.iter().enumerate() {
            writeln!(out, "pcr.sha256.{i}={}", Hex(pcr))?;
        }
        writeln!(out, "eventlog.entries={}", self.eventlog_entries)?;
        writeln!(out, "eventlog.bytes={}", self.eventlog.len())?;
        for chunk in self.eventlog.chunks(EVENTLOG_HEX_CHUNK) {
            writeln!(out, "eventlog.hex={}", Hex(chunk))?;
        }
        writeln!(out, "ek.alg=ecc-p256")?;
        writeln!(out, "ek.name={}", Hex(self.ek_name))?;
        writeln!(out, "ak.alg=ecc-p256")?;
        writeln!(out, "ak.name={}", Hex(self.ak_name))?;
        writeln!(out, "boot.us={}", self.boot_us)?;
        writeln!(out, "{END}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_is_trimmed_and_printable() {
        assert_eq!(vendor_string(u32::from_be_bytes(*b"IBM\0")).as_str(), "IBM");
        assert_eq!(vendor_string(u32::from_be_bytes(*b"MSFT")).as_str(), "MSFT");
        assert_eq!(
            vendor_string(u32::from_be_bytes([b'A', 1, b'B', b' '])).as_str(),
            "A?B"
        );
    }

    #[test]
    fn report_has_the_documented_lines() {
        let mut pcrs = [[0u8; 32]; 8];
        pcrs[7][31] = 0xab;
        let log: Vec<u8> = (0..100u8).collect();
        let r = BootReport {
            tpm_vendor: "IBM",
            tpm_firmware: 0x2019_1023_0016_3636,
            tpm_startup: StartupOutcome::AlreadyStarted,
            pcrs_sha256: &pcrs,
            eventlog_entries: 3,
            eventlog: &log,
            ek_name: &[0x00, 0x0b, 0xaa],
            ak_name: &[0x00, 0x0b, 0xbb],
            boot_us: 1234,
        };
        let mut s = String::new();
        r.write(&mut s).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "AVM-REPORT-BEGIN v1");
        assert_eq!(lines[1], "tpm.vendor=IBM");
        assert_eq!(lines[2], "tpm.firmware=2019102300163636");
        assert_eq!(lines[3], "tpm.startup=already-started");
        assert_eq!(lines[4], format!("pcr.sha256.0={}", "0".repeat(64)));
        assert_eq!(lines[11], format!("pcr.sha256.7={}ab", "0".repeat(62)));
        assert_eq!(lines[12], "eventlog.entries=3");
        assert_eq!(lines[13], "eventlog.bytes=100");
        let hex: String = lines
            .iter()
            .filter_map(|l| l.strip_prefix("eventlog.hex="))
            .collect();
        assert_eq!(hex, Hex(&log).to_string());
        assert_eq!(lines[14].len(), "eventlog.hex=".len() + 128);
        assert_eq!(lines[16], "ek.alg=ecc-p256");
        assert_eq!(lines[17], "ek.name=000baa");
        assert_eq!(lines[19], "ak.name=000bbb");
        assert_eq!(lines[20], "boot.us=1234");
        assert_eq!(lines[21], "AVM-REPORT-END");
        assert_eq!(lines.len(), 22);
    }
}
