//! The verification core: is this evidence a fresh, genuine quote of the
//! expected A-VM, and does its event log explain its PCRs?
//!
//! [`verify_evidence`] runs every check of `docs/protocol.md` ("Verifying
//! evidence") and returns a [`Verdict`] with one [`Reason`] per failed
//! check. It is `no_std`: the signature arithmetic sits behind
//! [`SignatureVerifier`], which the host implements with a fast library
//! (OpenSSL in avm-verifier) and the A-VM could implement in pure Rust.

use alloc::vec::Vec;

use crate::eventlog::{EventLog, PCR_COUNT, hcrtm_pcr0_start, initial_pcrs};
use crate::pcr::PcrMask;
use crate::policy::{FirmwareSequence, ReferenceValues, firmware_events_of};
use crate::tpm::{self, Attest, Signature, VerifyingKey, pcr_digest};
use crate::wire::{Evidence, PcrValue};

/// PCRs a quote must cover unless the caller says otherwise: the firmware
/// PCRs 0-7, which hold the measured launch.
pub const DEFAULT_REQUIRED_PCRS: PcrMask = PcrMask::FIRMWARE;

/// PCRs the A-VM's own measurement log extends (8: its configuration,
/// 10: the Mon-VM's IMA entries, 11-15: its measurements of the Mon-VM).
pub const AVM_LOG_PCRS: PcrMask = PcrMask::from_bits(0xff00);

/// What a verifier asks an A-VM to quote: the firmware PCRs and the PCRs
/// of its measurement log.
pub const ATTEST_PCRS: PcrMask = PcrMask::from_bits(0xffff);

/// Most records a measurement log may have (the A-VM's log of a busy
/// Mon-VM holds thousands of IMA entries).
pub const MAX_MEASUREMENT_RECORDS: usize = 1 << 20;

/// Name of the record (PCR 12) that ends a full measurement log: the A-VM
/// records nothing after it.
pub const LOG_FULL_RECORD: &[u8] = b"avm:log-full";

/// Signature arithmetic, provided by the caller. Both functions hash
/// `message` with SHA-256 themselves and return whether the signature is
/// valid; any malformed key or signature is simply `false`.
pub trait SignatureVerifier {
    /// ECDSA over NIST P-256 with SHA-256. `public_x`/`public_y` are the
    /// big-endian affine coordinates, `r`/`s` big-endian (possibly shorter
    /// than 32 bytes).
    fn verify_ecdsa_p256_sha256(
        &self,
        public_x: &[u8],
        public_y: &[u8],
        message: &[u8],
        r: &[u8],
        s: &[u8],
    ) -> bool;

    /// RSASSA-PKCS1-v1_5 with SHA-256. `modulus` big-endian, `exponent`
    /// never 0 (the TPM's 0 is already mapped to 65537).
    fn verify_rsassa_pkcs1v15_sha256(
        &self,
        modulus: &[u8],
        exponent: u32,
        message: &[u8],
        signature: &[u8],
    ) -> bool;
}

/// What the caller verifies: the evidence, the nonce it sent, and the AK
/// it trusts (bound to the EK at enrolment).
#[derive(Debug, Clone, Copy)]
pub struct EvidenceInput<'a> {
    /// Marshaled TPMS_ATTEST.
    pub attest: &'a [u8],
    /// Marshaled TPMT_SIGNATURE.
    pub signature: &'a [u8],
    /// The reported PCR values (SHA-256 bank).
    pub pcrs: &'a [PcrValue],
    /// The firmware event log (empty if none was reported).
    pub event_log: &'a [u8],
    /// The nonce the verifier sent.
    pub nonce: &'a [u8],
    /// The attestation key the quote must be signed with.
    pub ak: VerifyingKey<'a>,
    /// PCRs the quote must cover.
    pub required_pcrs: PcrMask,
}

impl<'a> EvidenceInput<'a> {
    /// Input for evidence received over the wire, requiring PCRs 0-7.
    pub fn new(evidence: &'a Evidence, nonce: &'a [u8], ak: VerifyingKey<'a>) -> Self {
        Self {
            attest: &evidence.attest,
            signature: &evidence.signature,
            pcrs: &evidence.pcrs,
            event_log: &evidence.event_log,
            nonce,
            ak,
            required_pcrs: DEFAULT_REQUIRED_PCRS,
        }
    }
}

/// Which reference values are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingReference {
    /// No policy at all.
    All,
    /// No allowed A-VM image digest.
    AvmImage,
    /// No firmware events learned yet.
    FirmwareEvents,
    /// No firmware sequence (order and number of events) learned yet.
    FirmwareSequences,
    /// The A-VM introspects a Mon-VM, but the policy has no allowlist of
    /// its files (`monvm_files`).
    MonVmFiles,
}

