//! `avm-verifier monitor ADDR...`: keeps attesting nodes and acts when one
//! turns untrusted.
//!
//! Per node, two threads feed the main loop over a channel:
//! - a **subscriber** holds a connection subscribed to the node's pushed
//!   events (`Request::Subscribe`, docs/protocol.md), reconnecting with
//!   backoff; every event and keep-alive is a sign of life, and every
//!   event asks for a re-attestation at once. A node whose A-VM predates
//!   the push protocol is attested on the interval only.
//! - an **attester** runs the same attestation as `attest`
//!   ([`commands::attest_report`]: verdict in the history, incremental log
//!   fetch) whenever the main loop asks: at start, on every event, and
//!   every `--interval`.
//!
//! The main loop owns each node's [`NodeState`] (pure, unit-tested): the
//! verdict, when it was last quoted, the events, the detection latency
//! (from an event's arrival to the verdict of the attestation it caused),
//! and whether the revocation action ran. A node that gives no sign of
//! life (event, keep-alive, finished attestation) for the liveness timeout
//! turns untrusted (`node-unresponsive`: fail closed). When a node turns
//! untrusted, the revocation action (a command and/or a webhook) runs once;
//! it runs again only after the node was trusted in between. Everything is
//! kept in the state database (`monitor_nodes`, `monitor_events`,
//! `revocations`), so a restarted monitor resumes with its history and
//! never repeats a revocation it started.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use avm_attest::wire::{ErrorCode, KeepAlive, PushedEvent, Response};
use serde_json::json;

use crate::client::{ClientError, NodeClient};
use crate::commands::{self, AttestOptions, CommandError, Context, EXIT_OK, EXIT_UNTRUSTED};
use crate::report::{Report, VerdictKind};
use crate::sanitize::escape_control;
use crate::store::{MonitorEvent, MonitorNode, Store, now};

/// Reason code of a node that stopped answering within the timeout.
pub const NODE_UNRESPONSIVE: &str = "node-unresponsive";

/// Events kept per node within [`EVENT_WINDOW`]; beyond that a node that
/// floods events (a compromised one may) gets them counted, not stored:
/// each still asks for an attestation, which is what decides.
pub const MAX_EVENTS_PER_WINDOW: u32 = 200;
pub const EVENT_WINDOW: Duration = Duration::from_secs(10);

/// Longest a revocation command may run before it is killed.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long the main loop waits for a message before its periodic work.
const TICK: Duration = Duration::from_millis(100);
/// How long the subscriber waits for a push frame before checking `stop`.
const PUSH_WAIT: Duration = Duration::from_millis(500);
/// Backoff of the subscriber between connection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a finished monitor waits for revocation actions still running.
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// Options of `monitor`.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub addrs: Vec<String>,
    /// Re-attestation period without events.
    pub interval: Duration,
    /// No sign of life for this long: untrusted (`node-unresponsive`).
    pub liveness_timeout: Duration,
    pub keepalive_ms: u32,
    /// One JSON object per line per state change.
    pub json: bool,
    /// Shell command run once when a node turns untrusted.
    pub on_untrusted: Option<String>,
    /// URL POSTed a JSON description once when a node turns untrusted.
    pub webhook: Option<String>,
    /// Attest each node once (no subscription), act, exit.
    pub once: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    pub policy: Option<PathBuf>,
}

/// A node's verdict as the monitor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not attested yet (and nothing stored).
    Unknown,
    Trusted,
    Untrusted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Trusted => "trusted",
            Status::Untrusted => "untrusted",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "trusted" => Status::Trusted,
            "untrusted" => Status::Untrusted,
            _ => Status::Unknown,
        }
    }
}

/// The subscription of a node, for the status table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    Connecting,
    Subscribed,
    /// The node's A-VM does not speak the push protocol: interval only.
    Unsupported,
    Lost(String),
    /// `--once`: no subscription.
    Off,
}

impl Push {
    fn describe(&self) -> String {
        match self {
            Push::Connecting => "connecting".into(),
            Push::Subscribed => "subscribed".into(),
            Push::Unsupported => "unsupported".into(),
            Push::Lost(why) => format!("lost: {why}"),
            Push::Off => "off".into(),
        }
    }
}

/// What a change of a node's state calls for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict or its reasons changed; the previous verdict.
    pub changed_from: Option<Status>,
    /// The node just turned untrusted and its revocation has not run.
    pub revoke: bool,
}

