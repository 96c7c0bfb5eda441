//! Test harness: a private swtpm per test (killed on drop) and tpm2-tools
//! run against it over swtpm's unix socket TCTI.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A swtpm process serving one temp state directory; killed on drop.
pub struct Swtpm {
    child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Swtpm {
    /// Starts a fresh TPM (already started up, like after firmware).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir)
    }

    /// Starts swtpm on an existing state directory (e.g. one provisioned by
    /// swtpm_setup).
    pub fn start_in(dir: tempfile::TempDir) -> Self {
        let socket = dir.path().join("tpm.sock");
        // The swtpm TCTI finds the control channel at `<path>.ctrl`.
        let ctrl = dir.path().join("tpm.sock.ctrl");
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.path().display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm is installed");
        let swtpm = Swtpm { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(swtpm.socket.exists() && ctrl.exists()) {
            assert!(
                Instant::now() < deadline,
                "swtpm did not create its sockets"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        swtpm
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
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:path={}", self.socket.display()),
            )
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

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A TPM state manufactured by swtpm_setup with EK certificates issued by a
/// private swtpm-localca CA (in its own temp dir, never the system one).
pub struct ProvisionedTpm {
    pub tpm: Swtpm,
    pub ca_dir: tempfile::TempDir,
    /// issuing CA + root CA, PEM.
    pub ca_bundle: PathBuf,
}

impl ProvisionedTpm {
    pub fn new() -> Self {
        let ca_dir = tempfile::tempdir().expect("temp dir");
        let state = tempfile::tempdir().expect("temp dir");
        let ca = ca_dir.path();
        let localca_conf = ca.join("localca.conf");
        std::fs::write(
            &localca_conf,
            format!(
                "statedir = {d}\nsignkey = {d}/signkey.pem\nsigningkey = {d}/signkey.pem\n\
                 issuercert = {d}/issuercert.pem\ncertserial = {d}/certserial\n",
                d = ca.display()
            ),
        )
        .expect("write localca.conf");
        let setup_conf = ca.join("setup.conf");
        std::fs::write(
            &setup_conf,
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\n\
                 create_certs_tool_config = {}\n\
                 create_certs_tool_options = /etc/swtpm-localca.options\n\
                 active_pcr_banks = sha256\n",
                localca_conf.display()
            ),
        )
        .expect("write setup.conf");
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--tpmstate"])
            .arg(state.path())
            .arg("--config")
            .arg(&setup_conf)
            .output()
            .expect("swtpm_setup is installed");
        assert!(
            out.status.success(),
            "swtpm_setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut bundle = read(&ca.join("issuercert.pem"));
        bundle.extend_from_slice(&read(&ca.join("swtpm-localca-rootca-cert.pem")));
        let ca_bundle = ca.join("ca-bundle.pem");
        std::fs::write(&ca_bundle, bundle).expect("write bundle");
        ProvisionedTpm {
            tpm: Swtpm::start_in(state),
            ca_dir,
            ca_bundle,
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