/// Why evidence is not trusted. Each kind has a stable [`Reason::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// TPMS_ATTEST does not parse.
    QuoteMalformed(tpm::TpmParseError),
    /// TPMT_SIGNATURE does not parse.
    SignatureMalformed(tpm::TpmParseError),
    /// The signature scheme or its hash does not fit the AK (only ECDSA
    /// and RSASSA with SHA-256 are accepted).
    SignatureAlgorithmMismatch,
    /// The signature does not verify with the AK.
    SignatureInvalid,
    /// Not a TPM-generated quote (magic or type).
    NotAQuote { magic: u32, attest_type: u16 },
    /// extraData differs from the nonce sent.
    NonceMismatch,
    /// The quote's PCR selection is not the SHA-256 bank over exactly the
    /// reported PCR indices (or the reported values repeat an index).
    PcrSelectionMismatch,
    /// A PCR the verifier requires is not in the quote.
    PcrNotQuoted { pcr: u8 },
    /// SHA-256 over the reported values differs from the quote's pcrDigest.
    PcrDigestMismatch,
    /// No event log was reported.
    EventLogMissing,
    /// The event log does not parse (or has no SHA-256 bank).
    EventLogMalformed,
    /// Replaying the log does not give the quoted value of this PCR
    /// (PCRs 1-7; PCR 0 is [`Reason::AvmImageUnknown`]).
    EventLogReplayMismatch { pcr: u8 },
    /// PCR 0 matches no allowed A-VM image (H-CRTM start + log replay).
    AvmImageUnknown,
    /// A firmware event (record `index` of the log) is not in the
    /// reference values.
    FirmwareEventUnknown { pcr: u8, index: usize },
    /// The firmware events of this PCR are not, in order and number, those
    /// of any learned boot (an event repeated, missing or out of place).
    FirmwareSequenceUnknown { pcr: u8 },
    /// Reference values are missing, so the node cannot be appraised.
    ReferenceValuesMissing(MissingReference),
    /// A PCR of the A-VM's log (8-15) is quoted non-zero but no
    /// measurement log came with the evidence.
    MeasurementLogMissing,
    /// The measurement log does not parse, or names a PCR outside 8-15.
    MeasurementLogMalformed,
    /// Record `index` of the measurement log has a template hash that is not
    /// SHA-1 of its template data.
    MeasurementLogInconsistent { index: usize },
    /// No prefix of the measurement log replays to the quoted value of
    /// this PCR (records removed, changed or reordered).
    MeasurementLogReplayMismatch { pcr: u8 },
    /// The A-VM's measurement log filled up (record `index` is
    /// [`LOG_FULL_RECORD`]): nothing after it was recorded, so the node is
    /// untrusted until it is attested from scratch (the A-VM restarted).
    MeasurementLogFull { index: usize },
    /// A finding about the Mon-VM, named by its kind (each kind has its
    /// own code, `monvm-...`): a violation the A-VM recorded (PCR 12;
    /// the node stays untrusted until it boots afresh), or an entry of the
    /// proven log the policy does not allow (`crate::monvm`).
    MonVm(crate::monvm::MonVmFinding),
    /// The A-VM introspects the Mon-VM with a kernel profile (PCR 8) the
    /// policy does not allow.
    MonVmProfileUnknown,
    /// The policy allows Mon-VM kernel profiles, so it expects the A-VM to
    /// introspect a Mon-VM, but the proven log has no profile record: an
    /// A-VM started without its Mon-VM, beside a Mon-VM nobody watches.
    MonVmProfileMissing,
}

impl Reason {
    /// Stable kebab-case code (documented in docs/protocol.md).
    pub fn code(&self) -> &'static str {
        match self {
            Self::QuoteMalformed(_) => "quote-malformed",
            Self::SignatureMalformed(_) => "signature-malformed",
            Self::SignatureAlgorithmMismatch => "signature-algorithm-mismatch",
            Self::SignatureInvalid => "signature-invalid",
            Self::NotAQuote { .. } => "not-a-quote",
            Self::NonceMismatch => "nonce-mismatch",
            Self::PcrSelectionMismatch => "pcr-selection-mismatch",
            Self::PcrNotQuoted { .. } => "pcr-not-quoted",
            Self::PcrDigestMismatch => "pcr-digest-mismatch",
            Self::EventLogMissing => "event-log-missing",
            Self::EventLogMalformed => "event-log-malformed",
            Self::EventLogReplayMismatch { .. } => "event-log-replay-mismatch",
            Self::AvmImageUnknown => "avm-image-unknown",
            Self::FirmwareEventUnknown { .. } => "firmware-event-unknown",
            Self::FirmwareSequenceUnknown { .. } => "firmware-sequence-unknown",
            Self::ReferenceValuesMissing(_) => "reference-values-missing",
            Self::MeasurementLogMissing => "measurement-log-missing",
            Self::MeasurementLogMalformed => "measurement-log-malformed",
            Self::MeasurementLogInconsistent { .. } => "measurement-log-inconsistent",
            Self::MeasurementLogReplayMismatch { .. } => "measurement-log-replay-mismatch",
            Self::MeasurementLogFull { .. } => "measurement-log-full",
            Self::MonVm(finding) => finding.kind.code(),
            Self::MonVmProfileUnknown => "monvm-profile-unknown",
            Self::MonVmProfileMissing => "monvm-profile-missing",
        }
    }

    /// The PCR the reason is about, if any.
    pub fn pcr(&self) -> Option<u8> {
        match *self {
            Self::PcrNotQuoted { pcr }
            | Self::EventLogReplayMismatch { pcr }
            | Self::FirmwareEventUnknown { pcr, .. }
            | Self::FirmwareSequenceUnknown { pcr }
            | Self::MeasurementLogReplayMismatch { pcr } => Some(pcr),
            Self::AvmImageUnknown => Some(0),
            Self::MonVm(ref finding) => Some(finding.kind.pcr()),
            _ => None,
        }
    }
}

