//! The verifier's commands (the CLI in `main.rs` only parses arguments).
//!
//! Exit codes: [`EXIT_OK`] trusted / done, [`EXIT_UNTRUSTED`] the node or
//! evidence is not trusted (or enrolment was refused), [`EXIT_ERROR`] usage,
//! I/O, network or state errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use avm_attest::eventlog::EventLog;
use avm_attest::policy::ReferenceValues;
use avm_attest::tpm::{Attest, object_attr};
use avm_attest::verify::{ATTEST_PCRS, Reason};
use openssl::sha::sha256;

use crate::allowlist::{self, Excludes};
use crate::appraise::{
    Appraisal, AppraisalInput, PreparedPolicy, appraise, appraise_for_learning,
    appraise_quote_only, appraise_with,
};
use crate::client::{MAX_LOG_BYTES, NodeClient};
use crate::credential::make_credential;
use crate::crypto::OpenSslVerifier;
use crate::ek::{EkTrustAnchors, validate_ek};
use crate::evidence_dir::{self, AkFile};
use crate::files;
use crate::hex;
use crate::policy_cache::PolicyCache;
use crate::policy_snapshot;
use crate::report::{AkBinding, Report, ReportReason, VerifierReason};
use crate::sanitize::escape_control;
use crate::store::{KeyChangeKind, NodeRecord, PolicyWrite, Store, StoredLog, VerdictRecord, now};
use crate::tpm_public::TpmPublic;

pub const EXIT_OK: u8 = 0;
pub const EXIT_UNTRUSTED: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Length of the random nonce `attest` sends by default.
pub const NONCE_LEN: usize = 32;

/// Largest A-VM image `policy init --avm-image` reads (today's is ~220 KiB).
const MAX_IMAGE_LEN: u64 = 256 << 20;

/// Largest policy file read (`--policy`).
const MAX_POLICY_LEN: u64 = 16 << 20;

/// How often `policy learn` re-appraises its evidence against a policy
/// that changed under it before it gives up.
const LEARN_ATTEMPTS: usize = 5;

/// An error that ends a command with [`EXIT_ERROR`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

fn err(e: impl std::fmt::Display) -> CommandError {
    CommandError(e.to_string())
}

/// Options shared by the commands.
#[derive(Debug, Clone)]
pub struct Context {
    pub state_dir: PathBuf,
    /// Overall deadline of each exchange with a node.
    pub timeout: Duration,
    /// The policy as last prepared, shared by the threads of `monitor`.
    pub policies: std::sync::Arc<PolicyCache>,
}

impl Context {
    fn store(&self) -> Result<Store, CommandError> {
        Store::open(&self.state_dir).map_err(err)
    }

    /// The store if a state database exists (offline `verify` must not
    /// create one).
    fn existing_store(&self) -> Result<Option<Store>, CommandError> {
        if self
            .state_dir
            .join(crate::store::DATABASE_FILE)
            .try_exists()
            .map_err(err)?
        {
            self.store().map(Some)
        } else {
            Ok(None)
        }
    }
}

fn parse_toml(text: &str) -> Result<ReferenceValues, CommandError> {
    toml::from_str(text).map_err(|e| CommandError(format!("policy: {e}")))
}

pub(crate) fn parse_policy(text: &str) -> Result<ReferenceValues, CommandError> {
    let policy = parse_toml(text)?;
    // An exclude that does not compile would exclude nothing at attest
    // time (fail closed): say so when the policy is loaded.
    Excludes::compile(&policy.monvm_files).map_err(|e| CommandError(format!("policy: {e}")))?;
    Ok(policy)
}

/// [`parse_policy`], prepared for appraisal (its excludes compiled once,
/// refused as there if one does not compile).
pub(crate) fn prepare_policy(text: &str) -> Result<PreparedPolicy<'static>, CommandError> {
    prepare_values(parse_toml(text)?)
}

/// Policy values, from a text or a snapshot, prepared as [`prepare_policy`]
/// prepares them.
fn prepare_values(values: ReferenceValues) -> Result<PreparedPolicy<'static>, CommandError> {
    PreparedPolicy::checked(values).map_err(|e| CommandError(format!("policy: {e}")))
}

/// Loads the policy, prepared for appraisal: `--policy FILE` if given,
/// else the stored one.
pub(crate) fn load_prepared_policy(
    store: Option<&Store>,
    override_file: Option<&Path>,
) -> Result<Option<PreparedPolicy<'static>>, CommandError> {
    match (store, override_file) {
        (Some(store), None) => Ok(load_stored_policy(store)?.map(|(_, policy)| policy)),
        _ => policy_text(store, override_file)?
            .as_deref()
            .map(prepare_policy)
            .transpose(),
    }
}

