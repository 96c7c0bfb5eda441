//! A host node: the wire protocol served on a loopback port with swtpm +
//! tpm2-tools behind it (the A-VM's own server is tested by net/ and
//! qemu/). The TPM was manufactured by swtpm_setup with an RSA EK
//! certificate from a private CA.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use avm_attest::wire::{
    self, Evidence, HelloInfo, KeyAlgorithm, KeyInfo, MAX_REQUEST_LEN, PROTOCOL_VERSION, Request,
    Response,
};
use avm_verifier::hex;
use avm_verifier::tpm_public::TpmPublic;

use super::{ProvisionedTpm, Swtpm, read};

/// The measurement log a host node serves (empty unless a test appends
/// records, extending the swtpm's PCRs as an A-VM would), and the log
/// requests it saw (the `from` of each).
#[derive(Default)]
pub struct ServedLog {
    pub records: Mutex<Vec<Vec<u8>>>,
    pub requests: Mutex<Vec<u32>>,
    /// Records hidden from the start of the log: a node that "forgot"
    /// them (as if it had rebooted), without touching its PCRs.
    pub dropped: AtomicU32,
    /// The PCRs quoted instead of those a challenge asks for (bit i: PCR
    /// i; 0: as asked): a node, or a relay rewriting the challenge, that
    /// narrows the quote.
    pub quoted_instead: AtomicU32,
}

/// Serves connections until `stop`, answering from the TPM.
fn serve(
    tpm: Arc<ProvisionedTpm>,
    hello: HelloInfo,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    log: Arc<ServedLog>,
) {
    listener.set_nonblocking(false).expect("blocking");
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut s) = stream else { continue };
        loop {
            let mut header = [0u8; 4];
            if s.read_exact(&mut header).is_err() {
                break;
            }
            let Ok(len) = wire::body_len(header, MAX_REQUEST_LEN) else {
                break;
            };
            let mut body = vec![0u8; len];
            if s.read_exact(&mut body).is_err() {
                break;
            }
            let Ok(request) = wire::decode_body::<Request>(&body) else {
                break;
            };
            let response = answer(&tpm.tpm, &hello, &log, request);
            let Ok(frame) = wire::encode_frame(&response) else {
                break;
            };
            if s.write_all(&frame).is_err() {
                break;
            }
        }
    }
}

fn answer(tpm: &Swtpm, hello: &HelloInfo, log: &ServedLog, request: Request) -> Response {
    let error = |detail: String| Response::Error {
        code: wire::ErrorCode::Tpm,
        detail,
    };
    match request {
        Request::Hello { .. } => Response::Hello(hello.clone()),
        // Whatever the test appended (nothing by default), in chunks of at
        // most three records so that fetches take several requests.
        Request::MeasurementLog { from } => {
            log.requests.lock().expect("lock").push(from);
            let records = log.records.lock().expect("lock");
            let dropped = log.dropped.load(Ordering::SeqCst) as usize;
            let visible = records.get(dropped..).unwrap_or_default();
            let chunk: Vec<u8> = visible
                .iter()
                .skip(from as usize)
                .take(3)
                .flatten()
                .copied()
                .collect();
            Response::MeasurementLog(wire::LogChunk {
                first: from,
                total: visible.len() as u32,
                records: chunk,
            })
        }
        Request::Challenge { nonce, pcr_mask } => {
            let pcr_mask = match log.quoted_instead.load(Ordering::SeqCst) {
                0 => pcr_mask,
                bits => avm_attest::pcr::PcrMask::from_bits(bits),
            };
            let pcrs: Vec<String> = (0..24)
                .filter(|&i| pcr_mask.contains(i))
                .map(|i| i.to_string())
                .collect();
            let out = tpm.tpm2(
                "tpm2_quote",
                &[
                    "-c",
                    "ak.ctx",
                    "-l",
                    &format!("sha256:{}", pcrs.join(",")),
                    "-q",
                    &hex::encode(&nonce),
                    "-m",
                    "q.msg",
                    "-s",
                    "q.sig",
                    "-o",
                    "q.pcrs",
                    "-g",
                    "sha256",
                ],
            );
            if !out.status.success() {
                return error(String::from_utf8_lossy(&out.stderr).into());
            }
            let Ok(pcrs) = avm_verifier::pcrs_file::parse_serialized(&read(&tpm.path("q.pcrs")))
            else {
                return error("bad PCR file".into());
            };
            Response::Evidence(Evidence {
                attest: read(&tpm.path("q.msg")),
                signature: read(&tpm.path("q.sig")),
                pcrs,
                event_log: Vec::new(),
            })
        }
        Request::ActivateCredential {
            credential_blob,
            encrypted_secret,
        } => {
            let made = avm_verifier::credential::MadeCredential {
                credential_blob,
                encrypted_secret,
            };
            std::fs::write(tpm.path("cred.in"), made.to_tpm2_tools_file()).expect("write");
            let script = "set -e
                tpm2_startauthsession --policy-session -S session.ctx
                tpm2_policysecret -S session.ctx -c e
                tpm2_activatecredential -c ak.ctx -C ek.ctx -i cred.in -o secret.out -P session:session.ctx";
            let out = tpm.tpm2("sh", &["-c", script]);
            if !out.status.success() {
                return error("activation failed".into());
            }
            Response::CredentialActivated {
                secret: read(&tpm.path("secret.out")),
            }
        }
        // This host node pushes no events.
        Request::Subscribe { .. } => error("subscriptions are not served here".into()),
    }
}