/// A human-readable message (the code is for machines).
impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::QuoteMalformed(e) => write!(f, "the quoted TPMS_ATTEST is malformed: {e}"),
            Self::SignatureMalformed(e) => write!(f, "the TPMT_SIGNATURE is malformed: {e}"),
            Self::SignatureAlgorithmMismatch => f.write_str(
                "the signature scheme does not fit the AK (ECDSA or RSASSA with SHA-256 expected)",
            ),
            Self::SignatureInvalid => {
                f.write_str("the quote signature does not verify with the AK")
            }
            Self::NotAQuote { magic, attest_type } => write!(
                f,
                "not a TPM-generated quote (magic {magic:#010x}, type {attest_type:#06x})"
            ),
            Self::NonceMismatch => f.write_str("the quote does not carry the nonce that was sent"),
            Self::PcrSelectionMismatch => {
                f.write_str("the quote's PCR selection differs from the reported PCR values")
            }
            Self::PcrNotQuoted { pcr } => write!(f, "PCR {pcr} is required but not quoted"),
            Self::PcrDigestMismatch => {
                f.write_str("the reported PCR values do not match the quoted PCR digest")
            }
            Self::EventLogMissing => f.write_str("no event log was reported"),
            Self::EventLogMalformed => f.write_str("the event log is malformed"),
            Self::EventLogReplayMismatch { pcr } => {
                write!(
                    f,
                    "replaying the event log does not give the quoted PCR {pcr}"
                )
            }
            Self::AvmImageUnknown => f.write_str(
                "PCR 0 matches no allowed A-VM image (unknown image or altered PCR 0 log)",
            ),
            Self::FirmwareEventUnknown { pcr, index } => write!(
                f,
                "firmware event #{index} in PCR {pcr} is not in the reference values"
            ),
            Self::FirmwareSequenceUnknown { pcr } => write!(
                f,
                "the firmware events of PCR {pcr} are not, in order and number, those of a learned boot"
            ),
            Self::MeasurementLogMissing => f.write_str(
                "the A-VM's PCRs 8-15 hold measurements but no measurement log came with them",
            ),
            Self::MeasurementLogMalformed => f.write_str("the A-VM's measurement log is malformed"),
            Self::MeasurementLogInconsistent { index } => write!(
                f,
                "record #{index} of the measurement log has a wrong template hash"
            ),
            Self::MeasurementLogReplayMismatch { pcr } => write!(
                f,
                "no prefix of the measurement log replays to the quoted PCR {pcr}"
            ),
            Self::MeasurementLogFull { index } => write!(
                f,
                "the A-VM's measurement log is full since record #{index}: nothing after it was recorded"
            ),
            Self::MonVmProfileUnknown => f.write_str(
                "the A-VM uses a Mon-VM kernel profile the reference values do not allow",
            ),
            Self::MonVmProfileMissing => f.write_str(
                "the reference values expect a Mon-VM, but the A-VM measured no kernel profile (it introspects none)",
            ),
            Self::MonVm(finding) => write!(
                f,
                "{} (measurement log record #{}): {}",
                finding.kind.describe(),
                finding.index,
                finding.detail
            ),
            Self::ReferenceValuesMissing(MissingReference::All) => {
                f.write_str("no reference values: the node cannot be appraised")
            }
            Self::ReferenceValuesMissing(MissingReference::AvmImage) => {
                f.write_str("the reference values allow no A-VM image")
            }
            Self::ReferenceValuesMissing(MissingReference::FirmwareEvents) => f.write_str(
                "the reference values have no firmware events (learn them from a known-good boot)",
            ),
            Self::ReferenceValuesMissing(MissingReference::FirmwareSequences) => f.write_str(
                "the reference values have no firmware sequence (learn again from a known-good boot)",
            ),
            Self::ReferenceValuesMissing(MissingReference::MonVmFiles) => f.write_str(
                "the reference values have no allowlist of Mon-VM files (learn from a known-good node or import a Keylime runtime policy)",
            ),
        }
    }
}

/// What the quote said, once its signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteSummary {
    /// Whether the signature verified with the AK: if not, nothing below
    /// is authenticated.
    pub signature_valid: bool,
    pub pcr_mask: Option<PcrMask>,
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub firmware_version: u64,
    pub qualified_signer: Vec<u8>,
}

/// The outcome of [`verify_evidence`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// True only if there are no reasons.
    pub trusted: bool,
    /// Every failed check, in the order the checks run.
    pub reasons: Vec<Reason>,
    /// The allowed image digest PCR 0 was explained with, if any.
    pub avm_image: Option<[u8; 32]>,
    /// The quote's header, if it parsed.
    pub quote: Option<QuoteSummary>,
}

/// Runs all checks (see the module docs and docs/protocol.md).
///
/// A quote that does not parse ends verification; otherwise independent
/// checks all run, so the verdict lists every problem. Checks that depend
/// on an earlier one (the PCR digest on the selection, the log replay on
/// authenticated PCR values) are skipped when it failed. A bad signature
/// makes the verdict untrusted whatever the rest says.
pub fn verify_evidence(
    input: &EvidenceInput<'_>,
    policy: Option<&ReferenceValues>,
    verifier: &impl SignatureVerifier,
) -> Verdict {
    let mut reasons = Vec::new();
    let Some(QuoteCheck {
        summary,
        authenticated,
    }) = check_quote(input, verifier, &mut reasons)
    else {
        return Verdict::from_reasons(reasons, None, None);
    };

    // 7-10. The event log explains the firmware PCRs.
    let avm_image = authenticated
        .and_then(|values| appraise_log(input.event_log, &values, policy, &mut reasons));

    // Without reference values nothing can be trusted, but everything
    // else was still checked above.
    let missing = match policy {
        None => Some(MissingReference::All),
        Some(p) if p.avm_image_sha256.is_empty() => Some(MissingReference::AvmImage),
        Some(p) if p.firmware_events.is_empty() => Some(MissingReference::FirmwareEvents),
        Some(p) if p.firmware_sequences.is_empty() => Some(MissingReference::FirmwareSequences),
        Some(_) => None,
    };
    reasons.extend(missing.map(Reason::ReferenceValuesMissing));
    Verdict::from_reasons(reasons, avm_image, Some(summary))
}

