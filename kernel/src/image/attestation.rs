//! The TPM behind the attestation server: `avm_net::AttestationBackend`
//! implemented with the keys and event log the boot sequence left.

use crate::measurements::MeasurementLog;
use crate::tpm_boot::TpmState;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use avm_attest::pcr::PcrMask;
use avm_attest::tpm::{Attest, pcr_digest};
use avm_attest::wire::{
    ErrorCode, Evidence, HelloInfo, KeyAlgorithm, KeyInfo, LogChunk, PROTOCOL_VERSION, PcrValue,
};
use avm_net::{AttestationBackend, BackendError};
use core::fmt::Write as _;
use tpm_crb::{Credential, EkAlgorithm, LoadedKey, PcrSelection, TpmError};

/// Largest EK certificate read from NV (TCG EK certificates are 1-2 KiB).
const MAX_EK_CERT_LEN: usize = 4096;
/// Quotes retried when a PCR changed between PCR_Read and TPM2_Quote.
const QUOTE_ATTEMPTS: usize = 4;

/// The attestation backend of the A-VM: one TPM, its EK and AK, and the
/// firmware event log.
pub struct TpmBackend {
    state: TpmState,
    hello: HelloInfo,
    /// The A-VM's own measurement log (served to verifiers).
    log: MeasurementLog,
}

/// A short message for the verifier, formatted without `alloc::format!`
/// (which the freestanding image cannot link).
fn detail(args: core::fmt::Arguments<'_>) -> String {
    let mut text: heapless::String<160> = heapless::String::new();
    // A message longer than the buffer is cut, which is fine for a detail.
    let _ = text.write_fmt(args);
    String::from(text.as_str())
}

fn tpm_error(what: &str, error: TpmError) -> BackendError {
    BackendError::tpm(detail(format_args!("{what}: {error}")))
}

fn key_info(key: &LoadedKey) -> KeyInfo {
    KeyInfo {
        algorithm: KeyAlgorithm::EccP256,
        public: key.public.as_bytes().to_vec(),
        name: key.name.to_vec(),
    }
}

/// The driver's selection of `pcr_mask` (the server allows only PCRs 0-23).
fn selection(pcr_mask: PcrMask) -> Result<PcrSelection, BackendError> {
    if pcr_mask.is_empty() || !pcr_mask.is_within(PcrMask::PC_CLIENT) {
        return Err(BackendError {
            code: ErrorCode::BadRequest,
            detail: String::from("PCR mask must select PCRs 0-23 only"),
        });
    }
    Ok(PcrSelection::from_bitmap(
        &pcr_mask.bits().to_le_bytes()[..3],
    ))
}

impl TpmBackend {
    /// The TPM and the measurement log, for the services that measure
    /// between requests.
    pub fn measuring(&mut self) -> (&mut crate::tpm_boot::KernelTpm, &mut MeasurementLog) {
        (&mut self.state.tpm, &mut self.log)
    }

    /// The monitoring events recorded since the last call (to push).
    pub fn take_events(&mut self) -> alloc::collections::VecDeque<avm_attest::wire::PushedEvent> {
        self.log.take_events()
    }

    /// Reads the EK certificate from NV once (an absent certificate is an
    /// empty one: the verifier then refuses to enrol the node).
    pub fn new(mut state: TpmState, log: MeasurementLog) -> Self {
        let mut cert = vec![0u8; MAX_EK_CERT_LEN];
        match state.tpm.nv_read_ek_cert(EkAlgorithm::EccP256, &mut cert) {
            Ok(len) => {
                cert.truncate(len);
                info!("tpm: EK certificate: {} bytes", len);
            }
            Err(e) => {
                warn!("tpm: no EK certificate in NV: {}", e);
                cert.clear();
            }
        }
        let hello = HelloInfo {
            version: PROTOCOL_VERSION,
            ek: key_info(&state.ek),
            ek_certificate: cert,
            ak: key_info(&state.ak),
        };
        Self { state, hello, log }
    }

    /// Random bytes from the TPM (for the TCP sequence-number seed).
    pub fn random_u64(&mut self) -> Result<u64, TpmError> {
        let mut bytes = [0u8; 8];
        self.state.tpm.get_random(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// One PCR_Read + Quote round; `None` if the values read do not match
    /// the quoted digest (a PCR was extended in between).
    fn quote_once(
        &mut self,
        nonce: &[u8],
        selection: PcrSelection,
    ) -> Result<Option<Evidence>, BackendError> {
        let values = self
            .state
            .tpm
            .pcr_read(selection)
            .map_err(|e| tpm_error("PCR_Read", e))?;
        let quote = self
            .state
            .tpm
            .quote(self.state.ak.handle, nonce, selection)
            .map_err(|e| tpm_error("Quote", e))?;
        let attest = Attest::parse(&quote.attest).map_err(|e| {
            BackendError::tpm(detail(format_args!("TPM returned a bad TPMS_ATTEST: {e}")))
        })?;
        let quoted_digest = attest.quote.as_ref().map(|q| q.pcr_digest);
        if quoted_digest != Some(&pcr_digest(values.values.iter())[..]) {
            return Ok(None);
        }
        let pcrs = selection
            .iter()
            .zip(values.values.iter())
            .map(|(index, digest)| PcrValue {
                index,
                digest: *digest,
            })
            .collect();
        Ok(Some(Evidence {
            attest: quote.attest.to_vec(),
            signature: quote.signature.to_vec(),
            pcrs,
            event_log: self.state.event_log.clone(),
        }))
    }
}

impl AttestationBackend for TpmBackend {
    fn measurement_log(&mut self, from: u32, max_bytes: usize) -> Result<LogChunk, BackendError> {
        Ok(self.log.chunk(from, max_bytes))
    }

    fn log_total(&mut self) -> u32 {
        u32::try_from(self.log.records()).unwrap_or(u32::MAX)
    }

    fn events_dropped(&mut self) -> u32 {
        self.log.events_dropped()
    }

    fn hello(&mut self) -> Result<HelloInfo, BackendError> {
        Ok(self.hello.clone())
    }

    fn quote(&mut self, nonce: &[u8], pcr_mask: PcrMask) -> Result<Evidence, BackendError> {
        let selection = selection(pcr_mask)?;
        for _ in 0..QUOTE_ATTEMPTS {
            if let Some(evidence) = self.quote_once(nonce, selection)? {
                return Ok(evidence);
            }
        }
        Err(BackendError::tpm(
            "PCRs kept changing between PCR_Read and Quote",
        ))
    }

    fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let bad_request = |what: &str| BackendError {
            code: ErrorCode::BadRequest,
            detail: detail(format_args!("{what} too large")),
        };
        let credential = Credential {
            blob: heapless::Vec::from_slice(credential_blob)
                .map_err(|_| bad_request("credential blob"))?,
            secret: heapless::Vec::from_slice(encrypted_secret)
                .map_err(|_| bad_request("encrypted secret"))?,
        };
        let secret = self
            .state
            .tpm
            .activate_credential(self.state.ak.handle, self.state.ek.handle, &credential)
            .map_err(|e| match e {
                // The TPM refused the inputs (wrong EK, wrong AK name,
                // corrupted blob): the verifier's fault, not the TPM's.
                TpmError::Tpm(_) => BackendError {
                    code: ErrorCode::BadRequest,
                    detail: detail(format_args!("ActivateCredential: {e}")),
                },
                other => tpm_error("ActivateCredential", other),
            })?;
        Ok(secret.to_vec())
    }
}