/// One monitored node: the pure status logic.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub addr: String,
    pub status: Status,
    pub reasons: Vec<String>,
    /// Unix seconds when `status` began.
    pub since: i64,
    /// The revocation ran (or started) for the current untrusted period.
    pub revoked: bool,
    /// When the last attestation finished with a verdict.
    pub last_quote: Option<Instant>,
    /// Last sign of life: event, keep-alive, or a finished attestation.
    pub last_alive: Instant,
    /// Events in the history (across restarts).
    pub events: u64,
    /// The name of the last event pushed.
    pub last_event: Option<String>,
    /// Detection latency of the last event: arrival to verdict.
    pub last_latency: Option<Duration>,
    /// Events whose verdict is still to come: (history id, arrival).
    pub pending_events: Vec<(i64, Instant)>,
    pub push: Push,
    pub last_error: Option<String>,
    /// Start of the current event window and the events kept in it.
    pub window: (Instant, u32),
    /// Events counted but not kept (over [`MAX_EVENTS_PER_WINDOW`]).
    pub suppressed: u64,
    /// Records of the measurement log the last verdict's quote proved
    /// (an event with a lower log index is covered by that verdict).
    pub proven_records: Option<usize>,
}

impl NodeState {
    /// A node as the history left it (`stored`), watched from `now` on.
    pub fn resume(addr: &str, stored: Option<&MonitorNode>, events: u64, now: Instant) -> Self {
        let (status, reasons, since, revoked) = match stored {
            Some(node) => {
                let status = Status::parse(&node.verdict);
                (
                    status,
                    node.reasons.clone(),
                    node.since,
                    status == Status::Untrusted && node.revoked_at.is_some(),
                )
            }
            None => (Status::Unknown, Vec::new(), 0, false),
        };
        Self {
            addr: addr.into(),
            status,
            reasons,
            since,
            revoked,
            last_quote: None,
            last_alive: now,
            events,
            last_event: None,
            last_latency: None,
            pending_events: Vec::new(),
            push: Push::Connecting,
            last_error: None,
            window: (now, 0),
            suppressed: 0,
            proven_records: None,
        }
    }

    /// Whether an event arriving now is kept in the history (at most
    /// [`MAX_EVENTS_PER_WINDOW`] per [`EVENT_WINDOW`]); one that is not is
    /// counted in `suppressed`. Either way it is a sign of life.
    pub fn admit_event(&mut self, now: Instant) -> bool {
        self.alive(now);
        if now.saturating_duration_since(self.window.0) >= EVENT_WINDOW {
            self.window = (now, 0);
        }
        if self.window.1 >= MAX_EVENTS_PER_WINDOW {
            self.suppressed += 1;
            return false;
        }
        self.window.1 += 1;
        true
    }

    fn set(&mut self, status: Status, reasons: Vec<String>, unix: i64) -> Outcome {
        let from = self.status;
        let changed = status != from || reasons != self.reasons;
        if status != from {
            self.since = unix;
        }
        if status == Status::Trusted {
            self.revoked = false;
        }
        let revoke = status == Status::Untrusted && !self.revoked;
        if revoke {
            self.revoked = true;
        }
        self.status = status;
        self.reasons = reasons;
        Outcome {
            changed_from: changed.then_some(from),
            revoke,
        }
    }

    /// The verdict of a finished attestation (which also proves the node
    /// alive). Returns the detection latency if events were waiting for it.
    pub fn verdict(
        &mut self,
        trusted: bool,
        reasons: Vec<String>,
        now: Instant,
        unix: i64,
    ) -> (Outcome, Option<Duration>) {
        self.last_quote = Some(now);
        self.alive(now);
        self.last_error = None;
        let latency = self
            .pending_events
            .iter()
            .map(|(_, at)| now.saturating_duration_since(*at))
            .max();
        if latency.is_some() {
            self.last_latency = latency;
        }
        let status = if trusted {
            Status::Trusted
        } else {
            Status::Untrusted
        };
        (self.set(status, reasons, unix), latency)
    }

    /// A sign of life.
    pub fn alive(&mut self, now: Instant) {
        if now > self.last_alive {
            self.last_alive = now;
        }
    }

    /// An event arrived (`id` in the history).
    pub fn event(&mut self, id: i64, name: &str, now: Instant) {
        self.events += 1;
        self.last_event = Some(name.into());
        self.pending_events.push((id, now));
        self.alive(now);
    }

