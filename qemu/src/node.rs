//! A node: swtpm + the A-VM under QEMU, and optionally the Mon-VM the A-VM
//! watches, brought up from one state directory.
//!
//! [`Node::launch`] starts the Mon-VM first when one is configured (its RAM
//! file must exist before the A-VM maps it), then provisions a fresh TPM,
//! measures the A-VM image as H-CRTM, starts swtpm and the A-VM's QEMU and
//! records everything in `node.json`; [`Node::wait_for_report`] follows the
//! serial log until the boot report, [`Node::wait_for_monvm`] the Mon-VM's
//! console until its userland is ready. A `Node` kills what it started and
//! removes the Mon-VM's RAM file when dropped (tests, failures) unless
//! [`Node::detach`]ed (the CLI's `up`); [`down`] and [`status`] work from
//! `node.json` alone, in another process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::hex;
use crate::kvm;
use crate::layout::{MAX_UNIX_SOCKET_PATH, StateLayout};
use crate::measure::{hcrtm_pcr0_start, sha256};
use crate::monvm::{self, MonVm, MonVmConfig, MonVmError};
use crate::netline::{NetworkOutcome, scan_network};
use crate::placement::{CpuPlacement, CpuSplit, pin_process};
use crate::process::{self, ChildGuard, ProcessGroup};
use crate::provision::{ProvisionError, provision_tpm};
use crate::qemu::{Accel, GuestExit, QemuCommand};
use crate::report::{BootReport, GuestError, ReportError, SerialOutcome};
use crate::serial::SerialLog;
use crate::swtpm::{Swtpm, SwtpmConfig, SwtpmError};
use avm_attest::monitor_policy::MonitorPolicy;

/// Default guest RAM of the A-VM.
pub const DEFAULT_MEMORY_MIB: u32 = 128;
/// The A-VM's RAM with a Mon-VM to watch: its heap (112 MiB) holds what
/// the Mon-VM can make it hold, each part bounded (docs/monitoring.md,
/// "Memory"); with less, a Mon-VM could exhaust it and end the A-VM.
pub const MONVM_MIN_MEMORY_MIB: u32 = 128;
/// Default bound on the wait for the boot report (TCG on a loaded 2-core
/// host boots in about a second; this leaves room for contention).
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound on the wait for the network after the boot report (the
/// DHCP exchange with QEMU's user network takes well under a second).
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(30);
/// The attestation server's port inside the A-VM.
pub use avm_attest::wire::ATTEST_PORT as GUEST_ATTEST_PORT;
/// Kernel command-line word that makes the A-VM exit (status 33) right
/// after printing its boot report.
pub const EXIT_AFTER_REPORT: &str = "exit-after-report";
/// How often the serial log and QEMU are polled while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// Lines of serial log shown in error messages.
const TAIL_LINES: usize = 25;
/// Grace period between SIGTERM and SIGKILL in `down`.
const TERMINATE_GRACE: Duration = Duration::from_secs(3);

/// What to bring up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub state_dir: PathBuf,
    /// The A-VM kernel image (ELF with a PVH note).
    pub image: PathBuf,
    pub memory_mib: u32,
    /// Host loopback port forwarded to the A-VM's attestation server
    /// ([`GUEST_ATTEST_PORT`]); `None`: no NIC at all (boot-only tests).
    pub attest_port: Option<u16>,
    /// Attach the TPM (false only to test the A-VM's no-TPM error path).
    pub with_tpm: bool,
    /// Let the A-VM exit right after its boot report.
    pub exit_after_report: bool,
    /// Further kernel command-line words.
    pub extra_cmdline: Vec<String>,
    /// `None`: probe for real KVM, else TCG.
    pub accel: Option<Accel>,
    /// Run QEMU and swtpm in process groups of their own, for nodes that
    /// are detached to outlive the launcher (`up`).
    pub detachable: bool,
    /// The Mon-VM to start next to the A-VM; `None` (the library's default)
    /// gives an A-VM-only node.
    pub monvm: Option<MonVmConfig>,
    /// The A-VM's monitor policy (check periods), handed over as the
    /// fw_cfg file `opt/avm/monitor-policy` in its canonical text; `None`:
    /// no file, the A-VM uses [`MonitorPolicy::default`].
    pub monitor_policy: Option<MonitorPolicy>,
    /// Where the node's processes run on the host's CPUs.
    pub cpus: CpuPlacement,
}

impl NodeConfig {
    pub fn new(state_dir: impl Into<PathBuf>, image: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            image: image.into(),
            memory_mib: DEFAULT_MEMORY_MIB,
            attest_port: None,
            with_tpm: true,
            exit_after_report: false,
            extra_cmdline: Vec::new(),
            accel: None,
            detachable: false,
            monvm: None,
            monitor_policy: None,
            cpus: CpuPlacement::Shared,
        }
    }

    fn process_group(&self) -> ProcessGroup {
        if self.detachable {
            ProcessGroup::Own
        } else {
            ProcessGroup::Inherit
        }
    }

    fn kernel_cmdline(&self) -> String {
        let mut words: Vec<&str> = Vec::new();
        if self.exit_after_report {
            words.push(EXIT_AFTER_REPORT);
        }
        words.extend(self.extra_cmdline.iter().map(String::as_str));
        words.join(" ")
    }
}

