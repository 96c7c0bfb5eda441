//! `avm-verifier`: enrol A-VM nodes, challenge them, and verify evidence.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use avm_verifier::commands::{self, AttestOptions, Context, EXIT_ERROR};
use avm_verifier::hex;
use clap::{Parser, Subcommand};

/// Verifier for A-VM nodes: enrols a node (EK certificate + AK credential
/// activation), challenges it for a TPM quote, and decides whether it is
/// trusted against reference values (the A-VM image and firmware events).
///
/// Exit codes: 0 trusted / done; 1 untrusted (or enrolment refused);
/// 2 usage, I/O, network or state error.
#[derive(Debug, Parser)]
#[command(name = "avm-verifier", version)]
struct Cli {
    /// State directory (SQLite database with nodes, verdicts and policy).
    /// Default: $AVM_VERIFIER_STATE, $XDG_STATE_HOME/avm-verifier or
    /// ~/.local/state/avm-verifier.
    #[arg(long, global = true, value_name = "DIR")]
    state: Option<PathBuf>,

    /// Seconds allowed for connecting to a node and for each answer.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECS")]
    timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol a node: check its EK certificate chains to --ek-ca and holds
    /// its EK, bind its AK to the EK by credential activation, record it.
    Enroll {
        /// The node's attestation address, host:port.
        addr: String,
        /// PEM file of the CA(s) that issue EK certificates; every
        /// certificate in it is a trust anchor.
        #[arg(long, value_name = "FILE")]
        ek_ca: PathBuf,
    },
    /// Challenge an enrolled node with a fresh nonce and verify its quote,
    /// event log and measured launch. Prints trusted or untrusted with the
    /// reasons; exit code 0 only when trusted.
    Attest {
        addr: String,
        /// Nonce to send, hex (default: 32 random bytes).
        #[arg(long, value_name = "HEX")]
        nonce: Option<String>,
        /// Also write the evidence in tpm2-tools formats into DIR
        /// (checkable with tpm2_checkquote).
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Reference values TOML to use instead of the stored policy.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Verify an evidence directory offline (one written by `attest
    /// --export`, or by tpm2_quote: quote.msg, quote.sig, quote.pcrs,
    /// ak.pem; without eventlog.bin the log checks are not applicable).
    Verify {
        dir: PathBuf,
        /// The nonce the quote must carry, hex (default: DIR/nonce.hex).
        #[arg(long, value_name = "HEX")]
        nonce: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Manage the reference values (TOML) kept in the state.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// List enrolled nodes with their last verdict.
    Nodes {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Start a policy that allows the given A-VM image(s) (replaces the
    /// stored policy; learn firmware events afterwards).
    Init {
        /// A-VM image file whose SHA-256 is allowed (repeatable).
        #[arg(long, value_name = "FILE")]
        avm_image: Vec<PathBuf>,
        /// Allowed A-VM image digest, hex (repeatable).
        #[arg(long, value_name = "HEX")]
        avm_image_sha256: Vec<String>,
    },
    /// Learn firmware event digests from a known-good boot of an enrolled
    /// node (its quote must verify and its PCR 0 match an allowed image).
    Learn { addr: String },
    /// Print the stored policy.
    Show,
}

fn parse_nonce(text: Option<String>) -> Result<Option<Vec<u8>>, commands::CommandError> {
    text.map(|t| hex::decode(&t).map_err(|e| commands::CommandError(format!("--nonce: {e}"))))
        .transpose()
}

fn run(cli: Cli) -> Result<u8, commands::CommandError> {
    let ctx = Context {
        state_dir: cli
            .state
            .unwrap_or_else(avm_verifier::store::default_state_dir),
        timeout: Duration::from_secs(cli.timeout.max(1)),
    };
    match cli.command {
        Command::Enroll { addr, ek_ca } => commands::enroll(&ctx, &addr, &ek_ca),
        Command::Attest {
            addr,
            nonce,
            export,
            json,
            policy,
        } => commands::attest(
            &ctx,
            &addr,
            &AttestOptions {
                nonce: parse_nonce(nonce)?,
                export,
                json,
                policy,
            },
        ),
        Command::Verify {
            dir,
            nonce,
            json,
            policy,
        } => commands::verify(&ctx, &dir, parse_nonce(nonce)?, json, policy.as_deref()),
        Command::Policy { command } => match command {
            PolicyCommand::Init {
                avm_image,
                avm_image_sha256,
            } => commands::policy_init(&ctx, &avm_image, &avm_image_sha256),
            PolicyCommand::Learn { addr } => commands::policy_learn(&ctx, &addr),
            PolicyCommand::Show => commands::policy_show(&ctx),
        },
        Command::Nodes { json } => commands::nodes(&ctx, json),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("avm-verifier: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
