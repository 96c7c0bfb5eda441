//! Runs the shared verification core on one piece of evidence and turns
//! its verdict into a [`Report`]. The checks themselves are all in
//! `avm_attest::verify`; this only chooses the inputs and the wording.
//!
//! Appraisal fails closed: evidence that lacks what the policy requires
//! (the event log, today) gets a reason of its own (`event-log-missing`).
//! Only the caller can ask for less, explicitly ([`appraise_quote_only`]),
//! and the verdict then says so (`quote-valid`, never `trusted`).

use avm_attest::monvm::{self, MonVmAppraisal};
use avm_attest::policy::ReferenceValues;
use avm_attest::verify::{
    EvidenceInput, MeasurementLogCheck, Reason, Verdict, check_measurement_log, verify_evidence,
    verify_quote,
};
use avm_attest::wire::Evidence;

use crate::allowlist::Excludes;
use crate::crypto::OpenSslVerifier;
use crate::evidence_dir::LoadedEvidence;
use crate::report::{Report, ReportReason, VerdictKind};
use crate::tpm_public::PublicKey;

/// Evidence plus what the verifier knows about it: the core's input and
/// the AK's TPM name (for the report).
#[derive(Debug, Clone, Copy)]
pub struct AppraisalInput<'a> {
    pub evidence: EvidenceInput<'a>,
    pub ak_name: &'a [u8],
    /// The A-VM's measurement log, if one came with the evidence.
    pub measurement_log: Option<&'a [u8]>,
}

impl<'a> AppraisalInput<'a> {
    /// Evidence a node sent over the network, to be checked against the
    /// AK enrolled for it.
    pub fn from_node(
        evidence: &'a Evidence,
        nonce: &'a [u8],
        ak: &'a PublicKey,
        ak_name: &'a [u8],
    ) -> Self {
        Self {
            evidence: EvidenceInput::new(evidence, nonce, ak.verifying_key()),
            ak_name,
            measurement_log: None,
        }
    }

    /// Evidence read from a directory. A directory without an event log
    /// is appraised like a node that sent an empty one: it fails.
    pub fn from_loaded(
        loaded: &'a LoadedEvidence,
        nonce: &'a [u8],
        ak: &'a PublicKey,
        ak_name: &'a [u8],
    ) -> Self {
        Self {
            evidence: EvidenceInput {
                attest: &loaded.attest,
                signature: &loaded.signature,
                pcrs: &loaded.pcrs,
                event_log: loaded.event_log.as_deref().unwrap_or_default(),
                nonce,
                ak: ak.verifying_key(),
                required_pcrs: avm_attest::verify::DEFAULT_REQUIRED_PCRS,
            },
            ak_name,
            measurement_log: loaded.measurement_log.as_deref(),
        }
    }
}

/// The core's verdict (typed reasons, for decisions) and the report built
/// from it (for people, JSON and the history).
#[derive(Debug, Clone)]
pub struct Appraisal {
    pub verdict: Verdict,
    pub report: Report,
    /// What the quote proves of the measurement log: `None` if the PCR
    /// values were not authenticated, else the check (or why it failed).
    pub log: Option<Result<MeasurementLogCheck, Reason>>,
    /// The Mon-VM appraisal of the proven log, if it was proven.
    pub monvm: Option<MonVmAppraisal>,
}

/// Verifies the evidence against the policy and reports. `extra_reasons`
/// (unknown node, AK not activated...) make the verdict untrusted whatever
/// the quote says.
pub fn appraise(
    input: &AppraisalInput<'_>,
    policy: Option<&ReferenceValues>,
    verifier: &OpenSslVerifier,
    node: Option<String>,
    extra_reasons: Vec<ReportReason>,
) -> Appraisal {
    let mut verdict = verify_evidence(&input.evidence, policy, verifier);
    // The measurement log is checked against PCR values only once they are
    // authenticated (signature valid, values the quoted ones).
    let authenticated = verdict.quote.as_ref().is_some_and(|q| q.signature_valid)
        && !verdict
            .reasons
            .iter()
            .any(|r| matches!(r, Reason::PcrSelectionMismatch | Reason::PcrDigestMismatch));
    let log =
        authenticated.then(|| check_measurement_log(input.measurement_log, input.evidence.pcrs));
    let mut monvm = None;
    match &log {
        Some(Err(reason)) => verdict.reasons.push(reason.clone()),
        Some(Ok(check)) => {
            verdict.reasons.extend(check.appraise_config(policy));
            // An exclude that does not compile excludes nothing (fail
            // closed); policies are checked when they are loaded.
            let excludes = policy
                .and_then(|p| Excludes::compile(&p.monvm_files).ok())
                .unwrap_or_else(Excludes::none);
            let appraisal = monvm::appraise(
                input.measurement_log.unwrap_or_default(),
                check,
                policy,
                &|path| excludes.matches(path),
            );
            verdict.reasons.extend(appraisal.reasons());
            monvm = Some(appraisal);
        }
        None => {}
    }
    verdict.trusted = verdict.reasons.is_empty();
    let mut report = Report::new(
        node,
        Some(&verdict),
        extra_reasons,
        input.evidence.nonce,
        input.ak_name,
        input.evidence.pcrs,
    );
    if let Some(Ok(check)) = &log {
        let mut summary = crate::report::ReportMeasurementLog::from(check);
        if let Some(appraisal) = &monvm {
            summary.add_appraisal(appraisal);
        }
        report.measurement_log = Some(summary);
    }
    Appraisal {
        verdict,
        report,
        log,
        monvm,
    }
}

/// What `verify --quote-only` checks: is this a genuine, fresh quote of
/// these PCR values by this key (signature, type, nonce, PCR digest)? The
/// event log and the reference values are not looked at, and the verdict
/// is `quote-valid` at best.
pub fn appraise_quote_only(
    input: &AppraisalInput<'_>,
    verifier: &OpenSslVerifier,
    node: Option<String>,
    extra_reasons: Vec<ReportReason>,
) -> Appraisal {
    let mut quote_input = input.evidence;
    quote_input.required_pcrs = avm_attest::pcr::PcrMask::EMPTY;
    let verdict = verify_quote(&quote_input, verifier);
    let mut report = Report::new(
        node,
        Some(&verdict),
        extra_reasons,
        input.evidence.nonce,
        input.ak_name,
        input.evidence.pcrs,
    );
    if report.trusted() {
        report.verdict = VerdictKind::QuoteValid;
    }
    report.not_checked = vec![
        "event-log replay and measured launch".into(),
        "reference values (A-VM image, firmware events)".into(),
    ];
    Appraisal {
        verdict,
        report,
        log: None,
        monvm: None,
    }
}
