//! A swtpm process per test, in a fresh temp dir, killed on drop. Spawning
//! and provisioning are avm-qemu's, the launcher's own code.

use std::path::{Path, PathBuf};

use avm_qemu::layout::StateLayout;
use avm_qemu::provision::provision_tpm;
use avm_qemu::swtpm::{Swtpm as SwtpmProcess, SwtpmConfig};
use tempfile::TempDir;
use tpm_crb::{SwtpmSocket, Tpm};

/// A running `swtpm socket` serving its TPM on a unix socket. The TPM is
/// initialised through the control channel, as QEMU does, but not started:
/// TPM2_Startup is the client's, as it is the firmware's.
pub struct Swtpm {
    // Declared first so swtpm is stopped before its directory goes.
    _process: SwtpmProcess,
    socket: PathBuf,
    dir: TempDir,
}

impl Swtpm {
    /// A fresh TPM without EK certificates (fast).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        Self::spawn(dir, &state)
    }

    /// A TPM manufactured by `swtpm_setup`, with EK certificates signed by a
    /// local CA in the temp dir (global swtpm-localca state is not touched).
    pub fn start_provisioned() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = StateLayout::new(dir.path()).expect("state layout");
        provision_tpm(&layout).expect("provisioning the TPM");
        Self::spawn(dir, &layout.tpm_state())
    }

    fn spawn(dir: TempDir, state: &Path) -> Self {
        let socket = dir.path().join("tpm.sock");
        let mut config = SwtpmConfig::for_host_tools(state, &socket);
        config.startup_clear = false;
        let process = SwtpmProcess::spawn(&config).expect("spawn swtpm");
        process
            .ctrl_channel()
            .and_then(|mut ctrl| Ok(ctrl.init()?))
            .expect("swtpm control-channel INIT");
        Self {
            _process: process,
            socket,
            dir,
        }
    }

    /// The temp dir (for files a test writes).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A command layer connected to this swtpm.
    pub fn connect(&self) -> Tpm<SwtpmSocket> {
        Tpm::new(SwtpmSocket::connect(&self.socket).expect("connect swtpm"))
    }

    /// Connects and sends TPM2_Startup(CLEAR), as firmware would.
    pub fn started(&self) -> Tpm<SwtpmSocket> {
        let mut tpm = self.connect();
        tpm.startup_clear().expect("startup");
        tpm
    }
}
