//! Client for swtpm's control channel (the protocol of `swtpm_ioctl`).
//!
//! Every request is one message: a big-endian u32 command code followed by
//! the command's payload; swtpm reads it with a single `read`, so each
//! request is written in one `write_all` of at most 4 + 4 + 4096 bytes.
//! The commands used here are answered by a big-endian u32 TPM result code
//! (0 = success). Layouts follow swtpm's `tpm_ioctl.h` (`ptm_init`,
//! `ptm_hdata`, `ptm_res`).

use std::io::{Read, Write};

/// Largest payload of one `CMD_HASH_DATA` message (`ptm_hdata.data`).
pub const HASH_DATA_CHUNK: usize = 4096;

/// Control-channel command codes (`enum ptm_cmd` in tpm_ioctl.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CtrlCommand {
    Init = 2,
    Shutdown = 3,
    HashStart = 6,
    HashData = 7,
    HashEnd = 8,
    StoreVolatile = 0xA,
}

/// `ptm_init.init_flags`: 0 keeps volatile state written earlier, which is
/// what makes the H-CRTM result survive until QEMU's own INIT.
const INIT_FLAGS_NONE: u32 = 0;

/// Failures talking to swtpm's control channel.
#[derive(Debug, thiserror::Error)]
pub enum CtrlError {
    #[error("swtpm control channel I/O during {command:?}: {source}")]
    Io {
        command: CtrlCommand,
        source: std::io::Error,
    },
    #[error("swtpm answered {command:?} with TPM result 0x{result:x}")]
    TpmResult { command: CtrlCommand, result: u32 },
}

/// A connected control channel over any byte stream (unix or TCP socket).
pub struct CtrlChannel<S> {
    stream: S,
}

impl<S: Read + Write> CtrlChannel<S> {
    pub fn new(stream: S) -> Self {
        Self { stream }
    }

    /// Sends one request and checks its u32 result.
    fn request(&mut self, command: CtrlCommand, payload: &[u8]) -> Result<(), CtrlError> {
        let io = |source| CtrlError::Io { command, source };
        let mut message = Vec::with_capacity(4 + payload.len());
        message.extend_from_slice(&(command as u32).to_be_bytes());
        message.extend_from_slice(payload);
        self.stream.write_all(&message).map_err(io)?;
        self.stream.flush().map_err(io)?;
        let mut result = [0u8; 4];
        self.stream.read_exact(&mut result).map_err(io)?;
        match u32::from_be_bytes(result) {
            0 => Ok(()),
            result => Err(CtrlError::TpmResult { command, result }),
        }
    }

    /// `_TPM_Init`: power the TPM on (loads stored volatile state, if any).
    pub fn init(&mut self) -> Result<(), CtrlError> {
        self.request(CtrlCommand::Init, &INIT_FLAGS_NONE.to_be_bytes())
    }

    /// Graceful shutdown; swtpm exits after answering.
    pub fn shutdown(&mut self) -> Result<(), CtrlError> {
        self.request(CtrlCommand::Shutdown, &[])
    }

    /// Makes the TPM write its volatile state (PCRs included) to its state dir.
    pub fn store_volatile(&mut self) -> Result<(), CtrlError> {
        self.request(CtrlCommand::StoreVolatile, &[])
    }

    /// The H-CRTM sequence (`_TPM_Hash_Start`, `_TPM_Hash_Data`,
    /// `_TPM_Hash_End`): PCR0 becomes the locality-4 reset value extended
    /// with SHA-256(`data`). Must run after `init` and before TPM2_Startup.
    pub fn hash_measurement(&mut self, data: &[u8]) -> Result<(), CtrlError> {
        self.request(CtrlCommand::HashStart, &[])?;
        for chunk in data.chunks(HASH_DATA_CHUNK) {
            let mut payload = Vec::with_capacity(4 + chunk.len());
            // A chunk is at most 4096 bytes, so its length always fits.
            payload.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            payload.extend_from_slice(chunk);
            self.request(CtrlCommand::HashData, &payload)?;
        }
        self.request(CtrlCommand::HashEnd, &[])
    }

    /// The whole pre-boot measurement, as `swtpm_ioctl -i; -h -; -v; -s`:
    /// afterwards swtpm has exited and its state dir holds volatile state
    /// with the H-CRTM PCR0, which the next INIT (QEMU's) restores.
    pub fn measure_hcrtm_and_shut_down(mut self, image: &[u8]) -> Result<(), CtrlError> {
        self.init()?;
        self.hash_measurement(image)?;
        self.store_volatile()?;
        self.shutdown()
    }

    pub fn into_inner(self) -> S {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A fake peer that records requests and replays canned results, to
    /// check the framing byte by byte. (The behaviour against a real swtpm
    /// is checked in tests/swtpm_hcrtm.rs.)
    struct Recorder {
        written: Vec<u8>,
        replies: Cursor<Vec<u8>>,
    }

    impl Read for Recorder {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.replies.read(buf)
        }
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn recorder(results: &[u32]) -> Recorder {
        Recorder {
            written: Vec::new(),
            replies: Cursor::new(results.iter().flat_map(|r| r.to_be_bytes()).collect()),
        }
    }

    #[test]
    fn hash_sequence_framing() {
        let data = vec![0xaau8; HASH_DATA_CHUNK + 10];
        let mut channel = CtrlChannel::new(recorder(&[0; 4]));
        channel.hash_measurement(&data).unwrap();
        let written = channel.into_inner().written;
        let mut expected = vec![0, 0, 0, 6];
        expected.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0x10, 0]);
        expected.extend_from_slice(&data[..HASH_DATA_CHUNK]);
        expected.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 10]);
        expected.extend_from_slice(&data[HASH_DATA_CHUNK..]);
        expected.extend_from_slice(&[0, 0, 0, 8]);
        assert_eq!(written, expected);
    }

    #[test]
    fn init_sends_flags_word() {
        let mut channel = CtrlChannel::new(recorder(&[0]));
        channel.init().unwrap();
        assert_eq!(channel.into_inner().written, vec![0, 0, 0, 2, 0, 0, 0, 0]);
    }

    #[test]
    fn nonzero_result_is_an_error() {
        let mut channel = CtrlChannel::new(recorder(&[0x101]));
        let err = channel.store_volatile().unwrap_err();
        assert!(matches!(
            err,
            CtrlError::TpmResult {
                command: CtrlCommand::StoreVolatile,
                result: 0x101
            }
        ));
    }

    #[test]
    fn truncated_reply_is_an_error() {
        let mut rec = recorder(&[]);
        rec.replies = Cursor::new(vec![0, 0]);
        let mut channel = CtrlChannel::new(rec);
        assert!(matches!(channel.shutdown(), Err(CtrlError::Io { .. })));
    }
}
