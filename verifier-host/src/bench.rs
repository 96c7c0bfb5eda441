//! Measurements for `make bench` (the `avm-bench` binary): attestation
//! round trips against a live node, verification throughput on one core,
//! and the wall time of a command (one `tpm2_quote` run) to compare with.
//!
//! Benchmarks report; they never judge. The numbers are printed as
//! `key=value` lines for scripts/bench.sh.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use avm_attest::policy::ReferenceValues;
use avm_attest::verify::{
    DEFAULT_REQUIRED_PCRS, EvidenceInput, SignatureVerifier, verify_evidence,
};

use crate::appraise::{AppraisalInput, PreparedPolicy, appraise};
use crate::client::NodeClient;
use crate::commands::NONCE_LEN;
use crate::crypto::OpenSslVerifier;
use crate::evidence_dir;
use crate::store::{NodeRecord, Store};
use crate::tpm_public::TpmPublic;

/// Why a measurement could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

fn fail(context: &str) -> impl FnOnce(String) -> BenchError + '_ {
    move |e| BenchError(format!("{context}: {e}"))
}

/// Distribution of a set of timings (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    pub samples: usize,
    pub min: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl LatencySummary {
    /// `None` for no samples.
    pub fn from_samples(mut samples: Vec<Duration>) -> Option<Self> {
        samples.sort_unstable();
        let (first, last) = (*samples.first()?, *samples.last()?);
        let total: Duration = samples.iter().sum();
        Some(Self {
            samples: samples.len(),
            min: first,
            p50: nearest_rank(&samples, 50),
            p99: nearest_rank(&samples, 99),
            max: last,
            mean: total / u32::try_from(samples.len()).unwrap_or(u32::MAX),
        })
    }

    /// `key.stat_ms=value` lines.
    pub fn key_values(&self, key: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{key}.samples={}\n{key}.min_ms={:.3}\n{key}.p50_ms={:.3}\n{key}.p99_ms={:.3}\n{key}.max_ms={:.3}\n{key}.mean_ms={:.3}\n",
            self.samples,
            ms(self.min),
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            ms(self.mean)
        )
    }
}

/// The `percent`th percentile of sorted, non-empty `samples`: the
/// smallest sample with at least `percent`% of all samples at or below it.
fn nearest_rank(sorted: &[Duration], percent: usize) -> Duration {
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Everything needed to appraise one enrolled node, loaded once.
#[derive(Debug)]
pub struct EnrolledNode {
    pub addr: String,
    pub record: NodeRecord,
    pub ak: TpmPublic,
    /// The stored policy without its Mon-VM profiles: what the round
    /// trips appraise a firmware quote against ([`firmware_quote_input`]:
    /// no measurement log is fetched, so the Mon-VM part, which `attest`
    /// checks, is not asked for).
    pub policy: Option<PreparedPolicy<'static>>,
}

impl EnrolledNode {
    /// The node `addr` and the policy from the verifier state in `state`.
    pub fn load(state: &Path, addr: &str) -> Result<Self, BenchError> {
        let store = Store::open(state).map_err(|e| fail("state")(e.to_string()))?;
        let record = store
            .node(addr)
            .map_err(|e| fail("state")(e.to_string()))?
            .ok_or_else(|| BenchError(format!("{addr} is not enrolled in {}", state.display())))?;
        let ak = TpmPublic::parse(&record.ak_public).map_err(|e| fail("AK")(e.to_string()))?;
        Ok(Self {
            addr: addr.into(),
            record,
            ak,
            policy: crate::commands::load_prepared_policy(Some(&store), None)
                .map_err(|e| BenchError(e.0))?
                .map(|policy| {
                    let mut values = policy.values().clone();
                    values.monvm_profiles.clear();
                    PreparedPolicy::owned(values)
                }),
        })
    }
}

/// The round trips' appraisal input: a quote of the firmware PCRs only
/// (the quote round trip `tpm2_quote` is compared with; no measurement
/// log is fetched), so only those are required, and the policy's Mon-VM
/// profiles are left out ([`EnrolledNode::policy`]). `attest` asks for and
/// requires [`avm_attest::verify::ATTEST_PCRS`] and fetches the log.
fn firmware_quote_input<'a>(
    evidence: &'a avm_attest::wire::Evidence,
    nonce: &'a [u8],
    node: &'a EnrolledNode,
) -> AppraisalInput<'a> {
    let mut input = AppraisalInput::from_node(evidence, nonce, &node.ak.key, &node.record.ak_name);
    input.evidence.required_pcrs = DEFAULT_REQUIRED_PCRS;
    input
}

