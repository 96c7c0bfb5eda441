//! The verdict as the verifier reports it: printed for people, written as
//! JSON (`--json`, `evidence.json`) for machines, stored in the history.
//!
//! It carries the core's reasons (`avm_attest::verify::Reason`) plus the
//! verifier's own (unknown node, AK not activated, transport problems),
//! each with a stable code.

use avm_attest::hex::encode as to_hex;
use avm_attest::verify::{Reason, Verdict};
use avm_attest::wire::PcrValue;
use serde::{Deserialize, Serialize};

use crate::sanitize::escape_control;

/// The reasons only the host verifier gives (the core's are
/// [`avm_attest::verify::Reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifierReason {
    /// The address is not enrolled.
    UnknownNode,
    /// The AK is not the one that passed credential activation.
    AkNotActivated,
    /// The node's EK is not the enrolled one.
    EkChanged,
    /// Offline evidence names an AK that belongs to no enrolled node (and
    /// the caller did not assert one with `--ak`).
    AkNotEnrolled,
    /// The AK's TPMT_PUBLIC is not a restricted, fixed, TPM-generated
    /// signing key.
    AkAttributes,
}

impl VerifierReason {
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownNode => "unknown-node",
            Self::AkNotActivated => "ak-not-activated",
            Self::EkChanged => "ek-changed",
            Self::AkNotEnrolled => "ak-not-enrolled",
            Self::AkAttributes => "ak-attributes",
        }
    }
}

/// One reason a node is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportReason {
    /// Stable kebab-case code (docs/protocol.md lists the core's codes).
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcr: Option<u8>,
    /// The measurement-log record a Mon-VM finding is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<usize>,
    /// What it is about (path, module, process, event detail) as the node
    /// sent it (lossy UTF-8, at most 240 bytes; JSON escapes it, the
    /// human form escapes control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ReportReason {
    pub fn verifier(reason: VerifierReason, message: impl Into<String>) -> Self {
        Self {
            code: reason.code().into(),
            message: message.into(),
            pcr: None,
            record: None,
            detail: None,
        }
    }
}

impl From<&Reason> for ReportReason {
    fn from(reason: &Reason) -> Self {
        let finding = match reason {
            Reason::MonVm(finding) => Some(finding),
            _ => None,
        };
        Self {
            code: reason.code().into(),
            message: reason.to_string(),
            pcr: reason.pcr(),
            record: finding.map(|f| f.index),
            detail: finding.map(|f| f.detail.clone()),
        }
    }
}

/// The verdict of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    /// Every check passed: the node runs what the policy allows.
    Trusted,
    /// At least one reason.
    Untrusted,
    /// `verify --quote-only`: a genuine, fresh quote of these PCR values
    /// by the named key, and nothing more (no log, no reference values).
    QuoteValid,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trusted => "trusted",
            Self::Untrusted => "untrusted",
            Self::QuoteValid => "quote-valid",
        }
    }
}

/// How the key that signed the quote is bound to a TPM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum AkBinding {
    /// The AK enrolled for this node (bound to its EK by activation).
    Enrolled { node: String },
    /// Named by the caller (`verify --ak FILE`): not bound to any EK.
    AssertedByCaller { file: String },
    /// The directory's own key, which no enrolled node has: not trusted.
    NotEnrolled,
}

impl AkBinding {
    fn describe(&self) -> String {
        match self {
            Self::Enrolled { node } => format!("enrolled for {node}, bound to its EK"),
            Self::AssertedByCaller { file } => {
                format!("asserted by the caller ({file}), NOT bound to an EK")
            }
            Self::NotEnrolled => "not enrolled".into(),
        }
    }
}

/// A PCR value, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportPcr {
    pub index: u8,
    pub sha256: String,
}

/// The quote's header, once parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportQuote {
    pub signature_valid: bool,
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub firmware_version: u64,
    pub qualified_signer: String,
}

/// The full outcome of `attest` or `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub verdict: VerdictKind,
    pub node: Option<String>,
    pub reasons: Vec<ReportReason>,
    /// Checks the caller asked not to run (`verify --quote-only`): they
    /// do not count, and the verdict is then at most `quote-valid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_checked: Vec<String>,
    /// The nonce was taken from the evidence itself (`verify` without
    /// `--nonce`: the directory's `nonce.hex`), so nothing shows the quote
    /// is fresh: a copy of an old export verifies the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub freshness_unproven: bool,
    /// How the AK is bound to a TPM, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ak_binding: Option<AkBinding>,
    pub nonce: String,
    pub ak_name: String,
    /// The allowed A-VM image digest PCR 0 was explained with.
    pub avm_image_sha256: Option<String>,
    pub pcrs: Vec<ReportPcr>,
    pub quote: Option<ReportQuote>,
    /// What the quote proves of the A-VM's measurement log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement_log: Option<ReportMeasurementLog>,
}

