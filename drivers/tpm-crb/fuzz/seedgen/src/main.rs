//! Regenerates the fuzz seeds that come from a live TPM: it provisions a
//! swtpm (EK certificates, as `avm-qemu` does), talks to it through
//! `tpm-crb` over swtpm's socket and records every response frame, then
//! writes
//!
//! - `drivers/tpm-crb/fuzz/seeds/commands/`: per command-layer call, its
//!   selector byte and the TPM's responses (a replayable conversation);
//! - `drivers/tpm-crb/fuzz/seeds/response/`: each distinct response frame
//!   behind the selector of its parser;
//! - `attest/fuzz/seeds/{frame,attest,verify,eventlog}/`: wire frames
//!   (`encode_frame`) of real requests and responses, the quote's
//!   TPMS_ATTEST / TPMT_SIGNATURE / TPMT_PUBLIC / TPML_PCR_SELECTION,
//!   evidence in the `verify` target's layout, the SeaBIOS event log;
//! - `net/fuzz/seeds/session/`: real request streams (chunk-size byte first);
//! - `verifier-host/fuzz/seeds/tpm_public/`: the EK and AK public areas.
//!
//! Usage: `avm-fuzz-seedgen REPO_ROOT` (run by `scripts/fuzz-seeds.sh`).
//! Seed directories it writes are emptied first.

#[path = "../../shared/mod.rs"]
#[allow(dead_code)]
mod shared;

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use avm_attest::eventlog::EventLog;
use avm_attest::wire::{
    self, ErrorCode, Evidence, HelloInfo, KeyAlgorithm, KeyInfo, PROTOCOL_VERSION, PcrValue,
    Request, Response,
};
use avm_qemu::layout::StateLayout;
use avm_qemu::provision::provision_tpm;
use avm_qemu::swtpm::{Swtpm, SwtpmConfig};
use tpm_crb::response::{parse_create_primary, parse_make_credential, parse_quote};
use tpm_crb::{LoadedKey, SwtpmSocket, Tpm, TpmTransport, TransportError};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// `?` for the `no_std` crates' errors, which are `Debug` only.
trait OrFail<T> {
    fn or_fail(self) -> Result<T>;
}

impl<T, E: std::fmt::Debug> OrFail<T> for std::result::Result<T, E> {
    fn or_fail(self) -> Result<T> {
        self.map_err(|e| format!("{e:?}").into())
    }
}