/// The persisted description of a node (`DIR/node.json`). Fields may be
/// added over time; readers tolerate missing ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NodeRecord {
    pub state_dir: PathBuf,
    /// The measured and booted copy of the A-VM image.
    pub image: PathBuf,
    /// Where the image was copied from.
    pub image_source: PathBuf,
    pub image_sha256: String,
    /// PCR0 right after the H-CRTM measurement (hex), before firmware.
    pub pcr0_hcrtm_start: Option<String>,
    pub accel: Option<Accel>,
    pub qemu_pid: Option<u32>,
    pub swtpm_pid: Option<u32>,
    /// The A-VM's serial console log.
    pub avm_serial: PathBuf,
    /// QEMU's own stdout/stderr.
    pub avm_qemu_log: PathBuf,
    pub swtpm_log: Option<PathBuf>,
    /// EK CA bundle (issuing CA, then root CA; PEM).
    pub ek_ca: Option<PathBuf>,
    pub ek_ca_root: Option<PathBuf>,
    pub ek_ca_issuer: Option<PathBuf>,
    /// EK certificates (DER) as provisioned into TPM NV.
    pub ek_certs: Vec<PathBuf>,
    /// Certificate (DER) of the ECC P-256 EK, the one the A-VM uses.
    pub ek_cert_ecc_p256: Option<PathBuf>,
    /// TPM name (hex) of that EK, as the A-VM reports it in `ek.name`.
    pub ek_name_ecc_p256: Option<String>,
    /// Host loopback port forwarded to the A-VM's attestation server.
    pub attest_port: Option<u16>,
    /// `host:port` where the A-VM's attestation server is reachable.
    pub attest_addr: Option<String>,
    /// The A-VM's own address and server port, once its network is up
    /// (`AVM-NET-UP` on the serial console).
    pub guest_ip: Option<String>,
    pub guest_attest_port: Option<u16>,
    /// The Mon-VM's QEMU. The `monvm_*` fields are absent for an A-VM-only
    /// node (`status --json` then prints exactly what it did before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_pid: Option<u32>,
    /// The Mon-VM's RAM file (shared memory), mapped read-only by the A-VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_ram: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_ram_mib: Option<u64>,
    /// Guest-physical ranges to RAM file offsets, as on the A-VM's command
    /// line after `monvm.ram=` (docs/monvm.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_ram_layout: Option<String>,
    /// The Mon-VM's serial console (Unix socket; one client at a time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_console: Option<PathBuf>,
    /// Everything the Mon-VM wrote to its console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_console_log: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_qemu_log: Option<PathBuf>,
    /// The Mon-VM's root filesystem image (ext4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_root_image: Option<PathBuf>,
    /// The Mon-VM kernel's package version (e.g. `6.1.192-3`), or its
    /// release when booted from a path without package metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_kernel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_kernel_release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_kernel_package: Option<String>,
    /// The kernel series (`6.1`, `6.12`) when taken from the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_series: Option<String>,
    /// The bzImage booted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_vmlinuz: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_kernel_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_cmdline: Option<String>,
    /// Guest paths of the kernel modules on the Mon-VM's root.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub monvm_modules: Vec<String>,
    /// From starting the Mon-VM's QEMU to its ready line, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monvm_ready_ms: Option<u64>,
    /// The kernel profile handed to the A-VM (fw_cfg file
    /// `opt/avm/kernel-profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monvm_profile: Option<PathBuf>,
    /// Its SHA-256: what the A-VM extends into PCR 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monvm_profile_sha256: Option<String>,
    /// The monitor policy handed to the A-VM (canonical text), if one was
    /// given; without it the A-VM uses (and measures) its defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_policy: Option<String>,
    /// The CPUs the node's processes are pinned to (`avm=1 monvm=0`), with
    /// `--cpus split`; absent when they share the host's CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_split: Option<String>,
    /// The A-VM's vCPUs when it has more than one (a helper for the
    /// start-up check of the Mon-VM kernel's text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avm_cpus: Option<u32>,
}

impl NodeRecord {
    /// The guest path of module `name` (`.../NAME.ko`) on the Mon-VM's root.
    pub fn monvm_module(&self, name: &str) -> Option<&str> {
        let file = format!("/{name}.ko");
        self.monvm_modules
            .iter()
            .find(|m| m.ends_with(&file))
            .map(String::as_str)
    }

    fn load(layout: &StateLayout) -> Result<Self, NodeError> {
        let path = layout.node_json();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(NodeError::NoNode(layout.root().to_path_buf()));
            }
            Err(err) => return Err(io_error(format!("reading {}", path.display()))(err)),
        };
        serde_json::from_str(&text).map_err(|err| NodeError::CorruptRecord {
            path,
            reason: err.to_string(),
        })
    }

    /// Written to a temporary file and renamed, so a concurrent `status`
    /// never reads half a record.
    fn store(&self, layout: &StateLayout) -> Result<(), NodeError> {
        let path = layout.node_json();
        let temporary = path.with_extension("json.tmp");
        let json = serde_json::to_string_pretty(self).map_err(|err| NodeError::CorruptRecord {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        std::fs::write(&temporary, json + "\n")
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(io_error(format!("writing {}", path.display())))
    }

    /// Whether the node's processes are alive (checked against the state
    /// dir in their command lines, so a reused pid does not count).
    fn is_running(&self) -> bool {
        let alive =
            |pid: Option<u32>| pid.is_some_and(|pid| process::is_ours(pid, &self.state_dir));
        alive(self.qemu_pid)
            && (self.swtpm_pid.is_none() || alive(self.swtpm_pid))
            && (self.monvm_pid.is_none() || alive(self.monvm_pid))
    }

    /// Notes a started Mon-VM.
    fn set_monvm(&mut self, monvm: &MonVm) {
        let kernel = monvm.kernel();
        self.monvm_pid = Some(monvm.pid());
        self.monvm_ram = Some(monvm.ram_path().to_path_buf());
        self.monvm_ram_mib = Some(monvm.ram_mib());
        self.monvm_ram_layout = Some(monvm.layout().to_string());
        self.monvm_console = Some(monvm.console_socket().to_path_buf());
        self.monvm_console_log = Some(monvm.console_log().to_path_buf());
        self.monvm_qemu_log = Some(monvm.qemu_log().to_path_buf());
        self.monvm_root_image = Some(monvm.root_image().to_path_buf());
        self.monvm_kernel = Some(kernel.display_version());
        self.monvm_kernel_release = Some(kernel.release.clone());
        self.monvm_kernel_package = kernel.package.clone();
        self.monvm_series = kernel.series.clone();
        self.monvm_vmlinuz = Some(kernel.vmlinuz.clone());
        self.monvm_cmdline = Some(monvm.cmdline().to_owned());
        self.monvm_modules = monvm.modules().to_vec();
    }
}

/// `status`: the record plus liveness.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    #[serde(flatten)]
    pub record: NodeRecord,
    pub running: bool,
}