/// The stored policy prepared for appraisal, with its revision: from its
/// snapshot if one was taken of this revision (`policy_snapshot`), else
/// parsed from its text, and the snapshot taken for the next load.
pub(crate) fn load_stored_policy(
    store: &Store,
) -> Result<Option<(i64, PreparedPolicy<'static>)>, CommandError> {
    if let Some((revision, body)) = store
        .policy_snapshot(policy_snapshot::FORMAT)
        .map_err(err)?
    {
        // A snapshot that does not decode is passed over: the text is the
        // policy.
        if let Ok(snapshot) = policy_snapshot::decode(body) {
            let policy = PreparedPolicy::from_parts(snapshot.rest, snapshot.arena, &snapshot.table)
                .map_err(|e| CommandError(format!("policy: {e}")))?;
            return Ok(Some((revision, policy)));
        }
    }
    // Text and revision read together: a change in between is seen next
    // time (and the snapshot is then refused for the older revision).
    let Some(stored) = store.policy_with_revision().map_err(err)? else {
        return Ok(None);
    };
    let policy = prepare_policy(&stored.toml)?;
    keep_snapshot(store, stored.revision, &stored.toml, &policy);
    Ok(Some((stored.revision, policy)))
}

/// After the verifier wrote a policy: the snapshot taken now, from the
/// text as stored (as the next load would take it), so that the next
/// `attest` need not parse the text. Only speed depends on it: an error
/// here is the next load's to report.
fn take_snapshot(store: &Store) {
    let _ = load_stored_policy(store);
}

/// Takes the snapshot of `policy`, parsed from `text`, the policy of
/// `revision`; kept only if the stored policy is still that revision and
/// that text. Only speed depends on it: a state that cannot be written
/// (or a policy changed meanwhile) leaves the next load parsing the text.
fn keep_snapshot(store: &Store, revision: i64, text: &str, policy: &PreparedPolicy<'_>) {
    let (arena, table) = (policy.arena(), policy.index_table());
    if let Ok(body) = policy_snapshot::encode_parts(policy.values(), &arena, &table) {
        let _ = store.set_policy_snapshot(revision, text, policy_snapshot::FORMAT, &body);
    }
}

/// The policy's text: `--policy FILE` if given, else the stored one.
pub(crate) fn policy_text(
    store: Option<&Store>,
    override_file: Option<&Path>,
) -> Result<Option<String>, CommandError> {
    match (override_file, store) {
        (Some(path), _) => {
            let bytes = files::read_operator_file(path, MAX_POLICY_LEN).map_err(err)?;
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| CommandError(format!("{}: not UTF-8", path.display())))
        }
        (None, Some(store)) => store.policy().map_err(err),
        (None, None) => Ok(None),
    }
}

/// Prints the report and gives the exit code its verdict calls for.
fn print_verdict(report: &Report, json: bool) -> u8 {
    print_report(report, json);
    if report.passed() {
        EXIT_OK
    } else {
        EXIT_UNTRUSTED
    }
}

fn print_report(report: &Report, json: bool) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("cannot encode report: {e}"),
        }
    } else {
        print!("{}", report.human());
    }
}

fn random_nonce() -> Result<Vec<u8>, CommandError> {
    let mut nonce = vec![0u8; NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce).map_err(err)?;
    Ok(nonce)
}

/// What an AK must be: a restricted signing key that never leaves its TPM,
/// so it signs only TPM-generated structures.
const AK_ATTRIBUTES: u32 = object_attr::FIXED_TPM
    | object_attr::FIXED_PARENT
    | object_attr::SENSITIVE_DATA_ORIGIN
    | object_attr::RESTRICTED
    | object_attr::SIGN_ENCRYPT;

/// Whether a TPMT_PUBLIC has the attributes an AK must have.
pub fn is_ak_shaped(ak: &TpmPublic) -> bool {
    ak.object_attributes & AK_ATTRIBUTES == AK_ATTRIBUTES
}

/// What `enroll` may replace when the node is already known.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnrollOptions {
    /// The EK is enrolled under another address: move it here.
    pub move_node: bool,
    /// The address is enrolled with another EK or AK: replace them.
    pub replace_keys: bool,
}

