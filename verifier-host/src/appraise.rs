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
use avm_attest::policy::{ReferenceValues, ViolationMemory};
use avm_attest::verify::{
    ATTEST_PCRS, AVM_LOG_PCRS, EvidenceInput, MAX_MEASUREMENT_RECORDS, MeasurementLogCheck, Reason,
    RecordDigest, Replay, Verdict, check_measurement_records, verify_evidence, verify_quote,
};
use avm_attest::wire::Evidence;
use avm_attest::wire::PcrValue;

use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::allowlist::{AllowlistError, Excludes};
use crate::crypto::OpenSslVerifier;
use crate::evidence_dir::LoadedEvidence;
use crate::file_index::{Arena, FileHashIndex};
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
    /// AK enrolled for it. The quote must cover [`ATTEST_PCRS`], the
    /// firmware's and the measurement log's: a quote of fewer (a node, or
    /// a relay that narrowed the challenge's mask) proves nothing of the
    /// log, whose records would then replay against nothing.
    pub fn from_node(
        evidence: &'a Evidence,
        nonce: &'a [u8],
        ak: &'a PublicKey,
        ak_name: &'a [u8],
    ) -> Self {
        let mut evidence = EvidenceInput::new(evidence, nonce, ak.verifying_key());
        evidence.required_pcrs = ATTEST_PCRS;
        Self {
            evidence,
            ak_name,
            measurement_log: None,
        }
    }

    /// Evidence read from a directory. A directory without an event log
    /// is appraised like a node that sent an empty one: it fails; its
    /// quote must cover [`ATTEST_PCRS`] as a node's must.
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
                required_pcrs: ATTEST_PCRS,
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
    prepared: Option<&PreparedPolicy<'_>>,
    verifier: &OpenSslVerifier,
    node: Option<String>,
    extra_reasons: Vec<ReportReason>,
) -> Appraisal {
    let ready = || Ok::<_, std::convert::Infallible>(prepared);
    match appraise_with(input, ready, verifier, node, extra_reasons) {
        Ok(appraisal) => appraisal,
        Err(never) => match never {},
    }
}

/// [`appraise`] as `policy learn` judges evidence: every violation the
/// Mon-VM ever showed counts, whatever the policy's `monvm_violations`. A
/// later clean event or reboot, which `current` forgives when attesting,
/// does not make what was measured meanwhile (files, modules, processes)
/// good to learn.
pub fn appraise_for_learning(
    input: &AppraisalInput<'_>,
    policy: &ReferenceValues,
    verifier: &OpenSslVerifier,
    node: Option<String>,
) -> Appraisal {
    let judged;
    let policy = if policy.monvm_violations == ViolationMemory::Sticky {
        policy
    } else {
        judged = ReferenceValues {
            monvm_violations: ViolationMemory::Sticky,
            ..policy.clone()
        };
        &judged
    };
    appraise(
        input,
        Some(&PreparedPolicy::borrowed(policy)),
        verifier,
        node,
        Vec::new(),
    )
}

/// [`appraise`] with a policy that is still loading: `policy` is called
/// (once) while the measurement log is replayed, which needs none
/// ([`check_and_appraise_while`]); its error is returned as it came. The
/// log is checked before the quote is: if the quote turns out not to
/// authenticate the PCR values, that check is discarded (at most one
/// log's hashing, bounded by the log's size limit, is spent on a forged
/// quote).
pub fn appraise_with<'p, E>(
    input: &AppraisalInput<'_>,
    policy: impl FnOnce() -> Result<Option<&'p PreparedPolicy<'p>>, E>,
    verifier: &OpenSslVerifier,
    node: Option<String>,
    extra_reasons: Vec<ReportReason>,
) -> Result<Appraisal, E> {
    let (checked, prepared) =
        check_and_appraise_while(input.measurement_log, input.evidence.pcrs, policy, |p| *p)?;
    let policy = prepared.map(PreparedPolicy::appraised_values);
    let mut verdict = verify_evidence(&input.evidence, policy, verifier);
    // The measurement log's check counts only if the PCR values it was
    // replayed against are authenticated (signature valid, a quote, values
    // the quoted ones) and cover every PCR of the log (a PCR left out
    // would let any record in it "replay"); otherwise it is dropped unseen.
    let authenticated = verdict.quote.as_ref().is_some_and(|q| q.signature_valid)
        && !verdict.reasons.iter().any(|r| match r {
            Reason::PcrSelectionMismatch | Reason::PcrDigestMismatch | Reason::NotAQuote { .. } => {
                true
            }
            Reason::PcrNotQuoted { pcr } => AVM_LOG_PCRS.contains(*pcr),
            _ => false,
        });
    let checked = authenticated.then_some(checked);
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
    Ok(Appraisal {
        verdict,
        report,
        log,
        monvm,
    })
}