    /// Fails closed: no sign of life for `timeout` makes the node
    /// untrusted (keeping the reasons it already had).
    pub fn check_liveness(&mut self, now: Instant, timeout: Duration, unix: i64) -> Outcome {
        if now.saturating_duration_since(self.last_alive) <= timeout
            || self.reasons.iter().any(|r| r == NODE_UNRESPONSIVE)
        {
            return Outcome::default();
        }
        let mut reasons = match self.status {
            Status::Untrusted => self.reasons.clone(),
            _ => Vec::new(),
        };
        reasons.push(NODE_UNRESPONSIVE.into());
        self.set(Status::Untrusted, reasons, unix)
    }
}

/// What the threads tell the main loop.
enum Message {
    Attested {
        node: usize,
        result: Result<Box<Report>, String>,
    },
    Event {
        node: usize,
        event: PushedEvent,
        at: Instant,
    },
    KeepAlive {
        node: usize,
        keepalive: KeepAlive,
    },
    Push {
        node: usize,
        push: Push,
    },
    RevocationDone {
        id: i64,
        action: &'static str,
        addr: String,
        outcome: String,
    },
}

/// A webhook target: plain HTTP (a local relay, for example).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Webhook {
    /// Parses `http://HOST[:PORT][/PATH]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("webhook {url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("webhook {url:?}: bad path"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("webhook {url:?}: bad port"))?,
            ),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || host
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || b == b'@')
        {
            return Err(format!("webhook {url:?}: bad host"));
        }
        Ok(Self {
            host: host.into(),
            port,
            path: path.into(),
        })
    }

    /// POSTs `body` (JSON) and returns the HTTP status code.
    pub fn post(&self, body: &str, timeout: Duration) -> Result<u16, String> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("resolve: {e}"))?
            .next()
            .ok_or("resolve: no address")?;
        let mut stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: avm-verifier\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.path,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        // Only the status line matters; read a bounded head of the answer.
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while head.len() < 4096 && !head.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
        parse_status_line(&head).ok_or_else(|| "no HTTP status line in the answer".into())
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    (code.len() == 3).then_some(())?;
    code.parse().ok()
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn err(e: impl std::fmt::Display) -> CommandError {
    CommandError(e.to_string())
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// The codes of a report's reasons.
fn codes(report: &Report) -> Vec<String> {
    report.reasons.iter().map(|r| r.code.clone()).collect()
}

/// The attester: one attestation per request from the main loop.
fn spawn_attester(
    node: usize,
    addr: String,
    ctx: Context,
    policy: Option<PathBuf>,
    tx: Sender<Message>,
) -> Sender<()> {
    let (requests, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let opts = AttestOptions {
            policy,
            ..AttestOptions::default()
        };
        while rx.recv().is_ok() {
            let result = commands::attest_report(&ctx, &addr, &opts)
                .map(Box::new)
                .map_err(|e| e.0);
            if tx.send(Message::Attested { node, result }).is_err() {
                return;
            }
        }
    });
    requests
}