/// `enroll ADDR --ek-ca FILE`.
pub fn enroll(
    ctx: &Context,
    addr: &str,
    ek_ca: &Path,
    opts: EnrollOptions,
) -> Result<u8, CommandError> {
    let anchors = EkTrustAnchors::from_pem_file(ek_ca).map_err(err)?;
    let mut store = ctx.store()?;
    let mut client = NodeClient::connect(addr, ctx.timeout).map_err(err)?;
    let hello = client.hello().map_err(err)?;
    let refuse = |code: &str, message: String| {
        println!(
            "{}: enrolment REFUSED\n  - {code}: {}",
            escape_control(addr),
            escape_control(&message)
        );
        Ok(EXIT_UNTRUSTED)
    };

    let ek = match TpmPublic::parse(&hello.ek.public) {
        Ok(ek) => ek,
        Err(e) => return refuse("ek-malformed", e.to_string()),
    };
    if let Err(e) = validate_ek(&anchors, &ek, &hello.ek_certificate) {
        return refuse(e.code(), e.to_string());
    }
    let ak = match TpmPublic::parse(&hello.ak.public) {
        Ok(ak) => ak,
        Err(e) => return refuse("ak-malformed", e.to_string()),
    };
    if ak.name() != hello.ak.name {
        return refuse(
            "ak-name-mismatch",
            "the announced AK name is not the name of the AK public area".into(),
        );
    }
    if !is_ak_shaped(&ak) {
        return refuse(
            VerifierReason::AkAttributes.code(),
            format!(
                "the AK is not a restricted, fixed, TPM-generated signing key (attributes {:#010x})",
                ak.object_attributes
            ),
        );
    }

    // Bind AK to EK: only the TPM holding this EK, with an object of this
    // exact name loaded, can return the secret.
    let secret = random_nonce()?;
    let made = make_credential(&ek.key, &ak.name(), &secret).map_err(err)?;
    let returned = match client.activate_credential(&made.credential_blob, &made.encrypted_secret) {
        Ok(returned) => returned,
        Err(e) => return refuse("ak-not-activated", format!("activation failed: {e}")),
    };
    if !openssl::memcmp::eq(&returned, &secret) || returned.len() != secret.len() {
        return refuse(
            "ak-not-activated",
            "the node did not return the credential secret".into(),
        );
    }

    // A node is its EK: one TPM, one enrolment. Decided once the TPM has
    // proven it holds this EK and AK (a node merely announcing somebody's
    // EK learns nothing about where it is enrolled).
    let record = NodeRecord {
        addr: addr.into(),
        ek_public: ek.marshaled().to_vec(),
        ek_certificate: hello.ek_certificate.clone(),
        ak_public: ak.marshaled().to_vec(),
        ak_name: ak.name(),
        enrolled_at: now(),
        activation_proven: true,
    };
    let mut change = None;
    if let Some(known) = store.node_by_ek(&record.ek_name()).map_err(err)?
        && known.addr != addr
    {
        if !opts.move_node {
            return refuse(
                "ek-already-enrolled",
                format!(
                    "this TPM (EK {}) is already enrolled as {}; one TPM is one node. \
                     If the node really moved, pass --move (a relay in front of an enrolled \
                     node must never be enrolled)",
                    hex::encode(&record.ek_name()),
                    known.addr
                ),
            );
        }
        change = Some(KeyChangeKind::Moved);
    }
    if let Some(previous) = store.node(addr).map_err(err)?
        && (previous.ek_public != record.ek_public || previous.ak_public != record.ak_public)
    {
        if !opts.replace_keys {
            let which = if previous.ek_public != record.ek_public {
                "EK"
            } else {
                "AK"
            };
            return refuse(
                "keys-changed",
                format!(
                    "{addr} is enrolled with another {which}; pass --replace-keys to enrol the \
                     new keys (the change is recorded)"
                ),
            );
        }
        change = Some(change.unwrap_or(KeyChangeKind::KeysReplaced));
    }

    match change {
        Some(kind) => store.replace_node(&record, kind),
        // Unchanged keys at the same address: a refresh, nothing to record.
        None if store.node(addr).map_err(err)?.is_some() => {
            store.replace_node(&record, KeyChangeKind::KeysReplaced)
        }
        None => store.enroll(&record),
    }
    .map_err(err)?;
    println!(
        "{addr}: enrolled\n  EK certificate: trusted ({})\n  EK name: {}\n  AK name: {}\n  credential activation: passed",
        ek_ca.display(),
        hex::encode(&record.ek_name()),
        hex::encode(&ak.name())
    );
    if let Some(kind) = change {
        println!("  recorded in the key history: {}", kind.as_str());
    }
    Ok(EXIT_OK)
}

/// Options of `attest`.
#[derive(Debug, Clone, Default)]
pub struct AttestOptions {
    pub nonce: Option<Vec<u8>>,
    pub export: Option<PathBuf>,
    pub json: bool,
    pub policy: Option<PathBuf>,
}

/// `attest ADDR`.
pub fn attest(ctx: &Context, addr: &str, opts: &AttestOptions) -> Result<u8, CommandError> {
    let report = attest_report(ctx, addr, opts)?;
    Ok(print_verdict(&report, opts.json))
}

