//! `avm-qemu`: bring an A-VM node up under QEMU with a measured launch.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use avm_attest::monitor_policy::MonitorPolicy;
use avm_qemu::monvm::{self, KernelChoice, MonVmConfig};
use avm_qemu::node::{self, DEFAULT_MEMORY_MIB, Node, NodeConfig, NodeRecord};
use avm_qemu::placement::CpuPlacement;
use avm_qemu::qemu::Accel;
use avm_qemu::report::BootReport;
use avm_qemu::{bench, hex, verify};

#[derive(Parser)]
#[command(
    name = "avm-qemu",
    version,
    about = "Bring an A-VM node up under QEMU with a software TPM (swtpm)",
    long_about = "Bring an A-VM node up under QEMU with a software TPM (swtpm).\n\n\
        A node lives in one state directory: a fresh TPM with EK certificates from a \
        node-local CA, the A-VM image measured into PCR0 (H-CRTM) before boot, QEMU \
        (q35, SeaBIOS, TPM on CRB), the A-VM serial log, and node.json describing it all. \
        By default the node also runs the Mon-VM, a stock Debian kernel (fetched by \
        `make deps`) with a busybox userland on ext4, whose RAM file the A-VM maps \
        read-only; its serial console is a Unix socket (status: monvm_console)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node (the Mon-VM, then the A-VM) and return once the A-VM
    /// printed its boot report, its attestation server is up and the
    /// Mon-VM's userland is ready; the node keeps running in the background.
    /// Prints the attestation address (127.0.0.1:PORT) on stdout.
    Up(UpArgs),
    /// Stop everything `up` started in the state directory.
    Down {
        /// The node's state directory.
        #[arg(long)]
        state: PathBuf,
    },
    /// Show a node: paths (serial log, EK CA), pids, attestation address, and
    /// whether it is running.
    Status {
        /// The node's state directory.
        #[arg(long)]
        state: PathBuf,
        /// Print one JSON object (fields include avm_serial, ek_ca,
        /// attest_addr, attest_port, guest_ip, guest_attest_port, running,
        /// and for a Mon-VM monvm_ram, monvm_ram_layout, monvm_console,
        /// monvm_kernel, monvm_series, monvm_pid).
        #[arg(long)]
        json: bool,
    },
    /// Foreground: bring a node up, print and check its boot report, stop it.
    Run(RunArgs),
    /// Measure the stripped image size and the boot time (QEMU start to the
    /// boot report, median of several runs); prints a markdown table.
    Bench {
        /// The A-VM kernel image.
        #[arg(long, env = "AVM_IMAGE", default_value = "build/avm.elf")]
        image: PathBuf,
        /// Number of boots.
        #[arg(long, default_value_t = 7)]
        runs: usize,
        #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
        accel: AccelArg,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    /// KVM only if a probe guest proves it is real hardware virtualisation, else TCG.
    Auto,
    Tcg,
    Kvm,
}

impl AccelArg {
    fn choice(self) -> Option<Accel> {
        match self {
            Self::Auto => None,
            Self::Tcg => Some(Accel::Tcg),
            Self::Kvm => Some(Accel::Kvm),
        }
    }
}

