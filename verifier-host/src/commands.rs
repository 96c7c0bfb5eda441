//! The verifier's commands (the CLI in `main.rs` only parses arguments).
//!
//! Exit codes: [`EXIT_OK`] trusted / done, [`EXIT_UNTRUSTED`] the node or
//! evidence is not trusted (or enrolment was refused), [`EXIT_ERROR`] usage,
//! I/O, network or state errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use avm_attest::eventlog::EventLog;
use avm_attest::policy::ReferenceValues;
use avm_attest::tpm::object_attr;
use avm_attest::verify::DEFAULT_REQUIRED_PCRS;
use openssl::sha::sha256;

use crate::appraise::{AppraisalInput, appraise};
use crate::client::NodeClient;
use crate::credential::make_credential;
use crate::crypto::OpenSslVerifier;
use crate::ek::{EkTrustAnchors, validate_ek};
use crate::evidence_dir;
use crate::hex;
use crate::report::{Report, ReportReason};
use crate::store::{NodeRecord, Store, VerdictRecord, now};
use crate::tpm_public::TpmPublic;

pub const EXIT_OK: u8 = 0;
pub const EXIT_UNTRUSTED: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Length of the random nonce `attest` sends by default.
pub const NONCE_LEN: usize = 32;

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
    pub timeout: Duration,
}

impl Context {
    fn store(&self) -> Result<Store, CommandError> {
        Store::open(&self.state_dir).map_err(err)
    }
}

/// Loads the policy: `--policy FILE` if given, else the stored one.
pub(crate) fn load_policy(
    store: &Store,
    override_file: Option<&Path>,
) -> Result<Option<ReferenceValues>, CommandError> {
    let text = match override_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| CommandError(format!("{}: {e}", path.display())))?,
        ),
        None => store.policy().map_err(err)?,
    };
    text.map(|t| toml::from_str(&t).map_err(|e| CommandError(format!("policy: {e}"))))
        .transpose()
}