/// Attests `addr` as `attest` does (verdict recorded in the history, the
/// proven log kept, evidence exported if asked) and returns the report
/// without printing it. `monitor` calls it for every re-attestation.
pub fn attest_report(
    ctx: &Context,
    addr: &str,
    opts: &AttestOptions,
) -> Result<Report, CommandError> {
    let store = ctx.store()?;
    // The policy is loaded on a thread of its own (with its own connection
    // to the state) while the node is asked for its evidence: loading a
    // large allowlist (about 20 ms for 100,000 paths) overlaps the node's
    // quote instead of coming before it. It is waited for before anything
    // is appraised; a policy that does not load is still an error.
    std::thread::scope(|scope| {
        let loading = scope.spawn(|| {
            let store = ctx.store()?;
            ctx.policies.load(Some(&store), opts.policy.as_deref())
        });
        let policy = || {
            loading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        attest_with_policy(ctx, store, addr, opts, policy)
    })
}

/// [`attest_report`] with the policy from `policy` (called once, before
/// the evidence is appraised).
fn attest_with_policy(
    ctx: &Context,
    mut store: Store,
    addr: &str,
    opts: &AttestOptions,
    policy: impl FnOnce() -> Result<Option<std::sync::Arc<PreparedPolicy<'static>>>, CommandError>,
) -> Result<Report, CommandError> {
    // Refuse an export target before talking to the node.
    let export = opts
        .export
        .as_deref()
        .map(|dir| files::ExportDir::create(dir).map(|_| dir))
        .transpose()
        .map_err(err)?;
    let record = |store: &mut Store, report: &Report| {
        store.record_verdict(&VerdictRecord {
            addr: addr.into(),
            at: now(),
            verdict: report.verdict.as_str().into(),
            reasons: report.reasons.iter().map(|r| r.code.clone()).collect(),
        })
    };

    let Some(node) = store.node(addr).map_err(err)? else {
        // A policy that does not load is the error, as for an enrolled node.
        policy()?;
        // Not enrolled: nothing it says could be tied to a trusted TPM.
        let report = Report::new(
            Some(addr.into()),
            None,
            vec![ReportReason::verifier(
                VerifierReason::UnknownNode,
                "the node is not enrolled (run `avm-verifier enroll` first)",
            )],
            &[],
            &[],
            &[],
        );
        return Ok(report);
    };
    let enrolled_ak = TpmPublic::parse(&node.ak_public).map_err(err)?;
    let nonce = match &opts.nonce {
        Some(n) => n.clone(),
        None => random_nonce()?,
    };

    let mut client = NodeClient::connect(addr, ctx.timeout).map_err(err)?;
    let hello = client.hello().map_err(err)?;
    let mut extra = Vec::new();
    if !node.activation_proven || hello.ak.public != node.ak_public {
        extra.push(ReportReason::verifier(
            VerifierReason::AkNotActivated,
            "the node's AK is not the one that passed credential activation at enrolment",
        ));
    }
    if hello.ek.public != node.ek_public {
        extra.push(ReportReason::verifier(
            VerifierReason::EkChanged,
            "the node's EK differs from the one enrolled",
        ));
    }
    let evidence = client.challenge(&nonce, ATTEST_PCRS).map_err(err)?;
    // Waited for only once the log is there, while it is replayed.
    let mut policy = PendingPolicy::Loading(policy);
    let verifier = OpenSslVerifier::new().map_err(err)?;
    // Fetched after the quote: records the A-VM appends meanwhile are
    // counted as after the quote, never as proven. Only the records after
    // those a quote of this boot already proved are asked for.
    let stored = store
        .measurement_log(addr)
        .map_err(err)?
        .filter(|s| s.ek_name == node.ek_name() && s.ak_name == node.ak_name);
    let clock = Attest::parse(&evidence.attest)
        .ok()
        .map(|a| (a.clock_info.reset_count, a.clock_info.restart_count));
    let mut fetch = plan_fetch(&mut client, stored.as_ref(), clock)?;
    // Always the enrolled AK: a quote signed by any other key is refused.
    let mut appraise_log = |log: &[u8]| {
        let mut input =
            AppraisalInput::from_node(&evidence, &nonce, &enrolled_ak.key, &node.ak_name);
        input.measurement_log = Some(log);
        appraise_with(
            &input,
            || policy.get(),
            &verifier,
            Some(addr.into()),
            extra.clone(),
        )
    };
    let mut appraisal = appraise_log(&fetch.log)?;
    // The stored records must be part of what this quote proves; if the
    // node's log no longer extends them, it is fetched and appraised again
    // from record 0, never trusted on the stale prefix.
    if fetch.from > 0 {
        let proven = match &appraisal.log {
            Some(Ok(check)) => Some(check.proven),
            _ => None,
        };
        if proven.is_none_or(|p| p < fetch.from as usize) {
            let why = match &appraisal.log {
                Some(Ok(_)) => "the quote proves fewer records than were stored",
                Some(Err(_)) => "the stored records and the new ones do not replay to the quote",
                None => "the quote is not authenticated or does not cover the log's PCRs",
            };
            fetch = FetchPlan::whole(&mut client, why)?;
            appraisal = appraise_log(&fetch.log)?;
        }
    }
    drop(client);
    let measurement_log = fetch.log;
    let mut report = appraisal.report;
    if let Some(log) = report.measurement_log.as_mut() {
        log.fetched_from = Some(fetch.from);
        log.refetched = fetch.refetched.map(String::from);
    }
    // Keep the proven prefix for the next attestation of this boot.
    let fresh = !appraisal.verdict.reasons.contains(&Reason::NonceMismatch);
    match (&appraisal.log, clock) {
        (Some(Ok(check)), Some((reset_count, restart_count))) if fresh && check.proven > 0 => {
            let (records, bytes) = proven_prefix(&measurement_log, check.proven);
            store
                .set_measurement_log(&StoredLog {
                    addr: addr.into(),
                    ek_name: node.ek_name(),
                    ak_name: node.ak_name.clone(),
                    reset_count,
                    restart_count,
                    records,
                    log: bytes,
                })
                .map_err(err)?;
        }
        _ => store.forget_measurement_log(addr).map_err(err)?,
    }
    report.ak_binding = Some(AkBinding::Enrolled { node: addr.into() });
    record(&mut store, &report).map_err(err)?;
    if let Some(dir) = export {
        evidence_dir::export(
            dir,
            &evidence,
            Some(&measurement_log),
            &enrolled_ak,
            &nonce,
            &report,
        )
        .map_err(err)?;
    }
    Ok(report)
}

/// The policy `attest` appraises with: loading until first asked for,
/// then kept for a second appraisal (a log fetched again).
enum PendingPolicy<F> {
    Loading(F),
    Loaded(Option<std::sync::Arc<PreparedPolicy<'static>>>),
    /// Only while the load runs (an error ends the attestation).
    Taken,
}

impl<F> PendingPolicy<F>
where
    F: FnOnce() -> Result<Option<std::sync::Arc<PreparedPolicy<'static>>>, CommandError>,
{
    fn get(&mut self) -> Result<Option<&PreparedPolicy<'static>>, CommandError> {
        if let Self::Loading(_) = self
            && let Self::Loading(load) = std::mem::replace(self, Self::Taken)
        {
            *self = Self::Loaded(load()?);
        }
        match self {
            Self::Loaded(policy) => Ok(policy.as_deref()),
            _ => Err(CommandError("the policy failed to load".into())),
        }
    }
}

/// How `attest` got the measurement log it appraises.
struct FetchPlan {
    /// The whole log as appraised (stored records + fetched ones).
    log: Vec<u8>,
    /// The index asked for (0: whole log).
    from: u32,
    /// Why a stored log was not used, if one was there.
    refetched: Option<&'static str>,
}

impl FetchPlan {
    fn whole(client: &mut NodeClient, why: &'static str) -> Result<Self, CommandError> {
        let fetched = client.measurement_log_from(0, MAX_LOG_BYTES).map_err(err)?;
        Ok(Self {
            log: fetched.records,
            from: 0,
            refetched: Some(why),
        })
    }
}

/// Fetches the records after the stored ones if the stored log belongs to
/// this boot of the node (the quote's TPM reset and restart counts are
/// those it was proven with, and the node's log is at least as long), else
/// the whole log.
fn plan_fetch(
    client: &mut NodeClient,
    stored: Option<&StoredLog>,
    clock: Option<(u32, u32)>,
) -> Result<FetchPlan, CommandError> {
    let Some(stored) = stored.filter(|s| s.records > 0) else {
        let fetched = client.measurement_log_from(0, MAX_LOG_BYTES).map_err(err)?;
        return Ok(FetchPlan {
            log: fetched.records,
            from: 0,
            refetched: None,
        });
    };
    if clock != Some((stored.reset_count, stored.restart_count)) {
        return FetchPlan::whole(
            client,
            "the TPM was reset or restarted since the stored log (the node rebooted)",
        );
    }
    let room = MAX_LOG_BYTES.saturating_sub(stored.log.len());
    let fetched = client
        .measurement_log_from(stored.records, room)
        .map_err(err)?;
    if fetched.total < stored.records {
        return FetchPlan::whole(client, "the node's log is shorter than the stored one");
    }
    let mut log = stored.log.clone();
    log.extend_from_slice(&fetched.records);
    Ok(FetchPlan {
        log,
        from: stored.records,
        refetched: None,
    })
}

/// The first `records` records of a (checked) log: their count and bytes.
fn proven_prefix(log: &[u8], records: usize) -> (u32, Vec<u8>) {
    let parsed = avm_attest::ima::parse_list(log, avm_attest::verify::MAX_MEASUREMENT_RECORDS)
        .unwrap_or_default();
    let kept = parsed.get(..records).unwrap_or_default();
    let len: usize = kept.iter().map(|r| r.encoded_len()).sum();
    (
        u32::try_from(kept.len()).unwrap_or(u32::MAX),
        log.get(..len).unwrap_or_default().to_vec(),
    )
}

/// Options of `verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub nonce: Option<Vec<u8>>,
    pub json: bool,
    pub policy: Option<PathBuf>,
    /// A key file the caller asserts signed the quote (not bound to an EK).
    pub ak: Option<PathBuf>,
    /// Check only the quote (no log, no reference values).
    pub quote_only: bool,
}