#[derive(Args)]
struct NodeArgs {
    /// The A-VM kernel image (ELF with a PVH note).
    #[arg(long, env = "AVM_IMAGE", default_value = "build/avm.elf")]
    image: PathBuf,
    /// Host loopback TCP port forwarded to the A-VM's attestation server
    /// (guest port 7140) [default: a free port, picked automatically].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "no_network")]
    attest_port: Option<u16>,
    /// Boot without a network card: no attestation server (boot checks only).
    #[arg(long)]
    no_network: bool,
    /// A-VM guest RAM in MiB (at least 128 with a Mon-VM: the A-VM's heap
    /// holds what the Mon-VM can make it hold, docs/monitoring.md "Memory").
    #[arg(long, default_value_t = DEFAULT_MEMORY_MIB)]
    memory: u32,
    /// Boot without a TPM (the A-VM then reports `no-tpm` and exits).
    #[arg(long)]
    no_tpm: bool,
    /// Accelerator.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// Seconds to wait for the boot report and the network.
    #[arg(long, default_value_t = node::DEFAULT_BOOT_TIMEOUT.as_secs())]
    timeout: u64,
    /// Extra kernel command-line words (repeatable), e.g. `--cmdline log=debug`.
    #[arg(long = "cmdline")]
    cmdline: Vec<String>,
    /// The A-VM's monitor policy: check periods in milliseconds,
    /// `syscall_idt=N,text=N,ima=N,cross=N` (each 1..=60000), optionally
    /// `,setuid=PATH:PATH` (set-uid programs that may run as root under a
    /// user; docs/monitoring.md) [default: none, the A-VM uses
    /// syscall_idt=5,text=1000,ima=500,cross=500].
    #[arg(long, value_parser = parse_monitor_policy)]
    monitor_policy: Option<MonitorPolicy>,
    /// Where the node's processes run on the host's CPUs: `shared` (the
    /// host schedules them), or `split`: the A-VM's QEMU and swtpm on the
    /// last CPU this process may use, the Mon-VM's QEMU on all the others,
    /// so the A-VM's timer wake-ups do not preempt the Mon-VM
    /// (docs/monitoring.md). Needs two CPUs; `status --json` shows the
    /// split as `cpu_split`.
    #[arg(long, default_value_t = CpuPlacement::Shared)]
    cpus: CpuPlacement,
    #[command(flatten)]
    monvm: MonVmArgs,
}

/// `--monitor-policy`, checked with the parser the A-VM uses.
fn parse_monitor_policy(text: &str) -> Result<MonitorPolicy, String> {
    MonitorPolicy::parse(text.as_bytes()).map_err(|e| format!("invalid monitor policy: {e}"))
}

#[derive(Args)]
struct MonVmArgs {
    /// Start only the A-VM (no Mon-VM).
    #[arg(long)]
    no_monvm: bool,
    /// The Mon-VM's kernel: a series fetched by `make deps` (6.1, 6.12) or
    /// the path of a bzImage (vmlinuz).
    #[arg(long, default_value = monvm::kernel::DEFAULT_SERIES, conflicts_with = "no_monvm")]
    monvm_kernel: String,
    /// The Mon-VM's RAM in MiB, or with a suffix (512M, 4G); a power of two.
    #[arg(long, default_value_t = monvm::DEFAULT_RAM_MIB, value_parser = monvm::ram::parse_ram_size, conflicts_with = "no_monvm")]
    monvm_ram: u64,
    /// Extra words for the Mon-VM kernel's command line (repeatable;
    /// `nokaslr` is refused).
    #[arg(long = "monvm-cmdline", conflicts_with = "no_monvm")]
    monvm_cmdline: Vec<String>,
    /// Where the Mon-VM's RAM file is created.
    #[arg(long, default_value = monvm::ram::DEFAULT_RAM_DIR, conflicts_with = "no_monvm")]
    monvm_ram_dir: PathBuf,
    /// The A-VM's CPUs: with 2 a helper CPU shares its start-up check of
    /// the Mon-VM kernel's text (about a third faster under TCG on two
    /// host cores) and halts otherwise; 1 checks on one CPU, with the same
    /// result. Never more than the host CPUs the A-VM may use: one with
    /// `--cpus split`. An A-VM without a Mon-VM has one.
    #[arg(long, default_value_t = monvm::DEFAULT_AVM_CPUS, value_parser = clap::value_parser!(u32).range(1..=2), conflicts_with = "no_monvm")]
    avm_cpus: u32,
}

impl MonVmArgs {
    fn config(&self) -> Option<MonVmConfig> {
        if self.no_monvm {
            return None;
        }
        let mut config = MonVmConfig::new(KernelChoice::parse(&self.monvm_kernel));
        config.ram_mib = self.monvm_ram;
        config.extra_cmdline = self.monvm_cmdline.clone();
        config.ram_dir = self.monvm_ram_dir.clone();
        config.avm_cpus = self.avm_cpus;
        Some(config)
    }
}

#[derive(Args)]
struct UpArgs {
    /// The node's state directory (created; an earlier stopped node in it is replaced).
    #[arg(long)]
    state: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Args)]
