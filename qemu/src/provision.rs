//! Manufacturing a fresh TPM: EK certificates from a node-local CA.
//!
//! `swtpm_setup` creates the TPM state with an RSA-2048 and an ECC EK, and
//! has `swtpm_localca` issue their certificates into TPM NV. Both tools are
//! pointed at configuration files generated inside the node's state dir, so
//! the CA lives there too and the global /var/lib/swtpm-localca is never
//! touched. swtpm 0.7 certifies an RSA-2048 EK (NV index 0x01c00002) and a
//! NIST P-384 one (0x01c00016), but the A-VM uses the TCG default ECC EK,
//! NIST P-256 (template L-2, certificate at 0x01c0000a). So a second step
//! creates that EK with tpm2-tools, has the same local CA certify it and
//! stores the certificate at its standard NV index, as a manufacturer would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::hex;
use crate::layout::{MAX_UNIX_SOCKET_PATH, StateLayout};
use crate::swtpm::{CtrlEndpoint, Swtpm, SwtpmConfig, SwtpmError};

/// NV index of the ECC NIST P-256 EK certificate (TCG EK Credential
/// Profile, low range, template L-2).
pub const EK_CERT_NV_ECC_P256: u32 = 0x01c0_000a;
/// NV attributes swtpm_setup gives EK certificates: written by the
/// platform at manufacturing, readable by anyone.
const EK_CERT_NV_ATTRIBUTES: &str = "ppwrite|ppread|ownerread|authread|no_da|platformcreate";
/// What swtpm_setup tells swtpm_localca about swtpm 0.7.1 (TCG vendor id of
/// IBM, whose TPM library libtpms is), so all EK certificates agree.
const LOCALCA_TPM_IDENTITY: [&str; 12] = [
    "--tpm-spec-family",
    "2.0",
    "--tpm-spec-level",
    "0",
    "--tpm-spec-revision",
    "164",
    "--tpm-manufacturer",
    "id:00001014",
    "--tpm-model",
    "swtpm",
    "--tpm-version",
    "id:20191023",
];

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
    #[error("{tool} is not installed (run `make deps`)")]
    ToolMissing { tool: String },
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        tool: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("unexpected output from {tool}: {detail}")]
    ToolOutput { tool: String, detail: String },
    #[error("provisioning swtpm: {0}")]
    Swtpm(#[from] SwtpmError),
    #[error("path too long for a unix socket: {0}")]
    SocketPathTooLong(PathBuf),
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
    /// The ECC P-256 EK's certificate (DER), the EK the A-VM uses.
    pub ek_cert_ecc_p256: PathBuf,
    /// TPM name of that EK (nameAlg || digest of its public area).
    pub ek_name_ecc_p256: Vec<u8>,
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

    let (ek_cert_ecc_p256, ek_name_ecc_p256) = provision_ecc_p256_ek_cert(layout)?;

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
        ek_cert_ecc_p256,
        ek_name_ecc_p256,
    })
}