/// The A-VM's measurement log as far as the quote proves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportMeasurementLog {
    /// Records the quoted PCRs cover.
    pub proven_records: usize,
    /// Records appended after the quote.
    pub after_quote: usize,
    /// SHA-256 of the A-VM's configuration (the Mon-VM kernel profile)
    /// measured into PCR 8, if any.
    pub config_sha256: Option<String>,
    /// The Mon-VM's IMA entries the A-VM anchored into PCR 10.
    pub monvm_ima_entries: usize,
    /// Proven records per PCR 8-15 (index 0 is PCR 8).
    pub records_per_pcr: [usize; 8],
    /// The Mon-VM kernel release the A-VM measured at start-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monvm_kernel: Option<String>,
    /// Modules and user-space processes the A-VM measured at start-up.
    pub monvm_modules: usize,
    pub monvm_processes: usize,
    /// The proven monitoring events (PCR 12), as the A-VM named them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// The record index the verifier asked the node for (`attest`): 0
    /// for a whole log, else the number of records it already had from
    /// an earlier attestation of the same boot (kept in its state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_from: Option<u32>,
    /// Why the stored log was not used and the whole log was fetched
    /// again (the node rebooted, its log shrank or contradicts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refetched: Option<String>,
    /// The Mon-VM appraisal against the policy's allowlists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appraisal: Option<ReportAppraisal>,
}

/// What the Mon-VM appraisal looked at (its findings are reasons).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAppraisal {
    /// Whether the policy had a file allowlist to apply.
    pub allowlist_applied: bool,
    pub files_appraised: usize,
    pub files_excluded: usize,
    pub modules_appraised: usize,
    pub processes_appraised: usize,
    /// Process records of an older A-VM, which name no executable.
    pub processes_without_path: usize,
    /// Findings beyond the 100 listed as reasons.
    pub findings_omitted: usize,
}

impl ReportMeasurementLog {
    /// Adds the Mon-VM appraisal's counts.
    pub fn add_appraisal(&mut self, appraisal: &avm_attest::monvm::MonVmAppraisal) {
        self.appraisal = Some(ReportAppraisal {
            allowlist_applied: appraisal.allowlist_applied,
            files_appraised: appraisal.files_appraised,
            files_excluded: appraisal.files_excluded,
            modules_appraised: appraisal.modules_appraised,
            processes_appraised: appraisal.processes_appraised,
            processes_without_path: appraisal.processes_without_path,
            findings_omitted: appraisal.omitted,
        });
    }
}

impl From<&avm_attest::verify::MeasurementLogCheck> for ReportMeasurementLog {
    fn from(check: &avm_attest::verify::MeasurementLogCheck) -> Self {
        Self {
            proven_records: check.proven,
            after_quote: check.after_quote,
            config_sha256: check.config_digest.map(|d| to_hex(&d)),
            monvm_ima_entries: check.per_pcr[2],
            records_per_pcr: check.per_pcr,
            monvm_kernel: check
                .monvm_kernel()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            monvm_modules: check.startup_count(b"monvm:module:"),
            monvm_processes: check.startup_count(b"monvm:process:"),
            events: check
                .events
                .iter()
                .map(|(_, name)| String::from_utf8_lossy(name).into_owned())
                .collect(),
            fetched_from: None,
            refetched: None,
            appraisal: None,
        }
    }
}

