//! Where a node keeps its files inside its state directory.
//!
//! Everything a node creates lives under one directory, so nodes never share
//! state (tests run in parallel) and `down`/`status` from another process find
//! it all from the directory alone.

use std::path::{Path, PathBuf};

/// Longest path a unix socket address can hold (`sun_path` minus the NUL).
pub const MAX_UNIX_SOCKET_PATH: usize = 107;

/// The paths of one node's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    root: PathBuf,
}

impl StateLayout {
    /// `root` is made absolute so the paths stay valid for detached
    /// processes and for `/proc/PID/cmdline` matching.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        let root = std::path::absolute(root)?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The node description shared between `up`, `down` and `status`.
    pub fn node_json(&self) -> PathBuf {
        self.root.join("node.json")
    }
    /// The copy of the A-VM image that is measured and booted (a copy, so the
    /// file cannot change between measurement and boot).
    pub fn avm_image(&self) -> PathBuf {
        self.root.join("avm.elf")
    }
    pub fn avm_serial(&self) -> PathBuf {
        self.root.join("avm-serial.log")
    }
    pub fn avm_qemu_log(&self) -> PathBuf {
        self.root.join("avm-qemu.log")
    }
    pub fn tpm_state(&self) -> PathBuf {
        self.root.join("tpm")
    }
    pub fn swtpm_ctrl_socket(&self) -> PathBuf {
        self.root.join("swtpm-ctrl.sock")
    }
    pub fn swtpm_log(&self) -> PathBuf {
        self.root.join("swtpm.log")
    }
    pub fn swtpm_pid(&self) -> PathBuf {
        self.root.join("swtpm.pid")
    }
    /// The local EK CA's private state (keys, serial counter).
    pub fn ca_state(&self) -> PathBuf {
        self.root.join("ca")
    }
    /// PEM bundle a verifier trusts for EK certificates: the issuing CA
    /// first, then the root CA.
    pub fn ek_ca_bundle(&self) -> PathBuf {
        self.root.join("ek-ca.pem")
    }
    /// The root CA alone (PEM), for verifiers that want a single anchor.
    pub fn ek_ca_root(&self) -> PathBuf {
        self.ca_state().join("swtpm-localca-rootca-cert.pem")
    }
    /// The intermediate CA that signs EK certificates (PEM).
    pub fn ek_ca_issuer(&self) -> PathBuf {
        self.ca_state().join("issuercert.pem")
    }
    /// EK certificates as written by swtpm_setup (DER, `ek-<type>.crt`).
    pub fn ek_certs(&self) -> PathBuf {
        self.root.join("ek-certs")
    }
    pub fn provision_dir(&self) -> PathBuf {
        self.root.join("provision")
    }
    /// The Mon-VM's serial console (a QEMU socket chardev, server side).
    pub fn monvm_console_socket(&self) -> PathBuf {
        self.root.join("monvm-console.sock")
    }
    /// Everything the Mon-VM wrote to its console.
    pub fn monvm_console_log(&self) -> PathBuf {
        self.root.join("monvm-console.log")
    }
    /// The Mon-VM QEMU's own messages.
    pub fn monvm_qemu_log(&self) -> PathBuf {
        self.root.join("monvm-qemu.log")
    }
    /// The Mon-VM's root filesystem (ext4).
    pub fn monvm_root_image(&self) -> PathBuf {
        self.root.join("monvm-root.ext4")
    }
    /// Where the root filesystem's files are gathered before `mke2fs -d`
    /// (removed once the image is built).
    pub fn monvm_root_staging(&self) -> PathBuf {
        self.root.join("monvm-root.staging")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_roots_become_absolute_and_paths_are_distinct() {
        let layout = StateLayout::new(Path::new("some/node")).unwrap();
        assert!(layout.root().is_absolute());
        let paths = [
            layout.node_json(),
            layout.avm_image(),
            layout.avm_serial(),
            layout.avm_qemu_log(),
            layout.tpm_state(),
            layout.swtpm_ctrl_socket(),
            layout.swtpm_log(),
            layout.swtpm_pid(),
            layout.ca_state(),
            layout.ek_ca_bundle(),
            layout.ek_certs(),
            layout.provision_dir(),
            layout.monvm_console_socket(),
            layout.monvm_console_log(),
            layout.monvm_qemu_log(),
            layout.monvm_root_image(),
            layout.monvm_root_staging(),
        ];
        for (i, a) in paths.iter().enumerate() {
            assert!(a.starts_with(layout.root()));
            for b in &paths[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