/// Records per share of the digests: few, so that the replay starts early.
const DIGEST_SHARE: usize = 1024;
/// Allowlists from which on paths are looked up through a hash index.
const INDEXED_PATHS: usize = 1024;

/// A policy made ready for appraisal: the reference values with their
/// Mon-VM allowlist's excludes compiled (one that does not compile
/// excludes nothing: fail closed; policies are checked when they are
/// loaded) and, if large, its paths in a hash index. Built once per loaded
/// policy, as Keylime builds its dictionary when it loads a runtime
/// policy; the values and what was built from them stay together, so an
/// index can never be used with another policy's values.
///
/// A large allowlist loaded from the policy's snapshot is held by its
/// index alone (no map of 100,000 strings is built to be searched by
/// nobody): the appraisal reads it there, and [`PreparedPolicy::values`]
/// rebuilds the map for a caller that asks for the values whole.
#[derive(Debug)]
pub struct PreparedPolicy<'a> {
    /// The reference values; without the allowlist's digests if `whole`
    /// is set (`index` holds them).
    values: Cow<'a, ReferenceValues>,
    index: Option<FileHashIndex>,
    /// The values with their allowlist, rebuilt from `index` when first
    /// asked for: set for a policy whose `values` leave it out.
    whole: Option<std::sync::OnceLock<ReferenceValues>>,
    excludes: Excludes,
}

impl<'a> PreparedPolicy<'a> {
    /// Prepares a policy the caller keeps.
    pub fn borrowed(values: &'a ReferenceValues) -> Self {
        Self::new(Cow::Borrowed(values))
    }

    fn new(values: Cow<'a, ReferenceValues>) -> Self {
        let excludes = Excludes::compile(&values.monvm_files).unwrap_or_else(|_| Excludes::none());
        Self::with_excludes(values, excludes)
    }

    fn with_excludes(values: Cow<'a, ReferenceValues>, excludes: Excludes) -> Self {
        let files = &values.monvm_files;
        let index = (files.digests.len() >= INDEXED_PATHS).then(|| FileHashIndex::new(files));
        Self {
            values,
            index,
            whole: None,
            excludes,
        }
    }

    /// The reference values, whole.
    pub fn values(&self) -> &ReferenceValues {
        let (Some(whole), Some(index)) = (&self.whole, &self.index) else {
            return &self.values;
        };
        whole.get_or_init(|| {
            let mut values = self.values.as_ref().clone();
            values.monvm_files.digests = index.arena().to_digests();
            values
        })
    }

    /// Number of (path, digest) pairs the allowlist allows (without
    /// rebuilding a map for it).
    pub fn allowlist_len(&self) -> usize {
        match (&self.whole, &self.index) {
            (Some(_), Some(index)) => index.arena().pairs(),
            _ => self.values.monvm_files.len(),
        }
    }

    /// The reference values as the appraisal reads them: whole, or
    /// without the allowlist's digests, which it reads through
    /// [`PreparedPolicy::lookup`].
    fn appraised_values(&self) -> &ReferenceValues {
        &self.values
    }

    /// The allowlist to look entries up in: `None` if the policy has none
    /// (no path, no exclude: the appraisal then says the reference values
    /// are missing).
    fn lookup(&self) -> Option<&(dyn FileIndex + Sync)> {
        let files = &self.values.monvm_files;
        match &self.index {
            Some(index) => Some(index),
            None if files.is_empty() => None,
            None => Some(files),
        }
    }

    /// The table of its allowlist's hash index, for its snapshot
    /// ([`FileHashIndex::table`]); empty for a small allowlist (no index).
    pub fn index_table(&self) -> Vec<u8> {
        self.index
            .as_ref()
            .map(FileHashIndex::table)
            .unwrap_or_default()
    }

    /// The allowlist's entries, as the policy's snapshot keeps them.
    pub fn arena(&self) -> Cow<'_, Arena> {
        match &self.index {
            Some(index) => Cow::Borrowed(index.arena()),
            None => Cow::Owned(Arena::of(&self.values.monvm_files)),
        }
    }
}