/// The key `verify` checks the quote with, and why it is trusted (if at
/// all): enrolled, or asserted by the caller. Never the directory's own.
struct ChosenAk {
    key: AkFile,
    binding: AkBinding,
    reasons: Vec<ReportReason>,
}

fn choose_ak(
    store: Option<&Store>,
    claimed: Option<&AkFile>,
    asserted: Option<&Path>,
) -> Result<ChosenAk, CommandError> {
    if let Some(path) = asserted {
        let key = AkFile::read(path).map_err(err)?;
        let mut reasons = Vec::new();
        if let AkFile::Public(public) = &key
            && !is_ak_shaped(public)
        {
            reasons.push(ak_attributes_reason(public));
        }
        return Ok(ChosenAk {
            key,
            binding: AkBinding::AssertedByCaller {
                file: path.display().to_string(),
            },
            reasons,
        });
    }
    let Some(claimed) = claimed else {
        return Err(CommandError(
            "the directory names no AK (ak.pub or ak.pem): pass --ak FILE".into(),
        ));
    };
    // The directory's key is only a claim: look it up among enrolled nodes.
    let enrolled =
        match (store, claimed) {
            (None, _) => None,
            (Some(store), AkFile::Public(public)) => store
                .nodes_by_ak_name(&public.name())
                .map_err(err)?
                .into_iter()
                .next(),
            (Some(store), AkFile::Pem(key)) => store.nodes().map_err(err)?.into_iter().find(|n| {
                TpmPublic::parse(&n.ak_public).is_ok_and(|enrolled| &enrolled.key == key)
            }),
        };
    let Some(node) = enrolled else {
        return Ok(ChosenAk {
            key: claimed.clone(),
            binding: AkBinding::NotEnrolled,
            reasons: vec![ReportReason::verifier(
                VerifierReason::AkNotEnrolled,
                "the evidence's AK belongs to no enrolled node (a key in the directory is \
                 never trusted for being there; enrol the node, or name a key with --ak)",
            )],
        });
    };
    let public = TpmPublic::parse(&node.ak_public).map_err(err)?;
    let mut reasons = Vec::new();
    if !is_ak_shaped(&public) {
        reasons.push(ak_attributes_reason(&public));
    }
    if !node.activation_proven {
        reasons.push(ReportReason::verifier(
            VerifierReason::AkNotActivated,
            "the enrolled AK never passed credential activation",
        ));
    }
    Ok(ChosenAk {
        key: AkFile::Public(public),
        binding: AkBinding::Enrolled { node: node.addr },
        reasons,
    })
}

