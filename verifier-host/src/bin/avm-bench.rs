//! `avm-bench`: the measurements behind `make bench` (scripts/bench.sh).
//! Prints `key=value` lines; exit code 2 if a measurement could not be
//! made. It never judges the numbers.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use avm_verifier::bench::{self, BenchError, EnrolledNode, ImaPolicySource, RoundTripMode};
use clap::{Parser, Subcommand};

/// Benchmarks of the verifier against a live node and on exported evidence.
#[derive(Debug, Parser)]
#[command(name = "avm-bench")]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Attestation round trips, challenge to verdict, against a node
    /// enrolled in the verifier state (with a policy it satisfies). Runs
    /// both modes: a connection (+ Hello) per round, and one persistent
    /// connection.
    Roundtrip {
        addr: String,
        /// The avm-verifier state directory the node is enrolled in.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        /// Deadline in seconds of one exchange.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Attestations per second with N verifiers attesting the node at once
    /// (each as `attest` does: a connection per attestation), for each N.
    Concurrency {
        addr: String,
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// Numbers of concurrent verifiers, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 32, 64])]
        verifiers: Vec<usize>,
        /// Seconds per level.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Deadline in seconds of one attestation.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Full verifications per second of an exported evidence directory on
    /// the calling thread (pin it with taskset for "one core"), and raw
    /// signature verifications per second through the same OpenSSL code.
    Verify {
        dir: PathBuf,
        /// The avm-verifier state whose policy the evidence satisfies.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// The verifier's appraisal of a Linux IMA list against a Keylime
    /// runtime policy (a directory written by the peer baseline's
    /// gen_ima_log.py): template hashes, replay to PCR 10, allowlist.
    /// Prints the verdict and the time per run.
    ImaLog {
        dir: PathBuf,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Template hashes and replay to PCR 10 only, no policy read (the
        /// work `evmctl ima_measurement --pcrs` does).
        #[arg(long, conflicts_with = "state")]
        replay_only: bool,
        /// Take the allowlist from the policy kept in this verifier state
        /// (as `attest` loads it; import it first with `avm-verifier
        /// policy import-keylime`) instead of reading the JSON policy.
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
    },
    /// Wall time of a command, run `runs` times.
    Time {
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

fn run(cli: Cli) -> Result<String, BenchError> {
    match cli.command {
        BenchCommand::Roundtrip {
            addr,
            state,
            rounds,
            timeout,
        } => {
            let node = EnrolledNode::load(&state, &addr)?;
            let timeout = Duration::from_secs(timeout.max(1));
            let per_connection = bench::attestation_round_trips(
                &node,
                RoundTripMode::ConnectionPerRound,
                rounds,
                timeout,
            )?;
            let persistent = bench::attestation_round_trips(
                &node,
                RoundTripMode::PersistentConnection,
                rounds,
                timeout,
            )?;
            Ok(format!(
                "{}{}",
                per_connection.key_values("roundtrip.connection"),
                persistent.key_values("roundtrip.persistent")
            ))
        }
        BenchCommand::Concurrency {
            addr,
            state,
            verifiers,
            seconds,
            timeout,
        } => {
            let node = EnrolledNode::load(&state, &addr)?;
            let duration = Duration::from_secs_f64(seconds.clamp(0.5, 600.0));
            let timeout = Duration::from_secs(timeout.max(1));
            let mut out = String::new();
            for n in verifiers {
                let result = bench::concurrent_attestations(&node, n, duration, timeout)?;
                out.push_str(&result.key_values(&format!("concurrency.{n}")));
            }
            Ok(out)
        }
        BenchCommand::Verify {
            dir,
            state,
            seconds,
        } => {
            let duration = Duration::from_secs_f64(seconds.clamp(0.1, 600.0));
            let policy = bench::load_policy(&state)?;
            let values = policy.as_ref().map(|p| p.values());
            let full = bench::verification_throughput(&dir, values, duration)?;
            let raw = bench::signature_throughput(&dir, duration)?;
            Ok(format!(
                "verify.full_per_s={:.0}\nverify.full_count={}\nverify.signature_only_per_s={:.0}\n",
                full.per_second(),
                full.verifications,
                raw.per_second()
            ))
        }
        BenchCommand::ImaLog {
            dir,
            runs,
            replay_only,
            state,
        } => {
            let policy = match (&state, replay_only) {
                (Some(state), _) => ImaPolicySource::State(state),
                (None, true) => ImaPolicySource::None,
                (None, false) => ImaPolicySource::KeylimeJson,
            };
            Ok(bench::ima_log_appraisal(&dir, runs.clamp(1, 1000), policy)?.key_values("ima"))
        }
        BenchCommand::Time { runs, command } => {
            let (program, args) = command
                .split_first()
                .ok_or_else(|| BenchError("no command".into()))?;
            Ok(bench::time_command(program, args, runs.max(1))?.key_values("command"))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("avm-bench: {e}");
            ExitCode::from(2)
        }
    }
}
