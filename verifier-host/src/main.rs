//! `avm-verifier`: enrol A-VM nodes, challenge them, and verify evidence.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use avm_verifier::commands::{
    self, AttestOptions, Context, EXIT_ERROR, EnrollOptions, VerifyOptions,
};
use avm_verifier::hex;
use avm_verifier::sanitize::escape_control;
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

    /// Deadline in seconds for the whole exchange with a node (connecting,
    /// retries of refused connections, every answer). A node that answers
    /// slowly is cut off when it passes, however much it still sends.
    /// `monitor`: also how late a due attestation may be: a node without a
    /// verdict for --interval plus this long, or for this long after an
    /// event it pushed, is untrusted.
    #[arg(long, global = true, default_value_t = 30, value_name = "SECS")]
    timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol a node: check its EK certificate chains to --ek-ca and holds
    /// its EK, bind its AK to the EK by credential activation, record it.
    /// A node is identified by its EK: an EK enrolled under another address,
    /// or other keys at an enrolled address, are refused unless asked for.
    Enroll {
        /// The node's attestation address, host:port.
        addr: String,
        /// PEM file of the CA(s) that issue EK certificates; every
        /// certificate in it is a trust anchor.
        #[arg(long, value_name = "FILE")]
        ek_ca: PathBuf,
        /// The EK is enrolled under another address and the node really
        /// moved: enrol it here instead (recorded in the key history).
        #[arg(long = "move")]
        move_node: bool,
        /// ADDR is enrolled with another EK or AK: replace them (recorded
        /// in the key history).
        #[arg(long)]
        replace_keys: bool,
    },
    /// Challenge an enrolled node with a fresh nonce and verify its quote,
    /// event log and measured launch. Prints trusted or untrusted with the
    /// reasons; exit code 0 only when trusted.
    Attest {
        addr: String,
        /// Nonce to send, hex (default: 32 random bytes).
        #[arg(long, value_name = "HEX")]
        nonce: Option<String>,
        /// Also write the evidence in tpm2-tools formats into DIR, which
        /// must be new or empty (checkable with tpm2_checkquote).
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
    /// --export`, or by tpm2_quote: quote.msg, quote.sig, quote.pcrs).
    /// The quote must be signed by the AK of an enrolled node (found by the
    /// directory's ak.pub or ak.pem, which are never trusted for being
    /// there), or by the key named with --ak. Evidence the policy needs but
    /// the directory lacks (eventlog.bin) makes it untrusted.
    Verify {
        dir: PathBuf,
        /// The nonce the quote must carry, hex. Default: DIR/nonce.hex, the
        /// evidence's own, which proves no freshness (the report says so).
        #[arg(long, value_name = "HEX")]
        nonce: Option<String>,
        #[arg(long)]
        json: bool,
        /// Reference values TOML to use instead of the stored policy.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// The AK to check the quote with (PEM, TPM2B_PUBLIC or
        /// TPMT_PUBLIC), asserted by you: the report says it is not bound
        /// to an EK. For quotes made by other tools such as tpm2_quote.
        #[arg(long, value_name = "FILE")]
        ak: Option<PathBuf>,
        /// Check only the quote (signature, nonce, PCR digest), not the
        /// event log or reference values; the verdict is then
        /// `quote-valid`, never `trusted`.
        #[arg(long)]
        quote_only: bool,
    },
    /// Manage the reference values (TOML) kept in the state.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Build the kernel profile the A-VM introspects a Mon-VM kernel with,
    /// from the stock kernel package's vmlinuz alone (no debug package, no
    /// System.map): symbols from its kallsyms tables, struct offsets from
    /// its .BTF, the handler of every system call. Writes the binary
    /// profile to FILE and prints a summary (kernel, counts, SHA-256).
    Profile {
        /// The kernel image (bzImage; LZ4, XZ, ZSTD or gzip payload).
        #[arg(long, value_name = "VMLINUZ")]
        kernel: PathBuf,
        /// Where to write the profile (replaced if it exists).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Print the summary (and the profile's contents) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Keep watching nodes: attest each (as `attest` does), subscribe to
    /// the events its A-VM pushes, and re-attest on every event and every
    /// --interval, fetching only the new part of the measurement log.
    ///
    /// Shows a live status table on a terminal (verdict, age of the last
    /// quote, events, detection latency = from an event's arrival to the
    /// verdict of the attestation it caused, subscription, revocation);
    /// with --json, or when stdout is not a terminal, one line per state
    /// change instead (--json: one JSON object per line, with "type" one of
    /// resumed, push, event, verdict, attest-failed, revocation).
    ///
    /// A pushed event is only a hint that makes the monitor attest at once;
    /// the verdict always comes from a fresh quote and the log it proves.
    /// Trust rests on verdicts alone (a trusted one needs a verified quote
    /// of a fresh nonce): a node without a verdict for --interval plus
    /// --timeout seconds (since its last verdict, or since the monitor
    /// started), or for --timeout seconds after the first event it pushed
    /// that no verdict's quote has proven yet, turns untrusted with reason
    /// node-unresponsive (fail closed), however many keep-alives and
    /// events it sends (they are not authenticated: an event can only
    /// bring the deadline closer) and whatever the history says. A failed
    /// attestation is retried after 1 s, 2 s, 4 s... (at most --interval);
    /// with --once it makes the node untrusted at once. A node that
    /// refuses Subscribe as malformed (an A-VM without push, or a forged
    /// answer) is attested on the interval and asked again, at most every
    /// 30 s.
    ///
    /// When a node turns untrusted, the revocation action runs once: the
    /// --on-untrusted command and/or a POST to the --webhook. It runs again
    /// only after the node was trusted in between. The history (verdicts,
    /// events with their latency, revocations and their outcome) is kept in
    /// the state database: a restarted monitor resumes from it and never
    /// repeats a revocation it already started; a stored trusted verdict
    /// counts only once an attestation of the new run confirms it. Ctrl-C
    /// stops it at once; every change is committed as it happens, and a
    /// running revocation command (in its own process group) is not
    /// interrupted.
    ///
    /// Exit code at the end (--once, --duration): 0 if every node is
    /// trusted, 1 otherwise.
    Monitor {
        /// The nodes' attestation addresses, host:port (enrolled).
        #[arg(required = true)]
        addrs: Vec<String>,
        /// Seconds between attestations when no event comes (a node
        /// without a verdict for this plus --timeout is untrusted).
        #[arg(long, default_value_t = 10.0, value_name = "SECS")]
        interval: f64,
        /// Keep-alive period asked of the A-VM, in milliseconds (100 to 60000).
        #[arg(long, default_value_t = avm_attest::wire::DEFAULT_KEEPALIVE_MS, value_name = "MS")]
        keepalive_ms: u32,
        /// One JSON object per line per state change.
        #[arg(long)]
        json: bool,
        /// Shell command (sh -c) run once when a node turns untrusted, with
        /// AVM_NODE_ADDR, AVM_NODE_VERDICT, AVM_NODE_REASONS (reason codes,
        /// space separated), AVM_NODE_SINCE (unix seconds), AVM_NODE_EVENTS
        /// (events so far), AVM_NODE_EVENT (the last event's name) and
        /// AVM_NODE_JSON (all of it as JSON) in its environment. Killed
        /// after 60 s.
        #[arg(long, value_name = "CMD")]
        on_untrusted: Option<String>,
        /// http://HOST[:PORT]/PATH POSTed once, when a node turns untrusted,
        /// a JSON object {addr, verdict, reasons, since, events,
        /// last_event, detail} (detail: with node-unresponsive, the deadline
        /// the node missed or its failed --once attestation, else null;
        /// plain HTTP/1.1: a local relay; no TLS).
        #[arg(long, value_name = "URL")]
        webhook: Option<String>,
        /// Attest every node once (no subscription), act, and exit; a node
        /// whose attestation fails is untrusted (node-unresponsive).
        #[arg(long)]
        once: bool,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Reference values TOML to use instead of the stored policy.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// List enrolled nodes with their last verdict.
    Nodes {
        #[arg(long)]
        json: bool,
        /// List the key history instead: every node moved to another
        /// address or re-enrolled with other keys.
        #[arg(long)]
        key_history: bool,
    },
}

/// `policy init --monvm-violations`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Violations {
    /// Every violation ever recorded counts until the node is re-attested
    /// from scratch (its A-VM and TPM restart): fail closed.
    Sticky,
    /// A violation counts until the A-VM records its area clean again or
    /// the Mon-VM reboots (the events stay in the log and the history).
    Current,
}

impl From<Violations> for avm_attest::policy::ViolationMemory {
    fn from(v: Violations) -> Self {
        match v {
            Violations::Sticky => Self::Sticky,
            Violations::Current => Self::Current,
        }
    }
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
        /// A Mon-VM kernel (a package's vmlinuz) the A-VM may introspect:
        /// its profile is built and allowed (repeatable).
        #[arg(long, value_name = "VMLINUZ")]
        monvm_kernel: Vec<PathBuf>,
        /// An allowed Mon-VM kernel profile file (`avm-verifier profile`
        /// output; repeatable).
        #[arg(long, value_name = "FILE")]
        monvm_profile: Vec<PathBuf>,
        /// How long a Mon-VM violation the A-VM recorded keeps the node
        /// untrusted (policy field `monvm_violations`).
        #[arg(long, value_enum, default_value_t = Violations::Sticky)]
        monvm_violations: Violations,
    },
    /// Learn from a known-good boot of an enrolled node (its quote must
    /// verify and its PCR 0 match an allowed image): its firmware events
    /// and, if it runs a Mon-VM with an allowed kernel profile, what the
    /// Mon-VM runs (its IMA entries' paths and digests, its modules, the
    /// digest of its kernel's boot-time patches).
    Learn { addr: String },
    /// Allow the Mon-VM files of a Keylime runtime policy (JSON, format
    /// version 1, as `keylime-policy create runtime` writes it): its
    /// SHA-256 `digests` and its `excludes`. Other parts are reported as
    /// ignored; a malformed policy is refused as a whole.
    ImportKeylime {
        /// The runtime policy (JSON).
        file: PathBuf,
        /// Replace the allowed files instead of adding to them.
        #[arg(long)]
        replace: bool,
    },
    /// Print the stored policy.
    Show,
}

