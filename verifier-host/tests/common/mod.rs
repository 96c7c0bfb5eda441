//! Test harness: a private swtpm per test (killed on drop) and tpm2-tools
//! run against it over swtpm's unix socket TCTI.
#![allow(dead_code)]

pub mod host_node;
pub mod monitor;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use avm_qemu::layout::StateLayout;
use avm_qemu::provision::provision_tpm;
use avm_qemu::swtpm::{Swtpm as SwtpmProcess, SwtpmConfig};

/// A swtpm (started by avm-qemu's launcher code) serving tpm2-tools on a
/// unix socket in a temp dir, which is also the tools' working directory;
/// killed on drop.
pub struct Swtpm {
    // Declared first so swtpm is stopped before its directory goes.
    _process: SwtpmProcess,
    tcti: String,
    pub dir: tempfile::TempDir,
}

impl Swtpm {
    /// Starts a fresh TPM (already started up, like after firmware).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        Self::start_on(&state, dir)
    }

    /// Starts swtpm on the TPM state in `state` (e.g. one provisioned by
    /// swtpm_setup), with `dir` for its socket and the tools' files.
    pub fn start_on(state: &Path, dir: tempfile::TempDir) -> Self {
        let config = SwtpmConfig::for_host_tools(state, dir.path().join("tpm.sock"));
        let tcti = config.tcti().expect("a data channel");
        let process = SwtpmProcess::spawn(&config).expect("swtpm starts");
        Swtpm {
            _process: process,
            tcti,
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a tpm2-tools command against this TPM (cwd = state dir), and
    /// flushes transient objects and sessions afterwards (there is no
    /// resource manager between tpm2-tools and swtpm).
    pub fn tpm2(&self, tool: &str, args: &[&str]) -> Output {
        let out = self.tpm2_raw(tool, args);
        self.tpm2_raw("tpm2_flushcontext", &["-t"]);
        self.tpm2_raw("tpm2_flushcontext", &["-s"]);
        out
    }

    fn tpm2_raw(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(tool)
            .args(args)
            .current_dir(self.dir.path())
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .output()
            .expect("tpm2-tools are installed")
    }

    /// Like [`Self::tpm2`] but panics with the tool's stderr on failure.
    pub fn tpm2_ok(&self, tool: &str, args: &[&str]) -> Output {
        let out = self.tpm2(tool, args);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Runs the `avm-verifier` binary on the state in `state`.
pub fn verifier(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_avm-verifier"))
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .expect("run avm-verifier")
}

/// Exit code, stdout and stderr of a run, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the verifier and asserts its exit code.
pub fn verifier_exit(state: &Path, args: &[&str], code: i32) -> Output {
    let out = verifier(state, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}",
        describe(&out)
    );
    out
}

/// A `--json` report; panics (with the output) if it is not one.
pub fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}): {}", describe(out)))
}

/// The reason codes of a `--json` report.
pub fn reason_codes(out: &Output) -> Vec<String> {
    reasons(out).into_iter().map(|(code, _)| code).collect()
}

