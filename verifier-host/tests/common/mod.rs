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
