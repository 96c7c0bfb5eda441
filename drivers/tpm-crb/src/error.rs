//! Errors of the TPM command layer.

use core::fmt;

use tpm2_protocol::data::{TpmRc, TpmRcBase};

use crate::transport::TransportError;

/// A TPM response code (`TPM_RC`) other than success, kept raw so that codes
/// `tpm2-protocol` does not know are still reported faithfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCode(pub u32);

impl ResponseCode {
    /// `TPM_RC_INITIALIZE`: Startup after the TPM has already started.
    pub const INITIALIZE: Self = Self(0x100);
    /// `TPM_RC_YIELDED`.
    pub const YIELDED: Self = Self(0x908);
    /// `TPM_RC_TESTING`.
    pub const TESTING: Self = Self(0x90A);
    /// `TPM_RC_RETRY`.
    pub const RETRY: Self = Self(0x922);

    /// The code decoded by `tpm2-protocol`, when it knows it.
    #[must_use]
    pub fn decode(self) -> Option<TpmRc> {
        TpmRc::try_from(self.0).ok()
    }

    /// The error kind without the handle/parameter/session index.
    #[must_use]
    pub fn base(self) -> Option<TpmRcBase> {
        self.decode().map(|rc| rc.base())
    }

    /// True for the warnings after which the same command should be resent.
    #[must_use]
    pub fn is_transient(self) -> bool {
        matches!(self, Self::RETRY | Self::YIELDED | Self::TESTING)
    }
}

/// With `std` (host tools and tests), the code's name and value; in the
/// A-VM the value only (`tpm2_rc_decode` names it): the names and their
/// formatting were 5 KB of an image held to 512 KiB.
impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(feature = "std")]
        if let Some(rc) = self.decode() {
            return write!(f, "{rc} ({:#x})", self.0);
        }
        write!(f, "TPM_RC {:#x}", self.0)
    }
}

/// Why a TPM command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmError {
    /// The frame could not be exchanged with the TPM.
    Transport(TransportError),
    /// The TPM executed the command and returned an error code.
    Tpm(ResponseCode),
    /// The TPM kept answering RETRY/YIELDED/TESTING.
    RetriesExhausted(ResponseCode),
    /// The response is malformed or does not fit the command; where in the
    /// response and why.
    MalformedResponse(MalformedResponse),
    /// The command could not be marshaled (an argument exceeds a TPM limit).
    Marshal(tpm2_protocol::TpmError),
    /// An argument is outside what the command layer supports.
    InvalidArgument(&'static str),
    /// The caller's output buffer is too small for the data.
    BufferTooSmall { needed: usize, available: usize },
}

/// Details of a malformed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedResponse {
    /// The header's tag, size or code is invalid.
    Header,
    /// `tpm2-protocol` rejected the response body.
    Body(tpm2_protocol::TpmError),
    /// The body parsed but violates what the command guarantees.
    Inconsistent(&'static str),
    /// A value is larger than the fixed capacity kept for it.
    TooLarge(&'static str),
}

impl fmt::Display for TpmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "TPM transport: {e}"),
            Self::Tpm(rc) => write!(f, "TPM returned {rc}"),
            Self::RetriesExhausted(rc) => write!(f, "TPM still answers {rc} after retries"),
            Self::MalformedResponse(m) => match m {
                MalformedResponse::Header => write!(f, "malformed TPM response header"),
                MalformedResponse::Body(e) => write!(f, "malformed TPM response: {e}"),
                MalformedResponse::Inconsistent(what) => {
                    write!(f, "inconsistent TPM response: {what}")
                }
                MalformedResponse::TooLarge(what) => write!(f, "TPM response too large: {what}"),
            },
            Self::Marshal(e) => write!(f, "cannot marshal TPM command: {e}"),
            Self::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Self::BufferTooSmall { needed, available } => {
                write!(f, "buffer of {available} bytes too small, {needed} needed")
            }
        }
    }
}

impl From<TransportError> for TpmError {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}

impl From<MalformedResponse> for TpmError {
    fn from(m: MalformedResponse) -> Self {
        Self::MalformedResponse(m)
    }
}

/// Shorthand for a `tpm2-protocol` parse error in a response body.
pub(crate) fn body_error(e: tpm2_protocol::TpmError) -> TpmError {
    TpmError::MalformedResponse(MalformedResponse::Body(e))
}

/// Result of the command layer.
pub type Result<T, E = TpmError> = core::result::Result<T, E>;
