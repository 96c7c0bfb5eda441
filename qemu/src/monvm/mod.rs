//! The Mon-VM: a stock, unmodified Debian kernel with a busybox userland,
//! the VM the A-VM watches (docs/monvm.md).
//!
//! - [`kernel`]: which kernel (a series fetched by `make deps`, or a path),
//!   checked to be a bzImage, booted with QEMU `-kernel` so that the kernel's
//!   own KASLR stays on (a PVH boot of the decompressed ELF turns it off).
//! - [`rootfs`]: the root filesystem, an ext4 image built with `mke2fs -d`
//!   on NVMe (built into the cloud kernels; no initramfs), so the Mon-VM's
//!   IMA (`ima_policy=tcb`) measures everything it runs.
//! - [`ram`]: guest RAM in a unique shared memory file under `/dev/shm`, its
//!   guest-physical layout (`monvm.ram=` on the A-VM's command line), and
//!   its removal.
//! - [`console`]: the serial console on a Unix socket and
//!   [`MonVmConsole`](console::MonVmConsole), which runs commands on it.
//!
//! [`MonVm::launch`] starts the Mon-VM's QEMU (`pc`, TCG unless real KVM,
//! one `qemu64` vCPU); [`MonVm::attach_to_avm`] gives the A-VM's QEMU the
//! same RAM file read-only as an `ivshmem-plain` device;
//! [`MonVm::wait_ready`] follows the console log until init prints
//! [`READY_LINE`].

pub mod console;
pub mod kernel;
pub mod profile;
pub mod ram;
pub mod rootfs;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use vmi::RamLayout;

use crate::layout::{MAX_UNIX_SOCKET_PATH, StateLayout};
use crate::process::{ChildGuard, ProcessGroup};
use crate::qemu::{Accel, QemuCommand};

pub use console::{CommandOutput, ConsoleError, MonVmConsole};
pub use kernel::{KernelChoice, MonVmKernel};
pub use ram::RamFile;

/// The line the Mon-VM's init prints once userland is up, followed by
/// `release=<uname -r> uptime=<seconds>`.
pub const READY_LINE: &str = "AVM-MONVM-READY";
/// A shell command for the Mon-VM's console that adds the user `nobody`
/// (uid 65534) to `/etc/passwd` unless it is there: the unprivileged user
/// the demo and the tests run processes as.
pub const ADD_USER_NOBODY: &str =
    "grep -q ^nobody: /etc/passwd || echo nobody:x:65534:65534:nobody:/:/bin/sh >> /etc/passwd";
/// The Mon-VM's machine type (its RAM layout is [`RamLayout::qemu_pc`]).
pub const MACHINE: &str = "pc";
/// The Mon-VM's CPU model, fixed so its kernel patches itself the same way
/// on every boot (alternatives depend on CPU features).
pub const CPU_MODEL: &str = "qemu64";
/// The A-VM's CPUs when it watches a Mon-VM: its own and a helper
/// (kernel/src/image/arch/x86_64/smp.rs; under TCG each is a host thread).
pub const DEFAULT_AVM_CPUS: u32 = 2;
/// Default Mon-VM RAM in MiB.
pub const DEFAULT_RAM_MIB: u64 = 256;
/// QEMU object id of the RAM backend (in both VMs).
pub const RAM_BACKEND_ID: &str = "monvm-ram";
/// The Mon-VM kernel's command line before any extra words: root on the
/// NVMe disk, the console on the first serial port, IMA's TCB policy, and
/// a panic halts the kernel (`panic=0`: wait forever; the launcher sees the
/// panic on the console). QEMU lets the Mon-VM reboot (`reboot` resets the
/// machine and boots the same kernel with a new KASLR slide; the A-VM
/// notices and measures the new boot, docs/monitoring.md).
pub const BASE_CMDLINE: [&str; 7] = [
    "console=ttyS0",
    "root=/dev/nvme0n1",
    "rootfstype=ext4",
    "rootwait",
    "rw",
    "ima_policy=tcb",
    "panic=0",
];
/// Words refused on the Mon-VM's command line: a real node has KASLR.
pub const FORBIDDEN_CMDLINE: [&str; 1] = ["nokaslr"];
/// Lines of console log shown in error messages.
const TAIL_LINES: usize = 30;
/// How often the console log and QEMU are polled while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What Mon-VM to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonVmConfig {
    pub kernel: KernelChoice,
    /// Guest RAM in MiB: a power of two (the A-VM maps it as one PCI BAR).
    pub ram_mib: u64,
    /// Further kernel command-line words (`nokaslr` is refused).
    pub extra_cmdline: Vec<String>,
    /// The kernel cache `make deps` fills.
    pub cache_dir: PathBuf,
    /// Where the RAM file is created.
    pub ram_dir: PathBuf,
    /// Host files copied into the root image (tests only: the test rootkit,
    /// docs/rootkit.md); empty by default, so the default root is unchanged.
    pub extra_files: Vec<rootfs::ExtraFile>,
    /// The A-VM's CPUs next to this Mon-VM: [`DEFAULT_AVM_CPUS`] gives it a
    /// helper CPU that shares the start-up check of the kernel's text and
    /// halts otherwise; 1 checks on one CPU (same result, slower).
    pub avm_cpus: u32,
}

