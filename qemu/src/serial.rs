//! Following a guest's serial log file as QEMU writes it.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::report::{SerialOutcome, scan_serial};

/// Serial output kept in memory at most; a guest that writes more is
/// misbehaving, and the boot report comes long before this.
pub const MAX_SERIAL_BYTES: usize = 8 << 20;

/// The serial log read so far, with when output first appeared.
#[derive(Debug)]
pub struct SerialLog {
    path: PathBuf,
    bytes: Vec<u8>,
    first_output_at: Option<Instant>,
    outcome: SerialOutcome,
}

impl SerialLog {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            bytes: Vec::new(),
            first_output_at: None,
            outcome: SerialOutcome::Pending,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last poll; true if anything was.
    /// A missing file (QEMU not started yet) is not an error.
    pub fn poll(&mut self) -> std::io::Result<bool> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(err),
        };
        let room = MAX_SERIAL_BYTES.saturating_sub(self.bytes.len());
        if room == 0 {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(self.bytes.len() as u64))?;
        let before = self.bytes.len();
        file.take(room as u64).read_to_end(&mut self.bytes)?;
        let grew = self.bytes.len() > before;
        if grew {
            self.first_output_at.get_or_insert_with(Instant::now);
            if self.outcome == SerialOutcome::Pending {
                self.outcome = scan_serial(&self.text());
            }
        }
        Ok(grew)
    }

    /// The log as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The first report or error seen so far.
    pub fn outcome(&self) -> &SerialOutcome {
        &self.outcome
    }

    /// When the first byte of output was seen (by this poller).
    pub fn first_output_at(&self) -> Option<Instant> {
        self.first_output_at
    }

    /// The last `lines` lines, for error messages.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn follows_appended_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut log = SerialLog::new(&path);
        assert!(!log.poll().unwrap());
        assert!(log.first_output_at().is_none());

        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"SeaBIOS\nAVM-ERROR no-tp").unwrap();
        assert!(log.poll().unwrap());
        assert!(log.first_output_at().is_some());
        assert_eq!(log.outcome(), &SerialOutcome::Pending);

        file.write_all(b"m: nothing at 0xfed40000\n").unwrap();
        assert!(log.poll().unwrap());
        assert!(matches!(log.outcome(), SerialOutcome::Error(e) if e.kind == "no-tpm"));
        assert!(!log.poll().unwrap());
        assert_eq!(log.tail(1), "AVM-ERROR no-tpm: nothing at 0xfed40000");
    }
}