impl PreparedPolicy<'static> {
    /// Prepares a policy it then owns.
    pub fn owned(values: ReferenceValues) -> Self {
        Self::new(Cow::Owned(values))
    }

    /// [`PreparedPolicy::owned`], refusing a policy with an exclude that
    /// does not compile (which `owned` would turn into excluding nothing).
    pub fn checked(values: ReferenceValues) -> Result<Self, AllowlistError> {
        let excludes = Excludes::compile(&values.monvm_files)?;
        Ok(Self::with_excludes(Cow::Owned(values), excludes))
    }

    /// [`PreparedPolicy::checked`] of the values `rest` (any allowlist
    /// digests there are replaced) with the allowlist in `arena`, as a
    /// snapshot holds them. A large allowlist is indexed as it is, with no
    /// map built.
    pub fn from_parts(
        mut rest: ReferenceValues,
        arena: Arena,
        table: &[u8],
    ) -> Result<Self, AllowlistError> {
        let excludes = Excludes::compile(&rest.monvm_files)?;
        if arena.paths() < INDEXED_PATHS {
            rest.monvm_files.digests = arena.to_digests();
            return Ok(Self::with_excludes(Cow::Owned(rest), excludes));
        }
        rest.monvm_files.digests.clear();
        Ok(Self {
            values: Cow::Owned(rest),
            index: Some(FileHashIndex::with_table(arena, table)),
            whole: Some(std::sync::OnceLock::new()),
            excludes,
        })
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
    let prepared = policy.map(PreparedPolicy::borrowed);
    check_and_appraise_prepared(log, pcrs, prepared.as_ref())
}

/// A measurement log's check against the quoted PCRs and, if it replayed,
/// the Mon-VM appraisal of its records.
pub type LogVerdict = (Result<MeasurementLogCheck, Reason>, Option<MonVmAppraisal>);

/// [`check_and_appraise_log`] with the allowlist prepared already.
pub fn check_and_appraise_prepared(
    log: Option<&[u8]>,
    pcrs: &[PcrValue],
    prepared: Option<&PreparedPolicy<'_>>,
) -> LogVerdict {
    let ready = || Ok::<_, std::convert::Infallible>(prepared);
    match check_and_appraise_while(log, pcrs, ready, |p| *p) {
        Ok((verdict, _)) => verdict,
        Err(never) => match never {},
    }
}

/// Logs from which on the work is spread over threads (about 8,000
/// records; a shorter one takes a few milliseconds on one).
const PARALLEL_LOG_BYTES: usize = 1 << 20;

/// [`check_and_appraise_prepared`] with the policy still loading: `wait`
/// gives it (`policy_of` its prepared policy) and runs on this thread
/// while the log is parsed and replayed, which needs no policy; a large
/// allowlist makes the load take as long as the replay. An error from
/// `wait` is returned once the replay is done.
///
/// Each record's digests (template hash, SHA-256 extend value) are
/// independent of the others, and so is each IMA entry's allowlist
/// outcome. A long log is replayed on a thread of its own (a chain of
/// extends, which cannot be split; [`DigestShares`]) while the other
/// cores hash its records; this thread, once the policy is there, looks
/// every entry up, then hashes too. The replay decides which records are
/// proven; only their outcomes count.
pub fn check_and_appraise_while<T, E>(
    log: Option<&[u8]>,
    pcrs: &[PcrValue],
    wait: impl FnOnce() -> Result<T, E>,
    policy_of: for<'a> fn(&'a T) -> Option<&'a PreparedPolicy<'a>>,
) -> Result<(LogVerdict, T), E> {
    let records = match parse_log(log, pcrs) {
        Ok(records) => records,
        Err(verdict) => return Ok((*verdict, wait()?)),
    };
    let work = DigestShares::new(&records);
    let lookups = |waited: &T| {
        let files = policy_of(waited).and_then(PreparedPolicy::lookup)?;
        let excluded = |path: &[u8]| policy_of(waited).is_some_and(|p| p.excludes.matches(path));
        let mut outcomes = vec![ImaOutcome::NotIma; records.len()];
        ima_outcomes(&records, &mut outcomes, files, &excluded);
        Some(outcomes)
    };
    let parallel = log.is_some_and(|log| log.len() >= PARALLEL_LOG_BYTES);
    let (check, waited, outcomes) = if parallel {
        std::thread::scope(|scope| {
            let replaying = scope.spawn(|| work.replay(pcrs));
            // The cores but this thread's and the replay's hash.
            for _ in 1..helpers() {
                scope.spawn(|| work.help());
            }
            let waited = wait();
            let outcomes = waited.as_ref().ok().and_then(lookups);
            work.help();
            let check = replaying
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (check, waited, outcomes)
        })
    } else {
        let waited = wait();
        let check = work.replay(pcrs);
        let outcomes = waited.as_ref().ok().and_then(lookups);
        (check, waited, outcomes)
    };
    drop(work);
    let waited = waited?;
    let check = match check {
        Ok(check) => check,
        Err(reason) => return Ok(((Err(reason), None), waited)),
    };
    let prepared = policy_of(&waited);
    let lookup = prepared.and_then(PreparedPolicy::lookup);
    let excluded = |path: &[u8]| prepared.is_some_and(|p| p.excludes.matches(path));
    let appraisal = monvm::appraise_records_with(
        &records,
        &check,
        prepared.map(PreparedPolicy::appraised_values),
        lookup.map(|l| l as &dyn FileIndex),
        &excluded,
        outcomes.as_deref(),
    );
    Ok(((Ok(check), Some(appraisal)), waited))
}