fn key_info(algorithm: KeyAlgorithm, tpm2b: &[u8]) -> KeyInfo {
    let public = TpmPublic::parse_tpm2b(tpm2b).expect("public parses");
    KeyInfo {
        algorithm,
        public: public.marshaled().to_vec(),
        name: public.name(),
    }
}

/// A node on a free loopback port; stops serving on drop.
pub struct HostNode {
    pub tpm: Arc<ProvisionedTpm>,
    pub addr: String,
    pub log: Arc<ServedLog>,
    stop: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl HostNode {
    /// `announce_other_ak`: the Hello names an AK other than the one that
    /// activates credentials (a node lying about its AK).
    pub fn start(announce_other_ak: bool) -> Self {
        let tpm = Arc::new(ProvisionedTpm::new());
        let cert = tpm.rsa_ek_cert();
        let ek = tpm.rsa_ek_public();
        let t = &tpm.tpm;
        t.tpm2_ok(
            "tpm2_createak",
            &[
                "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
                "ak.tss", "-f", "tss",
            ],
        );
        let mut ak = read(&t.path("ak.tss"));
        if announce_other_ak {
            t.tpm2_ok(
                "tpm2_createak",
                &[
                    "-C", "ek.ctx", "-c", "ak2.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa",
                    "-u", "ak2.tss", "-f", "tss",
                ],
            );
            ak = read(&t.path("ak2.tss"));
        }
        let hello = HelloInfo {
            version: PROTOCOL_VERSION,
            ek: key_info(KeyAlgorithm::Rsa2048, &ek),
            ek_certificate: cert,
            ak: key_info(KeyAlgorithm::EccP256, &ak),
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(ServedLog::default());
        let (t2, s2, l2) = (Arc::clone(&tpm), Arc::clone(&stop), Arc::clone(&log));
        let server = Some(std::thread::spawn(move || {
            serve(t2, hello, listener, s2, l2)
        }));
        HostNode {
            tpm,
            addr,
            log,
            stop,
            server,
        }
    }

    /// Measures as an A-VM does: extends `pcr` with the record's SHA-256
    /// extend value in the swtpm, then appends the `ima-ng` record.
    pub fn measure(&self, pcr: u32, digest: &[u8; 32], name: &str) {
        let record = avm_attest::ima::ng_record(pcr, digest, name.as_bytes());
        let parsed = avm_attest::ima::parse_list(&record, 1).expect("record");
        let value = parsed[0].sha256_extend_value();
        self.tpm.tpm.tpm2_ok(
            "tpm2_pcrextend",
            &[&format!("{pcr}:sha256={}", hex::encode(&value))],
        );
        self.log.records.lock().expect("lock").push(record);
    }
}

impl Drop for HostNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = std::net::TcpStream::connect(&self.addr);
        // The server's Arc must be gone before ours drops, so the swtpm
        // (killed when the last reference drops) never outlives the test.
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}