fn ak_attributes_reason(public: &TpmPublic) -> ReportReason {
    ReportReason::verifier(
        VerifierReason::AkAttributes,
        format!(
            "the AK is not a restricted, fixed, TPM-generated signing key (attributes {:#010x})",
            public.object_attributes
        ),
    )
}

/// `verify DIR`.
pub fn verify(ctx: &Context, dir: &Path, opts: &VerifyOptions) -> Result<u8, CommandError> {
    let loaded = evidence_dir::load(dir).map_err(err)?;
    let store = ctx.existing_store()?;
    let policy = ctx.policies.load(store.as_ref(), opts.policy.as_deref())?;
    let Some(nonce) = opts.nonce.clone().or_else(|| loaded.nonce.clone()) else {
        return Err(CommandError(
            "no nonce: pass --nonce HEX or put nonce.hex in the directory".into(),
        ));
    };
    let chosen = choose_ak(
        store.as_ref(),
        loaded.claimed_ak.as_ref(),
        opts.ak.as_deref(),
    )?;
    let verifier = OpenSslVerifier::new().map_err(err)?;
    let ak_name = chosen.key.name();
    let input = AppraisalInput::from_loaded(&loaded, &nonce, chosen.key.key(), &ak_name);
    let who = Some(dir.display().to_string());
    let Appraisal { mut report, .. } = if opts.quote_only {
        appraise_quote_only(&input, &verifier, who, chosen.reasons)
    } else {
        appraise(&input, policy.as_deref(), &verifier, who, chosen.reasons)
    };
    report.ak_binding = Some(chosen.binding);
    report.freshness_unproven = opts.nonce.is_none();
    Ok(print_verdict(&report, opts.json))
}

/// `policy init`: allowed A-VM images, from image files and/or digests.
pub fn policy_init(
    ctx: &Context,
    images: &[PathBuf],
    digests: &[String],
    monvm_kernels: &[PathBuf],
    monvm_profiles: &[PathBuf],
    monvm_violations: avm_attest::policy::ViolationMemory,
) -> Result<u8, CommandError> {
    let mut policy = ReferenceValues {
        monvm_violations,
        ..ReferenceValues::default()
    };
    for kernel in monvm_kernels {
        policy
            .monvm_profiles
            .push(crate::profile::reference_from_vmlinuz(kernel)?);
    }
    for profile in monvm_profiles {
        policy
            .monvm_profiles
            .push(crate::profile::reference_from_profile(profile)?);
    }
    for image in images {
        let bytes = files::read_operator_file(image, MAX_IMAGE_LEN).map_err(err)?;
        policy.allow_image(sha256(&bytes));
    }
    for digest in digests {
        let d = hex::decode_array::<32>(digest)
            .map_err(|_| CommandError(format!("not a SHA-256 digest: {digest}")))?;
        policy.allow_image(d);
    }
    if policy.avm_image_sha256.is_empty() {
        return Err(CommandError(
            "give at least one --avm-image FILE or --avm-image-sha256 HEX".into(),
        ));
    }
    let text = toml::to_string_pretty(&policy).map_err(err)?;
    let mut store = ctx.store()?;
    store.set_policy(&text).map_err(err)?;
    take_snapshot(&store);
    print!("{text}");
    Ok(EXIT_OK)
}

/// Whether a reason only says the policy does not know this boot yet
/// (what learning adds), rather than that the evidence is bad. A policy
/// without images is caught afterwards: PCR 0 then matches none.
fn learnable(reason: &Reason) -> bool {
    match reason {
        Reason::FirmwareEventUnknown { .. }
        | Reason::FirmwareSequenceUnknown { .. }
        | Reason::ReferenceValuesMissing(_)
        // The Mon-VM profile is allowed by `policy init`, not learned;
        // it does not make the firmware events any less genuine.
        | Reason::MonVmProfileUnknown => true,
        // Files, modules, executables and boot patches the policy does not
        // know yet; never a violation or an unmeasured module or process.
        Reason::MonVm(finding) => finding.kind.learnable(),
        _ => false,
    }
}