/// The records of `log`, or the verdict on a log that is missing or does
/// not parse.
fn parse_log<'l>(
    log: Option<&'l [u8]>,
    pcrs: &[PcrValue],
) -> Result<Vec<ImaRecord<'l>>, Box<LogVerdict>> {
    let Some(bytes) = log else {
        return Err(Box::new((check_measurement_records(None, &[], pcrs), None)));
    };
    ima::parse_list(bytes, MAX_MEASUREMENT_RECORDS)
        .map_err(|_| Box::new((Err(Reason::MeasurementLogMalformed), None)))
}

/// The records' digests, computed a share at a time, in log order, by
/// whichever thread is free ([`DigestShares::help`]); the replay (a chain:
/// the critical path) takes each share as soon as it is there, and
/// computes the next one itself rather than wait ([`DigestShares::replay`]).
struct DigestShares<'r, 'l> {
    records: &'r [ImaRecord<'l>],
    digests: Vec<Mutex<Option<Vec<RecordDigest>>>>,
    /// The buffers of the shares replayed already, for the next ones: a
    /// few buffers in all, not a fresh page for every 120 records.
    spare: Mutex<Vec<Vec<RecordDigest>>>,
    next: AtomicUsize,
    /// Set if a thread panicked computing a share: the replay must not
    /// wait for it (the scope then re-raises the panic).
    failed: AtomicBool,
}

impl<'r, 'l> DigestShares<'r, 'l> {
    fn new(records: &'r [ImaRecord<'l>]) -> Self {
        Self {
            records,
            digests: (0..records.len().div_ceil(DIGEST_SHARE))
                .map(|_| Mutex::new(None))
                .collect(),
            spare: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        }
    }

    /// Computes the next share not taken yet; false if none is left.
    fn take(&self) -> bool {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = self.digests.get(n) else {
            return false;
        };
        let guard = PanicFlag(&self.failed);
        let part = &self.records[n * DIGEST_SHARE..self.records.len().min((n + 1) * DIGEST_SHARE)];
        let mut out = locked(&self.spare).pop().unwrap_or_default();
        out.clear();
        out.extend(part.iter().map(RecordDigest::of));
        *locked(slot) = Some(out);
        std::mem::forget(guard);
        true
    }

    /// Computes shares until none is left.
    fn help(&self) {
        while self.take() {}
    }

    /// The replay of every record against `pcrs`, in log order.
    fn replay(&self, pcrs: &[PcrValue]) -> Result<MeasurementLogCheck, Reason> {
        let mut replay = Replay::new(pcrs);
        for (n, slot) in self.digests.iter().enumerate() {
            let part = loop {
                if let Some(part) = locked(slot).take() {
                    break part;
                }
                if !self.take() {
                    // Another thread is computing share n.
                    if self.failed.load(Ordering::Acquire) {
                        return Err(Reason::MeasurementLogMalformed);
                    }
                    std::thread::yield_now();
                }
            };
            replay.extend(&self.records[n * DIGEST_SHARE..][..part.len()], &part)?;
            locked(&self.spare).push(part);
        }
        replay.finish(self.records)
    }
}

/// Threads to spawn for per-record work besides the caller's and the
/// replay's: the other cores.
fn helpers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(16)) - 1
}

/// Entries looked up together ([`FileIndex::allows_many`]).
const LOOKUP_BATCH: usize = 32;