impl Default for MonVmConfig {
    fn default() -> Self {
        Self::new(KernelChoice::default())
    }
}

impl MonVmConfig {
    pub fn new(kernel: KernelChoice) -> Self {
        Self {
            kernel,
            ram_mib: DEFAULT_RAM_MIB,
            extra_cmdline: Vec::new(),
            cache_dir: kernel::default_cache_dir(),
            ram_dir: PathBuf::from(ram::DEFAULT_RAM_DIR),
            extra_files: Vec::new(),
            avm_cpus: DEFAULT_AVM_CPUS,
        }
    }

    /// A kernel series from the cache (`6.1`, `6.12`).
    pub fn series(series: &str) -> Self {
        Self::new(KernelChoice::Series(series.to_owned()))
    }

    /// The Mon-VM kernel's command line.
    pub fn kernel_cmdline(&self) -> Result<String, MonVmError> {
        let mut words: Vec<&str> = BASE_CMDLINE.to_vec();
        for word in &self.extra_cmdline {
            for word in word.split_ascii_whitespace() {
                if FORBIDDEN_CMDLINE.contains(&word) {
                    return Err(MonVmError::ForbiddenCmdline(word.to_owned()));
                }
                words.push(word);
            }
        }
        Ok(words.join(" "))
    }
}

/// Failures preparing, starting or waiting for the Mon-VM.
#[derive(Debug, thiserror::Error)]
pub enum MonVmError {
    #[error("Mon-VM kernel {series} not found in {}: run `make deps`", dir.display())]
    KernelMissing { series: String, dir: PathBuf },
    #[error("Mon-VM kernel {} not found", .0.display())]
    KernelNotFound(PathBuf),
    #[error("{}: not a bootable bzImage ({reason})", path.display())]
    NotBzImage { path: PathBuf, reason: &'static str },
    #[error("{}: its `release` file says {release}, the image is {image_release}: run `make deps`", dir.display())]
    KernelMismatch {
        dir: PathBuf,
        release: String,
        image_release: String,
    },
    #[error("Mon-VM RAM of {0} MiB: it must be a power of two from {min} MiB to {max} MiB (e.g. 256, 1024, 4096)", min = ram::MIN_RAM_MIB, max = ram::MAX_RAM_MIB)]
    BadRamSize(u64),
    #[error("`{0}` is not allowed on the Mon-VM's command line (a real node boots with KASLR)")]
    ForbiddenCmdline(String),
    #[error("busybox not found: install busybox-static (run `make deps`)")]
    BusyboxMissing,
    #[error("{} is not statically linked: install busybox-static (run `make deps`)", .0.display())]
    BusyboxNotStatic(PathBuf),
    #[error("mke2fs not found: install e2fsprogs (run `make deps`)")]
    Mke2fsMissing,
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("{} is not a Mon-VM RAM file (its name does not start with {prefix}); not removed", .0.display(), prefix = ram::RAM_FILE_PREFIX)]
    NotARamFile(PathBuf),
    #[error("state dir path too long for a unix socket ({}); use a shorter --state", .0.display())]
    SocketPathTooLong(PathBuf),
    #[error("{} is not installed (run `make deps`)", crate::qemu::QEMU_BINARY)]
    QemuNotInstalled,
    #[error("cannot build the kernel profile of {}: {detail}", vmlinuz.display())]
    Profile { vmlinuz: PathBuf, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(
        "the Mon-VM's QEMU exited ({status}) before its userland was ready\n--- Mon-VM console (tail) ---\n{console_tail}\n--- Mon-VM QEMU log (tail) ---\n{qemu_log_tail}"
    )]
    Exited {
        status: String,
        console_tail: String,
        qemu_log_tail: String,
    },
    #[error("the Mon-VM kernel panicked\n--- Mon-VM console (tail) ---\n{console_tail}")]
    Panic { console_tail: String },
    #[error(
        "the Mon-VM printed no {READY_LINE} line within {timeout:?}\n--- Mon-VM console (tail) ---\n{console_tail}"
    )]
    ReadyTimeout {
        timeout: Duration,
        console_tail: String,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> MonVmError {
    let context = context.into();
    move |source| MonVmError::Io { context, source }
}

/// The last `lines` lines of a file (for error messages).
fn file_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    text_tail(&String::from_utf8_lossy(&text), lines)
}