/// Failures bringing up, waiting for, or stopping a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("A-VM image {0} not found: run `make build` first")]
    ImageMissing(PathBuf),
    #[error("{QEMU} is not installed (run `make deps`)", QEMU = crate::qemu::QEMU_BINARY)]
    QemuNotInstalled,
    #[error("a node is already running in {}: run `avm-qemu down --state {}` first", .0.display(), .0.display())]
    AlreadyRunning(PathBuf),
    #[error("no node in {} (no node.json)", .0.display())]
    NoNode(PathBuf),
    #[error("{path}: {reason}")]
    CorruptRecord { path: PathBuf, reason: String },
    #[error("state dir path too long for a unix socket ({}); use a shorter --state", .0.display())]
    SocketPathTooLong(PathBuf),
    #[error(
        "--memory {0}: an A-VM that watches a Mon-VM needs at least {MONVM_MIN_MEMORY_MIB} MiB (docs/monitoring.md, \"Memory\"); give more, or --no-monvm"
    )]
    TooLittleMemory(u32),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("provisioning the TPM: {0}")]
    Provision(#[from] ProvisionError),
    #[error("swtpm: {0}")]
    Swtpm(#[from] SwtpmError),
    #[error("Mon-VM: {0}")]
    MonVm(#[from] MonVmError),
    #[error("the A-VM reported an error: {error}{exit}\n--- A-VM serial log (tail) ---\n{serial_tail}",
        exit = exit.map(|e| format!(" ({})", e.describe())).unwrap_or_default())]
    Guest {
        error: GuestError,
        exit: Option<GuestExit>,
        serial_tail: String,
    },
    #[error("QEMU exited before the boot report: {}\n--- A-VM serial log (tail) ---\n{serial_tail}\n--- QEMU log (tail) ---\n{qemu_log_tail}", exit.describe())]
    QemuExited {
        exit: GuestExit,
        serial_tail: String,
        qemu_log_tail: String,
    },
    #[error(
        "the A-VM printed an invalid boot report: {error}\n--- A-VM serial log (tail) ---\n{serial_tail}"
    )]
    InvalidReport {
        error: ReportError,
        serial_tail: String,
    },
    #[error("no boot report within {timeout:?}\n--- A-VM serial log (tail) ---\n{serial_tail}")]
    BootTimeout {
        timeout: Duration,
        serial_tail: String,
    },
    #[error("QEMU did not exit within {0:?}")]
    ExitTimeout(Duration),
    #[error("the node has no network (launched without an attestation port)")]
    NoNetwork,
    #[error(
        "the A-VM's network did not start: {reason}\n--- A-VM serial log (tail) ---\n{serial_tail}"
    )]
    NetworkDown { reason: String, serial_tail: String },
    #[error(
        "the A-VM's network did not come up within {timeout:?}\n--- A-VM serial log (tail) ---\n{serial_tail}"
    )]
    NetworkTimeout {
        timeout: Duration,
        serial_tail: String,
    },
    #[error(
        "the A-VM did not finish measuring the Mon-VM within {timeout:?}\n--- A-VM serial log (tail) ---\n{serial_tail}"
    )]
    MonVmStartupTimeout {
        timeout: Duration,
        serial_tail: String,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let context = context.into();
    move |source| NodeError::Io { context, source }
}

fn file_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running node. Dropping it kills QEMU and swtpm.
pub struct Node {
    layout: StateLayout,
    record: NodeRecord,
    // Field order is drop order: the A-VM's QEMU goes first, then the
    // Mon-VM (its QEMU, then its RAM file), then the TPM.
    qemu: ChildGuard,
    monvm: Option<MonVm>,
    swtpm: Option<Swtpm>,
    serial: SerialLog,
    qemu_started_at: Instant,
    report: Option<(BootReport, Instant)>,
    exit: Option<(GuestExit, Instant)>,
}

/// The A-VM's vCPUs for `requested`: at least one, and no more than the
/// host CPUs its QEMU may use (one in a split placement, where a second
/// vCPU would only compete with the first).
fn avm_vcpus(requested: u32, split: Option<&CpuSplit>) -> u32 {
    let host = split.map_or(u32::MAX, |s| u32::try_from(s.avm.len()).unwrap_or(u32::MAX));
    requested.clamp(1, host.max(1))
}

/// Pins the A-VM's QEMU and swtpm to the split's A-VM CPUs, the Mon-VM's
/// QEMU to the others (every thread each has now).
fn pin_node(
    split: &CpuSplit,
    avm_qemu: u32,
    swtpm: Option<&Swtpm>,
    monvm: Option<&MonVm>,
) -> Result<(), NodeError> {
    let mut pins = vec![(avm_qemu, &split.avm)];
    pins.extend(swtpm.map(|s| (s.pid(), &split.avm)));
    pins.extend(monvm.map(|m| (m.pid(), &split.monvm)));
    for (pid, cpus) in pins {
        pin_process(pid, cpus).map_err(io_error("pinning the node's processes to their CPUs"))?;
    }
    Ok(())
}