/// Only the checks of the quote itself (steps 1-6: signature, type, nonce,
/// PCR selection and digest), without the event log or reference values.
/// `trusted` then means "a genuine, fresh quote of these PCR values", not
/// "a trusted node": for quotes from other tools (a `tpm2_quote`
/// directory) that come without an event log.
pub fn verify_quote(input: &EvidenceInput<'_>, verifier: &impl SignatureVerifier) -> Verdict {
    let mut reasons = Vec::new();
    let summary = check_quote(input, verifier, &mut reasons).map(|check| check.summary);
    Verdict::from_reasons(reasons, None, summary)
}

impl Verdict {
    fn from_reasons(
        reasons: Vec<Reason>,
        avm_image: Option<[u8; 32]>,
        quote: Option<QuoteSummary>,
    ) -> Self {
        Self {
            trusted: reasons.is_empty(),
            reasons,
            avm_image,
            quote,
        }
    }
}

/// What steps 1-6 established.
struct QuoteCheck {
    summary: QuoteSummary,
    /// The reported PCR values, if they are the quoted ones (selection and
    /// digest match; authenticated if the signature was valid).
    authenticated: Option<PcrTable>,
}

/// Steps 1-6; `None` if the quote does not parse (the only reason then).
fn check_quote(
    input: &EvidenceInput<'_>,
    verifier: &impl SignatureVerifier,
    reasons: &mut Vec<Reason>,
) -> Option<QuoteCheck> {
    // 1. Parse.
    let attest = match Attest::parse(input.attest) {
        Ok(a) => a,
        Err(e) => {
            reasons.push(Reason::QuoteMalformed(e));
            return None;
        }
    };

    // 2. Signature over the exact attest bytes, with the enrolled AK.
    let signature_valid = match Signature::parse(input.signature) {
        Err(e) => {
            reasons.push(Reason::SignatureMalformed(e));
            false
        }
        Ok(sig) => match check_signature(&sig, &input.ak, input.attest, verifier) {
            Ok(()) => true,
            Err(reason) => {
                reasons.push(reason);
                false
            }
        },
    };
    let summary = QuoteSummary {
        signature_valid,
        pcr_mask: attest
            .quote
            .as_ref()
            .and_then(|q| q.pcr_select.sha256_mask()),
        clock: attest.clock_info.clock,
        reset_count: attest.clock_info.reset_count,
        restart_count: attest.clock_info.restart_count,
        firmware_version: attest.firmware_version,
        qualified_signer: attest.qualified_signer.to_vec(),
    };

    // 3. Magic and type.
    if !attest.is_quote() {
        reasons.push(Reason::NotAQuote {
            magic: attest.magic,
            attest_type: attest.attest_type,
        });
    }

    // 4. Freshness.
    if attest.extra_data != input.nonce {
        reasons.push(Reason::NonceMismatch);
    }

    let Some(quote) = attest.quote.as_ref().filter(|_| attest.is_quote()) else {
        return Some(QuoteCheck {
            summary,
            authenticated: None,
        });
    };

    // 5. The selection must be exactly the reported PCRs.
    let reported = match reported_pcrs(input.pcrs) {
        Some((mask, values)) if quote.pcr_select.sha256_mask() == Some(mask) => {
            Some((mask, values))
        }
        _ => {
            reasons.push(Reason::PcrSelectionMismatch);
            None
        }
    };
    let quoted_mask = quote.pcr_select.sha256_mask().unwrap_or_default();
    for pcr in input.required_pcrs.without(quoted_mask).indices() {
        reasons.push(Reason::PcrNotQuoted { pcr });
    }

    // 6. The reported values must be the quoted ones.
    let authenticated = reported
        .filter(|(mask, values)| {
            let digest = pcr_digest(
                mask.indices()
                    .filter_map(|i| values[usize::from(i)].as_ref()),
            );
            let ok = quote.pcr_digest == digest;
            if !ok {
                reasons.push(Reason::PcrDigestMismatch);
            }
            ok
        })
        .map(|(_, values)| values);
    Some(QuoteCheck {
        summary,
        authenticated,
    })
}

fn check_signature(
    sig: &Signature<'_>,
    ak: &VerifyingKey<'_>,
    message: &[u8],
    verifier: &impl SignatureVerifier,
) -> Result<(), Reason> {
    if sig.hash() != tpm::alg::SHA256 {
        return Err(Reason::SignatureAlgorithmMismatch);
    }
    let valid = match (sig, ak) {
        (Signature::Ecdsa { r, s, .. }, VerifyingKey::EccP256 { x, y }) => {
            verifier.verify_ecdsa_p256_sha256(x, y, message, r, s)
        }
        (Signature::RsaSsa { signature, .. }, VerifyingKey::Rsa { modulus, exponent }) => {
            verifier.verify_rsassa_pkcs1v15_sha256(modulus, *exponent, message, signature)
        }
        _ => return Err(Reason::SignatureAlgorithmMismatch),
    };
    if valid {
        Ok(())
    } else {
        Err(Reason::SignatureInvalid)
    }
}

/// PCR values by index, indexed 0..32.
type PcrTable = [Option<[u8; 32]>; 32];

/// The set of the reported indices and the values by index; `None` if an
/// index is repeated or out of range.
fn reported_pcrs(pcrs: &[PcrValue]) -> Option<(PcrMask, PcrTable)> {
    let mut values: PcrTable = [None; 32];
    let mut mask = PcrMask::EMPTY;
    for p in pcrs {
        let slot = values.get_mut(usize::from(p.index))?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(p.digest);
        mask = mask.with(p.index)?;
    }
    Some((mask, values))
}

