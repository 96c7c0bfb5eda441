//! The verdict as the verifier reports it: printed for people, written as
//! JSON (`--json`, `evidence.json`) for machines, stored in the history.
//!
//! It carries the core's reasons (`avm_attest::verify::Reason`) plus the
//! verifier's own (unknown node, AK not activated, transport problems),
//! each with a stable code.

use avm_attest::policy::to_hex;
use avm_attest::verify::{Reason, Verdict};
use avm_attest::wire::PcrValue;
use serde::{Deserialize, Serialize};

/// One reason a node is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportReason {
    /// Stable kebab-case code (docs/protocol.md lists the core's codes).
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcr: Option<u8>,
}

impl ReportReason {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            pcr: None,
        }
    }
}

impl From<&Reason> for ReportReason {
    fn from(reason: &Reason) -> Self {
        Self {
            code: reason.code().into(),
            message: reason.to_string(),
            pcr: reason.pcr(),
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
    /// `trusted` or `untrusted`.
    pub verdict: String,
    pub node: Option<String>,
    pub reasons: Vec<ReportReason>,
    /// Checks that could not run and do not count (e.g. the event log
    /// checks on a directory made by `tpm2_quote`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applicable: Vec<String>,
    pub nonce: String,
    pub ak_name: String,
    /// The allowed A-VM image digest PCR 0 was explained with.
    pub avm_image_sha256: Option<String>,
    pub pcrs: Vec<ReportPcr>,
    pub quote: Option<ReportQuote>,
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
            verdict: if trusted { "trusted" } else { "untrusted" }.into(),
            node,
            reasons,
            not_applicable: Vec::new(),
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
        self.verdict == "trusted"
    }

    /// Reason codes, in order.
    pub fn codes(&self) -> Vec<&str> {
        self.reasons.iter().map(|r| r.code.as_str()).collect()
    }

    /// The readable form printed without `--json`.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let who = self.node.as_deref().unwrap_or("evidence");
        out.push_str(&format!("{who}: {}\n", self.verdict.to_uppercase()));
        for reason in &self.reasons {
            out.push_str(&format!("  - {}: {}\n", reason.code, reason.message));
        }
        for check in &self.not_applicable {
            out.push_str(&format!("  (not applicable: {check})\n"));
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