/// Removes what an earlier node left in the state dir, so every launch
/// starts from a fresh TPM (QEMU would otherwise replay old volatile state),
/// and the RAM file of an earlier Mon-VM that was never brought down.
fn clear_previous_node(
    layout: &StateLayout,
    previous: Option<&NodeRecord>,
) -> Result<(), NodeError> {
    if let Some(ram) = previous.and_then(|record| record.monvm_ram.as_deref()) {
        monvm::ram::remove_recorded(ram)?;
    }
    for dir in [
        layout.tpm_state(),
        layout.ca_state(),
        layout.ek_certs(),
        layout.provision_dir(),
    ] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error(format!("removing {}", dir.display()))(err)),
        }
    }
    for file in [
        layout.node_json(),
        layout.avm_image(),
        layout.avm_serial(),
        layout.avm_qemu_log(),
        layout.swtpm_ctrl_socket(),
        layout.swtpm_log(),
        layout.swtpm_pid(),
        layout.ek_ca_bundle(),
        layout.monvm_console_socket(),
        layout.monvm_console_log(),
        layout.monvm_qemu_log(),
        layout.monvm_root_image(),
    ] {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error(format!("removing {}", file.display()))(err)),
        }
    }
    Ok(())
}

impl Node {
    /// Provisions, measures and starts the node; does not wait for the boot.
    pub fn launch(config: &NodeConfig) -> Result<Self, NodeError> {
        let layout = StateLayout::new(&config.state_dir)
            .map_err(io_error("resolving the state directory"))?;
        std::fs::create_dir_all(layout.root())
            .map_err(io_error(format!("creating {}", layout.root().display())))?;
        let previous = NodeRecord::load(&layout).ok();
        if previous.as_ref().is_some_and(NodeRecord::is_running) {
            return Err(NodeError::AlreadyRunning(layout.root().to_path_buf()));
        }
        let socket = layout.swtpm_ctrl_socket();
        if socket.as_os_str().len() > MAX_UNIX_SOCKET_PATH {
            return Err(NodeError::SocketPathTooLong(socket));
        }
        if !config.image.is_file() {
            return Err(NodeError::ImageMissing(config.image.clone()));
        }
        if config.monvm.is_some() && config.memory_mib < MONVM_MIN_MEMORY_MIB {
            return Err(NodeError::TooLittleMemory(config.memory_mib));
        }
        // A Mon-VM that outlived the rest of an earlier node would keep
        // running unseen: stop it (only if its command line names this
        // state dir) before its record is replaced.
        if let Some(pid) = previous.as_ref().and_then(|record| record.monvm_pid)
            && process::is_ours(pid, layout.root())
        {
            process::terminate(pid, TERMINATE_GRACE)
                .map_err(io_error(format!("stopping the earlier Mon-VM {pid}")))?;
        }
        clear_previous_node(&layout, previous.as_ref())?;

        // Measure and boot the same bytes: a private copy cannot change
        // between the two.
        let image = std::fs::read(&config.image)
            .map_err(io_error(format!("reading {}", config.image.display())))?;
        std::fs::write(layout.avm_image(), &image)
            .map_err(io_error("copying the A-VM image into the state dir"))?;
        let image_digest = sha256(&image);
        let mut record = NodeRecord {
            state_dir: layout.root().to_path_buf(),
            image: layout.avm_image(),
            image_source: std::path::absolute(&config.image).unwrap_or(config.image.clone()),
            image_sha256: hex::encode(&image_digest),
            avm_serial: layout.avm_serial(),
            avm_qemu_log: layout.avm_qemu_log(),
            attest_port: config.attest_port,
            attest_addr: config.attest_port.map(|port| format!("127.0.0.1:{port}")),
            ..NodeRecord::default()
        };
        let accel = config
            .accel
            .unwrap_or_else(|| kvm::choose_accel(layout.root()));
        record.accel = Some(accel);
        let split = match config.cpus {
            CpuPlacement::Shared => None,
            CpuPlacement::Split => {
                let split = CpuSplit::of_this_host()
                    .map_err(io_error("reading the CPUs this process may run on"))?;
                if split.is_none() {
                    eprintln!("avm-qemu: one CPU only: the node's processes share it");
                }
                split
            }
        };
        record.cpu_split = split.as_ref().map(CpuSplit::describe);

        // The Mon-VM first: the A-VM's QEMU maps its RAM file. From here
        // on, an error drops it (its QEMU killed, its RAM file removed).
        let monvm = match &config.monvm {
            Some(monvm_config) => {
                let monvm = MonVm::launch(monvm_config, &layout, accel, config.process_group())?;
                record.set_monvm(&monvm);
                record.monvm_kernel_sha256 = std::fs::read(&monvm.kernel().vmlinuz)
                    .ok()
                    .map(|bytes| hex::encode(&sha256(&bytes)));
                // Cached next to a cached kernel, else in the node's state.
                let kernel = monvm.kernel();
                let profile_dir = match (&kernel.series, kernel.vmlinuz.parent()) {
                    (Some(_), Some(dir)) => dir.to_path_buf(),
                    _ => layout.root().to_path_buf(),
                };
                let profile = crate::monvm::profile::profile_for(kernel, &profile_dir)?;
                record.monvm_profile = Some(profile.path);
                record.monvm_profile_sha256 = Some(hex::encode(&profile.sha256));
                // Stored at once, so `down` finds the RAM file even if the
                // launcher dies before the A-VM is up.
                record.store(&layout)?;
                Some(monvm)
            }
            None => None,
        };

        let swtpm = if config.with_tpm {
            let ek = provision_tpm(&layout)?;
            record.ek_ca = Some(ek.ca_bundle_pem);
            record.ek_ca_root = Some(ek.root_ca_pem);
            record.ek_ca_issuer = Some(ek.issuer_ca_pem);
            record.ek_certs = ek.ek_certs;
            record.ek_cert_ecc_p256 = Some(ek.ek_cert_ecc_p256);
            record.ek_name_ecc_p256 = Some(hex::encode(&ek.ek_name_ecc_p256));
            Some(Self::start_measured_swtpm(
                &layout,
                &image,
                config.process_group(),
            )?)
        } else {
            None
        };
        if swtpm.is_some() {
            record.pcr0_hcrtm_start = Some(hex::encode(&hcrtm_pcr0_start(&image_digest)));
            record.swtpm_pid = swtpm.as_ref().map(Swtpm::pid);
            record.swtpm_log = Some(layout.swtpm_log());
        }

        let mut cmdline = config.kernel_cmdline();
        if let Some(monvm) = &monvm {
            if !cmdline.is_empty() {
                cmdline.push(' ');
            }
            cmdline.push_str(&monvm.layout_cmdline_word());
        }
        let mut qemu = QemuCommand::new("q35", accel, config.memory_mib);
        qemu.serial_to_file(&layout.avm_serial())
            .debug_exit()
            .kernel(&layout.avm_image(), &cmdline);
        if let Some(monvm) = &monvm {
            monvm.attach_to_avm(&mut qemu);
            // A helper CPU for the start-up check of the Mon-VM kernel's
            // text, which the A-VM splits between its CPUs.
            let requested = config.monvm.as_ref().map_or(1, |m| m.avm_cpus);
            let cpus = avm_vcpus(requested, split.as_ref());
            if cpus > 1 {
                qemu.args(["-smp", &cpus.to_string()]);
                record.avm_cpus = Some(cpus);
            }
        }
        if let Some(profile) = &record.monvm_profile {
            // fw_cfg, not -initrd: QEMU puts an initrd right below the top
            // of RAM, over SeaBIOS's ACPI tables once it is large.
            let mut arg = std::ffi::OsString::from("name=opt/avm/kernel-profile,file=");
            arg.push(profile);
            qemu.arg("-fw_cfg").arg(arg);
        }
        if let Some(policy) = &config.monitor_policy {
            let text = policy.to_string();
            let path = layout.root().join("monitor-policy");
            std::fs::write(&path, &text).map_err(io_error("writing the monitor policy"))?;
            let mut arg = std::ffi::OsString::from(format!(
                "name={},file=",
                avm_attest::monitor_policy::FW_CFG_NAME
            ));
            arg.push(&path);
            qemu.arg("-fw_cfg").arg(arg);
            record.monitor_policy = Some(text);
        }
        if swtpm.is_some() {
            qemu.tpm_crb(&layout.swtpm_ctrl_socket());
        }
        if let Some(port) = config.attest_port {
            qemu.user_net_forward(port, GUEST_ATTEST_PORT);
        }
        let log = std::fs::File::create(layout.avm_qemu_log())
            .map_err(io_error("creating the QEMU log"))?;
        let command = qemu
            .to_command(log)
            .map_err(io_error("preparing QEMU's log"))?;
        let qemu_started_at = Instant::now();
        let qemu =
            ChildGuard::spawn_in(command, "qemu", config.process_group()).map_err(|err| {
                if err.kind() == std::io::ErrorKind::NotFound {
                    NodeError::QemuNotInstalled
                } else {
                    io_error("starting QEMU")(err)
                }
            })?;
        record.qemu_pid = Some(qemu.pid());
        record.store(&layout)?;
        // Right after each process started, before it made most of its
        // threads (which inherit the placement); `up` pins again once the
        // node is up, for threads made before this.
        if let Some(split) = &split {
            pin_node(split, qemu.pid(), swtpm.as_ref(), monvm.as_ref())?;
        }

        Ok(Self {
            serial: SerialLog::new(layout.avm_serial()),
            layout,
            record,
            qemu,
            monvm,
            swtpm,
            qemu_started_at,
            report: None,
            exit: None,
        })
    }