/// The subscriber: holds a subscribed connection, reconnecting with backoff.
fn spawn_subscriber(
    node: usize,
    addr: String,
    timeout: Duration,
    keepalive_ms: u32,
    tx: Sender<Message>,
    stop: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        let mut backoff = FIRST_BACKOFF;
        let mut last: Option<Push> = None;
        let mut report = |push: Push| {
            if last.as_ref() != Some(&push) {
                last = Some(push.clone());
                tx.send(Message::Push { node, push }).is_ok()
            } else {
                true
            }
        };
        while !stop.load(Ordering::Relaxed) {
            let subscribed = NodeClient::connect(&addr, timeout).and_then(|mut client| {
                client.hello()?;
                client.subscribe(keepalive_ms)?;
                Ok(client)
            });
            let mut client = match subscribed {
                Ok(client) => client,
                Err(ClientError::Remote {
                    code: ErrorCode::Malformed,
                    ..
                }) => {
                    // An A-VM from before the push protocol.
                    report(Push::Unsupported);
                    return;
                }
                Err(e) => {
                    if !report(Push::Lost(e.to_string())) {
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = FIRST_BACKOFF;
            if !report(Push::Subscribed) {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                let message = match client.next_push(PUSH_WAIT) {
                    Ok(None) => continue,
                    Ok(Some(Response::Event(event))) => Message::Event {
                        node,
                        event,
                        at: Instant::now(),
                    },
                    Ok(Some(Response::KeepAlive(keepalive))) => {
                        Message::KeepAlive { node, keepalive }
                    }
                    Ok(Some(_)) => continue,
                    Err(e) => {
                        if !report(Push::Lost(e.to_string())) {
                            return;
                        }
                        break;
                    }
                };
                if tx.send(message).is_err() {
                    return;
                }
            }
        }
    });
}

/// Runs the revocation action(s) for a node in the background.
fn spawn_revocation(
    store: &mut Store,
    state: &NodeState,
    opts: &MonitorOptions,
    webhook: Option<&Webhook>,
    tx: &Sender<Message>,
) -> Result<usize, CommandError> {
    let mut started = 0;
    let description = json!({
        "addr": state.addr,
        "verdict": state.status.as_str(),
        "reasons": state.reasons,
        "since": state.since,
        "events": state.events,
        "last_event": state.last_event,
    })
    .to_string();
    if let Some(command) = &opts.on_untrusted {
        let id = store
            .start_revocation(&state.addr, &state.reasons, "command")
            .map_err(err)?;
        started += 1;
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .env("AVM_NODE_ADDR", &state.addr)
            .env("AVM_NODE_VERDICT", state.status.as_str())
            .env("AVM_NODE_REASONS", state.reasons.join(" "))
            .env("AVM_NODE_SINCE", state.since.to_string())
            .env("AVM_NODE_EVENTS", state.events.to_string())
            .env(
                "AVM_NODE_EVENT",
                escape_control(state.last_event.as_deref().unwrap_or("")).as_ref(),
            )
            .env("AVM_NODE_JSON", &description)
            .stdin(std::process::Stdio::null())
            // Its own process group: a Ctrl-C at the monitor's terminal
            // does not cut a revocation short.
            .process_group(0);
        let tx = tx.clone();
        let addr = state.addr.clone();
        std::thread::spawn(move || {
            let outcome = run_command(cmd);
            let _ = tx.send(Message::RevocationDone {
                id,
                action: "command",
                addr,
                outcome,
            });
        });
    }
    if let Some(webhook) = webhook {
        let id = store
            .start_revocation(&state.addr, &state.reasons, "webhook")
            .map_err(err)?;
        started += 1;
        let webhook = webhook.clone();
        let tx = tx.clone();
        let addr = state.addr.clone();
        std::thread::spawn(move || {
            let outcome = match webhook.post(&description, Duration::from_secs(10)) {
                Ok(code) => format!("http {code}"),
                Err(e) => format!("error: {e}"),
            };
            let _ = tx.send(Message::RevocationDone {
                id,
                action: "webhook",
                addr,
                outcome,
            });
        });
    }
    Ok(started)
}

fn run_command(mut cmd: std::process::Command) -> String {
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return format!("error: {e}"),
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return match status.code() {
                    Some(code) => format!("exit {code}"),
                    None => "killed by a signal".into(),
                };
            }
            Ok(None) if start.elapsed() < COMMAND_LIMIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return format!("error: still running after {COMMAND_LIMIT:?}, killed");
            }
            Err(e) => return format!("error: {e}"),
        }
    }
}

/// One monitored node in the main loop.
struct Watched {
    state: NodeState,
    attester: Sender<()>,
    in_flight: bool,
    /// An event arrived while an attestation ran: attest again after it.
    again: bool,
    next_attest: Instant,
    attested_once: bool,
    dropped: u32,
}

/// Where the monitor writes.
struct Output {
    json: bool,
    table: bool,
    last_draw: Option<Instant>,
}

impl Output {
    fn line(&self, value: serde_json::Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else if !self.table {
            println!("{}", escape_control(&human()));
        }
        let _ = std::io::stdout().flush();
    }