/// Steps 7-10 on authenticated PCR values; returns the matched image.
fn appraise_log(
    event_log: &[u8],
    quoted: &PcrTable,
    policy: Option<&ReferenceValues>,
    reasons: &mut Vec<Reason>,
) -> Option<[u8; 32]> {
    if event_log.is_empty() {
        reasons.push(Reason::EventLogMissing);
        return None;
    }
    let Ok(log) = EventLog::parse(event_log) else {
        reasons.push(Reason::EventLogMalformed);
        return None;
    };
    let Ok(from_zero) = log.replay_sha256(&[[0; 32]; PCR_COUNT]) else {
        reasons.push(Reason::EventLogMalformed);
        return None;
    };

    // PCRs whose log is explained by the quote (their events are genuine).
    let mut explained = [false; 8];
    for pcr in 1u8..8 {
        if let Some(value) = quoted[usize::from(pcr)] {
            if from_zero[usize::from(pcr)] == value {
                explained[usize::from(pcr)] = true;
            } else {
                reasons.push(Reason::EventLogReplayMismatch { pcr });
            }
        }
    }

    // PCR 0 starts from the H-CRTM measurement of an allowed image.
    let mut avm_image = None;
    if let Some(pcr0) = quoted[0] {
        let images = policy.map(|p| p.avm_image_sha256.as_slice()).unwrap_or(&[]);
        avm_image = images.iter().copied().find(|image| {
            log.replay_sha256(&initial_pcrs(hcrtm_pcr0_start(image)))
                .is_ok_and(|pcrs| pcrs[0] == pcr0)
        });
        if avm_image.is_some() {
            explained[0] = true;
        } else if !images.is_empty() {
            reasons.push(Reason::AvmImageUnknown);
        }
    }

    // Every genuine firmware event must be a known one ...
    if let Some(p) = policy.filter(|p| !p.firmware_events.is_empty()) {
        for (index, event, digest) in firmware_events_of(&log) {
            let pcr = event.pcr_index;
            if !explained.get(pcr as usize).copied().unwrap_or(false) {
                continue;
            }
            if !p
                .firmware_events
                .iter()
                .any(|r| r.matches(pcr, event.event_type, &digest))
            {
                reasons.push(Reason::FirmwareEventUnknown {
                    pcr: pcr as u8,
                    index,
                });
            }
        }
    }

    // ... and, PCR by PCR, the events come in the order and number of one
    // learned boot (a repeated event or a missing separator is refused).
    if let Some(p) = policy.filter(|p| !p.firmware_sequences.is_empty()) {
        let observed = FirmwareSequence::of_log(&log);
        let differs = |known: &FirmwareSequence, pcr: u8| {
            let key = |e: &crate::policy::FirmwareEventRef| (e.event_type, e.sha256);
            !observed
                .for_pcr(u32::from(pcr))
                .map(key)
                .eq(known.for_pcr(u32::from(pcr)).map(key))
        };
        let explained_pcrs = || (0u8..8).filter(|&pcr| explained[usize::from(pcr)]);
        let matches_one = p
            .firmware_sequences
            .iter()
            .any(|known| explained_pcrs().all(|pcr| !differs(known, pcr)));
        if !matches_one {
            // Name the PCRs that differ from the closest learned boot.
            let closest = p
                .firmware_sequences
                .iter()
                .min_by_key(|known| explained_pcrs().filter(|&pcr| differs(known, pcr)).count());
            if let Some(known) = closest {
                for pcr in explained_pcrs().filter(|&pcr| differs(known, pcr)) {
                    reasons.push(Reason::FirmwareSequenceUnknown { pcr });
                }
            }
        }
    }

    avm_image
}

/// What the quote proves of the A-VM's measurement log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementLogCheck {
    /// The records the quoted PCRs cover (a prefix of the log).
    pub proven: usize,
    /// Records after those (appended after the quote; proven by the next).
    pub after_quote: usize,
    /// Proven records per PCR 8-15.
    pub per_pcr: [usize; 8],
    /// The SHA-256 file digest of the first proven PCR 8 record that is
    /// not the monitor policy, if any (the A-VM's kernel profile).
    pub config_digest: Option<[u8; 32]>,
    /// The proven monitoring events (PCR 12): record index and name.
    pub events: Vec<(usize, Vec<u8>)>,
    /// The names of the proven start-up records of the Mon-VM (PCR 11).
    pub startup: Vec<Vec<u8>>,
}

impl MeasurementLogCheck {
    /// Whether the A-VM's configuration is one the policy allows: a kernel
    /// profile it measured must be an allowed one. An A-VM without a
    /// Mon-VM measures none, which only a policy that allows no profile
    /// accepts: where the policy expects a Mon-VM, its absence is not a
    /// check to skip.
    pub fn appraise_config(&self, policy: Option<&ReferenceValues>) -> Option<Reason> {
        let Some(digest) = self.config_digest else {
            let expects_monvm = policy.is_some_and(|p| !p.monvm_profiles.is_empty());
            return expects_monvm.then_some(Reason::MonVmProfileMissing);
        };
        let allowed = policy.is_some_and(|p| p.monvm_profiles.iter().any(|r| r.sha256 == digest));
        (!allowed).then_some(Reason::MonVmProfileUnknown)
    }

    /// The Mon-VM kernel release the A-VM measured at start-up.
    pub fn monvm_kernel(&self) -> Option<&[u8]> {
        self.startup
            .iter()
            .find_map(|n| n.strip_prefix(b"monvm:kernel:".as_slice()))
    }

    /// How many start-up records have this name prefix (`monvm:module:`, ...).
    pub fn startup_count(&self, prefix: &[u8]) -> usize {
        self.startup
            .iter()
            .filter(|n| n.starts_with(prefix))
            .count()
    }
}

/// The fields of one of the A-VM's own records (every PCR but IMA's 10),
/// which it writes as `ima-ng`, never as violations; `None` for anything
/// else. The quote covers only a record's template data, not its template
/// name: a record renamed to something that does not parse must be a
/// malformed log, not passed over with the profile, start-up or event it
/// holds.
fn avm_record_fields<'a>(record: &crate::ima::ImaRecord<'a>) -> Option<crate::ima::NgFields<'a>> {
    if record.template_name != "ima-ng" || record.is_violation() {
        return None;
    }
    record.ng_fields().ok()
}

