//! TPM 2.0 driver for the A-VM.
//!
//! Two layers:
//! - transports that move raw command/response frames: the CRB MMIO
//!   interface ([`Crb`], `no_std`, used inside the A-VM) and, with feature
//!   `std`, swtpm's unix socket (`SwtpmSocket`, for host tests and tools);
//! - the command layer [`Tpm`], which marshals commands with `tpm2-protocol`
//!   and parses every response as untrusted input ([`response`]).
#![no_std]

#[cfg(any(feature = "std", test))]
extern crate std;

mod clock;
mod command;
mod crb;
mod error;
mod mmio;
mod pcr;
pub mod response;
mod templates;
mod transport;
mod types;

#[cfg(feature = "std")]
mod swtpm;

pub use clock::Clock;
pub use command::{MAX_FRAME_LEN, MAX_TRANSIENT_RETRIES, Tpm};
pub use crb::{Crb, CrbError, CrbTimeouts, LOCALITY_REGION_LEN, reg};
pub use error::{MalformedResponse, ResponseCode, Result, TpmError};
pub use mmio::{Mmio, VolatileMmio};
pub use pcr::{PCR_COUNT, PcrDigest, PcrSelection, PcrValues};
pub use templates::{AkAlgorithm, EK_POLICY_SHA256, EkAlgorithm, ak_template, ek_template};
pub use transport::{TPM_HEADER_LEN, TpmTransport, TransportError};
pub use types::{
    Credential, LoadedKey, MAX_ATTEST_LEN, MAX_NAME_LEN, MAX_PUBLIC_LEN, Name, PublicArea,
    PublicKey, Quote, StartupOutcome, TpmProperties,
};

#[cfg(feature = "std")]
pub use swtpm::{MAX_SOCKET_RESPONSE, SwtpmSocket};

/// `tpm2-protocol`, re-exported so users name the same types.
pub use tpm2_protocol;