/// The policy kept in the verifier state in `state`, if any.
pub fn load_policy(state: &Path) -> Result<Option<PreparedPolicy<'static>>, BenchError> {
    let store = Store::open(state).map_err(|e| fail("state")(e.to_string()))?;
    crate::commands::load_prepared_policy(Some(&store), None).map_err(|e| BenchError(e.0))
}

/// How the round trips use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundTripMode {
    /// Connect, Hello (AK check), Challenge, verify; close. What `attest`
    /// does, minus process start and the database.
    ConnectionPerRound,
    /// One connection and Hello, then Challenge + verify per round.
    PersistentConnection,
}

/// Round-trip timings: the total, challenge to verdict, and its phases
/// (connect and Hello only in [`RoundTripMode::ConnectionPerRound`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundTrips {
    pub total: LatencySummary,
    pub connect: Option<LatencySummary>,
    pub hello: Option<LatencySummary>,
    /// Challenge sent to Evidence received.
    pub challenge: LatencySummary,
    /// Evidence received to verdict.
    pub verify: LatencySummary,
}

impl RoundTrips {
    /// `key.stat_ms=value` lines, phases as `key.PHASE.stat_ms`.
    pub fn key_values(&self, key: &str) -> String {
        let mut out = self.total.key_values(key);
        let phases = [
            ("connect", self.connect),
            ("hello", self.hello),
            ("challenge", Some(self.challenge)),
            ("verify", Some(self.verify)),
        ];
        for (phase, summary) in phases {
            if let Some(summary) = summary {
                out.push_str(&summary.key_values(&format!("{key}.{phase}")));
            }
        }
        out
    }
}

/// Challenge to verdict, `rounds` times; every verdict must be trusted
/// (a bench of refusals would measure something else).
pub fn attestation_round_trips(
    node: &EnrolledNode,
    mode: RoundTripMode,
    rounds: usize,
    timeout: Duration,
) -> Result<RoundTrips, BenchError> {
    let verifier = OpenSslVerifier::new().map_err(|e| fail("OpenSSL")(e.to_string()))?;
    // Connect and Hello (checking the AK), timed separately.
    let connect = || -> Result<(NodeClient, Duration, Duration), BenchError> {
        let started = Instant::now();
        let mut client =
            NodeClient::connect(&node.addr, timeout).map_err(|e| fail("connect")(e.to_string()))?;
        let connected = started.elapsed();
        let hello = client.hello().map_err(|e| fail("Hello")(e.to_string()))?;
        if hello.ak.public != node.record.ak_public {
            return Err(BenchError("the node's AK is not the enrolled one".into()));
        }
        Ok((client, connected, started.elapsed() - connected))
    };
    let mut persistent = match mode {
        RoundTripMode::PersistentConnection => Some(connect()?.0),
        RoundTripMode::ConnectionPerRound => None,
    };
    let mut total = Vec::with_capacity(rounds);
    let (mut connects, mut hellos) = (Vec::new(), Vec::new());
    let (mut challenges, mut verifies) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    let mut nonce = [0u8; NONCE_LEN];
    for round in 0..rounds {
        let started = Instant::now();
        openssl::rand::rand_bytes(&mut nonce).map_err(|e| fail("nonce")(e.to_string()))?;
        let mut fresh = None;
        let client = match persistent.as_mut() {
            Some(client) => client,
            None => {
                let (client, connected, hello) = connect()?;
                connects.push(connected);
                hellos.push(hello);
                fresh.insert(client)
            }
        };
        client.renew_deadline();
        let challenged = Instant::now();
        let evidence = client
            .challenge(&nonce, DEFAULT_REQUIRED_PCRS)
            .map_err(|e| fail("challenge")(e.to_string()))?;
        let received = Instant::now();
        challenges.push(received - challenged);
        let report = appraise(
            &firmware_quote_input(&evidence, &nonce, node),
            node.policy.as_ref(),
            &verifier,
            None,
            Vec::new(),
        )
        .report;
        verifies.push(received.elapsed());
        total.push(started.elapsed());
        drop(fresh);
        if !report.trusted() {
            return Err(BenchError(format!(
                "round {round}: verdict untrusted ({})",
                report.codes().join(", ")
            )));
        }
    }
    let no_rounds = || BenchError("no rounds".into());
    Ok(RoundTrips {
        total: LatencySummary::from_samples(total).ok_or_else(no_rounds)?,
        connect: LatencySummary::from_samples(connects),
        hello: LatencySummary::from_samples(hellos),
        challenge: LatencySummary::from_samples(challenges).ok_or_else(no_rounds)?,
        verify: LatencySummary::from_samples(verifies).ok_or_else(no_rounds)?,
    })
}