impl Report {
    /// Builds the report from the core's verdict plus verifier reasons.
    pub fn new(
        node: Option<String>,
        verdict: Option<&Verdict>,
        extra_reasons: Vec<ReportReason>,
        nonce: &[u8],
        ak_name: &[u8],
        pcrs: &[PcrValue],
    ) -> Self {
        let mut reasons = extra_reasons;
        if let Some(v) = verdict {
            reasons.extend(v.reasons.iter().map(ReportReason::from));
        }
        let trusted = reasons.is_empty() && verdict.is_some_and(|v| v.trusted);
        Self {
            verdict: if trusted {
                VerdictKind::Trusted
            } else {
                VerdictKind::Untrusted
            },
            node,
            reasons,
            not_checked: Vec::new(),
            freshness_unproven: false,
            ak_binding: None,
            measurement_log: None,
            nonce: to_hex(nonce),
            ak_name: to_hex(ak_name),
            avm_image_sha256: verdict.and_then(|v| v.avm_image).map(|d| to_hex(&d)),
            pcrs: pcrs
                .iter()
                .map(|p| ReportPcr {
                    index: p.index,
                    sha256: to_hex(&p.digest),
                })
                .collect(),
            quote: verdict.and_then(|v| v.quote.as_ref()).map(|q| ReportQuote {
                signature_valid: q.signature_valid,
                clock: q.clock,
                reset_count: q.reset_count,
                restart_count: q.restart_count,
                firmware_version: q.firmware_version,
                qualified_signer: to_hex(&q.qualified_signer),
            }),
        }
    }

    pub fn trusted(&self) -> bool {
        self.verdict == VerdictKind::Trusted
    }

    /// The exit code's view: trusted, or the quote-only check asked for.
    pub fn passed(&self) -> bool {
        matches!(self.verdict, VerdictKind::Trusted | VerdictKind::QuoteValid)
    }

    /// Reason codes, in order.
    pub fn codes(&self) -> Vec<&str> {
        self.reasons.iter().map(|r| r.code.as_str()).collect()
    }

    /// The readable form printed without `--json`.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let who = self.node.as_deref().unwrap_or("evidence");
        out.push_str(&format!(
            "{}: {}\n",
            escape_control(who),
            self.verdict.as_str().to_uppercase()
        ));
        for reason in &self.reasons {
            out.push_str(&format!(
                "  - {}: {}\n",
                reason.code,
                escape_control(&reason.message)
            ));
        }
        for check in &self.not_checked {
            out.push_str(&format!("  (not checked, as asked: {check})\n"));
        }
        if self.freshness_unproven {
            out.push_str(
                "  (freshness not proven: the nonce is the evidence's own; pass --nonce with the one you issued)\n",
            );
        }
        if let Some(binding) = &self.ak_binding {
            out.push_str(&format!("  AK: {}\n", escape_control(&binding.describe())));
        }
        if let Some(log) = &self.measurement_log {
            out.push_str(&format!(
                "  measurement log: {} records proven ({} after the quote), Mon-VM IMA entries anchored: {}\n",
                log.proven_records, log.after_quote, log.monvm_ima_entries
            ));
            if let Some(kernel) = &log.monvm_kernel {
                out.push_str(&format!(
                    "  Mon-VM kernel {}: {} modules, {} processes at start-up\n",
                    escape_control(kernel),
                    log.monvm_modules,
                    log.monvm_processes
                ));
            }
            for event in &log.events {
                out.push_str(&format!("  event: {}\n", escape_control(event)));
            }
            if let Some(a) = &log.appraisal {
                if a.allowlist_applied {
                    out.push_str(&format!(
                        "  Mon-VM appraisal: {} files appraised ({} excluded), {} modules, {} processes{}\n",
                        a.files_appraised,
                        a.files_excluded,
                        a.modules_appraised,
                        a.processes_appraised,
                        if a.findings_omitted > 0 {
                            format!("; {} more findings not listed", a.findings_omitted)
                        } else {
                            String::new()
                        }
                    ));
                } else {
                    out.push_str("  Mon-VM appraisal: no allowlist in the policy\n");
                }
            }
            if let Some(from) = log.fetched_from {
                out.push_str(&format!("  measurement log fetched from record {from}"));
                if let Some(why) = &log.refetched {
                    out.push_str(&format!(" (whole log again: {})", escape_control(why)));
                }
                out.push('\n');
            }
            if let Some(config) = &log.config_sha256 {
                out.push_str(&format!(
                    "  A-VM configuration (kernel profile) sha256: {config}\n"
                ));
            }
        }
        if let Some(image) = &self.avm_image_sha256 {
            out.push_str(&format!("  A-VM image sha256: {image}\n"));
        }
        out.push_str(&format!(
            "  AK name: {}\n  nonce: {}\n",
            self.ak_name, self.nonce
        ));
        for pcr in &self.pcrs {
            out.push_str(&format!("  PCR {:2}: {}\n", pcr.index, pcr.sha256));
        }
        out
    }
}
