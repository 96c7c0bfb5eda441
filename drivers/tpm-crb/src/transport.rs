//! Moving raw TPM command/response frames, independent of the medium.

use core::fmt;

/// Size of the TPM command/response header: tag (2), size (4), code (4).
pub const TPM_HEADER_LEN: usize = 10;

/// Sends one marshaled TPM command and receives its response.
pub trait TpmTransport {
    /// Sends `command` and writes the response into `response`, returning the
    /// response length. The response is the raw frame: the command layer
    /// validates it, the transport only guarantees its header's size field
    /// equals the returned length.
    ///
    /// # Errors
    ///
    /// Returns a [`TransportError`] when the medium fails or the response
    /// does not fit.
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, TransportError>;
}

/// Why a command/response exchange failed below the TPM protocol level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// The CRB interface reported or ran into a problem.
    Crb(crate::CrbError),
    /// The command is larger than the interface's command buffer.
    CommandTooLarge { len: usize, max: usize },
    /// The response header announced a size smaller than a header.
    ResponseTooShort { size: usize },
    /// The response header announced more bytes than the interface or the
    /// caller's buffer can hold.
    ResponseTooLarge { size: usize, max: usize },
    /// An I/O error on the host transport (swtpm socket).
    Io,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Crb(e) => write!(f, "CRB interface: {e}"),
            Self::CommandTooLarge { len, max } => {
                write!(f, "command of {len} bytes exceeds the {max}-byte buffer")
            }
            Self::ResponseTooShort { size } => {
                write!(f, "response size field {size} is smaller than a TPM header")
            }
            Self::ResponseTooLarge { size, max } => {
                write!(
                    f,
                    "response size field {size} exceeds the {max}-byte buffer"
                )
            }
            Self::Io => write!(f, "I/O error on the TPM socket"),
        }
    }
}

impl From<crate::CrbError> for TransportError {
    fn from(e: crate::CrbError) -> Self {
        Self::Crb(e)
    }
}

/// Reads the size field of a response header.
pub(crate) fn header_size(header: &[u8; TPM_HEADER_LEN]) -> usize {
    u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize
}