/// What [`concurrent_attestations`] saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Concurrency {
    pub verifiers: usize,
    pub elapsed: Duration,
    /// Attestations that ended in a trusted verdict.
    pub trusted: u64,
    /// Attestations that ended otherwise (error or untrusted).
    pub failed: u64,
    /// Connections the clients had to open again after a refusal.
    pub retries: u64,
    /// Connect to verdict, per trusted attestation.
    pub latency: Option<LatencySummary>,
}

impl Concurrency {
    pub fn per_second(&self) -> f64 {
        self.trusted as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    pub fn key_values(&self, key: &str) -> String {
        let mut out = format!(
            "{key}.verifiers={}\n{key}.trusted={}\n{key}.failed={}\n{key}.retries={}\n{key}.per_s={:.1}\n",
            self.verifiers,
            self.trusted,
            self.failed,
            self.retries,
            self.per_second()
        );
        if let Some(latency) = &self.latency {
            out.push_str(&latency.key_values(&format!("{key}.latency")));
        }
        out
    }
}

/// `verifiers` threads attest the node for `duration`, each as `attest`
/// does (a connection per attestation: connect, Hello, Challenge,
/// verify), all at once.
pub fn concurrent_attestations(
    node: &EnrolledNode,
    verifiers: usize,
    duration: Duration,
    timeout: Duration,
) -> Result<Concurrency, BenchError> {
    let started = Instant::now();
    let results: Vec<(u64, u64, u64, Vec<Duration>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..verifiers.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let Ok(verifier) = OpenSslVerifier::new() else {
                        return (0, 1, 0, Vec::new());
                    };
                    let (mut trusted, mut failed, mut retries) = (0u64, 0u64, 0u64);
                    let mut latencies = Vec::new();
                    let mut nonce = [0u8; NONCE_LEN];
                    while started.elapsed() < duration {
                        let round = Instant::now();
                        let outcome = (|| -> Option<bool> {
                            openssl::rand::rand_bytes(&mut nonce).ok()?;
                            let mut client = NodeClient::connect(&node.addr, timeout).ok()?;
                            let hello = client.hello();
                            if hello.ok()?.ak.public != node.record.ak_public {
                                return Some(false);
                            }
                            let evidence = client.challenge(&nonce, DEFAULT_REQUIRED_PCRS);
                            retries += u64::from(client.retries);
                            let evidence = evidence.ok()?;
                            let input = firmware_quote_input(&evidence, &nonce, node);
                            Some(
                                appraise(&input, node.policy.as_ref(), &verifier, None, Vec::new())
                                    .report
                                    .trusted(),
                            )
                        })();
                        if outcome == Some(true) {
                            trusted += 1;
                            latencies.push(round.elapsed());
                        } else {
                            failed += 1;
                        }
                    }
                    (trusted, failed, retries, latencies)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or((0, 1, 0, Vec::new())))
            .collect()
    });
    let elapsed = started.elapsed();
    let mut out = Concurrency {
        verifiers,
        elapsed,
        trusted: 0,
        failed: 0,
        retries: 0,
        latency: None,
    };
    let mut latencies = Vec::new();
    for (trusted, failed, retries, mut l) in results {
        out.trusted += trusted;
        out.failed += failed;
        out.retries += retries;
        latencies.append(&mut l);
    }
    out.latency = LatencySummary::from_samples(latencies);
    Ok(out)
}

/// Verifications per second of exported evidence (`attest --export`),
/// full `verify_evidence` (signature, nonce, PCR digest, log replay,
/// reference values) on the calling thread for about `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    pub verifications: u64,
    pub elapsed: Duration,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.verifications as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// See [`Throughput`]; the evidence must verify as trusted under `policy`.
