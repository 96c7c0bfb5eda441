//! `avm-demo`: a scripted, self-checking demonstration of continuous
//! monitoring (issue 8). It boots a node whose Mon-VM holds the test
//! rootkit (docs/rootkit.md), enrols it with the `avm-verifier` CLI, learns
//! its policy from this known-good boot, starts `avm-verifier monitor
//! --json` as a child, and then attacks the Mon-VM one class at a time:
//! from inside through the rootkit (typed on the Mon-VM's console) and from
//! outside through the Mon-VM's RAM file. For every injection it takes the
//! host time, waits for the event the monitor receives (pushed by the
//! A-VM) and for the monitor's untrusted verdict with the expected reason
//! code, undoes the attack and waits for the A-VM's clean event.
//!
//! Latency: a RAM-file write is timestamped right after the bytes are in
//! the file (exact); a console injection is timestamped before the command
//! is written to the console, so its latency also holds the serial
//! transfer and the guest shell: an upper bound.
//!
//! The verifier keeps every proven violation event as a reason (what ran
//! while the Mon-VM was compromised cannot be undone, docs/protocol.md): a
//! node never turns trusted again after its first violation. The demo
//! checks and reports this (`trusted_again`), and judges a restore by the
//! A-VM's clean event for the area. A node keeps at most 100 findings
//! listed as reasons, so runs of many rounds use one node per few attack
//! classes.
//!
//! `--slowdown N` measures instead how much the A-VM's monitoring slows the
//! Mon-VM (docs/demo.md).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use avm_attest::monitor_policy::MonitorPolicy;

use crate::placement::CpuPlacement;
use serde_json::{Value, json};

use crate::monvm::console::MonVmConsole;
use crate::monvm::{KernelChoice, MonVmConfig};
use crate::qemu::Accel;
use crate::ram_patch::{MonVmRam, RamPatch, redirect_getpid_slot, rewrite_ima_template_hash};
use crate::stats::{self, Shift, paired_shift};
use crate::testing::{Attack, ROOTKIT_GUEST_PATH, Rootkit};
use crate::{Node, NodeConfig, NodeRecord};

/// Bound on a node's boot (TCG on a busy 2-core host).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an injection may take to be pushed and turned into a verdict.
const DETECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the A-VM may take to report an area clean again.
const CLEAN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the first restore of a node waits for a trusted verdict.
const TRUSTED_WAIT: Duration = Duration::from_secs(3);
/// The verifier lists at most this many findings as reasons; a node takes
/// injections until the expected findings (two per injection: an attack
/// may also show in a second area, e.g. a table in rodata) reach this.
const FINDINGS_PER_NODE: usize = 90;

/// Everything that can stop the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Setup(String),
    #[error("the Mon-VM console: {0}")]
    Console(#[from] crate::monvm::ConsoleError),
    #[error("the node: {0}")]
    Node(#[from] crate::NodeError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// A RAM patch that could not be made or undone: the scenario cannot run.
impl From<crate::ram_patch::PatchError> for DemoError {
    fn from(e: crate::ram_patch::PatchError) -> Self {
        DemoError::Setup(e.0)
    }
}

fn setup(text: impl Into<String>) -> DemoError {
    DemoError::Setup(text.into())
}

/// One attack class of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttackKind {
    Syscall,
    Idt,
    Text,
    Rodata,
    Fops,
    HideModule,
    HidePid,
    RootPid,
    RamSyscall,
    RamIdt,
    RamText,
    RamIma,
}

/// Which check period governs an attack's detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKey {
    SyscallIdt,
    Text,
    Ima,
    Cross,
}

impl AttackKind {
    /// Every class, in scenario order (the IMA rewrite last).
    pub const ALL: [AttackKind; 12] = [
        Self::Syscall,
        Self::Idt,
        Self::Text,
        Self::Rodata,
        Self::Fops,
        Self::HideModule,
        Self::HidePid,
        Self::RootPid,
        Self::RamSyscall,
        Self::RamIdt,
        Self::RamText,
        Self::RamIma,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Syscall => "syscall",
            Self::Idt => "idt",
            Self::Text => "text",
            Self::Rodata => "rodata",
            Self::Fops => "fops",
            Self::HideModule => "hide_module",
            Self::HidePid => "hide_pid",
            Self::RootPid => "root_pid",
            Self::RamSyscall => "ram-syscall",
            Self::RamIdt => "ram-idt",
            Self::RamText => "ram-text",
            Self::RamIma => "ram-ima",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == text)
    }

    /// What is attacked and how.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Syscall => "rootkit: sys_call_table[getpid] -> module",
            Self::Idt => "rootkit: IDT gate 0x1d -> module stub",
            Self::Text => "rootkit: a byte of __x64_sys_kexec_load",
            Self::Rodata => "rootkit: a letter of a BTF type name (.rodata)",
            Self::Fops => "rootkit: tcp_prot.init -> module (pointer table)",
            Self::HideModule => "rootkit: itself unlinked from the module list",
            Self::HidePid => "rootkit: a process unlinked from the task list",
            Self::RootPid => "rootkit: a nobody process given euid 0",
            Self::RamSyscall => "RAM file: sys_call_table[getpid] + 0x10",
            Self::RamIdt => "RAM file: IDT gate 0x1d -> module area",
            Self::RamText => "RAM file: a byte of __x64_sys_kexec_load",
            Self::RamIma => "RAM file: IMA entry 1's template hash",
        }
    }

    /// The A-VM's area of the violation event.
    pub fn area(self) -> &'static str {
        match self {
            Self::Syscall | Self::RamSyscall => "sys_call_table",
            Self::Idt | Self::RamIdt => "idt",
            Self::Text | Self::RamText => "text",
            Self::Rodata => "rodata",
            Self::Fops => "pointer_table",
            Self::HideModule => "hidden_module",
            Self::HidePid => "hidden_process",
            Self::RootPid => "creds",
            Self::RamIma => "ima",
        }
    }

    /// The verifier's reason code (avm_attest::monvm::MonVmKind::code).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Syscall | Self::RamSyscall => "monvm-syscall-table-modified",
            Self::Idt | Self::RamIdt => "monvm-idt-modified",
            Self::Text | Self::RamText => "monvm-text-modified",
            Self::Rodata => "monvm-rodata-modified",
            Self::Fops => "monvm-pointer-table-hooked",
            Self::HideModule => "monvm-module-hidden",
            Self::HidePid => "monvm-process-hidden",
            Self::RootPid => "monvm-creds-tampered",
            Self::RamIma => "monvm-ima-rewritten",
        }
    }

    /// Injected through the RAM file (exact timestamp) rather than the
    /// console (upper bound).
    pub fn via_ram(self) -> bool {
        matches!(
            self,
            Self::RamSyscall | Self::RamIdt | Self::RamText | Self::RamIma
        )
    }

    pub fn period(self) -> PeriodKey {
        match self {
            Self::Syscall | Self::Idt | Self::RamSyscall | Self::RamIdt => PeriodKey::SyscallIdt,
            Self::Text | Self::Rodata | Self::RamText => PeriodKey::Text,
            Self::RamIma => PeriodKey::Ima,
            Self::Fops | Self::HideModule | Self::HidePid | Self::RootPid => PeriodKey::Cross,
        }
    }
}

/// The A-VM's check periods, in milliseconds, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periods {
    pub policy: MonitorPolicy,
    /// Read from the node's measurement log (else the A-VM's defaults).
    pub from_log: bool,
}

impl Periods {
    pub fn of(&self, key: PeriodKey) -> u32 {
        match key {
            PeriodKey::SyscallIdt => self.policy.syscall_idt_ms,
            PeriodKey::Text => self.policy.text_ms,
            PeriodKey::Ima => self.policy.ima_ms,
            PeriodKey::Cross => self.policy.cross_ms,
        }
    }

    /// The periods of a monitor policy.
    pub fn of_policy(policy: MonitorPolicy, from_log: bool) -> Self {
        Periods { policy, from_log }
    }

    /// Parses the monitor-policy text (`MonitorPolicy::parse`).
    pub fn parse(text: &str) -> Option<Self> {
        MonitorPolicy::parse(text.as_bytes())
            .ok()
            .map(|p| Self::of_policy(p, true))
    }
}

/// What the demo is asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub image: PathBuf,
    pub verifier: PathBuf,
    pub series: String,
    pub ram_mib: u64,
    pub rounds: usize,
    pub attacks: Vec<AttackKind>,
    pub keep_state: bool,
    /// Progress lines on stderr.
    pub verbose: bool,
    /// The policy's `monvm_violations` (`policy init --monvm-violations`):
    /// `current` (a violation counts until the A-VM records its area clean
    /// again: the node turns trusted again after a restore) or `sticky`
    /// (every violation ever recorded counts). `None`: the verifier's
    /// default (sticky; also for a verifier without the option).
    pub violations: Option<String>,
    /// Where the node's processes run (`avm-qemu up --cpus`).
    pub cpus: CpuPlacement,
}