fn parse_nonce(text: Option<String>) -> Result<Option<Vec<u8>>, commands::CommandError> {
    text.map(|t| {
        hex::decode(t.strip_prefix("0x").unwrap_or(&t))
            .map_err(|e| commands::CommandError(format!("--nonce: {e}")))
    })
    .transpose()
}

fn run(cli: Cli) -> Result<u8, commands::CommandError> {
    let ctx = Context {
        state_dir: cli
            .state
            .unwrap_or_else(avm_verifier::store::default_state_dir),
        timeout: Duration::from_secs(cli.timeout.max(1)),
        policies: Default::default(),
    };
    match cli.command {
        Command::Enroll {
            addr,
            ek_ca,
            move_node,
            replace_keys,
        } => commands::enroll(
            &ctx,
            &addr,
            &ek_ca,
            EnrollOptions {
                move_node,
                replace_keys,
            },
        ),
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
            ak,
            quote_only,
        } => commands::verify(
            &ctx,
            &dir,
            &VerifyOptions {
                nonce: parse_nonce(nonce)?,
                json,
                policy,
                ak,
                quote_only,
            },
        ),
        Command::Policy { command } => match command {
            PolicyCommand::Init {
                avm_image,
                avm_image_sha256,
                monvm_kernel,
                monvm_profile,
                monvm_violations,
            } => commands::policy_init(
                &ctx,
                &avm_image,
                &avm_image_sha256,
                &monvm_kernel,
                &monvm_profile,
                monvm_violations.into(),
            ),
            PolicyCommand::Learn { addr } => commands::policy_learn(&ctx, &addr),
            PolicyCommand::ImportKeylime { file, replace } => {
                commands::policy_import_keylime(&ctx, &file, replace)
            }
            PolicyCommand::Show => commands::policy_show(&ctx),
        },
        Command::Profile {
            kernel,
            output,
            json,
        } => avm_verifier::profile::profile(&avm_verifier::profile::ProfileOptions {
            kernel,
            output,
            json,
        }),
        Command::Nodes { json, key_history } => commands::nodes(&ctx, json, key_history),
        Command::Monitor {
            addrs,
            interval,
            keepalive_ms,
            json,
            on_untrusted,
            webhook,
            once,
            duration,
            policy,
        } => {
            let secs = |what: &str, value: f64| {
                Duration::try_from_secs_f64(value)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        commands::CommandError(format!(
                            "--{what}: not a positive number of seconds"
                        ))
                    })
            };
            if !(avm_attest::wire::MIN_KEEPALIVE_MS..=avm_attest::wire::MAX_KEEPALIVE_MS)
                .contains(&keepalive_ms)
            {
                return Err(commands::CommandError(
                    "--keepalive-ms: 100 to 60000".into(),
                ));
            }
            avm_verifier::monitor::monitor(
                &ctx,
                &avm_verifier::monitor::MonitorOptions {
                    addrs,
                    interval: secs("interval", interval)?,
                    liveness_timeout: ctx.timeout,
                    keepalive_ms,
                    json,
                    on_untrusted,
                    webhook,
                    once,
                    duration: duration.map(|d| secs("duration", d)).transpose()?,
                    policy,
                },
            )
        }
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
            eprintln!("avm-verifier: {}", escape_control(&e.to_string()));
            ExitCode::from(EXIT_ERROR)
        }
    }
}
