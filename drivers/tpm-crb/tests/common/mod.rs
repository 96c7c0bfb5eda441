//! A swtpm process per test, in a fresh temp dir, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tpm_crb::{SwtpmSocket, Tpm};

/// A running `swtpm socket` serving its TPM on a unix socket.
pub struct Swtpm {
    child: Child,
    dir: TempDir,
}

impl Swtpm {
    /// A fresh TPM without EK certificates (fast).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn(dir)
    }

    /// A TPM manufactured by `swtpm_setup`, with EK certificates signed by a
    /// local CA in the temp dir (global swtpm-localca state is not touched).
    pub fn start_provisioned() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        let ca = dir.path().join("ca");
        std::fs::create_dir_all(&state).expect("state dir");
        std::fs::create_dir_all(&ca).expect("ca dir");
        let localca_conf = dir.path().join("swtpm-localca.conf");
        std::fs::write(
            &localca_conf,
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\n\
                 issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        )
        .expect("localca conf");
        let setup_conf = dir.path().join("swtpm_setup.conf");
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
        .expect("setup conf");
        let output = Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--overwrite", "--tpmstate"])
            .arg(&state)
            .arg("--config")
            .arg(&setup_conf)
            .output()
            .expect("run swtpm_setup");
        assert!(
            output.status.success(),
            "swtpm_setup failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Self::spawn(dir)
    }

    fn state_dir(dir: &Path) -> PathBuf {
        dir.join("state")
    }

    fn spawn(dir: TempDir) -> Self {
        let state = Self::state_dir(dir.path());
        std::fs::create_dir_all(&state).expect("state dir");
        let socket = dir.path().join("tpm.sock");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!(
                "type=unixio,path={}",
                dir.path().join("ctrl.sock").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn swtpm");
        let swtpm = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "swtpm did not create its socket");
            sleep(Duration::from_millis(10));
        }
        swtpm
    }

    /// The temp dir (for files a test writes).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A command layer connected to this swtpm.
    pub fn connect(&self) -> Tpm<SwtpmSocket> {
        let socket =
            SwtpmSocket::connect(&self.dir.path().join("tpm.sock")).expect("connect swtpm");
        Tpm::new(socket)
    }

    /// Connects and sends TPM2_Startup(CLEAR), as firmware would.
    pub fn started(&self) -> Tpm<SwtpmSocket> {
        let mut tpm = self.connect();
        tpm.startup_clear().expect("startup");
        tpm
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