    fn draw(&mut self, nodes: &[Watched], now: Instant, force: bool) {
        if !self.table
            || (!force
                && self
                    .last_draw
                    .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)))
        {
            return;
        }
        self.last_draw = Some(now);
        let mut out = String::from("\x1b[H\x1b[2J");
        out.push_str(&format!(
            "{:<22} {:<10} {:>11} {:>7} {:>10}  {:<12} {:<8}\n",
            "NODE", "VERDICT", "LAST QUOTE", "EVENTS", "LATENCY", "PUSH", "REVOKED"
        ));
        for node in nodes {
            let s = &node.state;
            let quote = s.last_quote.map_or("-".into(), |t| {
                format!("{:.1} s", now.saturating_duration_since(t).as_secs_f64())
            });
            let latency = s
                .last_latency
                .map_or("-".into(), |l| format!("{:.1} ms", ms(l)));
            out.push_str(&format!(
                "{:<22} {:<10} {:>11} {:>7} {:>10}  {:<12} {:<8}\n",
                escape_control(&s.addr),
                s.status.as_str(),
                quote,
                if s.suppressed > 0 {
                    format!("{}+{}", s.events, s.suppressed)
                } else {
                    s.events.to_string()
                },
                latency,
                escape_control(&s.push.describe())
                    .chars()
                    .take(12)
                    .collect::<String>(),
                if s.revoked { "yes" } else { "no" }
            ));
            if !s.reasons.is_empty() {
                out.push_str(&format!("    reasons: {}\n", s.reasons.join(", ")));
            }
            if let Some(e) = &s.last_error {
                out.push_str(&format!("    last error: {}\n", escape_control(e)));
            }
        }
        out.push_str("\nCtrl-C to stop; the history is kept in the state database.\n");
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}