/// `out[i]` = [`monvm::appraise_ima_record`] of `records[i]`, the
/// allowlist asked a batch at a time.
fn ima_outcomes(
    records: &[ImaRecord<'_>],
    out: &mut [ImaOutcome],
    files: &dyn FileIndex,
    excluded: &dyn Fn(&[u8]) -> bool,
) {
    let batches = out
        .chunks_mut(LOOKUP_BATCH)
        .zip(records.chunks(LOOKUP_BATCH));
    for (n, (out, records)) in batches.enumerate() {
        let mut entries = [None; LOOKUP_BATCH];
        let mut queries = [(&[][..], [0; 32]); LOOKUP_BATCH];
        let mut asked = 0;
        for (entry, record) in entries.iter_mut().zip(records) {
            if record.pcr == ima::IMA_PCR {
                let parsed = monvm::ima_entry(record);
                // An excluded entry is asked about too (its answer unused):
                // the excludes are matched once, by `ima_outcome`.
                if let Ok(query) = parsed {
                    queries[asked] = query;
                    asked += 1;
                }
                *entry = Some(parsed);
            }
        }
        let mut answers = [None; LOOKUP_BATCH];
        files.allows_many(&queries[..asked], &mut answers[..asked]);
        let mut answers = answers.into_iter();
        for (i, ((outcome, record), entry)) in out.iter_mut().zip(records).zip(entries).enumerate()
        {
            let Some(entry) = entry else {
                *outcome = ImaOutcome::NotIma;
                continue;
            };
            // In the order asked: the next answer is this entry's.
            let answer = if entry.is_ok() {
                answers.next().flatten()
            } else {
                None
            };
            let index = n * LOOKUP_BATCH + i;
            *outcome = monvm::ima_outcome(index, record, entry, excluded, |_, _| answer);
        }
    }
}

/// The lock's value, even if a thread panicked holding it (the scope
/// re-raises that panic).
fn locked<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Raises its flag if dropped while its thread panics (it is forgotten
/// when the work it guards is done).
struct PanicFlag<'a>(&'a AtomicBool);

impl Drop for PanicFlag<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;
    use avm_attest::ima::{ImaRecord, ng_record, ng_template_data, parse_list, replay_sha256};
    use avm_attest::monvm::{MonVmKind, appraise_records};
    use avm_attest::policy::FileAllowlist;
    use avm_attest::verify::{LOG_FULL_RECORD, check_measurement_log};

    /// A list long enough for the parallel appraisal and the hash index,
    /// with entries of every outcome: allowed (`ima-ng`, `ima-sig`), a
    /// digest or a path the allowlist does not hold, excluded, not
    /// appraisable (SHA-1 digest), violations; the last ones after the
    /// quote.
    fn long_list(n: usize) -> (Vec<u8>, ReferenceValues) {
        let mut files = FileAllowlist::default();
        files.excludes.push("/tmp/".into());
        let mut log = Vec::new();
        for i in 0..n {
            let path = format!("/usr/lib/x86_64-linux-gnu/lib{i}.so");
            let mut digest = [0x5a; 32];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut record = |data: &[u8], template: &str, violation: bool| {
                ImaRecord {
                    pcr: 10,
                    template_hash: if violation {
                        [0; 20]
                    } else {
                        ima::template_sha1(data)
                    },
                    template_name: template,
                    template_data: data,
                }
                .emit(&mut log)
            };
            match i % 10 {
                6 => {
                    files.allow(&path, [1; 32]);
                    record(
                        &ng_template_data("sha256", &digest, path.as_bytes(), None),
                        "ima-ng",
                        false,
                    );
                }
                7 => log.extend(ng_record(10, &digest, path.as_bytes())),
                8 => log.extend(ng_record(10, &digest, format!("/tmp/{i}").as_bytes())),
                9 if i % 20 == 9 => {
                    let data = ng_template_data("sha1", &digest[..20], path.as_bytes(), None);
                    record(&data, "ima-ng", false);
                }
                9 => {
                    files.allow(&path, digest);
                    let data = ng_template_data("sha256", &digest, path.as_bytes(), Some(b""));
                    record(&data, "ima-sig", i % 1000 == 999);
                }
                _ => {
                    files.allow(&path, digest);
                    log.extend(ng_record(10, &digest, path.as_bytes()));
                }
            }
        }
        let policy = ReferenceValues {
            monvm_files: files,
            ..ReferenceValues::default()
        };
        (log, policy)
    }

    /// The parallel appraisal (digests on all cores, the replay beside the
    /// batched lookups) decides exactly what the sequential one does.
    #[test]
    fn the_parallel_appraisal_agrees_with_the_sequential_one() {
        let n = 24_000 + 123;
        let (log, policy) = long_list(n);
        // Long enough to be spread over threads, several shares of each kind.
        assert!(log.len() >= 2 * PARALLEL_LOG_BYTES && n > 4 * DIGEST_SHARE);
        let records = parse_list(&log, n).expect("parses");
        assert!(policy.monvm_files.digests.len() >= INDEXED_PATHS);
        let excludes = Excludes::compile(&policy.monvm_files).expect("compiles");
        let excluded = |path: &[u8]| excludes.matches(path);
        let sequential = |log: &[u8], quoted: &[PcrValue]| {
            let check = check_measurement_log(Some(log), quoted);
            let appraisal = check.as_ref().ok().map(|check| {
                let records = parse_list(log, n).expect("parses");
                let files = &policy.monvm_files;
                appraise_records(&records, check, Some(&policy), Some(files), &excluded)
            });
            (check, appraisal)
        };

        let proven = n - 700;
        let pcr10 = replay_sha256(&records[..proven], &[[0; 32]; 24])[10];
        let quoted = [PcrValue {
            index: 10,
            digest: pcr10,
        }];
        let (check, appraisal) = check_and_appraise_log(Some(&log), &quoted, Some(&policy));
        let (want_check, want_appraisal) = sequential(&log, &quoted);
        assert_eq!(check, want_check);
        assert_eq!(appraisal, want_appraisal);
        let (check, appraisal) = (check.expect("replays"), appraisal.expect("appraised"));
        assert_eq!((check.proven, check.after_quote), (proven, 700));
        assert!(appraisal.files_excluded > 0 && appraisal.omitted > 0);
        for kind in [
            MonVmKind::FileDigestUnknown,
            MonVmKind::FileNotAllowed,
            MonVmKind::FileUnappraisable,
        ] {
            assert!(
                appraisal.findings.iter().any(|f| f.kind == kind),
                "{kind:?}"
            );
        }

        // A record whose template hash is not its data's: refused the
        // same way, at the same index.
        let mut forged = log.clone();
        let at = records[..n / 2]
            .iter()
            .map(ImaRecord::encoded_len)
            .sum::<usize>();
        let last = at + records[n / 2].encoded_len() - 2;
        forged[last] ^= 1;
        let (check, appraisal) = check_and_appraise_log(Some(&forged), &quoted, Some(&policy));
        assert_eq!(check, sequential(&forged, &quoted).0);
        assert_eq!(
            check,
            Err(Reason::MeasurementLogInconsistent { index: n / 2 })
        );
        assert!(appraisal.is_none());

        // A log-full record among the proven ones: the whole log is
        // refused, naming it; as `ima-sig` (a template the A-VM never
        // writes its own records in) it is a malformed log.
        for (template, want) in [
            ("ima-ng", Reason::MeasurementLogFull { index: n / 2 }),
            ("ima-sig", Reason::MeasurementLogMalformed),
        ] {
            let mut full = log[..at].to_vec();
            let sig = (template == "ima-sig").then_some(&b""[..]);
            let data = ng_template_data("sha256", &[3; 32], LOG_FULL_RECORD, sig);
            ImaRecord {
                pcr: 12,
                template_hash: ima::template_sha1(&data),
                template_name: template,
                template_data: &data,
            }
            .emit(&mut full);
            full.extend_from_slice(&log[at..]);
            let (check, appraisal) = check_and_appraise_log(Some(&full), &quoted, Some(&policy));
            assert_eq!(check, sequential(&full, &quoted).0);
            assert_eq!(check, Err(want));
            assert!(appraisal.is_none());
        }
    }

    /// A quote over `pcrs` (ascending; their indices its selection)
    /// carrying `nonce`, signed by a fresh software P-256 key, and that key.
    fn signed_quote(nonce: &[u8], pcrs: &[PcrValue]) -> (Evidence, PublicKey) {
        use avm_attest::pcr::PcrMask;
        use avm_attest::tpm::{self, Attest, ClockInfo, PcrSelection, QuoteInfo, Signature};
        use openssl::ec::{EcGroup, EcKey, PointConversionForm};
        let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).expect("group");
        let key = EcKey::generate(&group).expect("key");
        let mut ctx = openssl::bn::BigNumContext::new().expect("context");
        let point = key
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .expect("point");
        let (mut x, mut y) = ([0; 32], [0; 32]);
        x.copy_from_slice(&point[1..33]);
        y.copy_from_slice(&point[33..65]);
        let mask = pcrs
            .iter()
            .try_fold(PcrMask::EMPTY, |m, p| m.with(p.index))
            .expect("mask");
        let digest = tpm::pcr_digest(pcrs.iter().map(|p| &p.digest));
        let attest = Attest {
            magic: tpm::TPM_GENERATED_VALUE,
            attest_type: tpm::TPM_ST_ATTEST_QUOTE,
            qualified_signer: &[],
            extra_data: nonce,
            clock_info: ClockInfo {
                clock: 1,
                reset_count: 1,
                restart_count: 1,
                safe: true,
            },
            firmware_version: 0,
            attested: &[],
            quote: Some(QuoteInfo {
                pcr_select: PcrSelection::sha256(mask),
                pcr_digest: &digest,
            }),
        }
        .emit();
        let sig =
            openssl::ecdsa::EcdsaSig::sign(&openssl::sha::sha256(&attest), &key).expect("sig");
        let (r, s) = (sig.r().to_vec(), sig.s().to_vec());
        let signature = Signature::Ecdsa {
            hash: tpm::alg::SHA256,
            r: &r,
            s: &s,
        }
        .emit();
        let evidence = Evidence {
            attest,
            signature,
            pcrs: pcrs.to_vec(),
            event_log: Vec::new(),
        };
        (evidence, PublicKey::EccP256 { x, y })
    }

    /// Review finding: a genuine quote narrowed to the firmware PCRs (a
    /// relay rewrote the challenge's mask) covers none of the log's PCRs,
    /// so every record of any log "replays" to it. The verdict is
    /// untrusted (`pcr-not-quoted`), but the log must not come out of it
    /// as proven: `attest` keeps a proven prefix in its state for the
    /// next attestation, and reports it.
    #[test]
    fn a_log_whose_pcrs_the_quote_does_not_cover_is_not_proven() {
        let mut log = ng_record(8, &[7; 32], b"avm-config:kernel-profile");
        log.extend(ng_record(10, &[1; 32], b"/forged"));
        let firmware: Vec<PcrValue> = (0..8u8)
            .map(|index| PcrValue {
                index,
                digest: [index; 32],
            })
            .collect();
        let verifier = OpenSslVerifier::new().expect("verifier");
        let (evidence, ak) = signed_quote(b"nonce", &firmware);
        let mut input = AppraisalInput::from_node(&evidence, b"nonce", &ak, b"");
        input.measurement_log = Some(&log);
        let appraisal = appraise(&input, None, &verifier, None, Vec::new());
        assert!(
            appraisal
                .verdict
                .quote
                .as_ref()
                .expect("parsed")
                .signature_valid
        );
        assert!(
            appraisal
                .verdict
                .reasons
                .contains(&Reason::PcrNotQuoted { pcr: 8 })
        );
        assert!(appraisal.log.is_none(), "{:?}", appraisal.log);
        assert!(appraisal.report.measurement_log.is_none());

        // The same log under a quote of every PCR it extends is proven.
        let records = parse_list(&log, 2).expect("parses");
        let replayed = replay_sha256(&records, &[[0; 32]; 24]);
        let mut all = firmware.clone();
        all.extend((8..16u8).map(|index| PcrValue {
            index,
            digest: replayed[usize::from(index)],
        }));
        let (evidence, ak) = signed_quote(b"nonce", &all);
        let mut input = AppraisalInput::from_node(&evidence, b"nonce", &ak, b"");
        input.measurement_log = Some(&log);
        let appraisal = appraise(&input, None, &verifier, None, Vec::new());
        assert!(matches!(appraisal.log, Some(Ok(ref c)) if c.proven == 2));
    }

    /// A log whose violation a clean event closed passes under `current`
    /// when attesting, but is never learned from: the files measured
    /// meanwhile may be the attacker's.
    #[test]
    fn learning_counts_every_violation_even_a_closed_one() {
        use avm_attest::monvm::MonVmKind;
        let event =
            |name: &str| ng_record(12, &openssl::sha::sha256(name.as_bytes()), name.as_bytes());
        let mut log = ng_record(8, &[7; 32], b"avm-config:kernel-profile");
        log.extend(event("monvm:event:1:violation:idt:gate 0x80"));
        log.extend(ng_record(10, &[1; 32], b"/tmp/dropped-meanwhile"));
        log.extend(event("monvm:event:2:clean:idt"));
        let records = parse_list(&log, 8).expect("parses");
        let replayed = replay_sha256(&records, &[[0; 32]; 24]);
        let pcrs: Vec<PcrValue> = (0..16u8)
            .map(|index| PcrValue {
                index,
                digest: replayed[usize::from(index)],
            })
            .collect();
        let (evidence, ak) = signed_quote(b"nonce", &pcrs);
        let mut input = AppraisalInput::from_node(&evidence, b"nonce", &ak, b"");
        input.measurement_log = Some(&log);
        let verifier = OpenSslVerifier::new().expect("verifier");
        let policy = ReferenceValues {
            monvm_violations: ViolationMemory::Current,
            ..ReferenceValues::default()
        };
        let idt = |appraisal: &Appraisal| {
            appraisal
                .verdict
                .reasons
                .iter()
                .any(|r| matches!(r, Reason::MonVm(f) if f.kind == MonVmKind::IdtModified))
        };
        let attested = appraise(
            &input,
            Some(&PreparedPolicy::borrowed(&policy)),
            &verifier,
            None,
            Vec::new(),
        );
        assert!(!idt(&attested), "{:?}", attested.verdict.reasons);
        let learning = appraise_for_learning(&input, &policy, &verifier, None);
        assert!(idt(&learning), "{:?}", learning.verdict.reasons);
    }

    /// A policy loaded from its snapshot holds a large allowlist in its
    /// The log replayed while the policy loads: the verdict is the one
    /// with the policy there from the start, for a policy that comes late
    /// (long and short logs, the one spread over threads); an error from
    /// the load is the result, whatever the log.
    #[test]
    fn a_policy_that_comes_late_appraises_as_one_there_from_the_start() {
        let (long, policy) = long_list(24_000 + 5);
        let prepared = PreparedPolicy::owned(policy);
        let short: Vec<u8> = {
            let mut log = Vec::new();
            for record in parse_list(&long, usize::MAX)
                .expect("parses")
                .iter()
                .take(50)
            {
                record.emit(&mut log);
            }
            log
        };
        for log in [&long, &short] {
            let records = parse_list(log, usize::MAX).expect("parses");
            let proven = records.len() - 3;
            let quoted = [PcrValue {
                index: 10,
                digest: replay_sha256(&records[..proven], &[[0; 32]; 24])[10],
            }];
            let want = check_and_appraise_prepared(Some(log), &quoted, Some(&prepared));
            assert!(want.1.as_ref().is_some_and(|a| !a.findings.is_empty()));
            let late = || {
                std::thread::sleep(std::time::Duration::from_millis(30));
                Ok::<_, String>(Some(&prepared))
            };
            let (got, _) =
                check_and_appraise_while(Some(log), &quoted, late, |p| *p).expect("loads");
            assert_eq!(got, want);
            let failed = || Err::<Option<&PreparedPolicy<'_>>, _>("no policy".to_string());
            let got = check_and_appraise_while(Some(log), &quoted, failed, |p| *p);
            assert_eq!(got.err().as_deref(), Some("no policy"));
            // A log that does not parse, and none: the load's error too.
            let failed = || Err::<Option<&PreparedPolicy<'_>>, _>("no policy".to_string());
            let got =
                check_and_appraise_while(Some(&log[..log.len() - 1]), &quoted, failed, |p| *p);
            assert_eq!(got.err().as_deref(), Some("no policy"));
            let failed = || Err::<Option<&PreparedPolicy<'_>>, _>("no policy".to_string());
            let got = check_and_appraise_while(None, &quoted, failed, |p| *p);
            assert_eq!(got.err().as_deref(), Some("no policy"));
        }
    }

    /// index alone; it appraises exactly as the policy parsed whole does,
    /// modules allowed by their file included, and gives its values back
    /// whole.
    #[test]
    fn a_policy_from_its_snapshot_appraises_as_the_whole_policy() {
        let (long, mut policy) = long_list(2 * INDEXED_PATHS + 17);
        // Its first entries (the findings of all would be cut off before
        // the modules' are listed).
        let n = 30;
        let mut log = Vec::new();
        for record in parse_list(&long, usize::MAX)
            .expect("parses")
            .iter()
            .take(n)
        {
            record.emit(&mut log);
        }
        let module_file = [0x6d; 32];
        policy.monvm_files.allow(
            "/usr/lib/modules/6.1.0-40-cloud-amd64/kernel/drivers/net/dummy.ko",
            module_file,
        );
        log.extend(ng_record(11, &module_file, b"monvm:module:dummy"));
        log.extend(ng_record(11, &module_file, b"monvm:module:dummy2"));
        log.extend(ng_record(11, &[0x77; 32], b"monvm:module:dummy"));
        let records = parse_list(&log, n + 3).expect("parses");
        let pcrs = replay_sha256(&records, &[[0; 32]; 24]);
        let quoted = [10, 11].map(|index| PcrValue {
            index,
            digest: pcrs[index as usize],
        });

        let snapshot = crate::policy_snapshot::decode(
            crate::policy_snapshot::encode(&policy).expect("encodes"),
        )
        .expect("decodes");
        let loaded = PreparedPolicy::from_parts(snapshot.rest, snapshot.arena, &snapshot.table)
            .expect("prepared");
        assert!(loaded.appraised_values().monvm_files.digests.is_empty());
        let whole = PreparedPolicy::owned(policy.clone());
        let (check, appraisal) = check_and_appraise_prepared(Some(&log), &quoted, Some(&loaded));
        let want = check_and_appraise_prepared(Some(&log), &quoted, Some(&whole));
        assert_eq!((&check, &appraisal), (&want.0, &want.1));
        let appraisal = appraisal.expect("appraised");
        assert!(appraisal.allowlist_applied);
        let modules: Vec<_> = appraisal
            .findings
            .iter()
            .filter(|f| f.kind == MonVmKind::ModuleNotAllowed)
            .map(|f| f.index)
            .collect();
        // The file's module is allowed by its file; another name or
        // another digest is not.
        assert_eq!(modules, [n + 1, n + 2]);
        assert_eq!(loaded.allowlist_len(), policy.monvm_files.len());
        assert_eq!(*loaded.values(), policy);
    }
}