/// A transport that passes frames to swtpm and keeps a copy of each
/// exchange.
struct Recorder {
    inner: SwtpmSocket,
    exchanges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TpmTransport for Recorder {
    fn transact(
        &mut self,
        command: &[u8],
        response: &mut [u8],
    ) -> std::result::Result<usize, TransportError> {
        let len = self.inner.transact(command, response)?;
        self.exchanges
            .push((command.to_vec(), response[..len].to_vec()));
        Ok(len)
    }
}

fn command_code(command: &[u8]) -> u32 {
    command
        .get(6..10)
        .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

struct Seeds {
    root: PathBuf,
}

impl Seeds {
    fn dir(&self, crate_dir: &str, target: &str) -> Result<PathBuf> {
        let dir = self.root.join(crate_dir).join("fuzz/seeds").join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

fn write(dir: &Path, name: &str, parts: &[&[u8]]) -> Result<()> {
    fs::write(dir.join(name), parts.concat())?;
    Ok(())
}

/// One recorded command-layer call: its (command, response) frames and
/// whether it succeeded live.
struct Call {
    name: String,
    selector: u8,
    exchanges: Vec<(Vec<u8>, Vec<u8>)>,
    ok: bool,
}

/// The session so far: every recorded call with its selector.
struct Session {
    tpm: Tpm<Recorder>,
    calls: Vec<Call>,
}

impl Session {
    /// Makes call `selector` through the shared call table, recording the
    /// TPM's answers under `name`; returns the response frames.
    fn record(&mut self, name: &str, selector: u8, ctx: &shared::Context) -> Vec<Vec<u8>> {
        self.tpm.transport_mut().exchanges.clear();
        let ok = shared::call(&mut self.tpm, selector, ctx);
        let exchanges = std::mem::take(&mut self.tpm.transport_mut().exchanges);
        eprintln!(
            "seedgen: {name}: {} exchange(s), {}",
            exchanges.len(),
            if ok { "ok" } else { "failed (recorded as is)" }
        );
        let frames = exchanges.iter().map(|(_, r)| r.clone()).collect();
        self.calls.push(Call {
            name: name.to_owned(),
            selector,
            exchanges,
            ok,
        });
        frames
    }
}

fn selector(call: &str) -> u8 {
    let index = shared::CALLS
        .iter()
        .position(|c| *c == call)
        .expect("known call");
    u8::try_from(index).expect("fewer than 256 calls")
}

fn last_key(frames: &[Vec<u8>]) -> Result<LoadedKey> {
    let frame = frames.last().ok_or("no response")?;
    parse_create_primary(frame).or_fail()
}

fn main() -> Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: avm-fuzz-seedgen REPO_ROOT")?,
    );
    let root = fs::canonicalize(root)?;
    let work = std::env::temp_dir().join(format!("avm-fuzz-seedgen-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let result = run(&root, &work);
    let _ = fs::remove_dir_all(&work);
    result
}

fn run(root: &Path, work: &Path) -> Result<()> {
    // A TPM as avm-qemu makes it: manufactured by swtpm_setup with EK
    // certificates from a local CA, then INIT over the control channel
    // (as QEMU does); TPM2_Startup is ours, as it is the firmware's.
    let layout = StateLayout::new(work)?;
    provision_tpm(&layout)?;
    let socket = work.join("tpm.sock");
    let mut config = SwtpmConfig::for_host_tools(layout.tpm_state(), &socket);
    config.startup_clear = false;
    let process = Swtpm::spawn(&config)?;
    process.ctrl_channel()?.init()?;
    let tpm = Tpm::new(Recorder {
        inner: SwtpmSocket::connect(&socket)?,
        exchanges: Vec::new(),
    });
    let mut s = Session {
        tpm,
        calls: Vec::new(),
    };
    let none = shared::Context::default();

    s.record("startup_clear", selector("startup_clear"), &none);
    s.record(
        "startup_clear-already-started",
        selector("startup_clear"),
        &none,
    );
    s.record("properties", selector("properties"), &none);
    let random = s.record("get_random_48", selector("get_random_48"), &none);
    s.record("pcr_read_all_24", selector("pcr_read_all_24"), &none);
    s.record("pcr_extend_16", selector("pcr_extend_16"), &none);
    s.record(
        "read_public_persistent_ek",
        selector("read_public_persistent_ek"),
        &none,
    );

    // RSA keys: recorded, one quote, flushed.
    let ek_rsa = last_key(&s.record("create_ek_rsa", selector("create_ek_rsa"), &none))?;
    s.tpm.flush_context(ek_rsa.handle).or_fail()?;
    let ak_rsa = last_key(&s.record("create_ak_rsa", selector("create_ak_rsa"), &none))?;
    let rsa_ctx = shared::Context {
        ak: ak_rsa.handle,
        ..none.clone()
    };
    let quote_rsa = s.record("quote_0_7-rsa", selector("quote_0_7"), &rsa_ctx);
    let quote_rsa = parse_quote(quote_rsa.last().ok_or("no quote")?).or_fail()?;
    s.tpm.flush_context(ak_rsa.handle).or_fail()?;

    // ECC keys, as the A-VM uses them.
    let ek = last_key(&s.record("create_ek_ecc", selector("create_ek_ecc"), &none))?;
    let ak = last_key(&s.record("create_ak_ecc", selector("create_ak_ecc"), &none))?;
    let mut ctx = shared::Context {
        ak: ak.handle,
        ek: ek.handle,
        ak_name: ak.name.to_vec(),
        ..none.clone()
    };
    let pcrs = s.record("pcr_read_0_7", selector("pcr_read_0_7"), &ctx);
    let quote = s.record("quote_0_7-ecc", selector("quote_0_7"), &ctx);
    let quote = parse_quote(quote.last().ok_or("no quote")?).or_fail()?;
    let made = s.record("make_credential", selector("make_credential"), &ctx);
    ctx.credential = parse_make_credential(made.last().ok_or("no credential")?).or_fail()?;
    let activated = s.record("activate_credential", selector("activate_credential"), &ctx);
    let secret = tpm_crb::response::parse_activate_credential(activated.last().ok_or("no secret")?)
        .or_fail()?;
    let mut wrong = ctx.clone();
    if let Some(b) = wrong.credential.blob.last_mut() {
        *b ^= 1;
    }
    s.record(
        "activate_credential-tampered",
        selector("activate_credential"),
        &wrong,
    );
    let cert_rsa = s.record(
        "nv_read_ek_cert_rsa",
        selector("nv_read_ek_cert_rsa"),
        &none,
    );
    let cert_ecc = s.record(
        "nv_read_ek_cert_ecc",
        selector("nv_read_ek_cert_ecc"),
        &none,
    );
    s.record(
        "start_policy_session",
        selector("start_policy_session"),
        &none,
    );
    s.record("flush_context", selector("flush_context"), &ctx);
    s.record("quote_0_7-flushed-key", selector("quote_0_7"), &ctx);
    s.record("flush_context-flushed-key", selector("flush_context"), &ctx);
    drop(s.tpm);
    process.shut_down()?;

    let seeds = Seeds {
        root: root.to_owned(),
    };

    // tpm-crb: conversations per call, and each distinct response frame.
    let commands = seeds.dir("drivers/tpm-crb", "commands")?;
    let responses = seeds.dir("drivers/tpm-crb", "response")?;
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for Call {
        name,
        selector: sel,
        exchanges,
        ok: live_ok,
    } in &s.calls
    {
        let mut conversation = vec![*sel];
        for (command, response) in exchanges {
            conversation.extend_from_slice(response);
            let Some(parser) = shared::parser_selector(command_code(command)) else {
                continue;
            };
            let seed = [&[parser][..], response].concat();
            if !seen.contains(&seed) {
                let n = seen.iter().filter(|f| f[0] == parser).count();
                write(
                    &responses,
                    &format!("{}-{n}", shared::PARSERS[usize::from(parser)].name),
                    &[&seed],
                )?;
                seen.push(seed);
            }
        }
        // The fuzz target replays it with its own (fake) handles and blobs:
        // the outcome must be the live one, or the seed explores nothing.
        let mut replay = Tpm::new(shared::Replay {
            rest: &conversation[1..],
        });
        let replay_ok = shared::call(&mut replay, *sel, &none);
        if replay_ok != *live_ok {
            return Err(format!("{name}: replay outcome {replay_ok}, live {live_ok}").into());
        }
        write(&commands, name, &[&conversation])?;
    }
    // Two frames fed raw (selector bit 0x80): the header checks themselves.
    if let Some(seed) = seen
        .iter()
        .find(|f| shared::PARSERS[usize::from(f[0])].name == "quote")
    {
        write(
            &responses,
            "quote-raw",
            &[&[seed[0] | shared::RAW], &seed[1..]],
        )?;
    }
    if let Some(seed) = seen
        .iter()
        .find(|f| shared::PARSERS[usize::from(f[0])].name == "startup")
    {
        write(
            &responses,
            "startup-raw",
            &[&[seed[0] | shared::RAW], &seed[1..]],
        )?;
    }

    // Values for the other crates' seeds.
    let cert = |frames: &[Vec<u8>]| -> Vec<u8> {
        frames
            .iter()
            .skip(2)
            .filter_map(|f| tpm_crb::response::parse_nv_read(f).ok())
            .flat_map(|chunk| chunk.to_vec())
            .collect()
    };
    let ek_cert = cert(&cert_ecc);
    eprintln!(
        "seedgen: EK certificates {} (ECC) and {} (RSA) bytes",
        ek_cert.len(),
        cert(&cert_rsa).len()
    );
    let nonce: Vec<u8> = random
        .iter()
        .filter_map(|f| tpm_crb::response::parse_get_random(f).ok())
        .flat_map(|r| r.to_vec())
        .take(32)
        .collect();
    let (_, pcr_values) =
        tpm_crb::response::parse_pcr_read(pcrs.last().ok_or("no PCRs")?).or_fail()?;
    let pcr_values: Vec<PcrValue> = (0u8..)
        .zip(pcr_values)
        .map(|(index, digest)| PcrValue { index, digest })
        .collect();
    let data = root.join("attest/tests/data");
    let log_file = fs::read(data.join("seabios-eventlog.bin"))?;
    let log = log_file[..EventLog::parse(&log_file).or_fail()?.used_len()].to_vec();

    let key = |algorithm, key: &LoadedKey| KeyInfo {
        algorithm,
        public: key.public.as_bytes().to_vec(),
        name: key.name.to_vec(),
    };
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    let challenge = challenge_0_7(&nonce)?;
    let activate = Request::ActivateCredential {
        credential_blob: ctx.credential.blob.to_vec(),
        encrypted_secret: ctx.credential.secret.to_vec(),
    };
    let hello_info = Response::Hello(HelloInfo {
        version: PROTOCOL_VERSION,
        ek: key(KeyAlgorithm::EccP256, &ek),
        ek_certificate: ek_cert,
        ak: key(KeyAlgorithm::EccP256, &ak),
    });
    let evidence = Response::Evidence(Evidence {
        attest: quote.attest.to_vec(),
        signature: quote.signature.to_vec(),
        pcrs: pcr_values.clone(),
        event_log: log.clone(),
    });
    let activated = Response::CredentialActivated {
        secret: secret.to_vec(),
    };
    let no_hello = Response::Error {
        code: ErrorCode::NoHello,
        detail: "send Hello first".into(),
    };
    let f = |m: &dyn Fn() -> std::result::Result<Vec<u8>, wire::FrameError>| {
        m().map_err(|e| format!("{e:?}"))
    };
    let hello_f = f(&|| wire::encode_frame(&hello))?;
    let challenge_f = f(&|| wire::encode_frame(&challenge))?;
    let activate_f = f(&|| wire::encode_frame(&activate))?;

    let frame = seeds.dir("attest", "frame")?;
    write(&frame, "request-hello", &[&hello_f])?;
    write(&frame, "request-challenge", &[&challenge_f])?;
    write(&frame, "request-activate-credential", &[&activate_f])?;
    write(
        &frame,
        "requests-hello-challenge-activate",
        &[&hello_f, &challenge_f, &activate_f],
    )?;
    write(
        &frame,
        "response-hello",
        &[&f(&|| wire::encode_frame(&hello_info))?],
    )?;
    write(
        &frame,
        "response-evidence",
        &[&f(&|| wire::encode_frame(&evidence))?],
    )?;
    write(
        &frame,
        "response-credential-activated",
        &[&f(&|| wire::encode_frame(&activated))?],
    )?;
    write(
        &frame,
        "response-error-no-hello",
        &[&f(&|| wire::encode_frame(&no_hello))?],
    )?;

    // net session: what a verifier sends, arriving in chunks of the first
    // byte's size (1: byte by byte, 255: whole frames at once).
    let session = seeds.dir("net", "session")?;
    write(
        &session,
        "hello-challenge-whole",
        &[&[255], &hello_f, &challenge_f],
    )?;
    write(
        &session,
        "hello-challenge-bytewise",
        &[&[1], &hello_f, &challenge_f],
    )?;
    write(
        &session,
        "hello-activate-chunks-7",
        &[&[7], &hello_f, &activate_f],
    )?;
    write(
        &session,
        "challenge-before-hello",
        &[&[64], &challenge_f, &hello_f],
    )?;

    // attest: the TPM structures the verifier parses.
    let attest = seeds.dir("attest", "attest")?;
    write(&attest, "quote-ecc.attest", &[&quote.attest])?;
    write(&attest, "quote-ecc.signature", &[&quote.signature])?;
    write(&attest, "quote-rsa.attest", &[&quote_rsa.attest])?;
    write(&attest, "quote-rsa.signature", &[&quote_rsa.signature])?;
    write(&attest, "ak-ecc.public", &[ak.public.as_bytes()])?;
    write(&attest, "ak-rsa.tpm2b-public", &[&ak_rsa.public.to_tpm2b()])?;
    write(&attest, "ek-ecc.tpm2b-public", &[&ek.public.to_tpm2b()])?;
    write(&attest, "ek-rsa.public", &[ek_rsa.public.as_bytes()])?;
    // TPML_PCR_SELECTION as the driver sent it in TPM2_PCR_Read.
    if let Some((command, _)) = s
        .calls
        .iter()
        .find(|c| c.name == "pcr_read_0_7")
        .and_then(|c| c.exchanges.first())
    {
        write(&attest, "pcr-selection-0-7", &[&command[10..]])?;
    }

    // verifier-host: public areas as a node's Hello carries them.
    let public = seeds.dir("verifier-host", "tpm_public")?;
    write(&public, "ek-ecc", &[ek.public.as_bytes()])?;
    write(&public, "ek-rsa", &[ek_rsa.public.as_bytes()])?;
    write(&public, "ak-ecc", &[ak.public.as_bytes()])?;
    write(&public, "ak-rsa", &[ak_rsa.public.as_bytes()])?;

    // verify: [attest len][signature len][PCR count] attest signature
    // PCRs (index + digest) event log. The committed quote fixture is over
    // PCRs that replay the SeaBIOS log; the live one is not.
    let verify = seeds.dir("attest", "verify")?;
    let fixture_attest = fs::read(data.join("quote-ecc.msg"))?;
    let fixture_sig = fs::read(data.join("quote-ecc.sig"))?;
    let fixture_pcrs = read_pcrs_txt(&fs::read_to_string(data.join("pcrs.txt"))?)?;
    for (name, a, sig, pcrs) in [
        (
            "fixture-quote-ecc-seabios-log",
            &fixture_attest[..],
            &fixture_sig[..],
            &fixture_pcrs[..],
        ),
        (
            "swtpm-quote-ecc-seabios-log",
            &quote.attest[..],
            &quote.signature[..],
            &pcr_values[..],
        ),
    ] {
        let mut seed = vec![
            u8::try_from(a.len())?,
            u8::try_from(sig.len())?,
            u8::try_from(pcrs.len())?,
        ];
        seed.extend_from_slice(a);
        seed.extend_from_slice(sig);
        for p in pcrs {
            seed.push(p.index);
            seed.extend_from_slice(&p.digest);
        }
        seed.extend_from_slice(&log);
        write(&verify, name, &[&seed])?;
    }

    let eventlog = seeds.dir("attest", "eventlog")?;
    write(&eventlog, "seabios-eventlog", &[&log])?;
    eprintln!("seedgen: wrote seeds under {}", root.display());
    Ok(())
}

/// `Request::Challenge { nonce, pcr_mask: PCRs 0-7 }` (what avm-verifier
/// asks for), made by the wire decoder from its postcard body, so that this
/// does not depend on the Rust type of `pcr_mask` (a `u32`, or a newtype
/// serialized as one): variant 1, nonce length and bytes, varint 0xff.
fn challenge_0_7(nonce: &[u8]) -> Result<Request> {
    let mut body = vec![
        1,
        u8::try_from(nonce.len())
            .ok()
            .filter(|n| *n < 0x80)
            .ok_or("nonce")?,
    ];
    body.extend_from_slice(nonce);
    body.extend_from_slice(&[0xff, 0x01]);
    let request: Request = wire::decode_body(&body).or_fail()?;
    match request {
        Request::Challenge { .. } => Ok(request),
        other => Err(format!("not a challenge: {other:?}").into()),
    }
}

/// `pcrs.txt` of the attest fixtures: lines `INDEX HEX`.
fn read_pcrs_txt(text: &str) -> Result<Vec<PcrValue>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (index, hex) = line.split_once(' ').ok_or("pcrs.txt line")?;
            let mut digest = [0u8; 32];
            for (i, d) in digest.iter_mut().enumerate() {
                *d = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or("short digest")?, 16)?;
            }
            Ok(PcrValue {
                index: index.parse()?,
                digest,
            })
        })
        .collect()
}