/// Whether a PCR 8 record is the A-VM's monitor policy (valid or not).
fn is_monitor_policy_record(name: &[u8]) -> bool {
    name.starts_with(crate::monitor_policy::RECORD_PREFIX.as_bytes())
        || name == crate::monitor_policy::INVALID_RECORD.as_bytes()
}

/// Checks the A-VM's measurement log against quoted PCR values (which the
/// caller has authenticated). Every record must be well formed and
/// self-consistent and name a PCR 8-15; the longest prefix that replays to
/// every quoted PCR 8-15 is what the quote proves (records appended after
/// the quote are allowed, and counted). `None` as the log means none came:
/// acceptable only while every quoted log PCR is zero.
pub fn check_measurement_log(
    log: Option<&[u8]>,
    quoted: &[PcrValue],
) -> Result<MeasurementLogCheck, Reason> {
    let Some(log) = log else {
        return check_measurement_records(None, &[], quoted);
    };
    let records = crate::ima::parse_list(log, MAX_MEASUREMENT_RECORDS)
        .map_err(|_| Reason::MeasurementLogMalformed)?;
    let digests: Vec<RecordDigest> = records.iter().map(RecordDigest::of).collect();
    check_measurement_records(Some(&records), &digests, quoted)
}

/// What one record contributes to a replay: whether its template hash is
/// SHA-1 of its template data, and what it extends into a SHA-256 PCR.
/// Independent per record, so a caller may compute them in parallel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordDigest {
    pub consistent: bool,
    pub extend: [u8; 32],
    /// Whether the record is the A-VM's [`LOG_FULL_RECORD`] (found here,
    /// off the replay's chain).
    pub log_full: bool,
}

impl RecordDigest {
    pub fn of(record: &crate::ima::ImaRecord<'_>) -> Self {
        Self {
            consistent: record.template_hash_matches(),
            extend: record.sha256_extend_value(),
            log_full: is_log_full_record(record),
        }
    }
}