    /// Runs the H-CRTM measurement on a first swtpm (which then exits),
    /// and starts the swtpm QEMU will use on the same state.
    fn start_measured_swtpm(
        layout: &StateLayout,
        image: &[u8],
        group: ProcessGroup,
    ) -> Result<Swtpm, NodeError> {
        let mut config = SwtpmConfig::unix(layout.tpm_state(), layout.swtpm_ctrl_socket());
        config.log_file = Some(layout.swtpm_log());
        Swtpm::spawn(&config)?.measure_hcrtm_and_exit(image)?;
        // The exited swtpm may leave its socket behind; readiness of the
        // next one is judged by the socket appearing.
        let _ = std::fs::remove_file(layout.swtpm_ctrl_socket());
        config.pid_file = Some(layout.swtpm_pid());
        // With QEMU gone, swtpm has nothing left to do.
        config.terminate_with_client = true;
        config.process_group = group;
        Ok(Swtpm::spawn(&config)?)
    }

    /// Launches and waits for the boot report, then (for a node with an
    /// attestation port that keeps running) for its network; `timeout`
    /// bounds both waits together.
    pub fn up(config: &NodeConfig, timeout: Duration) -> Result<Self, NodeError> {
        let started = Instant::now();
        let mut node = Self::launch(config)?;
        node.wait_for_report(timeout)?;
        if config.attest_port.is_some() && !config.exit_after_report {
            node.wait_for_network(timeout.saturating_sub(started.elapsed()))?;
        }
        if node.monvm.is_some() {
            node.wait_for_monvm(timeout.saturating_sub(started.elapsed()))?;
            if !config.exit_after_report {
                node.wait_for_monvm_startup(timeout.saturating_sub(started.elapsed()))?;
            }
        }
        if config.cpus == CpuPlacement::Split
            && node.exit.is_none()
            && let Some(split) = CpuSplit::of_this_host()
                .map_err(io_error("reading the CPUs this process may run on"))?
        {
            pin_node(
                &split,
                node.qemu.pid(),
                node.swtpm.as_ref(),
                node.monvm.as_ref(),
            )?;
        }
        Ok(node)
    }