pub fn verification_throughput(
    dir: &Path,
    policy: Option<&ReferenceValues>,
    duration: Duration,
) -> Result<Throughput, BenchError> {
    let loaded = evidence_dir::load(dir).map_err(|e| fail("evidence")(e.to_string()))?;
    let nonce = loaded
        .nonce
        .clone()
        .ok_or_else(|| BenchError(format!("{}: no nonce.hex", dir.display())))?;
    let event_log = loaded
        .event_log
        .clone()
        .ok_or_else(|| BenchError(format!("{}: no event log", dir.display())))?;
    let ak = loaded
        .claimed_ak
        .clone()
        .ok_or_else(|| BenchError(format!("{}: no AK file", dir.display())))?;
    let input = EvidenceInput {
        attest: &loaded.attest,
        signature: &loaded.signature,
        pcrs: &loaded.pcrs,
        event_log: &event_log,
        nonce: &nonce,
        ak: ak.key().verifying_key(),
        required_pcrs: DEFAULT_REQUIRED_PCRS,
    };
    let verifier = OpenSslVerifier::new().map_err(|e| fail("OpenSSL")(e.to_string()))?;
    let verdict = verify_evidence(&input, policy, &verifier);
    if !verdict.trusted {
        return Err(BenchError(format!(
            "{}: the evidence is not trusted ({:?})",
            dir.display(),
            verdict.reasons.iter().map(|r| r.code()).collect::<Vec<_>>()
        )));
    }
    Ok(repeat_for(duration, || {
        verify_evidence(&input, policy, &verifier).trusted
    }))
}

/// Raw ECDSA P-256 verifications per second through the same
/// [`OpenSslVerifier`] (no evidence parsing), on one signature of the
/// evidence in `dir`: the cost of the signature alone.
pub fn signature_throughput(dir: &Path, duration: Duration) -> Result<Throughput, BenchError> {
    let loaded = evidence_dir::load(dir).map_err(|e| fail("evidence")(e.to_string()))?;
    let signature = avm_attest::tpm::Signature::parse(&loaded.signature)
        .map_err(|e| fail("signature")(format!("{e:?}")))?;
    let ak = loaded
        .claimed_ak
        .clone()
        .ok_or_else(|| BenchError(format!("{}: no AK file", dir.display())))?;
    let (
        crate::tpm_public::PublicKey::EccP256 { x, y },
        avm_attest::tpm::Signature::Ecdsa { r, s, .. },
    ) = (ak.key(), &signature)
    else {
        return Err(BenchError("not an ECDSA P-256 quote".into()));
    };
    let verifier = OpenSslVerifier::new().map_err(|e| fail("OpenSSL")(e.to_string()))?;
    let verify = || verifier.verify_ecdsa_p256_sha256(x, y, &loaded.attest, r, s);
    if !verify() {
        return Err(BenchError("the quote signature does not verify".into()));
    }
    Ok(repeat_for(duration, verify))
}

/// Runs `f` (which must keep returning true) until `duration` passed,
/// checking the clock every few calls.
fn repeat_for(duration: Duration, mut f: impl FnMut() -> bool) -> Throughput {
    const BATCH: u64 = 64;
    let started = Instant::now();
    let mut verifications = 0u64;
    let mut all_true = true;
    while started.elapsed() < duration {
        for _ in 0..BATCH {
            all_true &= f();
        }
        verifications += BATCH;
    }
    let elapsed = started.elapsed();
    // A result that changed on repetition would make the number meaningless.
    Throughput {
        verifications: if all_true { verifications } else { 0 },
        elapsed,
    }
}