/// [`check_measurement_log`] on a parsed log (`None`: none came) with each
/// record's [`RecordDigest`] (`digests[i]` of `records[i]`; computed by the
/// caller, e.g. on several threads). A digest list of another length is a
/// malformed log.
pub fn check_measurement_records(
    records: Option<&[crate::ima::ImaRecord<'_>]>,
    digests: &[RecordDigest],
    quoted: &[PcrValue],
) -> Result<MeasurementLogCheck, Reason> {
    let mut replay = Replay::new(quoted);
    let Some(records) = records else {
        return replay.finish_without_log();
    };
    if digests.len() != records.len() {
        return Err(Reason::MeasurementLogMalformed);
    }
    replay.extend(records, digests)?;
    replay.finish(records)
}

/// [`check_measurement_records`] a part at a time, so that a caller can
/// replay the first records while the digests of the next are computed:
/// [`Replay::extend`] with the records in log order (and their digests),
/// then [`Replay::finish`] with the whole log. The same checks in the same
/// order, so the same verdict.
#[derive(Debug, Clone)]
pub struct Replay {
    expected: [Option<[u8; 32]>; 8],
    pcrs: [[u8; 32]; 8],
    counts: [usize; 8],
    /// Records replayed so far.
    done: usize,
    proven_any: bool,
    proven: usize,
    per_pcr: [usize; 8],
    // What the check reports of the proven records, gathered as they are
    // replayed (while they are in cache) and cut to the proven ones at the
    // end: the first log-full record; the first PCR 8 record but the
    // monitor policy (index, digest); the PCR 11 and 12 names.
    first_full: Option<usize>,
    config: Option<(usize, Option<[u8; 32]>)>,
    startup: Vec<(usize, Vec<u8>)>,
    events: Vec<(usize, Vec<u8>)>,
}

impl Replay {
    pub fn new(quoted: &[PcrValue]) -> Self {
        let mut expected: [Option<[u8; 32]>; 8] = [None; 8];
        for p in quoted {
            if AVM_LOG_PCRS.contains(p.index)
                && let Some(slot) = expected.get_mut(usize::from(p.index) - 8)
            {
                *slot = Some(p.digest);
            }
        }
        let mut replay = Self {
            expected,
            pcrs: [[0; 32]; 8],
            counts: [0; 8],
            done: 0,
            proven_any: false,
            proven: 0,
            per_pcr: [0; 8],
            first_full: None,
            config: None,
            startup: Vec::new(),
            events: Vec::new(),
        };
        replay.proven_any = replay.matches();
        replay
    }

    fn matches(&self) -> bool {
        self.expected
            .iter()
            .zip(&self.pcrs)
            .all(|(want, have)| want.is_none_or(|w| w == *have))
    }

    fn empty() -> MeasurementLogCheck {
        MeasurementLogCheck {
            proven: 0,
            after_quote: 0,
            per_pcr: [0; 8],
            config_digest: None,
            events: Vec::new(),
            startup: Vec::new(),
        }
    }

    /// No log came: acceptable only while every quoted log PCR is zero.
    pub fn finish_without_log(&self) -> Result<MeasurementLogCheck, Reason> {
        if self.expected.iter().flatten().all(|d| *d == [0; 32]) {
            Ok(Self::empty())
        } else {
            Err(Reason::MeasurementLogMissing)
        }
    }

    /// Replays the next records of the log (`digests[i]` of `records[i]`;
    /// slices of another length are a malformed log).
    pub fn extend(
        &mut self,
        records: &[crate::ima::ImaRecord<'_>],
        digests: &[RecordDigest],
    ) -> Result<(), Reason> {
        if digests.len() != records.len() {
            return Err(Reason::MeasurementLogMalformed);
        }
        for (record, digest) in records.iter().zip(digests) {
            let index = self.done;
            let slot = record
                .pcr
                .checked_sub(8)
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < 8)
                .ok_or(Reason::MeasurementLogMalformed)?;
            if !digest.consistent {
                return Err(Reason::MeasurementLogInconsistent { index });
            }
            self.pcrs[slot] = crate::eventlog::extend_sha256(&self.pcrs[slot], &digest.extend);
            self.counts[slot] += 1;
            if digest.log_full && self.first_full.is_none() {
                self.first_full = Some(index);
            }
            if record.pcr != crate::monvm::IMA_PCR {
                let f = avm_record_fields(record).ok_or(Reason::MeasurementLogMalformed)?;
                match record.pcr {
                    8 if self.config.is_none() && !is_monitor_policy_record(f.name) => {
                        self.config = Some((index, <[u8; 32]>::try_from(f.digest).ok()));
                    }
                    11 => self.startup.push((index, f.name.to_vec())),
                    12 => self.events.push((index, f.name.to_vec())),
                    _ => {}
                }
            }
            self.done += 1;
            if self.matches() {
                self.proven_any = true;
                self.proven = index + 1;
                self.per_pcr = self.counts;
            }
        }
        Ok(())
    }

    /// The check, once every record of `records` (the whole log) was
    /// replayed; fewer is a malformed log.
    pub fn finish(
        &self,
        records: &[crate::ima::ImaRecord<'_>],
    ) -> Result<MeasurementLogCheck, Reason> {
        if self.done != records.len() {
            return Err(Reason::MeasurementLogMalformed);
        }
        if !self.proven_any {
            // Name the first PCR the whole log does not explain.
            let pcr = self
                .expected
                .iter()
                .zip(&self.pcrs)
                .position(|(want, have)| want.is_some_and(|w| w != *have))
                .unwrap_or(0);
            return Err(Reason::MeasurementLogReplayMismatch { pcr: pcr as u8 + 8 });
        }
        let mut check = Self::empty();
        check.proven = self.proven;
        check.per_pcr = self.per_pcr;
        // A full log proves nothing about what happened after it filled up.
        if let Some(index) = self.first_full.filter(|&i| i < check.proven) {
            return Err(Reason::MeasurementLogFull { index });
        }
        // The kernel profile: the first PCR 8 record but the monitor policy
        // (whichever the A-VM measured first).
        check.config_digest = self
            .config
            .filter(|&(i, _)| i < check.proven)
            .and_then(|(_, digest)| digest);
        check.after_quote = records.len() - check.proven;
        check.startup = proven_names(&self.startup, check.proven)
            .map(|(_, name)| name.clone())
            .collect();
        check.events = proven_names(&self.events, check.proven).cloned().collect();
        Ok(check)
    }
}

/// The names of `names` (in log order) among the first `proven` records.
fn proven_names(
    names: &[(usize, Vec<u8>)],
    proven: usize,
) -> impl Iterator<Item = &(usize, Vec<u8>)> {
    names.iter().take_while(move |(i, _)| *i < proven)
}

/// Whether a record is the A-VM's [`LOG_FULL_RECORD`]. An `ima-ng`
/// record's name is its last field (length, then the name and a NUL), so
/// nearly every record is ruled out by its last bytes, without a parse.
fn is_log_full_record(record: &crate::ima::ImaRecord<'_>) -> bool {
    const NG_TAIL: &[u8] = b"\x0d\0\0\0avm:log-full\0";
    if record.template_name == "ima-ng" && !record.template_data.ends_with(NG_TAIL) {
        return false;
    }
    record.ng_fields().is_ok_and(|f| f.name == LOG_FULL_RECORD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ima::{ImaRecord, ng_template_data, template_sha1};
    use alloc::vec;

    /// The check as it was before the replay took the log a part at a
    /// time (every pass over the proven records at the end).
    fn reference_check(
        records: &[ImaRecord<'_>],
        quoted: &[PcrValue],
    ) -> Result<MeasurementLogCheck, Reason> {
        let mut expected: [Option<[u8; 32]>; 8] = [None; 8];
        for p in quoted {
            if AVM_LOG_PCRS.contains(p.index)
                && let Some(slot) = expected.get_mut(usize::from(p.index) - 8)
            {
                *slot = Some(p.digest);
            }
        }
        let mut pcrs = [[0u8; 32]; 8];
        let matches = |pcrs: &[[u8; 32]; 8]| {
            expected
                .iter()
                .zip(pcrs)
                .all(|(want, have)| want.is_none_or(|w| w == *have))
        };
        let mut check = Replay::empty();
        let mut counts = [0usize; 8];
        let mut proven_any = matches(&pcrs);
        for (index, record) in records.iter().enumerate() {
            let slot = record
                .pcr
                .checked_sub(8)
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < 8)
                .ok_or(Reason::MeasurementLogMalformed)?;
            if !record.template_hash_matches() {
                return Err(Reason::MeasurementLogInconsistent { index });
            }
            if record.pcr != crate::monvm::IMA_PCR && avm_record_fields(record).is_none() {
                return Err(Reason::MeasurementLogMalformed);
            }
            pcrs[slot] = crate::eventlog::extend_sha256(&pcrs[slot], &record.sha256_extend_value());
            counts[slot] += 1;
            if matches(&pcrs) {
                proven_any = true;
                check.proven = index + 1;
                check.per_pcr = counts;
            }
        }
        if !proven_any {
            let pcr = expected
                .iter()
                .zip(&pcrs)
                .position(|(want, have)| want.is_some_and(|w| w != *have))
                .unwrap_or(0);
            return Err(Reason::MeasurementLogReplayMismatch { pcr: pcr as u8 + 8 });
        }
        let proven = || records.iter().take(check.proven);
        if let Some(index) =
            proven().position(|r| r.ng_fields().is_ok_and(|f| f.name == LOG_FULL_RECORD))
        {
            return Err(Reason::MeasurementLogFull { index });
        }
        check.config_digest = proven()
            .filter(|r| r.pcr == 8)
            .filter_map(|r| r.ng_fields().ok())
            .find(|f| !is_monitor_policy_record(f.name))
            .and_then(|f| <[u8; 32]>::try_from(f.digest).ok());
        check.after_quote = records.len() - check.proven;
        check.startup = proven()
            .filter(|r| r.pcr == 11)
            .filter_map(|r| r.ng_fields().ok().map(|f| f.name.to_vec()))
            .collect();
        check.events = proven()
            .enumerate()
            .filter(|(_, r)| r.pcr == 12)
            .filter_map(|(i, r)| r.ng_fields().ok().map(|f| (i, f.name.to_vec())))
            .collect();
        Ok(check)
    }

    proptest::proptest! {
        /// Replayed a part at a time, with what it reports gathered on the
        /// way, the check decides what it decided before.
        #[test]
        fn the_replay_in_parts_agrees_with_the_reference(
            spec in proptest::collection::vec((7u32..14, 0usize..7, proptest::bool::ANY, 0u8..4), 0..40),
            quote_at in 0usize..40,
            quote_mask in 0u8..=255,
            cut in 0usize..40,
        ) {
            let names: [&[u8]; 7] = [
                b"/usr/bin/a",
                LOG_FULL_RECORD,
                crate::monitor_policy::INVALID_RECORD.as_bytes(),
                b"module:x",
                b"event",
                b"",
                b"bad\0name",
            ];
            let mut prefix = alloc::string::String::from(crate::monitor_policy::RECORD_PREFIX);
            prefix.push('x');
            let datas: Vec<(Vec<u8>, &str)> = spec
                .iter()
                .map(|&(_, name, sig, digest)| {
                    let name = if name == 2 && digest == 3 { prefix.as_bytes() } else { names[name] };
                    let algorithm = if digest == 1 { "sha1" } else { "sha256" };
                    let len = if digest == 2 { 31 } else { 32 };
                    let data = ng_template_data(algorithm, &[digest; 32][..len], name, sig.then_some(&b"s"[..]));
                    (data, if sig { "ima-sig" } else { "ima-ng" })
                })
                .collect();
            let records: Vec<ImaRecord<'_>> = spec
                .iter()
                .zip(&datas)
                .enumerate()
                .map(|(i, (&(pcr, ..), (data, template)))| ImaRecord {
                    pcr,
                    // One record in 17 forged.
                    template_hash: if i % 17 == 16 { [1; 20] } else { template_sha1(data) },
                    template_name: template,
                    template_data: data,
                })
                .collect();
            let at = quote_at.min(records.len());
            let mut pcrs = [[0u8; 32]; 8];
            for r in &records[..at] {
                if let Some(slot) = r.pcr.checked_sub(8).map(|s| s as usize).filter(|&s| s < 8) {
                    pcrs[slot] = crate::eventlog::extend_sha256(&pcrs[slot], &r.sha256_extend_value());
                }
            }
            let quoted: Vec<PcrValue> = (0..8u8)
                .filter(|i| quote_mask & (1 << i) != 0)
                .map(|i| PcrValue { index: i + 8, digest: pcrs[usize::from(i)] })
                .collect();
            let want = reference_check(&records, &quoted);
            let digests: Vec<RecordDigest> = records.iter().map(RecordDigest::of).collect();
            proptest::prop_assert_eq!(&check_measurement_records(Some(&records), &digests, &quoted), &want);
            let cut = cut.min(records.len());
            let mut replay = Replay::new(&quoted);
            let parts = replay
                .extend(&records[..cut], &digests[..cut])
                .and_then(|()| replay.extend(&records[cut..], &digests[cut..]));
            let got = parts.and_then(|()| replay.finish(&records));
            proptest::prop_assert_eq!(got, want);
        }
    }

    /// The shortcut decides what the parse decides.
    #[test]
    fn the_log_full_shortcut_agrees_with_the_parse() {
        let names: [&[u8]; 6] = [
            LOG_FULL_RECORD,
            b"avm:log-fulx",
            b"xavm:log-full",
            b"avm:log-ful",
            b"/usr/bin/avm:log-full",
            b"",
        ];
        for name in names {
            for (template, sig) in [("ima-ng", None), ("ima-sig", Some(&b""[..]))] {
                for algorithm in ["sha256", "sha1"] {
                    let data = ng_template_data(algorithm, &[7; 32], name, sig);
                    let mut variants = vec![data.clone(), data[..data.len() - 1].to_vec()];
                    let mut extra = data.clone();
                    extra.extend_from_slice(&13u32.to_le_bytes());
                    extra.extend_from_slice(b"avm:log-full\0");
                    variants.push(extra);
                    for data in &variants {
                        let record = ImaRecord {
                            pcr: 12,
                            template_hash: template_sha1(data),
                            template_name: template,
                            template_data: data,
                        };
                        let parsed = record.ng_fields().is_ok_and(|f| f.name == LOG_FULL_RECORD);
                        assert_eq!(is_log_full_record(&record), parsed, "{template} {name:?}");
                    }
                }
            }
        }
        let data = ng_template_data("sha256", &[7; 32], LOG_FULL_RECORD, None);
        let record = ImaRecord {
            pcr: 12,
            template_hash: template_sha1(&data),
            template_name: "ima-ng",
            template_data: &data,
        };
        assert!(is_log_full_record(&record));
    }
}