struct RunArgs {
    /// The node's state directory [default: a temporary directory, removed afterwards].
    #[arg(long)]
    state: Option<PathBuf>,
    #[command(flatten)]
    node: NodeArgs,
}

fn node_config(state: PathBuf, args: &NodeArgs) -> NodeConfig {
    let mut config = NodeConfig::new(state, &args.image);
    // Without a port (and with a network), `bring_up` picks a free one.
    config.attest_port = args.attest_port.filter(|_| !args.no_network);
    config.memory_mib = args.memory;
    config.with_tpm = !args.no_tpm;
    config.accel = args.accel.choice();
    config.extra_cmdline = args.cmdline.clone();
    config.monvm = args.monvm.config();
    config.monitor_policy = args.monitor_policy.clone();
    config.cpus = args.cpus;
    config
}

/// Brings the node up; with an automatically chosen port, retries with a
/// fresh one if QEMU could not bind it.
fn bring_up(state: PathBuf, args: &NodeArgs, detachable: bool) -> Result<Node, String> {
    let timeout = Duration::from_secs(args.timeout);
    let mut config = node_config(state, args);
    config.detachable = detachable;
    let node = if config.attest_port.is_none() && !args.no_network {
        Node::up_on_free_port(&config, timeout)
    } else {
        Node::up(&config, timeout)
    };
    node.map_err(|err| err.to_string())
}

fn print_report(report: &BootReport, record: &NodeRecord) {
    println!("A-VM boot report");
    println!("  TPM vendor         {}", report.tpm_vendor);
    println!("  TPM firmware       {:#018x}", report.tpm_firmware);
    println!("  TPM startup        {:?}", report.tpm_startup);
    for (index, pcr) in report.pcrs_sha256.iter().enumerate() {
        println!("  PCR{index} (sha256)     {}", hex::encode(pcr));
    }
    println!(
        "  event log          {} entries, {} bytes",
        report.eventlog_entries,
        report.eventlog.len()
    );
    println!(
        "  EK ({:?})     {}",
        report.ek_alg,
        hex::encode(&report.ek_name)
    );
    println!(
        "  AK ({:?})     {}",
        report.ak_alg,
        hex::encode(&report.ak_name)
    );
    println!("  kernel boot time   {} us", report.boot_us);
    for (key, value) in &report.extra {
        println!("  {key} = {value}");
    }
    if let Some(kernel) = &record.monvm_kernel {
        println!(
            "  Mon-VM             {} ({}), {} MiB, ready after {} ms",
            kernel,
            record.monvm_kernel_release.as_deref().unwrap_or("?"),
            record.monvm_ram_mib.unwrap_or_default(),
            record
                .monvm_ready_ms
                .map_or_else(|| "?".to_owned(), |ms| ms.to_string())
        );
    }
    if let Some(provisioned) = &record.ek_name_ecc_p256 {
        let matches = *provisioned == hex::encode(&report.ek_name);
        println!(
            "  EK is the certified P-256 EK: {}",
            if matches { "ok" } else { "MISMATCH" }
        );
    }
    let Ok(image_digest) = hex::decode_array::<32>(&record.image_sha256) else {
        return;
    };
    match verify::check_measured_boot(report, &image_digest) {
        Ok(check) => {
            let verdict = |ok: bool| if ok { "ok" } else { "MISMATCH" };
            println!(
                "  PCR0 = H-CRTM(image) + firmware events: {} (expected {})",
                verdict(check.pcr0_matches(report)),
                hex::encode(&check.expected_pcr0)
            );
            println!(
                "  event log replay reproduces PCRs 0-7: {}{}",
                verdict(check.mismatched_pcrs.is_empty()),
                if check.mismatched_pcrs.is_empty() {
                    String::new()
                } else {
                    format!(" (PCRs {:?} differ)", check.mismatched_pcrs)
                }
            );
        }
        Err(err) => println!("  measured boot check: {err}"),
    }
}

