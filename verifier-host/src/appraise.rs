//! Runs the shared verification core on one piece of evidence and turns
//! its verdict into a [`Report`]. The checks themselves are all in
//! `avm_attest::verify`; this only chooses the inputs and the wording.
//!
//! Appraisal fails closed: evidence that lacks what the policy requires
//! (the event log, today) gets a reason of its own (`event-log-missing`).
//! Only the caller can ask for less, explicitly ([`appraise_quote_only`]),
//! and the verdict then says so (`quote-valid`, never `trusted`).

use avm_attest::ima::{self, ImaRecord};
use avm_attest::monvm::{self, MonVmAppraisal};
use avm_attest::monvm::{FileIndex, ImaOutcome};
use avm_attest::policy::ReferenceValues;
use avm_attest::verify::{
    EvidenceInput, MAX_MEASUREMENT_RECORDS, MeasurementLogCheck, Reason, RecordDigest, Verdict,
    check_measurement_records, verify_evidence, verify_quote,
};
use avm_attest::wire::Evidence;
use avm_attest::wire::PcrValue;

use crate::allowlist::{Excludes, FileHashIndex};
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
    let checked = authenticated
        .then(|| check_and_appraise_log(input.measurement_log, input.evidence.pcrs, policy));
    let (log, monvm) = match checked {
        Some((log, monvm)) => (Some(log), monvm),
        None => (None, None),
    };
    match &log {
        Some(Err(reason)) => verdict.reasons.push(reason.clone()),
        Some(Ok(check)) => verdict.reasons.extend(check.appraise_config(policy)),
        None => {}
    }
    if let Some(appraisal) = &monvm {
        verdict.reasons.extend(appraisal.reasons());
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

/// Records from which on the per-record work is spread over all cores.
const PARALLEL_RECORDS: usize = 8192;
/// Allowlists from which on paths are looked up through a hash index.
const INDEXED_PATHS: usize = 1024;

/// A policy's Mon-VM allowlist made ready for appraisal: its excludes
/// compiled (one that does not compile excludes nothing: fail closed;
/// policies are checked when they are loaded) and, if large, its paths in
/// a hash index. Built once per loaded policy, as Keylime builds its
/// dictionary when it loads a runtime policy.
#[derive(Debug)]
pub struct PreparedAllowlist<'a> {
    files: Option<&'a avm_attest::policy::FileAllowlist>,
    index: Option<FileHashIndex>,
    excludes: Excludes,
}

impl<'a> PreparedAllowlist<'a> {
    pub fn new(policy: Option<&'a ReferenceValues>) -> Self {
        let files = policy.map(|p| &p.monvm_files);
        Self {
            files,
            index: files
                .filter(|f| f.digests.len() >= INDEXED_PATHS)
                .map(FileHashIndex::new),
            excludes: files
                .and_then(|f| Excludes::compile(f).ok())
                .unwrap_or_else(Excludes::none),
        }
    }

    fn lookup(&self) -> Option<&(dyn FileIndex + Sync)> {
        match (&self.index, self.files) {
            (Some(index), _) => Some(index),
            (None, Some(files)) => Some(files),
            (None, None) => None,
        }
    }
}

/// Checks the measurement log against authenticated PCR values
/// (`avm_attest::verify::check_measurement_records`) and, once it is
/// proven, appraises its Mon-VM records against the policy
/// (`avm_attest::monvm::appraise_records_with`).
pub fn check_and_appraise_log(
    log: Option<&[u8]>,
    pcrs: &[PcrValue],
    policy: Option<&ReferenceValues>,
) -> (Result<MeasurementLogCheck, Reason>, Option<MonVmAppraisal>) {
    check_and_appraise_prepared(log, pcrs, policy, &PreparedAllowlist::new(policy))
}

/// [`check_and_appraise_log`] with the allowlist prepared already. The
/// log is parsed once; each record's digests (template hash, SHA-256
/// extend value) and, for an IMA entry, its allowlist outcome are
/// independent of the others, so for a long log they are computed on all
/// cores; the replay then decides which records are proven, and only
/// their outcomes count.
pub fn check_and_appraise_prepared(
    log: Option<&[u8]>,
    pcrs: &[PcrValue],
    policy: Option<&ReferenceValues>,
    prepared: &PreparedAllowlist<'_>,
) -> (Result<MeasurementLogCheck, Reason>, Option<MonVmAppraisal>) {
    let Some(bytes) = log else {
        return (check_measurement_records(None, &[], pcrs), None);
    };
    let records = match ima::parse_list(bytes, MAX_MEASUREMENT_RECORDS) {
        Ok(records) => records,
        Err(_) => return (Err(Reason::MeasurementLogMalformed), None),
    };
    let applied = policy.is_some_and(|p| !p.monvm_files.is_empty());
    let lookup = prepared.lookup().filter(|_| applied);
    let excluded = |path: &[u8]| prepared.excludes.matches(path);
    let (digests, outcomes) = per_record(&records, lookup, &excluded);
    let check = match check_measurement_records(Some(&records), &digests, pcrs) {
        Ok(check) => check,
        Err(reason) => return (Err(reason), None),
    };
    let appraisal = monvm::appraise_records_with(
        &records,
        &check,
        policy,
        lookup.map(|l| l as &dyn FileIndex),
        &excluded,
        outcomes.as_deref(),
    );
    (Ok(check), Some(appraisal))
}

/// Each record's digests and (with an allowlist) IMA outcome, on all
/// cores for a long log.
fn per_record(
    records: &[ImaRecord<'_>],
    lookup: Option<&(dyn FileIndex + Sync)>,
    excluded: &(dyn Fn(&[u8]) -> bool + Sync),
) -> (Vec<RecordDigest>, Option<Vec<ImaOutcome>>) {
    let work = |offset: usize, chunk: &[ImaRecord<'_>]| {
        let digests: Vec<RecordDigest> = chunk.iter().map(RecordDigest::of).collect();
        let outcomes = lookup.map(|files| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, r)| monvm::appraise_ima_record(offset + i, r, files, excluded))
                .collect::<Vec<_>>()
        });
        (digests, outcomes)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(16));
    if records.len() < PARALLEL_RECORDS || threads < 2 {
        return work(0, records);
    }
    let per_thread = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = records
            .chunks(per_thread)
            .enumerate()
            .map(|(n, chunk)| {
                let work = &work;
                scope.spawn(move || work(n * per_thread, chunk))
            })
            .collect();
        let mut digests = Vec::with_capacity(records.len());
        let mut outcomes = lookup.map(|_| Vec::with_capacity(records.len()));
        for part in parts {
            // A worker cannot panic (panic = abort); if one did, short
            // lists make the log malformed and the outcomes unused.
            let Ok((mut d, o)) = part.join() else {
                return (Vec::new(), None);
            };
            digests.append(&mut d);
            if let (Some(all), Some(mut o)) = (outcomes.as_mut(), o) {
                all.append(&mut o);
            }
        }
        (digests, outcomes)
    })
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
