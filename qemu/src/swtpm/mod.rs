//! The software TPM: running swtpm and talking to its control channel.

pub mod ctrl;
pub mod process;

pub use ctrl::{CtrlChannel, CtrlCommand, CtrlError};
pub use process::{CtrlEndpoint, CtrlStream, ServerEndpoint, Swtpm, SwtpmConfig, SwtpmError};