fn text_tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn remove_file_if_present(path: &Path) -> Result<(), MonVmError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error(format!("removing {}", path.display()))(err)),
    }
}

/// What the ready line said.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    /// `uname -r` in the guest.
    pub release: String,
    /// The guest's uptime when init printed the line, in seconds.
    pub guest_uptime_s: Option<f64>,
    /// From spawning the Mon-VM's QEMU to seeing the line.
    pub since_start: Duration,
}

/// Finds the ready line in console output: `(release, uptime)`.
pub fn scan_ready(text: &str) -> Option<(String, Option<f64>)> {
    let line = text
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .find_map(|line| line.strip_prefix(READY_LINE))?;
    let mut release = String::new();
    let mut uptime = None;
    for word in line.split_whitespace() {
        if let Some(value) = word.strip_prefix("release=") {
            release = value.to_owned();
        } else if let Some(value) = word.strip_prefix("uptime=") {
            uptime = value.parse::<f64>().ok();
        }
    }
    Some((release, uptime))
}

/// A running Mon-VM. Dropping it kills its QEMU, then removes its RAM file.
pub struct MonVm {
    // Field order is drop order: QEMU goes before its RAM file.
    qemu: ChildGuard,
    ram: Option<RamFile>,
    ram_path: PathBuf,
    ram_mib: u64,
    layout: RamLayout,
    kernel: MonVmKernel,
    cmdline: String,
    modules: Vec<String>,
    root_image: PathBuf,
    console_socket: PathBuf,
    console_log: PathBuf,
    qemu_log: PathBuf,
    started_at: Instant,
    exit: Option<ExitStatus>,
    ready: Option<Ready>,
}

impl std::fmt::Debug for MonVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonVm")
            .field("pid", &self.qemu.pid())
            .field("ram", &self.ram_path)
            .field("kernel", &self.kernel.release)
            .finish_non_exhaustive()
    }
}

