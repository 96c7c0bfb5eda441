//! What the attestation server needs from the TPM.
//!
//! The kernel implements [`AttestationBackend`] with its TPM driver; host
//! tests use a deterministic double. The server has already checked every
//! request field against the protocol limits before it calls the backend.

use alloc::string::String;
use alloc::vec::Vec;
use avm_attest::pcr::PcrMask;
use avm_attest::wire::{ErrorCode, Evidence, HelloInfo, LogChunk};

/// A failed backend call, sent to the client as `Response::Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    /// Usually [`ErrorCode::Tpm`]; [`ErrorCode::BadRequest`] when the TPM
    /// rejected a request parameter (for example a credential blob).
    pub code: ErrorCode,
    /// Human-readable detail for the verifier's log (e.g. the TPM response code).
    pub detail: String,
}

impl BackendError {
    /// A TPM failure with a short explanation.
    pub fn tpm(detail: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Tpm,
            detail: detail.into(),
        }
    }
}

/// The TPM operations behind the attestation protocol.
///
/// Calls are made from the server's poll, one at a time; a call may take as
/// long as the TPM needs (the network is not polled meanwhile).
pub trait AttestationBackend {
    /// The node's identity: EK and AK public areas and names, EK certificate.
    fn hello(&mut self) -> Result<HelloInfo, BackendError>;

    /// TPM2_Quote with the AK over the SHA-256 PCRs in `pcr_mask` (bit n =
    /// PCR n, only PCRs 0-23, never empty) with `nonce` as qualifying data
    /// (at most `MAX_NONCE_LEN` bytes), plus the quoted PCR values and the
    /// firmware event log.
    fn quote(&mut self, nonce: &[u8], pcr_mask: PcrMask) -> Result<Evidence, BackendError>;

    /// TPM2_ActivateCredential with the AK and the EK; returns the
    /// decrypted credential (both inputs are non-empty and bounded by the
    /// request size limit).
    fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, BackendError>;

    /// The measurement log's whole records from index `from`, at most
    /// `max_bytes` of them (at least one record if any remain). A backend
    /// that measures nothing has an empty log.
    fn measurement_log(&mut self, from: u32, max_bytes: usize) -> Result<LogChunk, BackendError> {
        let _ = max_bytes;
        Ok(LogChunk {
            first: from,
            total: 0,
            records: Vec::new(),
        })
    }

    /// Records in the measurement log now (for subscribers).
    fn log_total(&mut self) -> u32 {
        0
    }

    /// Events that could not be pushed since boot (a full queue).
    fn events_dropped(&mut self) -> u32 {
        0
    }
}