fn up(args: UpArgs) -> Result<(), String> {
    let node = bring_up(args.state, &args.node, true)?;
    let record = node.detach();
    eprintln!(
        "A-VM up (qemu pid {}, swtpm pid {}); serial log {}; stop with `avm-qemu down --state {}`",
        record.qemu_pid.map_or("-".into(), |p| p.to_string()),
        record.swtpm_pid.map_or("-".into(), |p| p.to_string()),
        record.avm_serial.display(),
        record.state_dir.display()
    );
    if let (Some(console), Some(ram)) = (&record.monvm_console, &record.monvm_ram) {
        eprintln!(
            "Mon-VM up (kernel {}, qemu pid {}, ready after {} ms); console {}; RAM {}",
            record.monvm_kernel.as_deref().unwrap_or("?"),
            record.monvm_pid.map_or("-".into(), |p| p.to_string()),
            record
                .monvm_ready_ms
                .map_or_else(|| "?".to_owned(), |ms| ms.to_string()),
            console.display(),
            ram.display()
        );
    }
    match record.attest_addr {
        Some(addr) => println!("{addr}"),
        None => eprintln!("no attestation address (started with --no-network)"),
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<(), String> {
    let temporary = match &args.state {
        Some(_) => None,
        None => Some(tempfile_dir()?),
    };
    let state = args
        .state
        .clone()
        .or_else(|| temporary.as_ref().map(|t| t.0.clone()))
        .ok_or("no state directory")?;
    let result = bring_up(state, &args.node, false);
    let outcome = match &result {
        Ok(node) => {
            if let Some(report) = node.report() {
                print_report(report, node.record());
            }
            if let (Some(addr), Some(ip)) = (&node.record().attest_addr, &node.record().guest_ip) {
                println!("  attestation server {addr} (A-VM {ip}) up");
            }
            Ok(())
        }
        Err(err) => Err(err.clone()),
    };
    drop(result);
    drop(temporary);
    outcome
}

/// A temporary state dir for `run`, removed on drop.
struct TemporaryDir(PathBuf);

impl Drop for TemporaryDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TemporaryDir, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let path = std::env::temp_dir().join(format!("avm-run-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    Ok(TemporaryDir(path))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up(args),
        Command::Down { state } => {
            node::down(&state)
                .map_err(|e| e.to_string())
                .and_then(|status| {
                    if status.running {
                        Err("node is still running after down".to_owned())
                    } else {
                        eprintln!("node in {} stopped", status.record.state_dir.display());
                        Ok(())
                    }
                })
        }
        Command::Status { state, json } => node::status(&state)
            .map_err(|e| e.to_string())
            .and_then(|status| {
                if json {
                    let text = serde_json::to_string(&status).map_err(|e| e.to_string())?;
                    println!("{text}");
                } else {
                    println!("state dir    {}", status.record.state_dir.display());
                    println!("running      {}", status.running);
                    println!("A-VM serial  {}", status.record.avm_serial.display());
                    if let Some(ca) = &status.record.ek_ca {
                        println!("EK CA        {}", ca.display());
                    }
                    if let Some(addr) = &status.record.attest_addr {
                        println!("attestation  {addr}");
                    }
                    if let Some(ip) = &status.record.guest_ip {
                        println!("A-VM address {ip}");
                    }
                    if let Some(kernel) = &status.record.monvm_kernel {
                        println!("Mon-VM       kernel {kernel}");
                    }
                    if let Some(console) = &status.record.monvm_console {
                        println!("Mon-VM console {}", console.display());
                    }
                    if let Some(ram) = &status.record.monvm_ram {
                        println!(
                            "Mon-VM RAM   {} ({})",
                            ram.display(),
                            status.record.monvm_ram_layout.as_deref().unwrap_or("?")
                        );
                    }
                }
                Ok(())
            }),
        Command::Run(args) => run(args),
        Command::Bench { image, runs, accel } => {
            if !image.is_file() {
                Err(format!(
                    "A-VM image {} not found: run `make build` first",
                    image.display()
                ))
            } else {
                tempfile_dir().and_then(|dir| {
                    bench::run_bench(&image, runs, accel.choice(), &dir.0)
                        .map(|result| print!("{}", result.to_markdown()))
                        .map_err(|e| e.to_string())
                })
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("avm-qemu: {message}");
            ExitCode::FAILURE
        }
    }
}