    /// Follows the serial log until the A-VM has measured the Mon-VM's
    /// start-up state (`AVM-MONVM-STARTUP`: profile, text, IMA list,
    /// kernel, modules, processes, system-call table and IDT all in its
    /// log), so a verifier that attests right after `up` sees all of it.
    pub fn wait_for_monvm_startup(&mut self, timeout: Duration) -> Result<(), NodeError> {
        self.poll_serial_until(
            timeout,
            |timeout, serial_tail| NodeError::MonVmStartupTimeout {
                timeout,
                serial_tail,
            },
            |node| {
                let text = node.serial.text();
                let done = text.contains("AVM-MONVM-STARTUP ")
                    // An A-VM that cannot introspect says so and goes on.
                    || text.contains("monvm: profile refused")
                    || text.contains("monvm: no kernel profile");
                Ok(done.then_some(()))
            },
        )
    }

    /// Follows the Mon-VM's console log until its init says userland is
    /// up, and records how long that took in `node.json`. Fails on a
    /// kernel panic, the Mon-VM's QEMU exiting or the timeout. A node
    /// without a Mon-VM is ready at once.
    pub fn wait_for_monvm(&mut self, timeout: Duration) -> Result<(), NodeError> {
        let Some(monvm) = self.monvm.as_mut() else {
            return Ok(());
        };
        let ready = monvm.wait_ready(timeout)?;
        let ms = u64::try_from(ready.since_start.as_millis()).unwrap_or(u64::MAX);
        if self.record.monvm_ready_ms != Some(ms) {
            self.record.monvm_ready_ms = Some(ms);
            self.record.store(&self.layout)?;
        }
        Ok(())
    }

    /// [`Node::up`] with the attestation server forwarded from a free
    /// loopback port (`config.attest_port` is ignored). Another process can
    /// take the port between the probe and QEMU's bind; a fresh one is then
    /// tried, up to [`PORT_ATTEMPTS`] in all.
    pub fn up_on_free_port(config: &NodeConfig, timeout: Duration) -> Result<Self, NodeError> {
        let mut config = config.clone();
        let mut attempt = 1;
        loop {
            config.attest_port =
                Some(free_loopback_port().map_err(io_error("finding a free loopback port"))?);
            match Self::up(&config, timeout) {
                Err(err) if err.is_port_conflict() && attempt < PORT_ATTEMPTS => attempt += 1,
                result => return result,
            }
        }
    }

    /// Follows the serial log until the A-VM says its attestation server
    /// is reachable (`AVM-NET-UP`), and records the guest address in
    /// `node.json`. Fails on `AVM-NET-DOWN`, QEMU exiting or the timeout.
    pub fn wait_for_network(&mut self, timeout: Duration) -> Result<(), NodeError> {
        if self.record.attest_port.is_none() {
            return Err(NodeError::NoNetwork);
        }
        self.poll_serial_until(
            timeout,
            |timeout, serial_tail| NodeError::NetworkTimeout {
                timeout,
                serial_tail,
            },
            |node| match scan_network(&node.serial.text()) {
                NetworkOutcome::Up { ip, port } => {
                    node.record.guest_ip = Some(ip.to_string());
                    node.record.guest_attest_port = Some(port);
                    node.record.store(&node.layout)?;
                    Ok(Some(()))
                }
                NetworkOutcome::Down { reason } => Err(NodeError::NetworkDown {
                    reason,
                    serial_tail: node.serial.tail(TAIL_LINES),
                }),
                NetworkOutcome::Invalid { line } => Err(NodeError::NetworkDown {
                    reason: format!("unreadable network line {line:?}"),
                    serial_tail: node.serial.tail(TAIL_LINES),
                }),
                NetworkOutcome::Pending => Ok(None),
            },
        )
    }

