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
    ATTEST_PCRS, EvidenceInput, MAX_MEASUREMENT_RECORDS, MeasurementLogCheck, Reason, RecordDigest,
    Replay, Verdict, check_measurement_records, verify_evidence, verify_quote,
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
    let policy = prepared.map(PreparedPolicy::appraised_values);
    let mut verdict = verify_evidence(&input.evidence, policy, verifier);
    // The measurement log is checked against PCR values only once they are
    // authenticated (signature valid, values the quoted ones).
    let authenticated = verdict.quote.as_ref().is_some_and(|q| q.signature_valid)
        && !verdict
            .reasons
            .iter()
            .any(|r| matches!(r, Reason::PcrSelectionMismatch | Reason::PcrDigestMismatch));
    let checked = authenticated
        .then(|| check_and_appraise_prepared(input.measurement_log, input.evidence.pcrs, prepared));
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
/// Records per share of that work (threads take the next share when done).
const SHARE: usize = 4096;
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
    pub fn from_parts(mut rest: ReferenceValues, arena: Arena) -> Result<Self, AllowlistError> {
        let excludes = Excludes::compile(&rest.monvm_files)?;
        if arena.paths() < INDEXED_PATHS {
            rest.monvm_files.digests = arena.to_digests();
            return Ok(Self::with_excludes(Cow::Owned(rest), excludes));
        }
        rest.monvm_files.digests.clear();
        Ok(Self {
            values: Cow::Owned(rest),
            index: Some(FileHashIndex::of_arena(arena)),
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

/// [`check_and_appraise_log`] with the allowlist prepared already. The
/// log is parsed once. Each record's digests (template hash, SHA-256
/// extend value) are independent of the others, and so is each IMA
/// entry's allowlist outcome: for a long log the digests are computed on
/// all cores, then one thread replays them (a chain of extends, which
/// cannot be split) while the others look the entries up, and it joins
/// them when the replay is done. The replay decides which records are
/// proven; only their outcomes count.
pub fn check_and_appraise_prepared(
    log: Option<&[u8]>,
    pcrs: &[PcrValue],
    prepared: Option<&PreparedPolicy<'_>>,
) -> (Result<MeasurementLogCheck, Reason>, Option<MonVmAppraisal>) {
    let Some(bytes) = log else {
        return (check_measurement_records(None, &[], pcrs), None);
    };
    let records = match ima::parse_list(bytes, MAX_MEASUREMENT_RECORDS) {
        Ok(records) => records,
        Err(_) => return (Err(Reason::MeasurementLogMalformed), None),
    };
    let policy = prepared.map(PreparedPolicy::appraised_values);
    let lookup = prepared.and_then(PreparedPolicy::lookup);
    let none = Excludes::none();
    let excludes = prepared.map_or(&none, |p| &p.excludes);
    let excluded = |path: &[u8]| excludes.matches(path);
    let helpers = if records.len() < PARALLEL_RECORDS {
        0
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(16)) - 1
    };

    // The digests are computed a share at a time, in log order, by
    // whichever thread is free; the replay (a chain: the critical path)
    // takes each share as soon as it is there, and computes the next one
    // itself rather than wait. The other threads then look the entries
    // up, and so does the replay thread once done.
    let digests: Vec<Mutex<Option<Vec<RecordDigest>>>> = (0..records.len().div_ceil(DIGEST_SHARE))
        .map(|_| Mutex::new(None))
        .collect();
    // The buffers of the shares replayed already, for the next ones: a
    // few buffers in all, not a fresh page for every 120 records.
    let spare: Mutex<Vec<Vec<RecordDigest>>> = Mutex::new(Vec::new());
    let next_digests = AtomicUsize::new(0);
    // Set if a thread panicked computing a share: the replay must not
    // wait for it (the scope then re-raises the panic).
    let failed = AtomicBool::new(false);
    let take_digests = || {
        let n = next_digests.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = digests.get(n) else {
            return false;
        };
        let guard = PanicFlag(&failed);
        let part = &records[n * DIGEST_SHARE..records.len().min((n + 1) * DIGEST_SHARE)];
        let mut out = locked(&spare).pop().unwrap_or_default();
        out.clear();
        out.extend(part.iter().map(RecordDigest::of));
        *locked(slot) = Some(out);
        std::mem::forget(guard);
        true
    };
    let replay = || {
        let mut replay = Replay::new(pcrs);
        for (n, slot) in digests.iter().enumerate() {
            let part = loop {
                if let Some(part) = locked(slot).take() {
                    break part;
                }
                if !take_digests() {
                    // Another thread is computing share n.
                    if failed.load(Ordering::Acquire) {
                        return Err(Reason::MeasurementLogMalformed);
                    }
                    std::thread::yield_now();
                }
            };
            replay.extend(&records[n * DIGEST_SHARE..][..part.len()], &part)?;
            locked(&spare).push(part);
        }
        replay.finish(&records)
    };
    let all_digests = || while take_digests() {};
    let (check, outcomes) = match lookup {
        None => {
            let check = share::<ImaOutcome, _>(&mut [], helpers, replay, &all_digests, &|_, _| {});
            (check, None)
        }
        Some(files) => {
            let mut outcomes = vec![ImaOutcome::NotIma; records.len()];
            let check = share(
                &mut outcomes,
                helpers,
                replay,
                &all_digests,
                &|start, part| {
                    ima_outcomes(start, &records[start..], part, files, &excluded);
                },
            );
            (check, Some(outcomes))
        }
    };
    let check = match check {
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

/// Entries looked up together ([`FileIndex::allows_many`]).
const LOOKUP_BATCH: usize = 32;

/// `out[i]` = [`monvm::appraise_ima_record`] of `records[i]` (record
/// `start + i` of the log), the allowlist asked a batch at a time.
fn ima_outcomes(
    start: usize,
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
            let index = start + n * LOOKUP_BATCH + i;
            *outcome = monvm::ima_outcome(index, record, entry, excluded, |_, _| answer);
        }
    }
}

/// Fills `out` by shares of [`SHARE`] items (`fill(start, share)`, `start`
/// the index of the share's first item) on `helpers` spawned threads,
/// which first run `before`, and on this one, which first runs `first`
/// (work that cannot be shared) and then takes shares until none is left.
/// Returns what `first` returned.
fn share<T: Send, R>(
    out: &mut [T],
    helpers: usize,
    first: impl FnOnce() -> R,
    before: &(dyn Fn() + Sync),
    fill: &(dyn Fn(usize, &mut [T]) + Sync),
) -> R {
    let shares = std::sync::Mutex::new(out.chunks_mut(SHARE).enumerate());
    let take = || {
        loop {
            // The lock is released before the share is filled.
            let next = shares
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .next();
            let Some((n, part)) = next else { break };
            fill(n * SHARE, part);
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|| {
                before();
                take();
            });
        }
        let result = first();
        take();
        result
    })
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
        let n = 3 * PARALLEL_RECORDS + 123;
        let (log, policy) = long_list(n);
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

    /// A policy loaded from its snapshot holds a large allowlist in its
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
        let loaded = PreparedPolicy::from_parts(snapshot.rest, snapshot.arena).expect("prepared");
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