/// A fresh state directory under /tmp (short: swtpm's socket lives in
/// it), removed on drop unless kept.
pub struct WorkDir {
    pub path: PathBuf,
    pub keep: bool,
}

impl WorkDir {
    pub fn create(keep: bool) -> Result<Self, DemoError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..100u32 {
            let path = PathBuf::from(format!(
                "/tmp/avm-demo.{}.{:x}",
                std::process::id(),
                nanos.wrapping_add(attempt)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path, keep }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(DemoError::Io(path.display().to_string(), e)),
            }
        }
        Err(setup("no fresh directory under /tmp"))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("avm-demo: state kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The test rootkit `make deps` built for `series`.
pub fn rootkit_ko(series: &str) -> Result<PathBuf, DemoError> {
    let ko = crate::monvm::kernel::default_cache_dir()
        .join(series)
        .join("rootkit/avm_rootkit.ko");
    if ko.is_file() {
        Ok(ko)
    } else {
        Err(setup(format!(
            "the test rootkit {} is missing: run `make deps` first",
            ko.display()
        )))
    }
}

/// Boots a node (TCG) whose Mon-VM of `series` holds the test rootkit at
/// [`ROOTKIT_GUEST_PATH`]; its attestation server on a free loopback port.
pub fn boot_node(
    dir: &Path,
    image: &Path,
    series: &str,
    ram_mib: u64,
    with_rootkit: bool,
    cpus: CpuPlacement,
) -> Result<Node, DemoError> {
    let mut config = NodeConfig::new(dir, image);
    config.accel = Some(Accel::Tcg);
    config.cpus = cpus;
    let mut monvm = MonVmConfig::new(KernelChoice::Series(series.to_owned()));
    monvm.ram_mib = ram_mib;
    let vmlinuz = monvm.cache_dir.join(series).join("vmlinuz");
    if !vmlinuz.is_file() {
        return Err(setup(format!(
            "Mon-VM kernel {} not found: run `make deps` first",
            vmlinuz.display()
        )));
    }
    if with_rootkit {
        monvm.extra_files.push(crate::monvm::rootfs::ExtraFile {
            host_path: rootkit_ko(series)?,
            guest_path: ROOTKIT_GUEST_PATH.into(),
            mode: 0o600,
        });
    }
    config.monvm = Some(monvm);
    // A loaded TCG host can starve the Mon-VM's timer check at boot ("IO-APIC
    // + timer doesn't work" panic): one more try in a fresh directory.
    match Node::up_on_free_port(&config, BOOT_TIMEOUT) {
        Ok(node) => Ok(node),
        Err(first) => {
            eprintln!("avm-demo: the node did not come up ({first}); trying once more");
            config.state_dir = dir.with_extension("retry");
            Ok(Node::up_on_free_port(&config, BOOT_TIMEOUT)?)
        }
    }
}

/// The `avm-verifier` CLI on one state directory.
pub struct Verifier {
    pub bin: PathBuf,
    pub state: PathBuf,
}

impl Verifier {
    pub fn run(&self, args: &[&str]) -> Result<Output, DemoError> {
        Command::new(&self.bin)
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| DemoError::Io(format!("running {}", self.bin.display()), e))
    }

    /// Runs and insists on exit 0.
    pub fn ok(&self, args: &[&str]) -> Result<Output, DemoError> {
        let out = self.run(args)?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(setup(format!(
                "avm-verifier {}: exit {:?}\n{}{}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }
}

fn path_str(path: &Path) -> Result<&str, DemoError> {
    path.to_str()
        .ok_or_else(|| setup(format!("{} is not UTF-8", path.display())))
}

/// `avm-verifier monitor --json` as a child; its lines, stamped with their
/// arrival, on a channel. Killed on drop.
pub struct MonitorChild {
    child: Child,
    lines: Receiver<(Instant, Value)>,
    /// Every line so far, in arrival order.
    pub seen: Vec<(Instant, Value)>,
}

impl MonitorChild {
    pub fn start(verifier: &Verifier, addr: &str, extra: &[&str]) -> Result<Self, DemoError> {
        let mut child = Command::new(&verifier.bin)
            .arg("--state")
            .arg(&verifier.state)
            .args(["monitor", addr, "--json", "--interval", "5"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| DemoError::Io("starting avm-verifier monitor".into(), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| setup("monitor without stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                // Not JSON: not ours to interpret (the monitor prints JSON
                // lines only with --json).
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if tx.send((at, value)).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Takes lines until one at or after `since` satisfies `want`, or the
    /// deadline passes. Lines already seen are searched first.
    pub fn wait(
        &mut self,
        since: Instant,
        deadline: Instant,
        want: impl Fn(&Value) -> bool,
    ) -> Option<(Instant, Value)> {
        if let Some(hit) = self
            .seen
            .iter()
            .find(|(at, v)| *at >= since && want(v))
            .cloned()
        {
            return Some(hit);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, value)) => {
                    self.seen.push((at, value.clone()));
                    if at >= since && want(&value) {
                        return Some((at, value));
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Takes whatever lines have arrived.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Whether the monitor is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for MonitorChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_type(line: &Value, kind: &str) -> bool {
    line["type"] == kind
}

fn event_name(line: &Value) -> &str {
    line["name"].as_str().unwrap_or_default()
}

/// `(kind, area)` of an event name `monvm:event:N:KIND:AREA[:DETAIL]`.
fn event_area(name: &str) -> Option<(&str, &str)> {
    let mut parts = name.strip_prefix("monvm:event:")?.splitn(4, ':');
    let _number = parts.next()?;
    let kind = parts.next()?;
    let area = parts.next()?;
    Some((kind, area))
}

fn count_reason(line: &Value, code: &str) -> usize {
    line["reasons"]
        .as_array()
        .map_or(0, |r| r.iter().filter(|c| c.as_str() == Some(code)).count())
}

/// The demo's outside attacks, each written into the Mon-VM's RAM file
/// (`crate::ram_patch`) as a rootkit inside it would write it.
mod ram_attacks {
    use super::{DemoError, setup};
    use crate::ram_patch::{MonVmRam, RamPatch};

    /// The gate of vector 0x1d (#VC, never raised here) pointed into the
    /// module area.
    pub fn idt(ram: &MonVmRam) -> Result<RamPatch, DemoError> {
        use vmi::linux::checks::{GATE_SIZE, Gate, MODULES_START};
        let link = ram.profile.symbols.idt_table + 16 * 0x1d;
        ram.patch_kernel(
            link,
            |old, _| {
                let mut raw = [0u8; GATE_SIZE];
                raw.copy_from_slice(old);
                let gate = Gate::decode(0x1d, &raw);
                Gate {
                    target: MODULES_START + 0x1000,
                    ..gate
                }
                .encode()
                .to_vec()
            },
            GATE_SIZE,
        )
        .map_err(DemoError::from)
    }

    /// A byte of `__x64_sys_kexec_load` (never called here) outside every
    /// patch site, flipped.
    pub fn text(ram: &MonVmRam) -> Result<RamPatch, DemoError> {
        let profile = &ram.profile;
        // A different byte from the rootkit's (the first after the entry's
        // patch sites), so the two text attacks never overlap.
        let offset = crate::testing::unused_text_offset(profile, 32).ok_or_else(|| {
            setup("no __x64_sys_kexec_load byte outside the patch sites in the profile")
        })?;
        ram.patch_kernel(
            profile.symbols.text + offset,
            |old, _| vec![old[0] ^ 0xff],
            1,
        )
        .map_err(DemoError::from)
    }
}

/// Sends SIGCONT to a process on drop (one stopped with SIGSTOP must
/// never stay stopped, also on failure).
pub struct Stopped {
    pid: u32,
}

fn signal(pid: u32, sig: &str) -> Result<(), DemoError> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map_err(|e| DemoError::Io("running kill".into(), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(setup(format!("kill {sig} {pid} failed")))
    }
}

impl Stopped {
    pub fn stop(pid: u32) -> Result<Self, DemoError> {
        signal(pid, "-STOP")?;
        Ok(Self { pid })
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = signal(self.pid, "-CONT");
    }
}

/// The A-VM's check periods from the monitor-policy record of its
/// measurement log (PCR 8), fetched from its attestation server (a hint
/// for display: it is not what the verdict relies on); the A-VM's
/// defaults when the log has none.
pub fn periods_of(addr: &str) -> Periods {
    // An A-VM that measured no policy uses its defaults.
    let builtin = Periods::of_policy(MonitorPolicy::default(), false);
    match fetch_log_head(addr) {
        Ok(records) => find_policy(&records).unwrap_or(builtin),
        Err(_) => builtin,
    }
}

/// The periods of the log's monitor-policy record, if it is valid (as
/// the verifier reads it: `avm_attest::monvm::monitor_policy_record`).
fn find_policy(records: &[u8]) -> Option<Periods> {
    let list = avm_attest::ima::parse_list(records, 100_000).ok()?;
    match avm_attest::monvm::monitor_policy_record(&list) {
        avm_attest::monvm::MonitorPolicyRecord::Valid { policy, .. } => {
            Some(Periods::of_policy(policy, true))
        }
        _ => None,
    }
}

fn fetch_log_head(addr: &str) -> Result<Vec<u8>, String> {
    use avm_attest::wire::{self, Request, Response};
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&sock, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut exchange = |request: &Request| -> Result<Response, String> {
        let frame = wire::encode_frame(request).map_err(|e| e.to_string())?;
        stream.write_all(&frame).map_err(|e| e.to_string())?;
        let mut header = [0u8; wire::FRAME_HEADER_LEN];
        stream.read_exact(&mut header).map_err(|e| e.to_string())?;
        let len = wire::body_len(header, wire::MAX_FRAME_LEN).map_err(|e| e.to_string())?;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).map_err(|e| e.to_string())?;
        wire::decode_response(&body).map_err(|e| e.to_string())
    };
    exchange(&Request::Hello {
        version: wire::PROTOCOL_VERSION,
    })?;
    match exchange(&Request::MeasurementLog { from: 0 })? {
        Response::MeasurementLog(chunk) => Ok(chunk.records),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// One injection and what was seen of it.
#[derive(Debug, Clone, Default)]
pub struct Injection {
    pub attack: String,
    pub round: usize,
    pub node: usize,
    /// Host time of the injection (unix ms).
    pub injected_at_ms: u64,
    /// The pushed event: record index, name, latency.
    pub event_index: Option<u64>,
    pub event_name: Option<String>,
    pub event_ms: Option<f64>,
    /// The monitor's untrusted verdict naming the reason.
    pub verdict_ms: Option<f64>,
    /// The monitor's own latency (event arrival to that verdict).
    pub monitor_latency_ms: Option<f64>,
    pub detected: bool,
    /// The A-VM reported every area clean again after the restore.
    pub clean: bool,
    pub clean_ms: Option<f64>,
    /// The monitor said trusted again (after every restore under a
    /// `current` policy; once per node, briefly, under `sticky`).
    pub trusted_again: Option<bool>,
    /// Restore to the monitor's trusted verdict.
    pub trusted_ms: Option<f64>,
    /// A fresh `attest --json` names the event's record under the reason
    /// and proves the log up to it (checked in round 1).
    pub attest_names_record: Option<bool>,
    /// The monitor's verdict line says which log its quote proved
    /// (not exposed by this verifier: `None`).
    pub verdict_covers_event: Option<bool>,
    pub error: Option<String>,
}

impl Injection {
    fn to_json(&self) -> Value {
        json!({
            "attack": self.attack,
            "round": self.round,
            "node": self.node,
            "injected_at_ms": self.injected_at_ms,
            "event_index": self.event_index,
            "event_name": self.event_name,
            "event_ms": self.event_ms,
            "verdict_ms": self.verdict_ms,
            "monitor_latency_ms": self.monitor_latency_ms,
            "detected": self.detected,
            "clean": self.clean,
            "clean_ms": self.clean_ms,
            "trusted_again": self.trusted_again,
            "trusted_ms": self.trusted_ms,
            "attest_names_record": self.attest_names_record,
            "verdict_covers_event": self.verdict_covers_event,
            "error": self.error,
        })
    }
}

/// The demo's outcome.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub series: String,
    pub kernel_release: Option<String>,
    pub rounds: usize,
    pub periods: Periods,
    pub attacks: Vec<AttackKind>,
    pub injections: Vec<Injection>,
    pub nodes: usize,
    /// The node was trusted under the monitor before the first attack.
    pub trusted_before: bool,
    pub seconds: f64,
    /// Where the node's processes ran on the host's CPUs.
    pub cpus: CpuPlacement,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Nearest-rank percentile of `values` (sorted here).
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Per-class summary.
#[derive(Debug, Clone)]
pub struct ClassSummary {
    pub attack: AttackKind,
    pub injections: usize,
    pub detected: usize,
    pub event_p50: Option<f64>,
    pub event_p99: Option<f64>,
    pub verdict_p50: Option<f64>,
    pub verdict_p99: Option<f64>,
    pub clean: usize,
    pub period_ms: u32,
}

impl DemoReport {
    pub fn summary(&self) -> Vec<ClassSummary> {
        self.attacks
            .iter()
            .map(|&attack| {
                let of: Vec<&Injection> = self
                    .injections
                    .iter()
                    .filter(|i| i.attack == attack.name())
                    .collect();
                let events: Vec<f64> = of.iter().filter_map(|i| i.event_ms).collect();
                let verdicts: Vec<f64> = of.iter().filter_map(|i| i.verdict_ms).collect();
                ClassSummary {
                    attack,
                    injections: of.len(),
                    detected: of.iter().filter(|i| i.detected).count(),
                    event_p50: percentile(&events, 50.0),
                    event_p99: percentile(&events, 99.0),
                    verdict_p50: percentile(&verdicts, 50.0),
                    verdict_p99: percentile(&verdicts, 99.0),
                    clean: of.iter().filter(|i| i.clean).count(),
                    period_ms: self.periods.of(attack.period()),
                }
            })
            .collect()
    }

    /// Every injection of every class detected with its reason.
    pub fn all_detected(&self) -> bool {
        self.trusted_before
            && self.summary().iter().all(|s| {
                s.injections == self.rounds && s.detected == s.injections && s.injections > 0
            })
    }

    pub fn to_json(&self) -> Value {
        let summary: Vec<Value> = self
            .summary()
            .iter()
            .map(|s| {
                json!({
                    "attack": s.attack.name(),
                    "what": s.attack.describe(),
                    "area": s.attack.area(),
                    "reason": s.attack.reason(),
                    "method": if s.attack.via_ram() { "ram-file" } else { "console" },
                    "injections": s.injections,
                    "detected": s.detected,
                    "event_p50_ms": s.event_p50,
                    "event_p99_ms": s.event_p99,
                    "verdict_p50_ms": s.verdict_p50,
                    "verdict_p99_ms": s.verdict_p99,
                    "clean": s.clean,
                    "period_ms": s.period_ms,
                })
            })
            .collect();
        json!({
            "series": self.series,
            "kernel_release": self.kernel_release,
            "rounds": self.rounds,
            "nodes": self.nodes,
            "seconds": self.seconds,
            "trusted_before": self.trusted_before,
            "cpus": self.cpus.to_string(),
            "periods_ms": {
                "syscall_idt": self.periods.policy.syscall_idt_ms,
                "text": self.periods.policy.text_ms,
                "ima": self.periods.policy.ima_ms,
                "cross": self.periods.policy.cross_ms,
                "source": if self.periods.from_log { "log" } else { "built-in" },
            },
            "summary": summary,
            "injections": self.injections.iter().map(Injection::to_json).collect::<Vec<_>>(),
            "all_detected": self.all_detected(),
        })
    }

    /// The human summary table.
    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let mut out = String::new();
        out.push_str(&format!(
            "{:<12} {:<30} {:<9} {:>8} {:>17} {:>17} {:>7} {:>9}\n",
            "attack",
            "reason",
            "method",
            "detected",
            "event ms p50/p99",
            "verdict ms p50/p99",
            "clean",
            "period ms"
        ));
        for s in self.summary() {
            out.push_str(&format!(
                "{:<12} {:<30} {:<9} {:>8} {:>17} {:>17} {:>7} {:>9}\n",
                s.attack.name(),
                s.attack.reason(),
                if s.attack.via_ram() {
                    "RAM file"
                } else {
                    "console*"
                },
                format!("{}/{}", s.detected, s.injections),
                format!("{}/{}", f(s.event_p50), f(s.event_p99)),
                format!("{}/{}", f(s.verdict_p50), f(s.verdict_p99)),
                format!("{}/{}", s.clean, s.injections),
                s.period_ms,
            ));
        }
        out.push_str(
            "* console: timestamped before the command is typed; includes the serial transfer \
             and the guest shell (an upper bound). RAM-file writes are timestamped exactly.\n",
        );
        out.push_str(&format!(
            "check periods {} ({}); event = injection to the event line of `avm-verifier monitor`; \
             verdict = injection to its untrusted verdict with the reason.\n",
            format_args!(
                "syscall/IDT {} ms, text sweep {} ms, IMA {} ms, cross-views {} ms",
                self.periods.policy.syscall_idt_ms,
                self.periods.policy.text_ms,
                self.periods.policy.ima_ms,
                self.periods.policy.cross_ms
            ),
            if self.periods.from_log {
                "from the node's monitor-policy record, PCR 8"
            } else {
                "the A-VM's built-in constants: its log has no monitor-policy record"
            }
        ));
        let trusted_again = self
            .injections
            .iter()
            .filter_map(|i| i.trusted_again)
            .collect::<Vec<_>>();
        if !trusted_again.is_empty() && trusted_again.iter().all(|t| !t) {
            out.push_str(
                "restore: the A-VM reports the area clean again; the verifier keeps the node \
                 untrusted (every proven violation stays a reason, docs/protocol.md).\n",
            );
        }
        out
    }

    /// Markdown rows for docs/benchmarks.md.
    pub fn markdown_rows(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let mut out = String::new();
        for s in self.summary() {
            let (target, met) = match s.attack.period() {
                PeriodKey::SyscallIdt if s.attack.via_ram() => (
                    "p99 <= 10 ms".to_string(),
                    s.event_p99
                        .map(|p| if p <= 10.0 { "met" } else { "not met" }),
                ),
                PeriodKey::Text if s.attack.via_ram() => (
                    format!("p99 within one sweep ({} ms)", self.periods.policy.text_ms),
                    s.event_p99.map(|p| {
                        if p <= f64::from(self.periods.policy.text_ms) {
                            "met"
                        } else {
                            "not met"
                        }
                    }),
                ),
                _ => (String::new(), None),
            };
            let method = if s.attack.via_ram() {
                "RAM-file write, exact"
            } else {
                "console, upper bound"
            };
            out.push_str(&format!(
                "| detection latency, {} ({}; {}; {} {} injections, {} detected; `--cpus {}`; A-VM check period {} ms{}): injection to pushed event at the verifier, p50 / p99; to untrusted verdict ({}) | {} / {} ms; verdict {} / {} ms | {} | {} |\n",
                s.attack.name(),
                s.attack.describe(),
                method,
                self.series,
                s.injections,
                s.detected,
                self.cpus,
                s.period_ms,
                if self.periods.from_log { ", from the log" } else { ", built-in" },
                s.attack.reason(),
                f(s.event_p50),
                f(s.event_p99),
                f(s.verdict_p50),
                f(s.verdict_p99),
                target,
                met.unwrap_or(""),
            ));
        }
        out
    }
}

/// A node of the scenario, enrolled, learned and monitored.
struct Stage {
    // Field order is drop order: the monitor first, then the node (QEMU,
    // swtpm, Mon-VM), then nothing else refers to the directory.
    monitor: MonitorChild,
    console: MonVmConsole,
    rootkit: Rootkit,
    ram: MonVmRam,
    _node: Node,
    addr: String,
    verifier: Verifier,
    /// Reasons of the monitor's last verdict line.
    last_reasons: Value,
    checked_trusted_again: bool,
    /// The node's check periods: each injection waits a random part of its
    /// class's period first, so injections fall at random phases of the
    /// A-VM's check cycle (not right after the check that saw the last
    /// restore, which would always cost a whole period).
    periods: Periods,
}

/// A random duration below `period_ms` milliseconds.
fn random_phase(period_ms: u32) -> Duration {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    Duration::from_micros(random % (u64::from(period_ms).max(1) * 1000))
}

fn say(opts: &DemoOptions, text: impl AsRef<str>) {
    if opts.verbose {
        eprintln!("avm-demo: {}", text.as_ref());
    }
}

/// What the Mon-VM runs during the scenario, run once before the policy
/// is learned, so that its IMA entries are allowed: the rootkit's module
/// and the tools the attacks use (after [`crate::monvm::ADD_USER_NOBODY`]).
const PREPARE: &str = "su -s /bin/sh nobody -c 'exec sleep 0' >/dev/null 2>&1; sleep 0; \
     nc 127.0.0.1 1 </dev/null >/dev/null 2>&1; cat /proc/uptime >/dev/null; true";

fn boot_stage(
    opts: &DemoOptions,
    work: &WorkDir,
    index: usize,
) -> Result<(Stage, Option<String>), DemoError> {
    let dir = work.path.join(format!("node{index}"));
    say(
        opts,
        format!(
            "node {index}: booting the A-VM and a {} Mon-VM with the test rootkit (TCG)",
            opts.series
        ),
    );
    let node = boot_node(
        &dir,
        &opts.image,
        &opts.series,
        opts.ram_mib,
        true,
        opts.cpus,
    )?;
    let record = node.record().clone();
    let addr = node
        .attest_addr()
        .ok_or_else(|| setup("the node has no attestation address"))?
        .to_string();
    wait_serial(&record, "AVM-MONVM-IMA ", Duration::from_secs(120))?;
    let console_path = record
        .monvm_console
        .clone()
        .ok_or_else(|| setup("the node has no Mon-VM console"))?;
    let mut console = MonVmConsole::connect(&console_path, CONSOLE_TIMEOUT)?;
    say(
        opts,
        format!("node {index}: insmod {ROOTKIT_GUEST_PATH} (the attack tool)"),
    );
    let rootkit = Rootkit::load(&mut console).map_err(setup)?;
    console.run_ok(&format!("{}; {PREPARE}", crate::monvm::ADD_USER_NOBODY))?;
    // The A-VM anchors new IMA entries every 500 ms.
    std::thread::sleep(Duration::from_millis(1500));

    let verifier = Verifier {
        bin: opts.verifier.clone(),
        state: dir.join("verifier"),
    };
    let profile = record
        .monvm_profile
        .clone()
        .ok_or_else(|| setup("the node has no Mon-VM kernel profile"))?;
    let ek_ca = record
        .ek_ca
        .clone()
        .ok_or_else(|| setup("the node has no EK CA"))?;
    say(
        opts,
        format!("node {index}: enrolling {addr} and learning its policy"),
    );
    let mut init = vec![
        "policy",
        "init",
        "--avm-image",
        path_str(&opts.image)?,
        "--monvm-profile",
        path_str(&profile)?,
    ];
    if let Some(memory) = &opts.violations {
        init.extend(["--monvm-violations", memory.as_str()]);
    }
    verifier.ok(&init)?;
    verifier.ok(&["enroll", &addr, "--ek-ca", path_str(&ek_ca)?])?;
    verifier.ok(&["policy", "learn", &addr])?;
    verifier.ok(&["attest", &addr])?;

    let mut monitor = MonitorChild::start(&verifier, &addr, &["--duration", "86400"])?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    monitor
        .wait(start, deadline, |l| {
            is_type(l, "push") && l["state"] == "subscribed"
        })
        .ok_or_else(|| setup("the monitor did not subscribe to the node's events"))?;
    let trusted = monitor.wait(start, deadline, |l| {
        is_type(l, "verdict") && l["verdict"] == "trusted"
    });
    let (_, trusted) = trusted
        .ok_or_else(|| setup("the monitor never said trusted for the freshly learned node"))?;
    say(
        opts,
        format!("node {index}: trusted under `avm-verifier monitor`"),
    );
    let ram = MonVmRam::open(&record)?;
    Ok((
        Stage {
            monitor,
            console,
            rootkit,
            ram,
            _node: node,
            addr,
            verifier,
            last_reasons: trusted["reasons"].clone(),
            checked_trusted_again: false,
            periods: Periods::of_policy(MonitorPolicy::default(), false),
        },
        record.monvm_kernel_release.clone(),
    ))
}

fn wait_serial(record: &NodeRecord, needle: &str, limit: Duration) -> Result<(), DemoError> {
    let deadline = Instant::now() + limit;
    loop {
        let serial = std::fs::read_to_string(&record.avm_serial).unwrap_or_default();
        if serial.contains(needle) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(setup(format!("the A-VM never printed {needle:?}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What an injection left to undo.
enum Undo {
    Rootkit(Attack, Option<u32>),
    Ram(RamPatch),
}

/// Starts a background `sleep` (as `nobody` or root) and returns its PID.
fn start_sleep(console: &mut MonVmConsole, nobody: bool) -> Result<u32, DemoError> {
    let command = if nobody {
        "su -s /bin/sh nobody -c 'exec sleep 1000' >/dev/null 2>&1 & echo $!"
    } else {
        "sleep 1000 >/dev/null 2>&1 & echo $!"
    };
    let out = console.run_ok(command)?;
    let pid: u32 = out
        .trim()
        .parse()
        .map_err(|_| setup(format!("not a PID: {out:?}")))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let comm = console.run(&format!("cat /proc/{pid}/comm"))?;
        if comm.output.trim() == "sleep" {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            return Err(setup(format!("{pid} never became sleep")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Stage {
    /// Injects `attack`; returns the injection time and what to undo.
    fn inject(&mut self, attack: AttackKind) -> Result<(Instant, Undo), DemoError> {
        let phase = random_phase(self.periods.of(attack.period()));
        let (on, pid) = match attack {
            AttackKind::Syscall => (Attack::SyscallTable, None),
            AttackKind::Idt => (Attack::Idt, None),
            AttackKind::Text => (Attack::Text, None),
            AttackKind::Rodata => (Attack::Rodata, None),
            AttackKind::Fops => (Attack::FopsTable, None),
            AttackKind::HideModule => (Attack::HideModule, None),
            AttackKind::HidePid => {
                let pid = start_sleep(&mut self.console, false)?;
                (Attack::HidePid(pid), Some(pid))
            }
            AttackKind::RootPid => {
                let pid = start_sleep(&mut self.console, true)?;
                // The A-VM must see the user's euid before it turns 0.
                std::thread::sleep(Duration::from_millis(1200));
                (Attack::RootPid(pid), Some(pid))
            }
            AttackKind::RamSyscall => {
                std::thread::sleep(phase);
                let patch = redirect_getpid_slot(&self.ram)?;
                return Ok((patch.written_at, Undo::Ram(patch)));
            }
            AttackKind::RamIdt => {
                std::thread::sleep(phase);
                let patch = ram_attacks::idt(&self.ram)?;
                return Ok((patch.written_at, Undo::Ram(patch)));
            }
            AttackKind::RamText => {
                std::thread::sleep(phase);
                let patch = ram_attacks::text(&self.ram)?;
                return Ok((patch.written_at, Undo::Ram(patch)));
            }
            AttackKind::RamIma => {
                std::thread::sleep(phase);
                let patch = rewrite_ima_template_hash(&self.ram, 1)?;
                return Ok((patch.written_at, Undo::Ram(patch)));
            }
        };
        std::thread::sleep(phase);
        // Timestamped before the command goes out: an upper bound.
        self.monitor.drain();
        let at = Instant::now();
        self.rootkit
            .set(&mut self.console, on, true)
            .map_err(setup)?;
        Ok((at, Undo::Rootkit(on, pid)))
    }

    fn undo(&mut self, undo: Undo) -> Result<Instant, DemoError> {
        match undo {
            Undo::Rootkit(attack, pid) => {
                self.monitor.drain();
                let at = Instant::now();
                self.rootkit
                    .set(&mut self.console, attack, false)
                    .map_err(setup)?;
                if let Some(pid) = pid {
                    self.console.run(&format!("kill {pid}"))?;
                }
                Ok(at)
            }
            Undo::Ram(mut patch) => {
                self.monitor.drain();
                Ok(patch.restore()?)
            }
        }
    }

    /// Areas in violation according to the events pushed so far.
    fn areas_in_violation(&self) -> Vec<String> {
        let mut state: BTreeMap<&str, &str> = BTreeMap::new();
        for (_, line) in &self.monitor.seen {
            if is_type(line, "event")
                && let Some((kind, area)) = event_area(event_name(line))
            {
                state.insert(area, kind);
            }
        }
        state
            .into_iter()
            .filter(|(_, kind)| *kind == "violation")
            .map(|(area, _)| area.to_string())
            .collect()
    }

    fn one(
        &mut self,
        opts: &DemoOptions,
        attack: AttackKind,
        round: usize,
        node: usize,
    ) -> Result<Injection, DemoError> {
        let mut out = Injection {
            attack: attack.name().into(),
            round,
            node,
            ..Injection::default()
        };
        // The reasons of the monitor's latest verdict line so far.
        self.monitor.drain();
        if let Some((_, line)) = self
            .monitor
            .seen
            .iter()
            .rev()
            .find(|(_, l)| is_type(l, "verdict"))
        {
            self.last_reasons = line["reasons"].clone();
        }
        let before = count_reason(&json!({ "reasons": self.last_reasons }), attack.reason());
        let (at, undo) = self.inject(attack)?;
        out.injected_at_ms = unix_ms();
        let deadline = at + DETECT_TIMEOUT;
        let area = attack.area();
        let event = self.monitor.wait(at, deadline, |l| {
            is_type(l, "event")
                && event_area(event_name(l)).is_some_and(|(k, a)| k == "violation" && a == area)
        });
        if let Some((seen, line)) = &event {
            out.event_ms = Some(ms(seen.saturating_duration_since(at)));
            out.event_index = line["index"].as_u64();
            out.event_name = Some(event_name(line).to_string());
        }
        let code = attack.reason();
        let verdict = self.monitor.wait(at, deadline, |l| {
            is_type(l, "verdict") && l["verdict"] == "untrusted" && count_reason(l, code) > before
        });
        if let Some((seen, line)) = &verdict {
            out.verdict_ms = Some(ms(seen.saturating_duration_since(at)));
            out.monitor_latency_ms = line["latency_ms"].as_f64();
            self.last_reasons = line["reasons"].clone();
            // A verifier that says which log its quote proved.
            let proven = ["proven_records", "log_records"]
                .iter()
                .find_map(|k| line[*k].as_u64());
            if let (Some(proven), Some(index)) = (proven, out.event_index) {
                out.verdict_covers_event = Some(index < proven);
            }
        }
        out.detected = event.is_some() && verdict.is_some();
        if round == 1
            && let Some(index) = out.event_index
        {
            out.attest_names_record = Some(self.attest_names(code, index)?);
        }
        say(
            opts,
            format!(
                "{:<12} round {round}: {} -> {}",
                attack.name(),
                match (&out.event_name, out.event_ms) {
                    (Some(name), Some(t)) => format!(
                        "event #{} after {t:.1} ms ({})",
                        out.event_index.unwrap_or_default(),
                        cut(name, 90)
                    ),
                    _ => "NO EVENT".into(),
                },
                match out.verdict_ms {
                    Some(t) => format!("untrusted ({code}) after {t:.1} ms"),
                    None => format!("NO untrusted verdict naming {code}"),
                }
            ),
        );
        // Restore, then wait until the A-VM reports every area clean.
        let restored_at = self.undo(undo)?;
        let clean_deadline = restored_at + CLEAN_TIMEOUT;
        let clean_area = self.monitor.wait(restored_at, clean_deadline, |l| {
            is_type(l, "event")
                && event_area(event_name(l)).is_some_and(|(k, a)| k == "clean" && a == area)
        });
        while Instant::now() < clean_deadline && !self.areas_in_violation().is_empty() {
            self.monitor.wait(
                Instant::now(),
                Instant::now() + Duration::from_millis(200),
                |l| is_type(l, "event"),
            );
        }
        let left = self.areas_in_violation();
        out.clean = clean_area.is_some() && left.is_empty();
        out.clean_ms = clean_area.map(|(t, _)| ms(t.saturating_duration_since(restored_at)));
        if !out.clean {
            say(
                opts,
                format!(
                    "{:<12} round {round}: still in violation: {left:?}",
                    attack.name()
                ),
            );
        }
        // Does the verifier trust the node again? Under `current` it must
        // (after every restore); under `sticky` it never does: asked once
        // per node, briefly.
        let current = opts.violations.as_deref() == Some("current");
        if out.clean && (current || !self.checked_trusted_again) {
            self.checked_trusted_again = true;
            let wait = if current {
                DETECT_TIMEOUT
            } else {
                TRUSTED_WAIT
            };
            let trusted = self.monitor.wait(restored_at, Instant::now() + wait, |l| {
                is_type(l, "verdict") && l["verdict"] == "trusted"
            });
            out.trusted_again = Some(trusted.is_some());
            out.trusted_ms = trusted.map(|(t, _)| ms(t.saturating_duration_since(restored_at)));
            say(
                opts,
                match (out.trusted_ms, current) {
                    (Some(t), _) => format!(
                        "{:<12} round {round}: restored; the A-VM reports it clean after {:.1} ms, the monitor says trusted again after {t:.1} ms",
                        attack.name(),
                        out.clean_ms.unwrap_or_default()
                    ),
                    (None, true) => format!(
                        "{:<12} round {round}: restored and clean, but the monitor did NOT say trusted again",
                        attack.name()
                    ),
                    (None, false) => "restored: the A-VM reports the area clean; under a sticky policy the verifier keeps the node untrusted (every proven violation stays a reason)".to_string(),
                },
            );
        }
        if !self.monitor.running() {
            return Err(setup("avm-verifier monitor exited"));
        }
        Ok(out)
    }

    /// A fresh `attest --json` names `code` at record `index` and proves
    /// the log up to it.
    fn attest_names(&self, code: &str, index: u64) -> Result<bool, DemoError> {
        let out = self.verifier.run(&["attest", &self.addr, "--json"])?;
        let Ok(report) = serde_json::from_slice::<Value>(&out.stdout) else {
            return Ok(false);
        };
        let proven = report["measurement_log"]["proven_records"]
            .as_u64()
            .unwrap_or(0);
        let named = report["reasons"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["code"] == code && r["record"].as_u64() == Some(index))
        });
        Ok(named && index < proven)
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max).collect();
        s.push_str("...");
        s
    }
}

/// Runs the scenario.
pub fn run(opts: &DemoOptions) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    if opts.rounds == 0 || opts.attacks.is_empty() {
        return Err(setup("nothing to do: --rounds 0 or no attack"));
    }
    let work = WorkDir::create(opts.keep_state)?;
    // Attack classes per node: the verifier lists at most 100 findings,
    // and under `sticky` every violation stays one.
    let sticky = opts.violations.as_deref() != Some("current");
    let per_node = if sticky {
        (FINDINGS_PER_NODE / (2 * opts.rounds)).max(1)
    } else {
        usize::MAX
    };
    let mut attacks = opts.attacks.clone();
    attacks.sort();
    attacks.dedup();
    let groups: Vec<&[AttackKind]> = attacks.chunks(per_node).collect();
    let mut report = DemoReport {
        series: opts.series.clone(),
        kernel_release: None,
        rounds: opts.rounds,
        periods: Periods::of_policy(MonitorPolicy::default(), false),
        attacks: attacks.clone(),
        injections: Vec::new(),
        nodes: groups.len(),
        trusted_before: true,
        seconds: 0.0,
        cpus: opts.cpus,
    };
    for (index, group) in groups.iter().enumerate() {
        let (mut stage, release) = match boot_stage(opts, &work, index) {
            Ok(stage) => stage,
            Err(e) => {
                if index == 0 {
                    return Err(e);
                }
                // Later nodes: what was measured so far still counts.
                report.trusted_before = false;
                say(opts, format!("node {index}: {e}"));
                break;
            }
        };
        report.kernel_release = report.kernel_release.or(release);
        report.periods = periods_of(&stage.addr);
        stage.periods = report.periods.clone();
        for &attack in group.iter() {
            say(
                opts,
                format!(
                    "== {} ({}), {} round(s)",
                    attack.name(),
                    attack.describe(),
                    opts.rounds
                ),
            );
            for round in 1..=opts.rounds {
                match stage.one(opts, attack, round, index) {
                    Ok(injection) => report.injections.push(injection),
                    Err(e) => {
                        say(opts, format!("{} round {round}: {e}", attack.name()));
                        report.injections.push(Injection {
                            attack: attack.name().into(),
                            round,
                            node: index,
                            error: Some(e.to_string()),
                            ..Injection::default()
                        });
                    }
                }
            }
        }
        say(
            opts,
            format!("node {index}: stopping the monitor and the node"),
        );
        drop(stage);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The Mon-VM slowdown measurement: what it is and what came out.
#[derive(Debug, Clone)]
pub struct SlowdownReport {
    pub series: String,
    pub pairs: usize,
    /// Workload name -> (runs with monitoring on, runs with it off), in
    /// milliseconds of guest time.
    pub runs: BTreeMap<String, (Vec<f64>, Vec<f64>)>,
    /// Workload name -> the A/A control: a second run with the A-VM
    /// stopped in each pair, compared with the first as the slowdown is
    /// (what the host's noise alone makes of "no difference").
    pub control: BTreeMap<String, Vec<f64>>,
    pub periods: Periods,
    pub clock: GuestClock,
    /// The host's 1-minute load average before and after (other work on
    /// the host shows up as noise).
    pub load: (String, String),
    /// The A-VM QEMU process's CPU use (% of one host core) while the
    /// workloads ran with it on.
    pub avm_cpu_percent: Option<f64>,
    /// The node's CPU split (`avm=1 monvm=0`), `None` when its processes
    /// shared the host's CPUs.
    pub cpu_split: Option<String>,
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat`).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which ends with the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 here).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A workload run in the Mon-VM: its name and shell command.
/// The Mon-VM slowdown monitoring may cause (issue 8), in percent.
pub const SLOWDOWN_TARGET_PERCENT: f64 = 0.5;

pub const WORKLOADS: [(&str, &str, &str); 2] = [
    (
        "cpu",
        "md5sum of a 4 MiB tmpfs file, 96 times (CPU-bound: 384 MiB hashed from a cache-sized file)",
        "i=0; while [ $i -lt 96 ]; do md5sum /mnt/avm-bench/small >/dev/null; i=$((i+1)); done",
    ),
    (
        "memory",
        "dd of a 64 MiB tmpfs file to /dev/null in 4 MiB blocks, 48 times (memory-bound: 3 GiB copied from the page cache into a 4 MiB buffer)",
        "i=0; while [ $i -lt 48 ]; do dd if=/mnt/avm-bench/big of=/dev/null bs=4M 2>/dev/null; i=$((i+1)); done",
    ),
];

/// A guest clock readable from the shell: `date +%s%N` (nanoseconds) when
/// busybox supports `%N`, else `/proc/uptime` (10 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestClock {
    DateNanos,
    Uptime,
}

impl GuestClock {
    fn probe(console: &mut MonVmConsole) -> Result<Self, DemoError> {
        let out = console.run_ok("date +%s%N")?;
        let nanos = out.trim().parse::<u64>().ok();
        Ok(match nanos {
            Some(n) if n > 1_000_000_000_000_000 => Self::DateNanos,
            _ => Self::Uptime,
        })
    }

    /// A shell expression giving the time, and its unit in milliseconds.
    fn read(self) -> (&'static str, f64) {
        match self {
            Self::DateNanos => ("$(date +%s%N)", 1e-6),
            Self::Uptime => ("$(cut -d' ' -f1 /proc/uptime)", 1000.0),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::DateNanos => "guest clock, date +%s%N",
            Self::Uptime => "guest clock, /proc/uptime (10 ms)",
        }
    }
}

/// (guest time, host wall time around the console command) in ms.
fn timed(
    console: &mut MonVmConsole,
    clock: GuestClock,
    command: &str,
) -> Result<(f64, f64), DemoError> {
    let host = Instant::now();
    let guest = timed_guest(console, clock, command)?;
    Ok((guest, ms(host.elapsed())))
}

fn timed_guest(
    console: &mut MonVmConsole,
    clock: GuestClock,
    command: &str,
) -> Result<f64, DemoError> {
    // The guest's clock on both sides of the work, inside one command
    // line: no console transfer in it.
    let (now, unit) = clock.read();
    let out = console.run_ok(&format!(
        "a={now}; {command}; b={now}; echo \"AVM-T $a $b\""
    ))?;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("AVM-T "))
        .ok_or_else(|| setup(format!("no timing in {out:?}")))?;
    let mut parts = line.split_whitespace().map(str::parse::<f64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) if b >= a => Ok((b - a) * unit),
        _ => Err(setup(format!("bad timing {line:?}"))),
    }
}

/// Runs each workload `pairs` times with the A-VM running and `pairs`
/// times with its QEMU stopped (SIGSTOP), alternating, on one node.
pub fn slowdown(opts: &DemoOptions, pairs: usize) -> Result<SlowdownReport, DemoError> {
    let work = WorkDir::create(opts.keep_state)?;
    say(
        opts,
        format!("booting a node with a {} Mon-VM", opts.series),
    );
    let node = boot_node(
        &work.path.join("node"),
        &opts.image,
        &opts.series,
        opts.ram_mib,
        false,
        opts.cpus,
    )?;
    let record = node.record().clone();
    wait_serial(&record, "AVM-MONVM-IMA ", Duration::from_secs(120))?;
    let addr = node
        .attest_addr()
        .ok_or_else(|| setup("the node has no attestation address"))?
        .to_string();
    let periods = periods_of(&addr);
    let console_path = record
        .monvm_console
        .clone()
        .ok_or_else(|| setup("the node has no Mon-VM console"))?;
    let mut console = MonVmConsole::connect(&console_path, CONSOLE_TIMEOUT)?;
    console.set_timeout(Duration::from_secs(300));
    console.run_ok(
        "mkdir -p /mnt/avm-bench && mount -t tmpfs -o size=80m tmpfs /mnt/avm-bench && \
         dd if=/dev/urandom of=/mnt/avm-bench/small bs=1M count=4 2>/dev/null && \
         dd if=/dev/urandom of=/mnt/avm-bench/big bs=1M count=64 2>/dev/null",
    )?;
    // Let the start-up settle and warm the caches.
    std::thread::sleep(Duration::from_secs(3));
    let clock = GuestClock::probe(&mut console)?;
    for (_, _, command) in WORKLOADS {
        timed(&mut console, clock, command)?;
    }
    let pid = node.qemu_pid();
    let load_before = load_average();
    // The A-VM QEMU's CPU time while the workloads run with it on.
    let mut avm_ticks = 0u64;
    let mut avm_wall = Duration::ZERO;
    let mut runs: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut control: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for pair in 0..pairs {
        // Each order in turn, so drift hits every run of a pair alike.
        for run in SlowdownRun::order(pair) {
            let on = run == SlowdownRun::On;
            let stopped = if on { None } else { Some(Stopped::stop(pid)?) };
            let cpu_before = (process_ticks(pid), Instant::now());
            for (name, _, command) in WORKLOADS {
                let (guest, host) = timed(&mut console, clock, command)?;
                for (key, t) in [(name.to_string(), guest), (format!("{name}-host"), host)] {
                    match run {
                        SlowdownRun::On => runs.entry(key).or_default().0.push(t),
                        SlowdownRun::Off => runs.entry(key).or_default().1.push(t),
                        SlowdownRun::Control => control.entry(key).or_default().push(t),
                    }
                }
            }
            if on && let (Some(before), Some(after)) = (cpu_before.0, process_ticks(pid)) {
                avm_ticks += after.saturating_sub(before);
                avm_wall += cpu_before.1.elapsed();
            }
            drop(stopped);
            if !on {
                // The A-VM catches up after SIGCONT before the next "on".
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        say(
            opts,
            format!(
                "pair {}/{pairs}: {}",
                pair + 1,
                runs.iter()
                    .map(|(n, (on, off))| format!(
                        "{n} on {:.0} ms off {:.0} ms A/A {:.0} ms",
                        on.last().copied().unwrap_or_default(),
                        off.last().copied().unwrap_or_default(),
                        control
                            .get(n)
                            .and_then(|c| c.last().copied())
                            .unwrap_or_default()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let _ = console.run("umount /mnt/avm-bench");
    drop(console);
    let cpu_split = node.record().cpu_split.clone();
    drop(node);
    Ok(SlowdownReport {
        cpu_split,
        series: opts.series.clone(),
        pairs,
        runs,
        control,
        periods,
        clock,
        load: (load_before, load_average()),
        avm_cpu_percent: (!avm_wall.is_zero()).then(|| {
            let hz = rustix::param::clock_ticks_per_second() as f64;
            100.0 * avm_ticks as f64 / hz / avm_wall.as_secs_f64()
        }),
    })
}

/// One run of a slowdown pair: the A-VM checking, or its QEMU stopped
/// (the run compared with, and the A/A control: a second such run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowdownRun {
    On,
    Off,
    Control,
}

impl SlowdownRun {
    /// The order of pair `pair`'s runs: the six orders in turn, so each
    /// run comes first, second and third alike and before each other run
    /// as often as after it.
    pub fn order(pair: usize) -> [Self; 3] {
        use SlowdownRun::{Control, Off, On};
        const ORDERS: [[SlowdownRun; 3]; 6] = [
            [On, Off, Control],
            [Off, Control, On],
            [Control, On, Off],
            [Off, On, Control],
            [Control, Off, On],
            [On, Control, Off],
        ];
        ORDERS[pair % ORDERS.len()]
    }
}

/// What an A/A control's shift says of the host: "resolves 0.5%" if its
/// whole interval lies within the target either side, else "does not
/// resolve 0.5%" (`None`: "too few pairs").
fn control_verdict(shift: Option<&Shift>) -> &'static str {
    match shift {
        Some(s) if s.low >= -SLOWDOWN_TARGET_PERCENT && s.high <= SLOWDOWN_TARGET_PERCENT => {
            "resolves 0.5%"
        }
        Some(_) => "does not resolve 0.5%",
        None => "too few pairs",
    }
}

/// The host's 1-minute load average (`/proc/loadavg`).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn spread(values: &[f64]) -> String {
    let min = values.iter().copied().reduce(f64::min);
    let max = values.iter().copied().reduce(f64::max);
    match (min, max) {
        (Some(min), Some(max)) => format!("{min:.0}-{max:.0}"),
        _ => "-".into(),
    }
}

impl SlowdownReport {
    /// (median on, median off, slowdown %) of a workload.
    pub fn medians(&self, name: &str) -> Option<(f64, f64, f64)> {
        let (on, off) = self.runs.get(name)?;
        let on = percentile(on, 50.0)?;
        let off = percentile(off, 50.0)?;
        (off > 0.0).then(|| (on, off, 100.0 * (on - off) / off))
    }

    /// The slowdown of a workload over its alternating pairs, in percent
    /// of the median run with the A-VM stopped, with its 95% interval.
    pub fn slowdown(&self, name: &str) -> Option<Shift> {
        let (on, off) = self.runs.get(name)?;
        paired_shift(on, off)?.percent_of(percentile(off, 50.0)?)
    }

    /// The A/A control of a workload: its second runs with the A-VM
    /// stopped against the first, in percent of the median first run,
    /// with its 95% interval. An interval wider than the target says the
    /// host's noise alone hides a slowdown of the target's size.
    pub fn control_shift(&self, name: &str) -> Option<Shift> {
        let (_, off) = self.runs.get(name)?;
        let control = self.control.get(name)?;
        paired_shift(control, off)?.percent_of(percentile(off, 50.0)?)
    }

    /// What the A/A control of a workload says of the host
    /// ([`control_verdict`]).
    pub fn control_verdict(&self, name: &str) -> &'static str {
        control_verdict(self.control_shift(name).as_ref())
    }

    pub fn to_json(&self) -> Value {
        let workloads: Vec<Value> = WORKLOADS
            .iter()
            .map(|(name, what, command)| {
                let (on, off) = self.runs.get(*name).cloned().unwrap_or_default();
                let (host_on, host_off) = self
                    .runs
                    .get(&format!("{name}-host"))
                    .cloned()
                    .unwrap_or_default();
                let m = self.medians(name);
                let h = self.medians(&format!("{name}-host"));
                let paired = self.slowdown(name);
                let control = self.control_shift(name);
                json!({
                    "workload": name,
                    "what": what,
                    "command": command,
                    "on_ms": on,
                    "off_ms": off,
                    "median_on_ms": m.map(|m| m.0),
                    "median_off_ms": m.map(|m| m.1),
                    "slowdown_percent": m.map(|m| m.2),
                    "paired_slowdown_percent": paired.map(|s| s.estimate),
                    "paired_slowdown_ci95_percent": paired.map(|s| [s.low, s.high]),
                    "verdict": stats::verdict(paired.as_ref(), SLOWDOWN_TARGET_PERCENT),
                    "host_on_ms": host_on,
                    "host_off_ms": host_off,
                    "host_slowdown_percent": h.map(|h| h.2),
                    "control_ms": self.control.get(*name).cloned().unwrap_or_default(),
                    "control_shift_percent": control.map(|s| s.estimate),
                    "control_ci95_percent": control.map(|s| [s.low, s.high]),
                    "control_verdict": control_verdict(control.as_ref()),
                })
            })
            .collect();
        json!({
            "series": self.series,
            "pairs": self.pairs,
            "clock": self.clock.describe(),
            "load_average": [self.load.0, self.load.1],
            "avm_cpu_percent": self.avm_cpu_percent,
            "cpu_split": self.cpu_split,
            "workloads": workloads,
        })
    }

    pub fn table(&self) -> String {
        let mut out = String::from(
            "workload     median on ms  median off ms  slowdown  paired (95% interval)\n",
        );
        for (name, _, _) in WORKLOADS {
            for key in [name.to_string(), format!("{name}-host")] {
                if let Some((on, off, pct)) = self.medians(&key) {
                    let paired = self.slowdown(&key).map_or("-".into(), |s| s.describe());
                    let control = self
                        .control_shift(&key)
                        .map_or("-".into(), |s| s.describe());
                    out.push_str(&format!(
                        "{key:<12} {on:>12.1} {off:>14.1} {pct:>8.2}%  {paired}  A/A {control}\n"
                    ));
                }
            }
        }
        out.push_str(&format!(
            "on: the A-VM checking (its QEMU used {} of a host core meanwhile); off: its QEMU stopped (SIGSTOP); A/A: a second run with it stopped against the first. {}; -host: host wall time around the console command; {}.\n",
            self.avm_cpu_percent
                .map_or("?".to_string(), |c| format!("{c:.1}%")),
            self.clock.describe(),
            self.placement()
        ));
        out
    }

    /// Where the node's processes ran.
    fn placement(&self) -> String {
        match &self.cpu_split {
            Some(split) => format!(
                "`--cpus split`: the A-VM's QEMU and swtpm pinned apart from the Mon-VM's QEMU ({split})"
            ),
            None => {
                "`--cpus shared`: all processes on the host's CPUs as its scheduler places them"
                    .into()
            }
        }
    }

    pub fn markdown_rows(&self) -> String {
        let mut out = String::new();
        for (name, what, _) in WORKLOADS {
            if let Some((on, off, pct)) = self.medians(name) {
                let paired = self.slowdown(name);
                out.push_str(&format!(
                    "| Mon-VM {} slowdown from monitoring, {name}: {what}; {} runs with the A-VM checking at its periods (syscall/IDT {} ms, text {} ms, IMA and cross-views {}/{} ms) alternating with {} runs with the A-VM's QEMU stopped (SIGSTOP) on one node; slowdown of each pair, Hodges-Lehmann estimate with its 95% Wilcoxon interval: met only if the whole interval is at most 0.5%, inconclusive if it straddles or lies wholly below -0.5% (faster with monitoring: host noise); {}; {} | {} (medians {on:.0} ms vs {off:.0} ms: {pct:+.2}%; runs on {} ms, off {} ms; host wall time: {}; the A-VM's QEMU used {} of a host core meanwhile; host load average {} before, {} after) | at most 0.5% | {} |\n",
                    self.series,
                    self.pairs,
                    self.periods.policy.syscall_idt_ms,
                    self.periods.policy.text_ms,
                    self.periods.policy.ima_ms,
                    self.periods.policy.cross_ms,
                    self.pairs,
                    self.clock.describe(),
                    self.placement(),
                    paired.map_or("too few pairs for an interval".into(), |s| s.describe()),
                    self.runs.get(name).map_or("-".into(), |r| spread(&r.0)),
                    self.runs.get(name).map_or("-".into(), |r| spread(&r.1)),
                    self.medians(&format!("{name}-host"))
                        .map_or("-".to_string(), |(on, off, pct)| format!(
                            "{on:.0} ms vs {off:.0} ms, {pct:+.2}%"
                        )),
                    self.avm_cpu_percent
                        .map_or("?".to_string(), |c| format!("{c:.1}%")),
                    self.load.0,
                    self.load.1,
                    stats::verdict(paired.as_ref(), SLOWDOWN_TARGET_PERCENT),
                ));
                let control = self.control_shift(name);
                out.push_str(&format!(
                    "| Mon-VM {} slowdown, A/A control, {name}: in each of the {} pairs above a third run, again with the A-VM's QEMU stopped, compared with the stopped run as the slowdown is (what host noise alone makes of no difference); {} | {} (control runs {} ms) | whole interval within -0.5..+0.5% (else noise alone hides a 0.5% slowdown) | {} |\n",
                    self.series,
                    self.pairs,
                    self.placement(),
                    control.map_or("too few pairs for an interval".into(), |s| s.describe()),
                    self.control.get(name).map_or("-".into(), |r| spread(r)),
                    control_verdict(control.as_ref()),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_names_round_trip_and_the_ima_rewrite_comes_last() {
        for attack in AttackKind::ALL {
            assert_eq!(AttackKind::parse(attack.name()), Some(attack));
        }
        let mut sorted = AttackKind::ALL.to_vec();
        sorted.sort();
        assert_eq!(sorted.last(), Some(&AttackKind::RamIma));
    }

    #[test]
    fn every_reason_is_a_code_of_the_verifier() {
        let codes: Vec<&str> = avm_attest::monvm::MonVmKind::ALL
            .iter()
            .map(|k| k.code())
            .collect();
        for attack in AttackKind::ALL {
            assert!(codes.contains(&attack.reason()), "{}", attack.reason());
            let kind = avm_attest::monvm::MonVmKind::of_area(attack.area().as_bytes());
            assert_eq!(kind.code(), attack.reason());
        }
    }

    #[test]
    fn periods_parse_the_canonical_text_only() {
        let p = Periods::parse("syscall_idt=5,text=1000,ima=500,cross=500").expect("parses");
        assert_eq!(
            (
                p.policy.syscall_idt_ms,
                p.policy.text_ms,
                p.policy.ima_ms,
                p.policy.cross_ms,
                p.from_log
            ),
            (5, 1000, 500, 500, true)
        );
        assert!(Periods::parse("syscall_idt=5,text=1000,ima=500").is_none());
        assert!(Periods::parse("syscall_idt=5,text=1000,ima=500,cross=500,x=1").is_none());
        assert!(Periods::parse("syscall_idt=-5,text=1000,ima=500,cross=500").is_none());
        assert!(Periods::parse("syscall_idt=5,syscall_idt=5,ima=500,cross=500").is_none());
    }

    #[test]
    fn event_names_give_kind_and_area() {
        assert_eq!(
            event_area("monvm:event:3:violation:sys_call_table:slot 39 ..."),
            Some(("violation", "sys_call_table"))
        );
        assert_eq!(
            event_area("monvm:event:4:clean:idt"),
            Some(("clean", "idt"))
        );
        assert_eq!(event_area("avm:other"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 99.0), Some(20.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    /// Ten runs with the A-VM stopped that differ by at most 1%.
    const STEADY_OFF: [f64; 10] = [
        100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8, 100.1, 100.3, 99.9,
    ];

    fn slowdown_report(on: &[f64], off: &[f64]) -> SlowdownReport {
        slowdown_with_control(on, off, off)
    }

    fn slowdown_with_control(on: &[f64], off: &[f64], control: &[f64]) -> SlowdownReport {
        let mut runs = BTreeMap::new();
        runs.insert("cpu".to_string(), (on.to_vec(), off.to_vec()));
        SlowdownReport {
            series: "6.1".into(),
            pairs: on.len(),
            runs,
            control: BTreeMap::from([("cpu".to_string(), control.to_vec())]),
            periods: Periods::of_policy(MonitorPolicy::default(), true),
            clock: GuestClock::Uptime,
            load: ("0.1".into(), "0.2".into()),
            avm_cpu_percent: Some(6.0),
            cpu_split: None,
        }
    }

    #[test]
    fn a_slowdown_lost_in_noise_is_not_reported_met() {
        let report = slowdown_report(&stats::NOISY_WITH, &stats::NOISY_WITHOUT);
        let (_, _, pct) = report.medians("cpu").expect("medians");
        assert!(pct <= SLOWDOWN_TARGET_PERCENT);
        let rows = report.markdown_rows();
        let row = rows.lines().next().expect("a slowdown row");
        assert!(
            row.trim_end().ends_with("| at most 0.5% | inconclusive |"),
            "{row}"
        );
        assert!(row.contains("95% interval"), "{row}");
    }

    #[test]
    fn slowdown_verdicts_follow_the_interval() {
        let off = STEADY_OFF;
        let same: Vec<f64> = off.iter().map(|v| v + 0.02).collect();
        let slower: Vec<f64> = off.iter().map(|v| v * 1.03).collect();
        let row = |on: &[f64]| {
            let rows = slowdown_report(on, &off).markdown_rows();
            rows.lines().next().expect("a slowdown row").to_string()
        };
        assert!(row(&same).ends_with("| met |"), "{}", row(&same));
        assert!(row(&slower).ends_with("| not met |"), "{}", row(&slower));
        // Too few pairs for an interval: never met.
        let short = slowdown_report(&same[..4], &off[..4]).markdown_rows();
        let first = short.lines().next().expect("a slowdown row");
        assert!(first.ends_with("| inconclusive |"), "{short}");
    }

    #[test]
    fn the_control_says_whether_the_host_resolves_the_target() {
        let off = STEADY_OFF;
        let steady: Vec<f64> = off.iter().map(|v| v + 0.01).collect();
        let report = slowdown_with_control(&off, &off, &steady);
        assert_eq!(report.control_verdict("cpu"), "resolves 0.5%");
        let rows = report.markdown_rows();
        let control = rows.lines().nth(1).expect("a control row");
        assert!(control.contains("A/A control"), "{rows}");
        assert!(control.ends_with("| resolves 0.5% |"), "{rows}");
        // Noise alone: the second stopped runs swing by 20%.
        let noisy = slowdown_with_control(
            &stats::NOISY_WITH,
            &stats::NOISY_WITHOUT,
            &stats::NOISY_WITH,
        );
        assert_eq!(noisy.control_verdict("cpu"), "does not resolve 0.5%");
        // A control shifted by 1% does not resolve 0.5% either, though
        // steady: its interval is not around zero.
        let shifted: Vec<f64> = off.iter().map(|v| v * 1.01).collect();
        let shifted = slowdown_with_control(&off, &off, &shifted);
        assert_eq!(shifted.control_verdict("cpu"), "does not resolve 0.5%");
        let short = slowdown_with_control(&off[..4], &off[..4], &off[..4]);
        assert_eq!(short.control_verdict("cpu"), "too few pairs");
        assert!(short.to_json()["workloads"][0]["control_verdict"] == "too few pairs");
    }

    #[test]
    fn every_run_of_a_pair_comes_first_and_before_each_other_as_often() {
        let orders: Vec<[SlowdownRun; 3]> = (0..6).map(SlowdownRun::order).collect();
        for run in [SlowdownRun::On, SlowdownRun::Off, SlowdownRun::Control] {
            for position in 0..3 {
                let times = orders.iter().filter(|o| o[position] == run).count();
                assert_eq!(times, 2, "{run:?} at {position}");
            }
            for other in [SlowdownRun::On, SlowdownRun::Off, SlowdownRun::Control] {
                if other == run {
                    continue;
                }
                let before = |o: &[SlowdownRun; 3]| {
                    o.iter().position(|r| *r == run) < o.iter().position(|r| *r == other)
                };
                assert_eq!(orders.iter().filter(|o| before(o)).count(), 3);
            }
        }
        assert_eq!(SlowdownRun::order(6), SlowdownRun::order(0));
    }
}