impl MonVm {
    /// Resolves the kernel, builds the root image, creates the RAM file and
    /// starts QEMU; does not wait for the boot. Everything it made is
    /// undone if it fails (and when the returned `MonVm` is dropped).
    pub fn launch(
        config: &MonVmConfig,
        state: &StateLayout,
        accel: Accel,
        group: ProcessGroup,
    ) -> Result<Self, MonVmError> {
        ram::check_ram_mib(config.ram_mib)?;
        let cmdline = config.kernel_cmdline()?;
        let layout = ram::pc_layout(config.ram_mib)?;
        let console_socket = state.monvm_console_socket();
        if console_socket.as_os_str().len() > MAX_UNIX_SOCKET_PATH {
            return Err(MonVmError::SocketPathTooLong(console_socket));
        }
        let kernel = kernel::resolve(&config.kernel, &config.cache_dir)?;
        let busybox = rootfs::find_busybox()?;
        let root = rootfs::build_root_image(
            &state.monvm_root_staging(),
            &state.monvm_root_image(),
            &busybox,
            &kernel,
            &config.extra_files,
        )?;
        let console_log = state.monvm_console_log();
        let qemu_log = state.monvm_qemu_log();
        for stale in [&console_socket, &console_log] {
            remove_file_if_present(stale)?;
        }
        let ram_file = RamFile::create(&config.ram_dir, layout.backing_size())?;

        let mut qemu = QemuCommand::new(
            &format!("{MACHINE},memory-backend={RAM_BACKEND_ID}"),
            accel,
            u32::try_from(config.ram_mib).map_err(|_| MonVmError::BadRamSize(config.ram_mib))?,
        );
        qemu.allow_reboot()
            .args(["-cpu", CPU_MODEL, "-smp", "1"])
            .ram_backend_file(RAM_BACKEND_ID, ram_file.path(), config.ram_mib, false)
            .kernel(&kernel.vmlinuz, &cmdline)
            .nvme_disk("monvm-root", &root.path, "avm-monvm-root")
            .serial_to_socket("monvm-console", &console_socket, &console_log);
        let log =
            std::fs::File::create(&qemu_log).map_err(io_error("creating the Mon-VM's QEMU log"))?;
        let command = qemu
            .to_command(log)
            .map_err(io_error("preparing the Mon-VM's QEMU log"))?;
        let started_at = Instant::now();
        let qemu = ChildGuard::spawn_in(command, "monvm-qemu", group).map_err(|err| {
            if err.kind() == std::io::ErrorKind::NotFound {
                MonVmError::QemuNotInstalled
            } else {
                io_error("starting the Mon-VM's QEMU")(err)
            }
        })?;
        Ok(Self {
            qemu,
            ram_path: ram_file.path().to_path_buf(),
            ram: Some(ram_file),
            ram_mib: config.ram_mib,
            layout,
            kernel,
            cmdline,
            modules: root.modules,
            root_image: root.path,
            console_socket,
            console_log,
            qemu_log,
            started_at,
            exit: None,
            ready: None,
        })
    }

    /// Gives the A-VM's QEMU the Mon-VM's RAM file, read-only, as an
    /// `ivshmem-plain` PCI device (1af4:1110, RAM in BAR2).
    pub fn attach_to_avm(&self, avm: &mut QemuCommand) {
        avm.ram_backend_file(RAM_BACKEND_ID, &self.ram_path, self.ram_mib, true)
            .ivshmem_plain(RAM_BACKEND_ID);
    }

    /// The A-VM's command-line word with the layout:
    /// `monvm.ram=START-END@OFFSET[,…]`.
    pub fn layout_cmdline_word(&self) -> String {
        format!("{}={}", RamLayout::CMDLINE_KEY, self.layout)
    }