/// `monitor ADDR...`; exit code 0 if every node is trusted at the end.
pub fn monitor(ctx: &Context, opts: &MonitorOptions) -> Result<u8, CommandError> {
    if opts.addrs.is_empty() {
        return Err(CommandError("monitor: name at least one node".into()));
    }
    let webhook = opts
        .webhook
        .as_deref()
        .map(Webhook::parse)
        .transpose()
        .map_err(err)?;
    let start = Instant::now();
    let end = opts.duration.map(|d| start + d);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Message>();
    let mut session = Session {
        store: Store::open(&ctx.state_dir).map_err(err)?,
        opts,
        webhook,
        tx,
        output: Output {
            json: opts.json,
            table: !opts.json && !opts.once && std::io::stdout().is_terminal(),
            last_draw: None,
        },
        running_revocations: 0,
    };
    let mut nodes = Vec::new();
    let mut seen = HashMap::new();
    for addr in &opts.addrs {
        if seen.insert(addr.clone(), ()).is_some() {
            continue;
        }
        let stored = session.store.monitor_node(addr).map_err(err)?;
        let events = session.store.monitor_events(addr).map_err(err)?;
        let revocations = session.store.revocations(addr).map_err(err)?;
        let mut state = NodeState::resume(addr, stored.as_ref(), events.len() as u64, start);
        state.last_event = events.last().map(|e| e.name.clone());
        if opts.once {
            state.push = Push::Off;
        }
        session.output.line(
            json!({
                "type": "resumed",
                "addr": addr,
                "at_ms": unix_ms(),
                "verdict": state.status.as_str(),
                "reasons": state.reasons,
                "events": state.events,
                "revocations": revocations.len(),
                "revoked": state.revoked,
            }),
            || {
                format!(
                    "{addr}: {} in the history, {} events, {} revocations",
                    state.status.as_str(),
                    state.events,
                    revocations.len()
                )
            },
        );
        let index = nodes.len();
        let attester = spawn_attester(
            index,
            addr.clone(),
            ctx.clone(),
            opts.policy.clone(),
            session.tx.clone(),
        );
        if !opts.once {
            spawn_subscriber(
                index,
                addr.clone(),
                ctx.timeout,
                opts.keepalive_ms,
                session.tx.clone(),
                stop.clone(),
            );
        }
        nodes.push(Watched {
            state,
            attester,
            in_flight: false,
            again: false,
            next_attest: start,
            attested_once: false,
            dropped: 0,
        });
    }
    loop {
        let now = Instant::now();
        for node in nodes.iter_mut() {
            let due = node.again || (now >= node.next_attest && !(opts.once && node.attested_once));
            if !node.in_flight && due && node.attester.send(()).is_ok() {
                node.in_flight = true;
                node.again = false;
                node.next_attest = now + opts.interval;
            }
        }
        match rx.recv_timeout(TICK) {
            Ok(message) => session.handle(message, &mut nodes)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if !opts.once {
            for index in 0..nodes.len() {
                let unix = now_unix();
                let outcome = nodes[index]
                    .state
                    .check_liveness(now, opts.liveness_timeout, unix);
                session.apply(index, outcome, None, &mut nodes)?;
            }
        }
        session.output.draw(&nodes, now, false);
        if opts.once && nodes.iter().all(|n| n.attested_once && !n.in_flight) {
            break;
        }
        if end.is_some_and(|end| now >= end) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Let revocations that already started record their outcome.
    let grace = Instant::now() + EXIT_GRACE;
    while session.running_revocations > 0 && Instant::now() < grace {
        match rx.recv_timeout(TICK) {
            Ok(message @ Message::RevocationDone { .. }) => session.handle(message, &mut nodes)?,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    session.output.draw(&nodes, Instant::now(), true);
    let all_trusted = nodes.iter().all(|n| n.state.status == Status::Trusted);
    Ok(if all_trusted { EXIT_OK } else { EXIT_UNTRUSTED })
}

fn now_unix() -> i64 {
    now()
}

/// What the main loop shares with every change it handles: the state
/// database, the options, where revocations report back, the output and
/// how many revocations still run.
struct Session<'a> {
    store: Store,
    opts: &'a MonitorOptions,
    webhook: Option<Webhook>,
    tx: Sender<Message>,
    output: Output,
    running_revocations: usize,
}

impl Session<'_> {
    fn handle(&mut self, message: Message, nodes: &mut [Watched]) -> Result<(), CommandError> {
        let now = Instant::now();
        match message {
            Message::Attested {
                node: index,
                result,
            } => {
                let Some(node) = nodes.get_mut(index) else {
                    return Ok(());
                };
                node.in_flight = false;
                node.attested_once = true;
                match result {
                    Ok(report) => {
                        node.state.proven_records =
                            report.measurement_log.as_ref().map(|l| l.proven_records);
                        let trusted = report.verdict == VerdictKind::Trusted;
                        let (outcome, latency) =
                            node.state.verdict(trusted, codes(&report), now, now_unix());
                        let ids: Vec<i64> = node
                            .state
                            .pending_events
                            .drain(..)
                            .map(|(id, _)| id)
                            .collect();
                        if let Some(latency) = latency {
                            self.store
                                .set_event_latency(&ids, ms(latency))
                                .map_err(err)?;
                        }
                        self.apply(index, outcome, latency, nodes)?;
                    }
                    Err(e) => {
                        let addr = node.state.addr.clone();
                        node.state.last_error = Some(e.clone());
                        self.output.line(
                        json!({"type": "attest-failed", "addr": addr, "at_ms": unix_ms(), "error": e}),
                        || format!("{addr}: attestation failed: {e}"),
                    );
                    }
                }
            }
            Message::Event {
                node: index,
                event,
                at,
            } => {
                let Some(node) = nodes.get_mut(index) else {
                    return Ok(());
                };
                node.again = true;
                if !node.state.admit_event(at) {
                    return Ok(());
                }
                let id = self
                    .store
                    .record_monitor_event(&MonitorEvent {
                        addr: node.state.addr.clone(),
                        at_ms: unix_ms(),
                        record_index: event.index,
                        pcr: event.pcr,
                        name: event.name.clone(),
                        latency_ms: None,
                    })
                    .map_err(err)?;
                node.state.event(id, &event.name, at);
                node.again = true;
                let addr = &node.state.addr;
                self.output.line(
                    json!({
                        "type": "event",
                        "addr": addr,
                        "at_ms": unix_ms(),
                        "index": event.index,
                        "pcr": event.pcr,
                        "name": event.name,
                        "events": node.state.events,
                    }),
                    || format!("{addr}: event {} (record {})", event.name, event.index),
                );
            }
            Message::KeepAlive {
                node: index,
                keepalive,
            } => {
                if let Some(node) = nodes.get_mut(index) {
                    node.state.alive(now);
                    if keepalive.dropped > node.dropped {
                        // Events the node could not push: look at its log.
                        node.dropped = keepalive.dropped;
                        node.again = true;
                    }
                }
            }
            Message::Push { node: index, push } => {
                if let Some(node) = nodes.get_mut(index) {
                    if push == Push::Subscribed {
                        node.state.alive(now);
                    }
                    let addr = &node.state.addr;
                    let text = push.describe();
                    self.output.line(
                        json!({"type": "push", "addr": addr, "at_ms": unix_ms(), "state": text}),
                        || format!("{addr}: push {text}"),
                    );
                    node.state.push = push;
                }
            }
            Message::RevocationDone {
                id,
                action,
                addr,
                outcome,
            } => {
                self.running_revocations = self.running_revocations.saturating_sub(1);
                self.store.finish_revocation(id, &outcome).map_err(err)?;
                self.output.line(
                json!({"type": "revocation", "addr": addr, "at_ms": unix_ms(), "action": action, "outcome": outcome}),
                || format!("{addr}: revocation {action}: {outcome}"),
            );
            }
        }
        Ok(())
    }

    /// Records and reports a state change, and starts the revocation.
    fn apply(
        &mut self,
        index: usize,
        outcome: Outcome,
        latency: Option<Duration>,
        nodes: &mut [Watched],
    ) -> Result<(), CommandError> {
        let Some(node) = nodes.get_mut(index) else {
            return Ok(());
        };
        let state = &node.state;
        if outcome.changed_from.is_none() && !outcome.revoke {
            return Ok(());
        }
        // Recorded before the revocation runs: a restart never repeats it.
        self.store
            .set_monitor_node(&MonitorNode {
                addr: state.addr.clone(),
                verdict: state.status.as_str().into(),
                reasons: state.reasons.clone(),
                since: state.since,
                revoked_at: state.revoked.then(now_unix),
            })
            .map_err(err)?;
        if let Some(from) = outcome.changed_from {
            let addr = &state.addr;
            self.output.line(
                json!({
                    "type": "verdict",
                    "addr": addr,
                    "at_ms": unix_ms(),
                    "verdict": state.status.as_str(),
                    "previous": from.as_str(),
                    "reasons": state.reasons,
                    "events": state.events,
                    "proven_records": state.proven_records,
                    "latency_ms": latency.map(ms),
                }),
                || {
                    let latency = latency.map_or(String::new(), |l| {
                        format!(", {:.1} ms after the event", ms(l))
                    });
                    let reasons = if state.reasons.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", state.reasons.join(", "))
                    };
                    format!(
                        "{addr}: {} -> {}{reasons}{latency}",
                        from.as_str(),
                        state.status.as_str(),
                    )
                },
            );
        }
        if outcome.revoke {
            self.running_revocations += spawn_revocation(
                &mut self.store,
                state,
                self.opts,
                self.webhook.as_ref(),
                &self.tx,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn turning_untrusted_revokes_once_until_trusted_again() {
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        let (o, _) = node.verdict(true, vec![], start, 1);
        assert_eq!(o.changed_from, Some(Status::Unknown));
        assert!(!o.revoke);
        let (o, _) = node.verdict(true, vec![], start, 2);
        assert_eq!(o, Outcome::default());
        let bad = vec!["monvm-syscall-table-modified".to_string()];
        let (o, _) = node.verdict(false, bad.clone(), start, 3);
        assert_eq!(o.changed_from, Some(Status::Trusted));
        assert!(o.revoke);
        assert_eq!(node.since, 3);
        // Still untrusted, more reasons: a change, no second revocation.
        let mut more = bad.clone();
        more.push("monvm-idt-modified".into());
        let (o, _) = node.verdict(false, more, start, 4);
        assert_eq!(o.changed_from, Some(Status::Untrusted));
        assert!(!o.revoke);
        assert_eq!(node.since, 3);
        // Trusted again (re-enrolled, say), then untrusted: revoked again.
        node.verdict(true, vec![], start, 5);
        let (o, _) = node.verdict(false, bad, start, 6);
        assert!(o.revoke);
    }

    #[test]
    fn an_untrusted_first_verdict_revokes() {
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        let (o, _) = node.verdict(false, vec!["unknown-node".into()], start, 1);
        assert!(o.revoke);
    }

    #[test]
    fn a_resumed_node_does_not_revoke_again() {
        let start = t0();
        let stored = MonitorNode {
            addr: "a:1".into(),
            verdict: "untrusted".into(),
            reasons: vec!["monvm-syscall-table-modified".into()],
            since: 10,
            revoked_at: Some(11),
        };
        let mut node = NodeState::resume("a:1", Some(&stored), 4, start);
        assert_eq!(
            (node.status, node.events, node.revoked),
            (Status::Untrusted, 4, true)
        );
        let (o, _) = node.verdict(false, stored.reasons.clone(), start, 20);
        assert_eq!(o, Outcome::default());
        // Stored untrusted but the revocation never started: it runs now.
        let unrevoked = MonitorNode {
            revoked_at: None,
            ..stored
        };
        let mut node = NodeState::resume("a:1", Some(&unrevoked), 4, start);
        let (o, _) = node.verdict(false, unrevoked.reasons.clone(), start, 20);
        assert!(o.revoke);
        assert_eq!(o.changed_from, None);
    }

    #[test]
    fn silence_beyond_the_timeout_is_untrusted_once() {
        let start = t0();
        let timeout = Duration::from_secs(5);
        let mut node = NodeState::resume("a:1", None, 0, start);
        node.verdict(true, vec![], start, 1);
        node.alive(start + Duration::from_secs(3));
        assert_eq!(
            node.check_liveness(start + Duration::from_secs(8), timeout, 2),
            Outcome::default()
        );
        let o = node.check_liveness(start + Duration::from_secs(9), timeout, 3);
        assert_eq!(o.changed_from, Some(Status::Trusted));
        assert!(o.revoke);
        assert_eq!(node.reasons, [NODE_UNRESPONSIVE]);
        // Still silent: nothing more happens.
        let o = node.check_liveness(start + Duration::from_secs(20), timeout, 4);
        assert_eq!(o, Outcome::default());
        // An untrusted node going silent keeps its reasons, not revoked twice.
        let mut node = NodeState::resume("b:1", None, 0, start);
        node.verdict(false, vec!["monvm-idt-modified".into()], start, 1);
        let o = node.check_liveness(start + Duration::from_secs(6), timeout, 2);
        assert!(!o.revoke);
        assert_eq!(node.reasons, ["monvm-idt-modified", NODE_UNRESPONSIVE]);
    }

    #[test]
    fn a_node_that_never_answers_is_untrusted_after_the_timeout() {
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        let o = node.check_liveness(start + Duration::from_secs(31), Duration::from_secs(30), 1);
        assert_eq!(o.changed_from, Some(Status::Unknown));
        assert!(o.revoke);
    }

    #[test]
    fn latency_runs_from_the_oldest_event_to_the_verdict() {
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        node.verdict(true, vec![], start, 1);
        node.event(1, "monvm:event:1:violation:idt:gate 3", start);
        node.event(
            2,
            "monvm:event:2:clean:idt",
            start + Duration::from_millis(5),
        );
        assert_eq!(node.events, 2);
        let (_, latency) = node.verdict(
            false,
            vec!["monvm-idt-modified".into()],
            start + Duration::from_millis(40),
            2,
        );
        assert_eq!(latency, Some(Duration::from_millis(40)));
        assert_eq!(node.last_latency, Some(Duration::from_millis(40)));
    }

    #[test]
    fn an_event_flood_is_counted_not_kept() {
        let start = t0();
        let mut node = NodeState::resume("a:1", None, 0, start);
        let kept = (0..MAX_EVENTS_PER_WINDOW + 50)
            .filter(|_| node.admit_event(start))
            .count();
        assert_eq!(kept as u32, MAX_EVENTS_PER_WINDOW);
        assert_eq!(node.suppressed, 50);
        // The next window keeps events again.
        assert!(node.admit_event(start + EVENT_WINDOW));
    }

    #[test]
    fn webhook_urls() {
        assert_eq!(
            Webhook::parse("http://127.0.0.1:8080/revoke?x=1"),
            Ok(Webhook {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/revoke?x=1".into()
            })
        );
        assert_eq!(
            Webhook::parse("http://localhost").map(|w| (w.port, w.path)),
            Ok((80, "/".into()))
        );
        assert_eq!(
            Webhook::parse("http://[::1]:9/").map(|w| (w.host, w.port)),
            Ok(("::1".into(), 9))
        );
        for bad in [
            "https://a/",
            "ftp://a",
            "http://:80/",
            "http://a:x/",
            "http://a/b c",
            "http://u@a/",
        ] {
            assert!(Webhook::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 500\r\n"), Some(500));
        assert_eq!(parse_status_line(b"SSH-2.0\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 x\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn webhook_posts_json_over_plain_http() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("}") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let hook = Webhook::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap();
        assert_eq!(hook.post("{\"a\":1}", Duration::from_secs(5)), Ok(200));
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Content-Length: 7\r\n"));
        assert!(request.ends_with("\r\n\r\n{\"a\":1}"));
    }
}