    /// The loop behind the waits on the serial log: polls QEMU's exit, then
    /// the log (so output written just before QEMU exited is seen), and
    /// asks `step` whether the log says enough. Ends with `step`'s answer
    /// or error, `QemuExited` once QEMU is gone, or `on_timeout`'s error.
    fn poll_serial_until<T>(
        &mut self,
        timeout: Duration,
        on_timeout: impl FnOnce(Duration, String) -> NodeError,
        mut step: impl FnMut(&mut Self) -> Result<Option<T>, NodeError>,
    ) -> Result<T, NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.poll_exit()?;
            self.serial
                .poll()
                .map_err(io_error("reading the A-VM serial log"))?;
            if let Some(done) = step(self)? {
                return Ok(done);
            }
            if let Some(exit) = exited {
                return Err(NodeError::QemuExited {
                    exit,
                    serial_tail: self.serial.tail(TAIL_LINES),
                    qemu_log_tail: file_tail(&self.layout.avm_qemu_log(), TAIL_LINES),
                });
            }
            if Instant::now() >= deadline {
                return Err(on_timeout(timeout, self.serial.tail(TAIL_LINES)));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `127.0.0.1:PORT`, where the attestation server is reachable from
    /// the host (`None` without a network).
    pub fn attest_addr(&self) -> Option<std::net::SocketAddr> {
        self.record
            .attest_port
            .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Notes QEMU's exit (once) with when it was seen.
    fn poll_exit(&mut self) -> Result<Option<GuestExit>, NodeError> {
        if self.exit.is_none()
            && let Some(status) = self.qemu.try_wait().map_err(io_error("waiting for QEMU"))?
        {
            self.exit = Some((GuestExit::from_status(status), Instant::now()));
        }
        Ok(self.exit.map(|(exit, _)| exit))
    }

    /// Follows the serial log until the boot report. Fails early, with the
    /// serial tail, on an `AVM-ERROR` line, an invalid report, QEMU exiting
    /// or the timeout.
    pub fn wait_for_report(&mut self, timeout: Duration) -> Result<&BootReport, NodeError> {
        let report = self.poll_serial_until(
            timeout,
            |timeout, serial_tail| NodeError::BootTimeout {
                timeout,
                serial_tail,
            },
            |node| match node.serial.outcome().clone() {
                SerialOutcome::Report(report) => Ok(Some(*report)),
                SerialOutcome::Error(error) => {
                    // The kernel exits right after its error line; a short
                    // wait lets the message include the exit status.
                    let _ = node.wait_for_exit(Duration::from_secs(1));
                    Err(NodeError::Guest {
                        error,
                        exit: node.exit.map(|(exit, _)| exit),
                        serial_tail: node.serial.tail(TAIL_LINES),
                    })
                }
                SerialOutcome::InvalidReport(error) => Err(NodeError::InvalidReport {
                    error,
                    serial_tail: node.serial.tail(TAIL_LINES),
                }),
                SerialOutcome::Pending => Ok(None),
            },
        )?;
        let (report, _) = self.report.insert((report, Instant::now()));
        Ok(report)
    }

    /// Waits for QEMU to exit by itself.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<GuestExit, NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.poll_exit()? {
                let _ = self.serial.poll();
                return Ok(exit);
            }
            if Instant::now() >= deadline {
                return Err(NodeError::ExitTimeout(timeout));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn layout(&self) -> &StateLayout {
        &self.layout
    }
    pub fn record(&self) -> &NodeRecord {
        &self.record
    }
    pub fn serial(&self) -> &SerialLog {
        &self.serial
    }
    pub fn qemu_pid(&self) -> u32 {
        self.qemu.pid()
    }
    pub fn swtpm_pid(&self) -> Option<u32> {
        self.swtpm.as_ref().map(Swtpm::pid)
    }
    /// The Mon-VM, for a node that has one.
    pub fn monvm(&self) -> Option<&MonVm> {
        self.monvm.as_ref()
    }
    /// Connects to the Mon-VM's console (see
    /// [`MonVmConsole::connect`](crate::monvm::MonVmConsole::connect)).
    pub fn monvm_console(
        &self,
        timeout: Duration,
    ) -> Result<monvm::MonVmConsole, monvm::ConsoleError> {
        match &self.monvm {
            Some(monvm) => monvm.console(timeout),
            None => Err(monvm::ConsoleError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "this node has no Mon-VM",
            ))),
        }
    }
    /// When QEMU was spawned.
    pub fn qemu_started_at(&self) -> Instant {
        self.qemu_started_at
    }
    /// The boot report, once seen.
    pub fn report(&self) -> Option<&BootReport> {
        self.report.as_ref().map(|(report, _)| report)
    }
    /// When the complete boot report was first seen.
    pub fn report_seen_at(&self) -> Option<Instant> {
        self.report.as_ref().map(|(_, at)| *at)
    }
    /// QEMU's exit, once seen, and when.
    pub fn exit(&self) -> Option<(GuestExit, Instant)> {
        self.exit
    }

    /// Leaves QEMU and swtpm running after this handle is gone; `down`
    /// stops them later. Launch with `detachable` so they are in process
    /// groups of their own.
    pub fn detach(self) -> NodeRecord {
        let Self {
            record,
            qemu,
            monvm,
            swtpm,
            ..
        } = self;
        qemu.detach();
        if let Some(monvm) = monvm {
            monvm.detach();
        }
        if let Some(swtpm) = swtpm {
            swtpm.detach();
        }
        record
    }

    /// Stops the A-VM's QEMU, the Mon-VM (removing its RAM file), then swtpm.
    pub fn shut_down(self) {
        drop(self);
    }
}

/// How often [`Node::up_on_free_port`] tries another port when another
/// process took the one picked before QEMU could bind it.
pub const PORT_ATTEMPTS: usize = 3;

/// A loopback TCP port that is free right now (the kernel picks it), for a
/// node whose user did not choose one. Another process could take it before
/// QEMU binds it; QEMU then fails with "Could not set up host forwarding
/// rule" (see [`NodeError::is_port_conflict`]).
pub fn free_loopback_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
}

impl NodeError {
    /// Whether QEMU failed because the forwarded host port was taken.
    pub fn is_port_conflict(&self) -> bool {
        matches!(self, NodeError::QemuExited { qemu_log_tail, .. }
            if qemu_log_tail.contains("host forwarding rule"))
    }
}

/// The status of the node in `state_dir`.
pub fn status(state_dir: &Path) -> Result<NodeStatus, NodeError> {
    let layout = StateLayout::new(state_dir).map_err(io_error("resolving the state directory"))?;
    let record = NodeRecord::load(&layout)?;
    let running = record.is_running();
    Ok(NodeStatus { record, running })
}