/// `policy learn ADDR`: adds the firmware events of an enrolled node's
/// authenticated event log to the stored policy. The write is a
/// compare-and-swap: if the policy changed while the node was asked, the
/// same evidence is appraised again against the new policy and learned
/// into it, or the command fails; a concurrent change is never undone.
pub fn policy_learn(ctx: &Context, addr: &str) -> Result<u8, CommandError> {
    let mut store = ctx.store()?;
    if store.policy().map_err(err)?.is_none() {
        return Err(CommandError(
            "no policy yet: run `avm-verifier policy init --avm-image FILE` first".into(),
        ));
    }
    let node = store
        .node(addr)
        .map_err(err)?
        .ok_or_else(|| CommandError(format!("{addr} is not enrolled")))?;
    let ak = TpmPublic::parse(&node.ak_public).map_err(err)?;
    let nonce = random_nonce()?;
    let mut client = NodeClient::connect(addr, ctx.timeout).map_err(err)?;
    let hello = client.hello().map_err(err)?;
    if hello.ak.public != node.ak_public || hello.ek.public != node.ek_public {
        return Err(CommandError(
            "refusing to learn: the node's keys are not the enrolled ones".into(),
        ));
    }
    let evidence = client.challenge(&nonce, ATTEST_PCRS).map_err(err)?;
    let measurement_log = client.measurement_log().map_err(err)?;
    drop(client);
    let verifier = OpenSslVerifier::new().map_err(err)?;
    let log = EventLog::parse(&evidence.event_log);

    let mut input = AppraisalInput::from_node(&evidence, &nonce, &ak.key, &node.ak_name);
    input.measurement_log = Some(&measurement_log);
    for _ in 0..LEARN_ATTEMPTS {
        let stored = store
            .policy_with_revision()
            .map_err(err)?
            .ok_or_else(|| CommandError("the policy was removed while learning".into()))?;
        let mut policy = parse_policy(&stored.toml)?;
        let Appraisal {
            verdict,
            report,
            log: appraisal_log,
            monvm: appraisal_monvm,
        } = appraise_for_learning(&input, &policy, &verifier, Some(addr.into()));
        let appraisal_monvm = appraisal_monvm.is_some_and(|m| m.monvm)
            && appraisal_log.as_ref().is_some_and(|l| {
                l.as_ref().is_ok_and(|c| {
                    c.config_digest
                        .is_some_and(|d| policy.monvm_profiles.iter().any(|p| p.sha256 == d))
                })
            });
        // Learn only from a log the quote authenticates and whose PCR 0 is
        // an allowed image: unknown events and missing ones are what we learn.
        if !verdict.reasons.iter().all(learnable) {
            print!("{}", report.human());
            return Err(CommandError(
                "refusing to learn from evidence that does not verify".into(),
            ));
        }
        // PCR 0's events are genuine only if its replay from an allowed
        // image gave the quoted value; a policy without images never says so.
        if verdict.avm_image.is_none() {
            print!("{}", report.human());
            return Err(CommandError(
                "refusing to learn: PCR 0 does not match an A-VM image allowed by the policy"
                    .into(),
            ));
        }
        let log = log
            .as_ref()
            .map_err(|_| CommandError("the event log does not parse".into()))?;
        let learned = policy.learn(log);
        // What the Mon-VM runs, from the proven measurement log (only with
        // an allowed kernel profile: else the A-VM's view is not trusted).
        let monvm = match &appraisal_log {
            Some(Ok(check)) => avm_attest::monvm::learn(&mut policy, &measurement_log, check),
            _ => avm_attest::monvm::LearnedMonVm::default(),
        };
        let text = toml::to_string_pretty(&policy).map_err(err)?;
        match store.set_policy_if(stored.revision, &text).map_err(err)? {
            PolicyWrite::Written(_) => {
                take_snapshot(&store);
                println!(
                    "{addr}: learned {} new firmware events and {} new firmware sequence ({} events, {} sequences in the policy)",
                    learned.events,
                    usize::from(learned.sequence),
                    policy.firmware_events.len(),
                    policy.firmware_sequences.len()
                );
                if appraisal_monvm {
                    println!(
                        "{addr}: learned {} new Mon-VM files, {} modules, {} boot-patch digests ({} files, {} modules in the policy)",
                        monvm.files,
                        monvm.modules,
                        monvm.boot_patches,
                        policy.monvm_files.len(),
                        policy.monvm_modules.len()
                    );
                }
                if monvm.monitor_policy {
                    println!(
                        "{addr}: the node checks its Mon-VM more slowly than allowed so far: the allowed monitor periods are now {}",
                        policy.monitor_max()
                    );
                }
                if monvm.skipped > 0 {
                    eprintln!(
                        "{addr}: {} Mon-VM IMA entries could not be learned (no SHA-256 ima-ng/ima-sig digest, a path that is not UTF-8, or an IMA violation record); attest will name them",
                        monvm.skipped
                    );
                }
                return Ok(EXIT_OK);
            }
            PolicyWrite::Conflict => {
                eprintln!("{addr}: the policy changed while learning; appraising again");
            }
        }
    }
    Err(CommandError(format!(
        "the policy kept changing while learning ({LEARN_ATTEMPTS} attempts); nothing was written"
    )))
}