    /// Follows the console log until the ready line; fails on a kernel
    /// panic, QEMU exiting or the timeout.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<&Ready, MonVmError> {
        let deadline = Instant::now() + timeout;
        while self.ready.is_none() {
            self.poll_ready(timeout, deadline)?;
        }
        self.ready.as_ref().ok_or(MonVmError::ReadyTimeout {
            timeout,
            console_tail: String::new(),
        })
    }

    /// One look at QEMU and the console log: records the ready line if it
    /// is there, fails if it never will be, else sleeps a poll interval.
    fn poll_ready(&mut self, timeout: Duration, deadline: Instant) -> Result<(), MonVmError> {
        let exited = self.poll_exit()?;
        let text = std::fs::read(&self.console_log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        if let Some((release, guest_uptime_s)) = scan_ready(&text) {
            self.ready = Some(Ready {
                release,
                guest_uptime_s,
                since_start: self.started_at.elapsed(),
            });
            return Ok(());
        }
        if text.contains("Kernel panic - not syncing") {
            return Err(MonVmError::Panic {
                console_tail: text_tail(&text, TAIL_LINES),
            });
        }
        if let Some(status) = exited {
            return Err(MonVmError::Exited {
                status: status.to_string(),
                console_tail: text_tail(&text, TAIL_LINES),
                qemu_log_tail: file_tail(&self.qemu_log, TAIL_LINES),
            });
        }
        if Instant::now() >= deadline {
            return Err(MonVmError::ReadyTimeout {
                timeout,
                console_tail: text_tail(&text, TAIL_LINES),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
        Ok(())
    }

    /// QEMU's exit status, once it has exited.
    pub fn poll_exit(&mut self) -> Result<Option<ExitStatus>, MonVmError> {
        if self.exit.is_none() {
            self.exit = self
                .qemu
                .try_wait()
                .map_err(io_error("waiting for the Mon-VM's QEMU"))?;
        }
        Ok(self.exit)
    }

    /// Connects to the console (see [`MonVmConsole::connect`]).
    pub fn console(&self, timeout: Duration) -> Result<MonVmConsole, ConsoleError> {
        MonVmConsole::connect(&self.console_socket, timeout)
    }

    pub fn pid(&self) -> u32 {
        self.qemu.pid()
    }
    pub fn ram_path(&self) -> &Path {
        &self.ram_path
    }
    pub fn ram_mib(&self) -> u64 {
        self.ram_mib
    }
    pub fn layout(&self) -> &RamLayout {
        &self.layout
    }
    pub fn kernel(&self) -> &MonVmKernel {
        &self.kernel
    }
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }
    /// Guest paths of the kernel modules on the root image.
    pub fn modules(&self) -> &[String] {
        &self.modules
    }
    pub fn root_image(&self) -> &Path {
        &self.root_image
    }
    pub fn console_socket(&self) -> &Path {
        &self.console_socket
    }
    pub fn console_log(&self) -> &Path {
        &self.console_log
    }
    pub fn qemu_log(&self) -> &Path {
        &self.qemu_log
    }
    pub fn started_at(&self) -> Instant {
        self.started_at
    }
    /// The ready line, once seen.
    pub fn ready(&self) -> Option<&Ready> {
        self.ready.as_ref()
    }

    /// Leaves QEMU running and the RAM file in place (a detached node;
    /// `down` stops the one and removes the other).
    pub fn detach(self) -> u32 {
        let Self { qemu, ram, .. } = self;
        if let Some(ram) = ram {
            ram.keep();
        }
        qemu.detach()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_keeps_kaslr() {
        let mut config = MonVmConfig::series("6.1");
        let line = config.kernel_cmdline().unwrap();
        assert!(line.contains("root=/dev/nvme0n1"));
        assert!(line.contains("ima_policy=tcb"));
        assert!(!line.contains("kaslr"));
        config.extra_cmdline = vec!["loglevel=7 quiet".into()];
        assert!(
            config
                .kernel_cmdline()
                .unwrap()
                .ends_with("loglevel=7 quiet")
        );
        config.extra_cmdline = vec!["quiet nokaslr".into()];
        assert!(matches!(
            config.kernel_cmdline(),
            Err(MonVmError::ForbiddenCmdline(word)) if word == "nokaslr"
        ));
    }

    #[test]
    fn ready_line() {
        let log = "[    1.9] Run /sbin/init as init process\r\nAVM-MONVM-READY release=6.1.0-57-cloud-amd64 uptime=2.31\r\n\r\nmonvm# ";
        assert_eq!(
            scan_ready(log),
            Some(("6.1.0-57-cloud-amd64".to_owned(), Some(2.31)))
        );
        assert_eq!(scan_ready("echo AVM-MONVM-READ"), None);
    }

    #[test]
    fn launch_checks_before_starting_anything() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateLayout::new(dir.path()).unwrap();
        let mut config = MonVmConfig::series("6.1");
        config.ram_mib = 3000;
        assert!(matches!(
            MonVm::launch(&config, &state, Accel::Tcg, ProcessGroup::Inherit),
            Err(MonVmError::BadRamSize(3000))
        ));
        config.ram_mib = 256;
        config.cache_dir = dir.path().join("no-cache");
        config.ram_dir = dir.path().join("shm");
        std::fs::create_dir(&config.ram_dir).unwrap();
        let err = MonVm::launch(&config, &state, Accel::Tcg, ProcessGroup::Inherit).unwrap_err();
        assert!(err.to_string().contains("run `make deps`"), "{err}");
        assert_eq!(std::fs::read_dir(&config.ram_dir).unwrap().count(), 0);
    }
}
