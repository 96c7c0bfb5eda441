//! `avm-demo`: continuous monitoring shown end to end, attack by attack
//! (see `avm-demo --help` and docs/demo.md).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use avm_qemu::demo::{self, AttackKind, DemoOptions};
use avm_qemu::placement::CpuPlacement;
use clap::Parser;

/// Boots a node (A-VM + swtpm + a Debian Mon-VM holding the test rootkit)
/// under QEMU TCG, enrols it with `avm-verifier`, learns its policy from
/// this known-good boot, runs `avm-verifier monitor --json` as a child, and
/// then injects each attack class in turn: from inside the Mon-VM through
/// the rootkit typed on its console (syscall, idt, text, rodata, fops,
/// hide_module, hide_pid, root_pid) and from outside through the Mon-VM's
/// RAM file (ram-syscall, ram-idt, ram-text, ram-ima). For each injection
/// it waits for the event the monitor receives and the monitor's untrusted
/// verdict with the expected reason code, shows both latencies, undoes the
/// attack and waits for the A-VM to report the area clean. It ends with a
/// summary table.
///
/// Latency: a RAM-file write is timestamped when the bytes are in the file
/// (exact); a console injection before the command is typed, so it also
/// holds the serial transfer and the guest shell (an upper bound).
///
/// The verifier's policy is made with `--monvm-violations current` (see
/// --violations): a violation counts until the A-VM records its area clean
/// again, so after each restore the demo also waits for the monitor to say
/// trusted again. The IMA rewrite comes last.
///
/// Exit status: 0 when every injection was detected with its reason, 1 when
/// one was not, 2 when the scenario could not run.
#[derive(Debug, Parser)]
#[command(name = "avm-demo", version)]
struct Cli {
    /// The A-VM image.
    #[arg(long, env = "AVM_IMAGE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../build/avm.elf"))]
    image: PathBuf,
    /// The `avm-verifier` binary.
    #[arg(long, env = "AVM_VERIFIER", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/avm-verifier"))]
    verifier: PathBuf,
    /// Mon-VM kernel series (`make deps` fetches 6.1 and 6.12 and builds
    /// the test rootkit for each).
    #[arg(long, default_value = "6.1")]
    monvm_kernel: String,
    /// Mon-VM RAM in MiB.
    #[arg(long, default_value_t = 256)]
    monvm_ram: u64,
    /// Inject each attack this many times (the summary gives median and
    /// p99). Many rounds use one node per few classes: the verifier lists
    /// at most 100 findings.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Comma-separated attack classes (default: all): syscall, idt, text,
    /// rodata, fops, hide_module, hide_pid, root_pid, ram-syscall,
    /// ram-idt, ram-text, ram-ima.
    #[arg(long, value_delimiter = ',')]
    attacks: Vec<String>,
    /// Also write markdown table rows (docs/benchmarks.md) to FILE.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
    /// Keep the state directory (node, verifier database) for a look.
    #[arg(long)]
    keep_state: bool,
    /// Instead of the attacks: measure the Mon-VM's slowdown from
    /// monitoring with N pairs of runs (A-VM running, A-VM's QEMU stopped
    /// with SIGSTOP, and stopped again as an A/A control of what host
    /// noise alone gives) of a CPU-bound and a memory-bound workload in
    /// the Mon-VM.
    #[arg(long, value_name = "N")]
    slowdown: Option<usize>,
    /// How long a recorded violation keeps the node untrusted, as the
    /// verifier's policy says (`policy init --monvm-violations`): `current`
    /// (until the A-VM records the area clean again: the node is trusted
    /// again after each restore) or `sticky` (every violation ever
    /// recorded: the node stays untrusted after the first attack).
    #[arg(long, default_value = "current", value_parser = ["current", "sticky"])]
    violations: String,
    /// Where the node's processes run on the host's CPUs (as `avm-qemu up
    /// --cpus`): `shared`, or `split` (the A-VM's QEMU and swtpm on the
    /// last CPU, the Mon-VM's QEMU on the others).
    #[arg(long, default_value_t = CpuPlacement::Shared)]
    cpus: CpuPlacement,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut attacks = Vec::new();
    for name in &cli.attacks {
        match AttackKind::parse(name.trim()) {
            Some(a) => attacks.push(a),
            None => {
                eprintln!("avm-demo: unknown attack {name:?} (see --help)");
                return ExitCode::from(2);
            }
        }
    }
    if attacks.is_empty() {
        attacks = AttackKind::ALL.to_vec();
    }
    for (what, path) in [("A-VM image", &cli.image), ("avm-verifier", &cli.verifier)] {
        // The slowdown measurement needs no verifier.
        let needed = cli.slowdown.is_none() || what != "avm-verifier";
        if needed && !path.is_file() {
            eprintln!(
                "avm-demo: {what} {} not found: run `make build` (or pass --image / --verifier)",
                path.display()
            );
            return ExitCode::from(2);
        }
    }
    let opts = DemoOptions {
        image: cli.image,
        verifier: cli.verifier,
        series: cli.monvm_kernel,
        ram_mib: cli.monvm_ram,
        rounds: cli.rounds,
        attacks,
        keep_state: cli.keep_state,
        verbose: !cli.quiet,
        violations: Some(cli.violations),
        cpus: cli.cpus,
    };
    if let Some(pairs) = cli.slowdown {
        return match demo::slowdown(&opts, pairs.max(1)) {
            Ok(report) => {
                if cli.json {
                    println!("{}", report.to_json());
                } else {
                    print!("{}", report.table());
                }
                write_rows(cli.markdown.as_ref(), &report.markdown_rows())
            }
            Err(e) => {
                eprintln!("avm-demo: {e}");
                ExitCode::from(2)
            }
        };
    }
    match demo::run(&opts) {
        Ok(report) => {
            if cli.json {
                println!("{}", report.to_json());
            } else {
                println!();
                print!("{}", report.table());
            }
            let written = write_rows(cli.markdown.as_ref(), &report.markdown_rows());
            if written != ExitCode::SUCCESS {
                return written;
            }
            if report.all_detected() {
                ExitCode::SUCCESS
            } else {
                eprintln!("avm-demo: not every attack was detected with its reason");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("avm-demo: {e}");
            ExitCode::from(2)
        }
    }
}

fn write_rows(path: Option<&PathBuf>, rows: &str) -> ExitCode {
    if let Some(path) = path
        && let Err(e) = std::fs::write(path, rows)
    {
        eprintln!("avm-demo: writing {}: {e}", path.display());
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