/// `policy import-keylime FILE`: the `digests` and `excludes` of a Keylime
/// runtime policy become (or, with `replace`, replace) the allowed Mon-VM
/// files of the stored policy. A compare-and-swap write, like `learn`.
pub fn policy_import_keylime(
    ctx: &Context,
    file: &Path,
    replace: bool,
) -> Result<u8, CommandError> {
    let bytes = files::read_operator_file(file, allowlist::MAX_KEYLIME_POLICY_LEN).map_err(err)?;
    let import = allowlist::import_keylime(&bytes)
        .map_err(|e| CommandError(format!("{}: {e}", file.display())))?;
    let mut store = ctx.store()?;
    for _ in 0..LEARN_ATTEMPTS {
        let stored = store.policy_with_revision().map_err(err)?.ok_or_else(|| {
            CommandError(
                "no policy yet: run `avm-verifier policy init --avm-image FILE` first".into(),
            )
        })?;
        let mut policy = parse_policy(&stored.toml)?;
        let added = if replace {
            policy.monvm_files = import.files.clone();
            import.digests
        } else {
            allowlist::merge(&mut policy.monvm_files, import.files.clone())
        };
        let text = toml::to_string_pretty(&policy).map_err(err)?;
        if let PolicyWrite::Written(_) = store.set_policy_if(stored.revision, &text).map_err(err)? {
            take_snapshot(&store);
            println!(
                "{}: {} SHA-256 digests of {} paths and {} excludes imported ({} new); the policy allows {} files",
                file.display(),
                import.digests,
                import.files.digests.len(),
                import.files.excludes.len(),
                added,
                policy.monvm_files.len()
            );
            if import.other_algorithms > 0 {
                println!(
                    "  skipped {} digests of other algorithms (the Mon-VM's IMA uses SHA-256); {} paths had no SHA-256 digest and are not allowed",
                    import.other_algorithms, import.paths_without_sha256
                );
            }
            for ignored in &import.ignored {
                println!("  ignored: {ignored}");
            }
            return Ok(EXIT_OK);
        }
        eprintln!("the policy changed while importing; merging again");
    }
    Err(CommandError(format!(
        "the policy kept changing while importing ({LEARN_ATTEMPTS} attempts); nothing was written"
    )))
}

/// `policy show`.
pub fn policy_show(ctx: &Context) -> Result<u8, CommandError> {
    let store = ctx.store()?;
    match store.policy().map_err(err)? {
        Some(text) => {
            print!("{text}");
            if audit_snapshot(&store, &text).map_err(err)? {
                eprintln!(
                    "avm-verifier: the stored policy's compiled snapshot did not match its text \
                     (written past the verifier?): dropped; the text above is in force"
                );
            }
        }
        None => println!("# no policy: run `avm-verifier policy init --avm-image FILE`"),
    }
    Ok(EXIT_OK)
}

/// What `attest` enforces is the policy's snapshot while it is current:
/// `policy show` makes sure it says what the text shown says, and drops
/// it if not (the next load takes it again from the text). True if it
/// dropped one.
fn audit_snapshot(store: &Store, text: &str) -> Result<bool, crate::store::StoreError> {
    let Some((_, body)) = store.policy_snapshot(policy_snapshot::FORMAT)? else {
        return Ok(false);
    };
    let same = match (policy_snapshot::decode(body), parse_toml(text)) {
        (Ok(snapshot), Ok(values)) => snapshot.into_values() == values,
        // A text that does not parse has no snapshot of its own.
        _ => false,
    };
    if !same {
        store.drop_policy_snapshot()?;
    }
    Ok(!same)
}

/// `nodes --key-history`: every move and key replacement, oldest first.
fn key_history(store: &Store, json: bool) -> Result<u8, CommandError> {
    let changes = store.key_changes().map_err(err)?;
    let hex_opt = |v: &Option<Vec<u8>>| v.as_deref().map(hex::encode);
    let rows: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| {
            serde_json::json!({
                "at": c.at,
                "kind": c.kind,
                "old_addr": c.old_addr,
                "new_addr": c.new_addr,
                "old_ek_name": hex::encode(&c.old_ek_name),
                "new_ek_name": hex_opt(&c.new_ek_name),
                "old_ak_name": hex::encode(&c.old_ak_name),
                "new_ak_name": hex_opt(&c.new_ak_name),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).map_err(err)?);
        return Ok(EXIT_OK);
    }
    if changes.is_empty() {
        println!("no key changes");
    }
    for c in &changes {
        println!(
            "{} {:<20} {} -> {}",
            c.at,
            c.kind,
            c.old_addr,
            c.new_addr.as_deref().unwrap_or("-")
        );
    }
    Ok(EXIT_OK)
}

/// `nodes`.
pub fn nodes(ctx: &Context, json: bool, history: bool) -> Result<u8, CommandError> {
    let store = ctx.store()?;
    if history {
        return key_history(&store, json);
    }
    let mut rows = Vec::new();
    for node in store.nodes().map_err(err)? {
        let last = store.last_verdict(&node.addr).map_err(err)?;
        rows.push(serde_json::json!({
            "addr": node.addr,
            "ek_name": hex::encode(&node.ek_name()),
            "enrolled_at": node.enrolled_at,
            "activation_proven": node.activation_proven,
            "ak_name": hex::encode(&node.ak_name),
            "last_verdict": last.as_ref().map(|v| v.verdict.clone()),
            "last_verdict_at": last.as_ref().map(|v| v.at),
            "last_reasons": last.map(|v| v.reasons).unwrap_or_default(),
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).map_err(err)?);
        return Ok(EXIT_OK);
    }
    if rows.is_empty() {
        println!("no enrolled nodes");
    }
    for row in rows {
        let verdict = row["last_verdict"].as_str().unwrap_or("never attested");
        let reasons: Vec<&str> = row["last_reasons"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
            .unwrap_or_default();
        println!(
            "{:<24} {:<16} {}",
            row["addr"].as_str().unwrap_or("?"),
            verdict,
            reasons.join(", ")
        );
    }
    Ok(EXIT_OK)
}
