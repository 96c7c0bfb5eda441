//! Host transport: raw TPM frames over swtpm's data socket (`swtpm socket
//! --server type=unixio,path=...`), for tests and host tools.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::transport::{TPM_HEADER_LEN, TpmTransport, TransportError, header_size};

/// Responses larger than this are refused (the TPM's maximum frame).
pub const MAX_SOCKET_RESPONSE: usize = 4096;

/// A connection to swtpm's TPM data channel.
pub struct SwtpmSocket {
    stream: UnixStream,
}

impl SwtpmSocket {
    /// Connects to the data socket at `path`. Reads and writes time out
    /// after 60 s so a hung swtpm fails a test instead of hanging it.
    ///
    /// # Errors
    ///
    /// The connect error.
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_write_timeout(Some(Duration::from_secs(60)))?;
        Ok(Self { stream })
    }
}

impl TpmTransport for SwtpmSocket {
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        self.stream
            .write_all(command)
            .map_err(|_| TransportError::Io)?;
        let mut header = [0u8; TPM_HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .map_err(|_| TransportError::Io)?;
        let size = header_size(&header);
        if size < TPM_HEADER_LEN {
            return Err(TransportError::ResponseTooShort { size });
        }
        let max = response.len().min(MAX_SOCKET_RESPONSE);
        if size > max {
            // The stream is now out of step with the frames: drop the rest
            // of this response so the next command starts clean.
            let mut sink = [0u8; 256];
            let mut left = size - TPM_HEADER_LEN;
            while left > 0 {
                let n = left.min(sink.len());
                if self.stream.read_exact(&mut sink[..n]).is_err() {
                    break;
                }
                left -= n;
            }
            return Err(TransportError::ResponseTooLarge { size, max });
        }
        response[..TPM_HEADER_LEN].copy_from_slice(&header);
        self.stream
            .read_exact(&mut response[TPM_HEADER_LEN..size])
            .map_err(|_| TransportError::Io)?;
        Ok(size)
    }
}