/// Stops every process the node in `state_dir` started (the A-VM's QEMU
/// first, then the Mon-VM's, then swtpm) and removes the Mon-VM's RAM file.
/// Only processes whose command line names the state dir are signalled.
pub fn down(state_dir: &Path) -> Result<NodeStatus, NodeError> {
    let layout = StateLayout::new(state_dir).map_err(io_error("resolving the state directory"))?;
    let record = NodeRecord::load(&layout)?;
    // Decide which pids are ours before stopping any: once QEMU is gone,
    // swtpm (`-t`) exits by itself, and a process on its way out no longer
    // shows its command line, so checking it afterwards would skip it and
    // return before it is gone.
    let ours: Vec<u32> = [record.qemu_pid, record.monvm_pid, record.swtpm_pid]
        .into_iter()
        .flatten()
        .filter(|&pid| process::is_ours(pid, &record.state_dir))
        .collect();
    for pid in ours {
        process::terminate(pid, TERMINATE_GRACE)
            .map_err(io_error(format!("stopping process {pid}")))?;
    }
    if let Some(ram) = &record.monvm_ram {
        monvm::ram::remove_recorded(ram)?;
    }
    let running = record.is_running();
    Ok(NodeStatus { record, running })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_avm_gets_no_more_vcpus_than_host_cpus() {
        // Shared placement: as requested, at least one.
        assert_eq!(avm_vcpus(2, None), 2);
        assert_eq!(avm_vcpus(1, None), 1);
        assert_eq!(avm_vcpus(0, None), 1);
        // Split: the A-VM has one host CPU, so one vCPU.
        let split = CpuSplit::of(&[0, 1]).expect("a split of two CPUs");
        assert_eq!(avm_vcpus(2, Some(&split)), 1);
        assert_eq!(avm_vcpus(1, Some(&split)), 1);
        let wider = CpuSplit {
            avm: vec![2, 3],
            monvm: vec![0, 1],
        };
        assert_eq!(avm_vcpus(2, Some(&wider)), 2);
    }

    #[test]
    fn kernel_cmdline_words() {
        let mut config = NodeConfig::new("/tmp/x", "/tmp/avm.elf");
        assert_eq!(config.kernel_cmdline(), "");
        config.exit_after_report = true;
        config.extra_cmdline = vec!["log=debug".into()];
        assert_eq!(config.kernel_cmdline(), "exit-after-report log=debug");
    }

    #[test]
    fn record_roundtrips_and_tolerates_missing_fields() {
        let dir = tempfile::tempdir().unwrap();
        let layout = StateLayout::new(dir.path()).unwrap();
        let record = NodeRecord {
            state_dir: layout.root().to_path_buf(),
            qemu_pid: Some(1234),
            attest_addr: Some("127.0.0.1:4000".into()),
            ..NodeRecord::default()
        };
        record.store(&layout).unwrap();
        assert_eq!(NodeRecord::load(&layout).unwrap(), record);
        std::fs::write(layout.node_json(), r#"{"qemu_pid": 7}"#).unwrap();
        assert_eq!(NodeRecord::load(&layout).unwrap().qemu_pid, Some(7));
        std::fs::write(layout.node_json(), "not json").unwrap();
        assert!(matches!(
            NodeRecord::load(&layout),
            Err(NodeError::CorruptRecord { .. })
        ));
    }

    #[test]
    fn a_node_without_mon_vm_records_no_monvm_fields() {
        let record = NodeRecord {
            qemu_pid: Some(1),
            ..NodeRecord::default()
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains("monvm"), "{json}");
        let with = NodeRecord {
            monvm_ram: Some("/dev/shm/avm-monvm-1".into()),
            monvm_modules: vec!["/lib/modules/x/kernel/lib/crc7.ko".into()],
            ..record
        };
        let json = serde_json::to_string(&with).unwrap();
        assert!(
            json.contains(r#""monvm_ram":"/dev/shm/avm-monvm-1""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<NodeRecord>(&json).unwrap(), with);
    }

    #[test]
    fn status_of_a_dead_node_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(status(dir.path()), Err(NodeError::NoNode(_))));
        let layout = StateLayout::new(dir.path()).unwrap();
        // A pid that exists but is not ours (this test process).
        let record = NodeRecord {
            state_dir: layout.root().to_path_buf(),
            qemu_pid: Some(std::process::id()),
            ..NodeRecord::default()
        };
        record.store(&layout).unwrap();
        assert!(!status(dir.path()).unwrap().running);
        // `down` must not signal it.
        assert!(!down(dir.path()).unwrap().running);
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_loopback_port().unwrap();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn a_mon_vm_is_not_watched_with_less_memory_than_its_bounds_need() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("avm.elf");
        std::fs::write(&image, b"not started").unwrap();
        let mut config = NodeConfig::new(dir.path().join("node"), &image);
        config.monvm = Some(MonVmConfig::default());
        config.memory_mib = MONVM_MIN_MEMORY_MIB - 1;
        let err = Node::launch(&config).err().expect("refused");
        assert!(matches!(err, NodeError::TooLittleMemory(127)), "{err}");
        assert!(err.to_string().contains("at least 128 MiB"), "{err}");
        // Nothing was started or written for the node.
        assert!(!dir.path().join("node").join("node.json").exists());
    }

    #[test]
    fn missing_image_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::new(dir.path(), dir.path().join("nope.elf"));
        assert!(matches!(
            Node::launch(&config),
            Err(NodeError::ImageMissing(_))
        ));
    }
}
