//! Manufacturing a fresh TPM: EK certificates from a node-local CA.
//!
//! `swtpm_setup` creates the TPM state with an RSA-2048 and an ECC EK, and
//! has `swtpm_localca` issue their certificates into TPM NV. Both tools are
//! pointed at configuration files generated inside the node's state dir, so
//! the CA lives there too and the global /var/lib/swtpm-localca is never
//! touched. (swtpm 0.7's ECC EK is NIST P-384, its certificate lives at NV
//! index 0x01c00016; the RSA one at 0x01c00002.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::layout::StateLayout;

/// Failures provisioning the TPM.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("swtpm_setup is not installed (run `make deps`)")]
    NotInstalled,
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("swtpm_setup failed ({status}):\n{log_tail}")]
    SetupFailed {
        status: std::process::ExitStatus,
        log_tail: String,
    },
    #[error("swtpm_setup succeeded but {0} is missing")]
    MissingOutput(PathBuf),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProvisionError {
    let context = context.into();
    move |source| ProvisionError::Io { context, source }
}

/// What provisioning produced, for verifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkProvisioning {
    /// Issuing CA + root CA, PEM: the trust anchor for EK certificates.
    pub ca_bundle_pem: PathBuf,
    pub root_ca_pem: PathBuf,
    pub issuer_ca_pem: PathBuf,
    /// The EK certificates (DER), as also stored in TPM NV.
    pub ek_certs: Vec<PathBuf>,
}

/// Contents of the config files handed to swtpm_setup and swtpm_localca.
struct SetupConfig {
    setup_conf: String,
    localca_conf: String,
    localca_options: String,
}

fn setup_config(layout: &StateLayout) -> SetupConfig {
    let provision = layout.provision_dir();
    let ca = layout.ca_state();
    let localca_conf_path = provision.join("swtpm-localca.conf");
    let localca_options_path = provision.join("swtpm-localca.options");
    SetupConfig {
        setup_conf: format!(
            "create_certs_tool = /usr/bin/swtpm_localca\n\
             create_certs_tool_config = {}\n\
             create_certs_tool_options = {}\n\
             active_pcr_banks = sha256\n",
            localca_conf_path.display(),
            localca_options_path.display(),
        ),
        localca_conf: format!(
            "statedir = {ca}\n\
             signingkey = {ca}/signkey.pem\n\
             issuercert = {ca}/issuercert.pem\n\
             certserial = {ca}/certserial\n",
            ca = ca.display(),
        ),
        localca_options: "--platform-manufacturer A-VM\n\
                          --platform-version 2.1\n\
                          --platform-model QEMU\n"
            .to_owned(),
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Creates the TPM state in `layout.tpm_state()` (which must not hold a
/// TPM yet) with EK certificates signed by the node's own CA.
pub fn provision_tpm(layout: &StateLayout) -> Result<EkProvisioning, ProvisionError> {
    let provision = layout.provision_dir();
    for dir in [
        provision.clone(),
        layout.ca_state(),
        layout.tpm_state(),
        layout.ek_certs(),
    ] {
        std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
    }
    let config = setup_config(layout);
    let setup_conf_path = provision.join("swtpm_setup.conf");
    for (path, contents) in [
        (&setup_conf_path, &config.setup_conf),
        (&provision.join("swtpm-localca.conf"), &config.localca_conf),
        (
            &provision.join("swtpm-localca.options"),
            &config.localca_options,
        ),
    ] {
        std::fs::write(path, contents).map_err(io_error(format!("writing {}", path.display())))?;
    }

    let log = provision.join("swtpm_setup.log");
    let status = Command::new("swtpm_setup")
        .arg("--tpm2")
        .arg("--create-ek-cert")
        .arg("--create-platform-cert")
        .arg("--tpmstate")
        .arg(layout.tpm_state())
        .arg("--config")
        .arg(&setup_conf_path)
        .arg("--write-ek-cert-files")
        .arg(layout.ek_certs())
        .arg("--logfile")
        .arg(&log)
        .arg("--overwrite")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|err| {
            if err.kind() == std::io::ErrorKind::NotFound {
                ProvisionError::NotInstalled
            } else {
                ProvisionError::Io {
                    context: "running swtpm_setup".into(),
                    source: err,
                }
            }
        })?;
    if !status.success() {
        return Err(ProvisionError::SetupFailed {
            status,
            log_tail: log_tail(&log),
        });
    }

    let root_ca_pem = layout.ek_ca_root();
    let issuer_ca_pem = layout.ek_ca_issuer();
    let mut bundle = Vec::new();
    for pem in [&issuer_ca_pem, &root_ca_pem] {
        let text = std::fs::read(pem).map_err(|_| ProvisionError::MissingOutput(pem.clone()))?;
        bundle.extend_from_slice(&text);
    }
    let ca_bundle_pem = layout.ek_ca_bundle();
    std::fs::write(&ca_bundle_pem, bundle).map_err(io_error("writing the EK CA bundle"))?;

    let mut ek_certs: Vec<PathBuf> = std::fs::read_dir(layout.ek_certs())
        .map_err(io_error("listing EK certificates"))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "crt"))
        .collect();
    ek_certs.sort();
    if ek_certs.is_empty() {
        return Err(ProvisionError::MissingOutput(layout.ek_certs()));
    }
    Ok(EkProvisioning {
        ca_bundle_pem,
        root_ca_pem,
        issuer_ca_pem,
        ek_certs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_point_inside_the_state_dir() {
        let layout = StateLayout::new(Path::new("/tmp/node-x")).unwrap();
        let config = setup_config(&layout);
        assert!(!config.localca_conf.contains("/var/lib"));
        assert!(config.localca_conf.contains("statedir = /tmp/node-x/ca\n"));
        assert!(
            config
                .setup_conf
                .contains("create_certs_tool_config = /tmp/node-x/provision/swtpm-localca.conf")
        );
    }
}