/// `(code, detail)` of every reason of a `--json` report.
pub fn reasons(out: &Output) -> Vec<(String, String)> {
    report(out)["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(|r| {
            Some((
                r["code"].as_str()?.to_string(),
                r["detail"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// Attests `addr` until the verdict is untrusted with a reason `code`
/// whose detail contains `detail` (the A-VM harvests the IMA list and the
/// cross-views every 500 ms and sweeps the text every second: the evidence
/// may lag an attack a little); at most 30 s. Returns every reason.
pub fn untrusted_with(state: &Path, addr: &str, code: &str, detail: &str) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = verifier(state, &["attest", addr, "--json"]);
        let found = reasons(&out);
        if out.status.code() == Some(1)
            && found.iter().any(|(c, d)| c == code && d.contains(detail))
        {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {code} naming {detail:?}: {}",
            describe(&out)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into()
}

/// `tpm2_checkquote` on an evidence directory in tpm2-tools' formats
/// (ak.pem, quote.msg, quote.sig, quote.pcrs) with the hex `nonce`.
pub fn checkquote(dir: &Path, nonce: &str) -> Output {
    Command::new("tpm2_checkquote")
        .args(["-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig"])
        .args(["-f", "quote.pcrs", "-F", "marshaled", "-g", "sha256"])
        .args(["-q", nonce])
        .current_dir(dir)
        .output()
        .expect("tpm2_checkquote is installed")
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A TPM state manufactured by avm-qemu's provisioning (swtpm_setup, with
/// EK certificates issued by a private swtpm-localca CA in its own temp
/// dir, never the system one).
pub struct ProvisionedTpm {
    pub tpm: Swtpm,
    /// The node state directory the launcher would use (CA, TPM state).
    pub node_dir: tempfile::TempDir,
    /// issuing CA + root CA, PEM.
    pub ca_bundle: PathBuf,
    /// The issuing CA alone, PEM.
    pub issuer_ca: PathBuf,
}

impl ProvisionedTpm {
    pub fn new() -> Self {
        let node_dir = tempfile::tempdir().expect("temp dir");
        let layout = StateLayout::new(node_dir.path()).expect("state layout");
        let provisioned = provision_tpm(&layout).expect("provisioning the TPM");
        let tools_dir = tempfile::tempdir().expect("temp dir");
        ProvisionedTpm {
            tpm: Swtpm::start_on(&layout.tpm_state(), tools_dir),
            node_dir,
            ca_bundle: provisioned.ca_bundle_pem,
            issuer_ca: provisioned.issuer_ca_pem,
        }
    }

    /// The RSA-2048 EK certificate (DER) from NV index 0x01c00002.
    pub fn rsa_ek_cert(&self) -> Vec<u8> {
        self.tpm
            .tpm2_ok("tpm2_nvread", &["0x1c00002", "-o", "ekcert.der"]);
        read(&self.tpm.path("ekcert.der"))
    }

    /// The RSA EK public area (TPM2B_PUBLIC) recreated from template L-1.
    pub fn rsa_ek_public(&self) -> Vec<u8> {
        self.tpm.tpm2_ok(
            "tpm2_createek",
            &["-G", "rsa", "-c", "ek.ctx", "-u", "ek.tss"],
        );
        read(&self.tpm.path("ek.tss"))
    }
}

pub const NONCE: &str = "0badc0ffee0ddf00d5eed1234567890a";

/// A swtpm with an AK of `alg` and a tpm2_quote directory of sha256:0-7
/// (after a few PCR extends, so the values are not all zero).
pub fn quoted_tpm(alg: &str) -> (Swtpm, avm_verifier::tpm_public::TpmPublic) {
    let tpm = Swtpm::start();
    for (pcr, byte) in [(0, "aa"), (3, "bb"), (7, "cc")] {
        let digest = byte.repeat(32);
        tpm.tpm2_ok("tpm2_pcrextend", &[&format!("{pcr}:sha256={digest}")]);
    }
    tpm.tpm2_ok("tpm2_createek", &["-G", alg, "-c", "ek.ctx"]);
    tpm.tpm2_ok(
        "tpm2_createak",
        &[
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            alg,
            "-g",
            "sha256",
            "-s",
            if alg == "ecc" { "ecdsa" } else { "rsassa" },
            "-u",
            "ak.tss",
            "-f",
            "tss",
        ],
    );
    tpm.tpm2_ok(
        "tpm2_readpublic",
        &["-c", "ak.ctx", "-f", "pem", "-o", "ak.pem"],
    );
    std::fs::create_dir(tpm.path("quote")).expect("mkdir");
    tpm.tpm2_ok(
        "tpm2_quote",
        &[
            "-c",
            "ak.ctx",
            "-l",
            "sha256:0,1,2,3,4,5,6,7",
            "-q",
            NONCE,
            "-m",
            "quote/quote.msg",
            "-s",
            "quote/quote.sig",
            "-o",
            "quote/quote.pcrs",
            "-g",
            "sha256",
        ],
    );
    std::fs::copy(tpm.path("ak.pem"), tpm.path("quote/ak.pem")).expect("copy");
    let ak = avm_verifier::tpm_public::TpmPublic::parse_tpm2b(&read(&tpm.path("ak.tss")))
        .expect("AK parses");
    (tpm, ak)
}

/// `policy init` allowing `image` and the node's Mon-VM kernel profile,
/// then `enroll` of the node: the set-up every Mon-VM node test starts with.
pub fn enrol_monvm_node(state: &Path, record: &avm_qemu::NodeRecord, addr: &str, image: &Path) {
    let profile = record.monvm_profile.clone().expect("a profile");
    verifier_exit(
        state,
        &[
            "policy",
            "init",
            "--avm-image",
            image.to_str().expect("utf-8"),
            "--monvm-profile",
            profile.to_str().expect("utf-8"),
        ],
        0,
    );
    let ek_ca = record.ek_ca.clone().expect("an EK CA");
    verifier_exit(
        state,
        &["enroll", addr, "--ek-ca", ek_ca.to_str().expect("utf-8")],
        0,
    );
}