/// Prints the report and gives the exit code its verdict calls for.
fn print_verdict(report: &Report, json: bool) -> u8 {
    print_report(report, json);
    if report.trusted() {
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

/// `enroll ADDR --ek-ca FILE`.
pub fn enroll(ctx: &Context, addr: &str, ek_ca: &Path) -> Result<u8, CommandError> {
    let anchors = EkTrustAnchors::from_pem_file(ek_ca).map_err(err)?;
    let mut store = ctx.store()?;
    let mut client = NodeClient::connect(addr, ctx.timeout).map_err(err)?;
    let hello = client.hello().map_err(err)?;
    let refuse = |code: &str, message: String| {
        println!("{addr}: enrolment REFUSED\n  - {code}: {message}");
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
    if ak.object_attributes & AK_ATTRIBUTES != AK_ATTRIBUTES {
        return refuse(
            "ak-attributes",
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

    store
        .enroll(&NodeRecord {
            addr: addr.into(),
            ek_public: ek.marshaled().to_vec(),
            ek_certificate: hello.ek_certificate.clone(),
            ak_public: ak.marshaled().to_vec(),
            ak_name: ak.name(),
            enrolled_at: now(),
            activation_proven: true,
        })
        .map_err(err)?;
    println!(
        "{addr}: enrolled\n  EK certificate: trusted ({})\n  AK name: {}\n  credential activation: passed",
        ek_ca.display(),
        hex::encode(&ak.name())
    );
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
    let mut store = ctx.store()?;
    let policy = load_policy(&store, opts.policy.as_deref())?;
    let record = |store: &mut Store, report: &Report| {
        store.record_verdict(&VerdictRecord {
            addr: addr.into(),
            at: now(),
            verdict: report.verdict.clone(),
            reasons: report.reasons.iter().map(|r| r.code.clone()).collect(),
        })
    };

    let Some(node) = store.node(addr).map_err(err)? else {
        // Not enrolled: nothing it says could be tied to a trusted TPM.
        let report = Report::new(
            Some(addr.into()),
            None,
            vec![ReportReason::new(
                "unknown-node",
                "the node is not enrolled (run `avm-verifier enroll` first)",
            )],
            &[],
            &[],
            &[],
        );
        print_report(&report, opts.json);
        return Ok(EXIT_UNTRUSTED);
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
        extra.push(ReportReason::new(
            "ak-not-activated",
            "the node's AK is not the one that passed credential activation at enrolment",
        ));
    }
    if hello.ek.public != node.ek_public {
        extra.push(ReportReason::new(
            "ek-changed",
            "the node's EK differs from the one enrolled",
        ));
    }
    let evidence = client
        .challenge(&nonce, DEFAULT_REQUIRED_PCRS)
        .map_err(err)?;
    let verifier = OpenSslVerifier::new().map_err(err)?;
    // Always the enrolled AK: a quote signed by any other key is refused.
    let report = appraise(
        &AppraisalInput::from_node(&evidence, &nonce, &enrolled_ak.key, &node.ak_name),
        policy.as_ref(),
        &verifier,
        Some(addr.into()),
        extra,
    );
    record(&mut store, &report).map_err(err)?;
    if let Some(dir) = &opts.export {
        evidence_dir::export(dir, &evidence, &enrolled_ak, &nonce, &report).map_err(err)?;
    }
    Ok(print_verdict(&report, opts.json))
}

/// `verify DIR`.
pub fn verify(
    ctx: &Context,
    dir: &Path,
    nonce: Option<Vec<u8>>,
    json: bool,
    policy_file: Option<&Path>,
) -> Result<u8, CommandError> {
    let loaded = evidence_dir::load(dir).map_err(err)?;
    let policy = match policy_file {
        Some(_) => load_policy(&Store::open(&ctx.state_dir).map_err(err)?, policy_file)?,
        // The stored policy, if a state database exists (verify is offline
        // and must not need one).
        None if ctx.state_dir.join(crate::store::DATABASE_FILE).exists() => {
            load_policy(&ctx.store()?, None)?
        }
        None => None,
    };
    let Some(nonce) = nonce.or_else(|| loaded.nonce.clone()) else {
        return Err(CommandError(
            "no nonce: pass --nonce HEX or put nonce.hex in the directory".into(),
        ));
    };
    let verifier = OpenSslVerifier::new().map_err(err)?;
    let report = appraise(
        &AppraisalInput {
            attest: &loaded.attest,
            signature: &loaded.signature,
            pcrs: &loaded.pcrs,
            event_log: loaded.event_log.as_deref(),
            nonce: &nonce,
            ak: &loaded.ak,
            ak_name: &loaded.ak_name,
        },
        policy.as_ref(),
        &verifier,
        Some(dir.display().to_string()),
        Vec::new(),
    );
    Ok(print_verdict(&report, json))
}

/// `policy init`: allowed A-VM images, from image files and/or digests.
pub fn policy_init(
    ctx: &Context,
    images: &[PathBuf],
    digests: &[String],
) -> Result<u8, CommandError> {
    let mut policy = ReferenceValues::default();
    for image in images {
        let bytes =
            std::fs::read(image).map_err(|e| CommandError(format!("{}: {e}", image.display())))?;
        policy.allow_image(sha256(&bytes));
    }
    for digest in digests {
        let d = avm_attest::policy::parse_hex32(digest)
            .ok_or_else(|| CommandError(format!("not a SHA-256 digest: {digest}")))?;
        policy.allow_image(d);
    }
    if policy.avm_image_sha256.is_empty() {
        return Err(CommandError(
            "give at least one --avm-image FILE or --avm-image-sha256 HEX".into(),
        ));
    }
    let text = toml::to_string_pretty(&policy).map_err(err)?;
    ctx.store()?.set_policy(&text).map_err(err)?;
    print!("{text}");
    Ok(EXIT_OK)
}

/// `policy learn ADDR`: adds the firmware events of an enrolled node's
/// authenticated event log to the stored policy.
pub fn policy_learn(ctx: &Context, addr: &str) -> Result<u8, CommandError> {
    let mut store = ctx.store()?;
    let mut policy = load_policy(&store, None)?.ok_or_else(|| {
        CommandError("no policy yet: run `avm-verifier policy init --avm-image FILE` first".into())
    })?;
    let node = store
        .node(addr)
        .map_err(err)?
        .ok_or_else(|| CommandError(format!("{addr} is not enrolled")))?;
    let ak = TpmPublic::parse(&node.ak_public).map_err(err)?;
    let nonce = random_nonce()?;
    let mut client = NodeClient::connect(addr, ctx.timeout).map_err(err)?;
    client.hello().map_err(err)?;
    let evidence = client
        .challenge(&nonce, DEFAULT_REQUIRED_PCRS)
        .map_err(err)?;
    let verifier = OpenSslVerifier::new().map_err(err)?;
    let report = appraise(
        &AppraisalInput::from_node(&evidence, &nonce, &ak.key, &node.ak_name),
        Some(&policy),
        &verifier,
        Some(addr.into()),
        Vec::new(),
    );
    // Learn only from a log the quote authenticates and whose PCR 0 is an
    // allowed image: unknown events and missing ones are what we learn.
    let learnable =
        |code: &str| matches!(code, "firmware-event-unknown" | "reference-values-missing");
    if report.reasons.iter().any(|r| !learnable(&r.code)) {
        print!("{}", report.human());
        return Err(CommandError(
            "refusing to learn from evidence that does not verify".into(),
        ));
    }
    // PCR 0's events are genuine only if its replay from an allowed image
    // gave the quoted value; a policy without images never says so.
    if report.avm_image_sha256.is_none() {
        print!("{}", report.human());
        return Err(CommandError(
            "refusing to learn: PCR 0 does not match an A-VM image allowed by the policy".into(),
        ));
    }
    let log = EventLog::parse(&evidence.event_log)
        .map_err(|_| CommandError("the event log does not parse".into()))?;
    let added = policy.learn_from(&log);
    let text = toml::to_string_pretty(&policy).map_err(err)?;
    store.set_policy(&text).map_err(err)?;
    println!(
        "{addr}: learned {added} new firmware events ({} in the policy)",
        policy.firmware_events.len()
    );
    Ok(EXIT_OK)
}

/// `policy show`.
pub fn policy_show(ctx: &Context) -> Result<u8, CommandError> {
    match ctx.store()?.policy().map_err(err)? {
        Some(text) => print!("{text}"),
        None => println!("# no policy: run `avm-verifier policy init --avm-image FILE`"),
    }
    Ok(EXIT_OK)
}

/// `nodes`.
pub fn nodes(ctx: &Context, json: bool) -> Result<u8, CommandError> {
    let store = ctx.store()?;
    let mut rows = Vec::new();
    for node in store.nodes().map_err(err)? {
        let last = store.last_verdict(&node.addr).map_err(err)?;
        rows.push(serde_json::json!({
            "addr": node.addr,
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