/// Wall time of `runs` runs of a command (output discarded); every run
/// must succeed.
pub fn time_command(
    program: &str,
    args: &[String],
    runs: usize,
) -> Result<LatencySummary, BenchError> {
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        let started = Instant::now();
        let output = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| fail(program)(e.to_string()))?;
        samples.push(started.elapsed());
        if !output.status.success() {
            return Err(BenchError(format!(
                "{program} run {run} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    LatencySummary::from_samples(samples).ok_or_else(|| BenchError("no runs".into()))
}

/// Where [`ima_log_appraisal`] takes its allowlist from.
#[derive(Debug, Clone, Copy)]
pub enum ImaPolicySource<'a> {
    /// The directory's `runtime_policy.json`, imported in process.
    KeylimeJson,
    /// The policy kept in the verifier state in this directory, loaded
    /// as `attest` loads it.
    State(&'a Path),
    /// None: template hashes and replay only.
    None,
}

/// What [`ima_log_appraisal`] measured on one IMA list.
#[derive(Debug, Clone, PartialEq)]
pub struct ImaAppraisal {
    /// Records in the list.
    pub entries: usize,
    /// (path, digest) pairs in the allowlist.
    pub allowlist: usize,
    /// Reading the policy (importing the Keylime JSON, or loading the
    /// stored one) and preparing it (hash index of its paths), once.
    pub policy_load: Duration,
    /// Template-hash check, PCR 10 replay and allowlist appraisal of the
    /// whole list, per run (the list already in memory, as Keylime's
    /// timed section).
    pub appraisal: LatencySummary,
    /// The reason codes of the verdict (empty: every entry allowed and the
    /// list replays to the PCR 10 value).
    pub codes: Vec<String>,
}

impl ImaAppraisal {
    pub fn key_values(&self, key: &str) -> String {
        let mut out = format!(
            "{key}.entries={}\n{key}.allowlist={}\n{key}.policy_load_ms={:.3}\n{key}.verdict={}\n",
            self.entries,
            self.allowlist,
            self.policy_load.as_secs_f64() * 1e3,
            if self.codes.is_empty() {
                "pass".to_string()
            } else {
                format!("fail:{}", self.codes.join(","))
            }
        );
        out.push_str(&self.appraisal.key_values(&format!("{key}.appraise")));
        out
    }
}

/// The verifier's appraisal of a Linux IMA list (`gen_ima_log.py`'s
/// directory: `binary_runtime_measurements`, `runtime_policy.json`,
/// `pcrs-sha256`) against its Keylime runtime policy: the same code
/// `attest` runs on the PCR 10 entries (`appraise::check_and_appraise_while`:
/// template hashes, replay to the quoted PCR, every entry against the
/// allowlist). As `attest` does, the policy loads on a thread of its own,
/// the list is read meanwhile (as `attest` asks the node for it) and
/// replayed while the load finishes; that first pass gives the verdict. Then, if `runs` is above 1, `runs` timed passes with
/// the policy loaded (the one pass is timed otherwise). Without
/// `allowlist` the policy is not read: template hashes and replay only,
/// the work of `evmctl ima_measurement --pcrs` (the code `attest` runs
/// for a policy without a Mon-VM allowlist).
pub fn ima_log_appraisal(
    dir: &Path,
    runs: usize,
    policy: ImaPolicySource<'_>,
) -> Result<ImaAppraisal, BenchError> {
    use crate::appraise::{LogVerdict, check_and_appraise_prepared, check_and_appraise_while};
    use avm_attest::wire::PcrValue;

    let read = |name: &str| {
        read_on_two_threads(&dir.join(name))
            .map_err(|e| BenchError(format!("{}/{name}: {e}", dir.display())))
    };
    let load = || -> Result<(Option<PreparedPolicy<'static>>, Duration), BenchError> {
        let started = Instant::now();
        let prepared = match policy {
            ImaPolicySource::KeylimeJson => {
                let policy_json = read("runtime_policy.json")?;
                let import = crate::allowlist::import_keylime(&policy_json)
                    .map_err(|e| BenchError(format!("runtime_policy.json: {e}")))?;
                Some(PreparedPolicy::owned(ReferenceValues {
                    monvm_files: import.files,
                    ..ReferenceValues::default()
                }))
            }
            ImaPolicySource::State(state) => Some(
                load_policy(state)?
                    .ok_or_else(|| BenchError(format!("{}: no policy stored", state.display())))?,
            ),
            ImaPolicySource::None => None,
        };
        Ok((prepared, started.elapsed()))
    };
    let read_list = || -> Result<(Vec<u8>, [PcrValue; 1]), BenchError> {
        let log = read("binary_runtime_measurements")?;
        let pcrs = String::from_utf8(read("pcrs-sha256")?)
            .map_err(|_| BenchError("pcrs-sha256: not UTF-8".into()))?;
        let pcr10 = pcrs
            .lines()
            .find_map(|l| l.strip_prefix("PCR-10: "))
            .and_then(|hex| avm_attest::hex::decode_array::<32>(hex.trim()).ok())
            .ok_or_else(|| BenchError("pcrs-sha256: no PCR-10 line".into()))?;
        Ok((
            log,
            [PcrValue {
                index: 10,
                digest: pcr10,
            }],
        ))
    };
    let outcome = |checked: LogVerdict| match checked {
        (Err(reason), _) => (vec![reason.code().to_string()], 0),
        (Ok(check), appraisal) => {
            let mut codes: Vec<String> = appraisal
                .iter()
                .flat_map(|a| a.reasons())
                .map(|r| r.code().to_string())
                .collect();
            if check.after_quote > 0 {
                codes.push("records-after-the-quote".into());
            }
            codes.dedup();
            (codes, check.proven + check.after_quote)
        }
    };
    std::thread::scope(|scope| {
        let loading = scope.spawn(load);
        let wait = || {
            loading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        let (log, quoted) = match read_list() {
            Ok(list) => list,
            Err(e) => {
                // The load's own error, if any, is the lesser news.
                let _ = wait();
                return Err(e);
            }
        };
        let started = Instant::now();
        let (checked, (prepared, policy_load)) =
            check_and_appraise_while(Some(&log), &quoted, wait, |(p, _)| p.as_ref())?;
        let (codes, entries) = outcome(checked);
        let samples = if runs > 1 {
            (0..runs)
                .map(|_| {
                    let started = Instant::now();
                    let checked =
                        check_and_appraise_prepared(Some(&log), &quoted, prepared.as_ref());
                    std::hint::black_box(outcome(checked));
                    started.elapsed()
                })
                .collect()
        } else {
            vec![started.elapsed()]
        };
        Ok(ImaAppraisal {
            entries,
            allowlist: prepared.as_ref().map_or(0, PreparedPolicy::allowlist_len),
            policy_load,
            appraisal: LatencySummary::from_samples(samples)
                .ok_or_else(|| BenchError("no runs".into()))?,
            codes,
        })
    })
}

/// `std::fs::read`, a half of the file on each of two threads: a large
/// list's read is mostly page faults and the copy into the new buffer,
/// which then proceed on two cores (the whole-process figures read
/// 13 MB before the appraisal can start).
fn read_on_two_threads(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::FileExt;

    let mut file = std::fs::File::open(path)?;
    let Ok(len) = usize::try_from(file.metadata()?.len()) else {
        return std::fs::read(path);
    };
    if len < 1 << 20 {
        let mut out = Vec::with_capacity(len);
        file.read_to_end(&mut out)?;
        return Ok(out);
    }
    let mut out = vec![0u8; len];
    let (first, second) = out.split_at_mut(len / 2);
    let halves = std::thread::scope(|scope| {
        let file = &file;
        let other = scope.spawn(move || file.read_exact_at(second, (len / 2) as u64));
        let mine = file.read_exact_at(first, 0);
        let other = other
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        mine.and(other)
    });
    match halves {
        Ok(()) => {
            // Whatever was appended since the length was read.
            file.seek(SeekFrom::Start(len as u64))?;
            file.read_to_end(&mut out)?;
            Ok(out)
        }
        // Shorter than it was: read it as std::fs::read does.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => std::fs::read(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_read_on_two_threads_is_the_file() {
        let dir = std::env::temp_dir().join(format!("avm-bench-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for len in [0, 1, 1000, (1 << 20) - 1, 1 << 20, (3 << 20) + 7] {
            let path = dir.join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            assert_eq!(read_on_two_threads(&path).unwrap(), data, "{len}");
        }
        assert!(read_on_two_threads(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=200).rev().map(ms).collect();
        let s = LatencySummary::from_samples(samples).unwrap();
        assert_eq!(
            (s.min, s.p50, s.p99, s.max),
            (ms(1), ms(100), ms(198), ms(200))
        );
        assert_eq!(s.mean, Duration::from_micros(100_500));
        assert_eq!(s.samples, 200);

        let one = LatencySummary::from_samples(vec![ms(7)]).unwrap();
        assert_eq!((one.p50, one.p99), (ms(7), ms(7)));
        let two = LatencySummary::from_samples(vec![ms(9), ms(3)]).unwrap();
        assert_eq!((two.p50, two.p99), (ms(3), ms(9)));
        assert_eq!(LatencySummary::from_samples(Vec::new()), None);
    }

    #[test]
    fn key_values_are_in_milliseconds() {
        let s = LatencySummary::from_samples(vec![ms(2), ms(4)]).unwrap();
        let text = s.key_values("rt");
        assert!(text.contains("rt.p50_ms=2.000\n"), "{text}");
        assert!(text.contains("rt.p99_ms=4.000\n"), "{text}");
        assert!(text.contains("rt.samples=2\n"), "{text}");
    }

    #[test]
    fn repeat_for_counts_only_consistent_results() {
        let t = repeat_for(ms(5), || true);
        assert!(t.verifications >= 64 && t.per_second() > 0.0);
        let mut flip = false;
        let t = repeat_for(ms(5), || {
            flip = !flip;
            flip
        });
        assert_eq!(t.verifications, 0);
    }

    #[test]
    fn time_command_reports_failures() {
        let s = time_command("true", &[], 3).unwrap();
        assert_eq!(s.samples, 3);
        assert!(time_command("false", &[], 1).is_err());
        assert!(time_command("/nonexistent/program", &[], 1).is_err());
    }
}
