//! Runs the shared verification core on one piece of evidence and turns
//! its verdict into a [`Report`]. The checks themselves are all in
//! `avm_attest::verify`; this only chooses the inputs and the wording.

use avm_attest::policy::ReferenceValues;
use avm_attest::verify::{DEFAULT_REQUIRED_PCRS, EvidenceInput, verify_evidence, verify_quote};
use avm_attest::wire::{Evidence, PcrValue};

use crate::crypto::OpenSslVerifier;
use crate::report::{Report, ReportReason};
use crate::tpm_public::PublicKey;

/// Evidence plus what the verifier knows about it.
#[derive(Debug, Clone, Copy)]
pub struct AppraisalInput<'a> {
    pub attest: &'a [u8],
    pub signature: &'a [u8],
    pub pcrs: &'a [PcrValue],
    /// `None` when the evidence has no event log at all (a directory made
    /// by `tpm2_quote`): the log checks are then not applicable, and no
    /// PCR is required to be quoted. `Some(&[])` is an A-VM that sent an
    /// empty log: that is a failure.
    pub event_log: Option<&'a [u8]>,
    pub nonce: &'a [u8],
    pub ak: &'a PublicKey,
    pub ak_name: &'a [u8],
}

impl<'a> AppraisalInput<'a> {
    /// Evidence a node sent over the network (its event log included),
    /// to be checked against the AK enrolled for it.
    pub fn from_node(
        evidence: &'a Evidence,
        nonce: &'a [u8],
        ak: &'a PublicKey,
        ak_name: &'a [u8],
    ) -> Self {
        Self {
            attest: &evidence.attest,
            signature: &evidence.signature,
            pcrs: &evidence.pcrs,
            event_log: Some(&evidence.event_log),
            nonce,
            ak,
            ak_name,
        }
    }
}

/// Verifies the evidence and reports. `extra_reasons` (unknown node, AK
/// not activated...) make the verdict untrusted whatever the quote says.
pub fn appraise(
    input: &AppraisalInput<'_>,
    policy: Option<&ReferenceValues>,
    verifier: &OpenSslVerifier,
    node: Option<String>,
    extra_reasons: Vec<ReportReason>,
) -> Report {
    let core_input = EvidenceInput {
        attest: input.attest,
        signature: input.signature,
        pcrs: input.pcrs,
        event_log: input.event_log.unwrap_or(&[]),
        nonce: input.nonce,
        ak: input.ak.verifying_key(),
        required_pcrs: if input.event_log.is_some() {
            DEFAULT_REQUIRED_PCRS
        } else {
            0
        },
    };
    let (verdict, not_applicable) = match input.event_log {
        Some(_) => (verify_evidence(&core_input, policy, verifier), Vec::new()),
        // Without a log neither the measured launch nor the reference
        // values can be appraised; the quote itself still is.
        None => (
            verify_quote(&core_input, verifier),
            vec![
                "event-log replay (no event log in the evidence)".to_string(),
                "reference values (A-VM image, firmware events)".to_string(),
            ],
        ),
    };
    let mut report = Report::new(
        node,
        Some(&verdict),
        extra_reasons,
        input.nonce,
        input.ak_name,
        input.pcrs,
    );
    report.not_applicable = not_applicable;
    report
}