/// Runs a tool, returning its stdout; failures carry its stderr.
fn run_tool(command: &mut Command) -> Result<String, ProvisionError> {
    let tool = command.get_program().to_string_lossy().into_owned();
    let output = command.stdin(Stdio::null()).output().map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            ProvisionError::ToolMissing { tool: tool.clone() }
        } else {
            ProvisionError::Io {
                context: format!("running {tool}"),
                source: err,
            }
        }
    })?;
    if !output.status.success() {
        return Err(ProvisionError::ToolFailed {
            tool,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The public point and name of an ECC key, from `tpm2_readpublic` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EccPublic {
    pub x: Vec<u8>,
    pub y: Vec<u8>,
    pub name: Vec<u8>,
}

/// Parses the `name:`, `x:` and `y:` lines of `tpm2_readpublic`'s YAML.
pub fn parse_readpublic_ecc(yaml: &str) -> Option<EccPublic> {
    let field = |key: &str| {
        yaml.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|value| hex::decode(value.trim()).ok())
            .filter(|bytes| !bytes.is_empty() && bytes.len() <= 66)
    };
    Some(EccPublic {
        x: field("x:")?,
        y: field("y:")?,
        name: field("name:")?,
    })
}

/// Creates the P-256 EK from the default template, has the node's CA
/// certify it and writes the certificate to NV index 0x01c0000a. Returns
/// the certificate's path and the EK's name.
fn provision_ecc_p256_ek_cert(layout: &StateLayout) -> Result<(PathBuf, Vec<u8>), ProvisionError> {
    let provision = layout.provision_dir();
    let mut config = SwtpmConfig::for_host_tools(layout.tpm_state(), provision.join("tpm.sock"));
    if let CtrlEndpoint::Unix(ctrl) = &config.ctrl
        && ctrl.as_os_str().len() > MAX_UNIX_SOCKET_PATH
    {
        return Err(ProvisionError::SocketPathTooLong(ctrl.clone()));
    }
    config.log_file = Some(provision.join("swtpm-provision.log"));
    let tcti = config.tcti().unwrap_or_default();
    let swtpm = Swtpm::spawn(&config)?;
    let tpm2 = |tool: &str| {
        let mut command = Command::new(tool);
        command.arg("-T").arg(&tcti);
        command
    };

    let ek_context = provision.join("ek-p256.ctx");
    run_tool(
        tpm2("tpm2_createek")
            .arg("-G")
            .arg("ecc")
            .arg("-c")
            .arg(&ek_context),
    )?;
    let yaml = run_tool(tpm2("tpm2_readpublic").arg("-c").arg(&ek_context))?;
    let public = parse_readpublic_ecc(&yaml).ok_or_else(|| ProvisionError::ToolOutput {
        tool: "tpm2_readpublic".into(),
        detail: "no ECC point and name".into(),
    })?;

    let cert_dir = provision.join("ek-p256");
    std::fs::create_dir_all(&cert_dir).map_err(io_error("creating the P-256 EK cert dir"))?;
    run_tool(
        Command::new("swtpm_localca")
            .arg("--type")
            .arg("ek")
            .arg("--ek")
            .arg(format!(
                "x={},y={},id=secp256r1",
                hex::encode(&public.x),
                hex::encode(&public.y)
            ))
            .arg("--dir")
            .arg(&cert_dir)
            .args(LOCALCA_TPM_IDENTITY)
            .arg("--tpm2")
            .arg("--configfile")
            .arg(provision.join("swtpm-localca.conf"))
            .arg("--optsfile")
            .arg(provision.join("swtpm-localca.options")),
    )?;
    let issued = cert_dir.join("ek.cert");
    let cert = std::fs::read(&issued).map_err(|_| ProvisionError::MissingOutput(issued.clone()))?;

    let index = format!("{EK_CERT_NV_ECC_P256:#010x}");
    run_tool(
        tpm2("tpm2_nvdefine")
            .arg(&index)
            .args(["-C", "p", "-s"])
            .arg(cert.len().to_string())
            .arg("-a")
            .arg(EK_CERT_NV_ATTRIBUTES),
    )?;
    run_tool(
        tpm2("tpm2_nvwrite")
            .arg(&index)
            .args(["-C", "p", "-i"])
            .arg(&issued),
    )?;
    // An orderly TPM shutdown before swtpm's, so the state is saved cleanly.
    run_tool(&mut tpm2("tpm2_shutdown"))?;
    swtpm.shut_down()?;

    let installed = layout.ek_certs().join("ek-secp256r1.crt");
    std::fs::write(&installed, &cert).map_err(io_error("writing the P-256 EK certificate"))?;
    Ok((installed, public.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readpublic_yaml() {
        let yaml =
            "name: 000bc0be\nqualified name: 000bf743\ntype:\n  value: ecc\nx: 118b25\ny: 4bac6e\n";
        assert_eq!(
            parse_readpublic_ecc(yaml),
            Some(EccPublic {
                x: vec![0x11, 0x8b, 0x25],
                y: vec![0x4b, 0xac, 0x6e],
                name: vec![0x00, 0x0b, 0xc0, 0xbe],
            })
        );
        assert_eq!(parse_readpublic_ecc("name: 00\nx: zz\ny: 00\n"), None);
        assert_eq!(parse_readpublic_ecc(""), None);
    }

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
