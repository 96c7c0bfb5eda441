//! TPM 2.0 driver for the A-VM.
//!
//! Two layers:
//! - transports that move raw command/response frames: the CRB MMIO
//!   interface ([`Crb`], `no_std`, used inside the A-VM) and, with feature
//!   `std`, swtpm's unix socket ([`SwtpmSocket`], for host tests and tools);
//! - the command layer [`Tpm`], which marshals commands with `tpm2-protocol`
//!   and parses every response as untrusted input.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

mod clock;
mod crb;
mod mmio;
mod transport;

pub use clock::Clock;
pub use crb::{Crb, CrbError, CrbTimeouts, LOCALITY_REGION_LEN, reg};
pub use mmio::{Mmio, VolatileMmio};
pub use transport::{TPM_HEADER_LEN, TpmTransport, TransportError};
